"""The study runner: plan the grid of arms × seeds × folds, bring every cell to done, analyse.

Study folder::

    <out>/plan.json                      what was asked (study, budget, data, folds, arms)
    <out>/cells/<arm>/s<seed>-f<fold>/   ordinary run folders (+ cell.json when done)
    <out>/study.json, study.md           results (written by lightship.studies.analysis)
    <out>/curves/<arm>.png, <plots>.png  learning curves per arm, the study's own figures

Re-running the same command skips done cells and resumes a killed one from its last checkpoint.
The plan pins the precision: ``train.precision: auto`` gives bf16 on a CPU with native bf16 and
fp32 on others, so the plan records what ``auto`` became where the study was planned (or
``--precision``), writes it into every cell that says ``auto``, and refuses to continue where it
would become something else (cells of two precisions would be compared as one).
``jobs > 1`` trains cells in that many worker processes with at most cores // jobs torch threads
each, fewer while other work holds CPUs (lightship.train.threads; OMP_NUM_THREADS, if lower, wins).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lightship import interrupt
from lightship.data import load_data
from lightship.data.builtin import BUILTINS
from lightship.errors import UserError, closest
from lightship.recipe import Recipe, build_recipe, recipe_differs
from lightship.runs import write_json
from lightship.studies import on_ray
from lightship.studies.base import BUDGETS, Arm, Budget, Study
from lightship.studies.cells import CELL_FILE, cell_state, run_cell
from lightship.train.precision import PRECISIONS, choose_device, choose_precision, cpu_kind

PLAN_FORMAT = "lightship-study-1"


@dataclass
class Cell:
    arm: str
    seed: int
    fold: int | None
    rel: str
    recipe: Recipe
    units: float
    """Expected cost (arm cost × epochs) for ordering and the ETA."""
    needs: tuple[str, ...] = ()
    """Cells (their ``rel``) that must have finished before this one starts."""

    @property
    def key(self) -> tuple[int, int | None]:
        return (self.seed, self.fold)


@dataclass
class Plan:
    study: Study
    budget: Budget
    data: str
    seeds: list[int]
    folds: int | None
    out: Path
    cells: list[Cell]
    command: str
    arms: list[Arm]
    """The arms this plan trains (all of the study's, or those chosen with --arms)."""
    precision: str | None = None
    """What ``train.precision: auto`` became for the cells (None: a plan made before lightship
    pinned it, whose cells keep ``auto``)."""
    cpu: str = ""
    """The CPU where the plan was made (:func:`cpu_kind`)."""
    auto_arms: frozenset[str] = frozenset()
    """Arms whose recipe says ``train.precision: auto`` (the pin applies to them only; the
    others train in their recipe's own precision, e.g. the `baseline` preset's fp32)."""

    def trained_in(self) -> dict[str, list[str]]:
        """Precision → the arms whose cells train in it."""
        out: dict[str, list[str]] = {}
        for c in self.cells:
            arms = out.setdefault(c.recipe.train.precision, [])
            if c.arm not in arms:
                arms.append(c.arm)
        return out

    def setup(self) -> str:
        """What the cells train in (the pin where a recipe says auto) and the CPU, for printed
        lines."""
        if self.precision is not None:
            parts = []
            for prec, arms in self.trained_in().items():
                auto = [a for a in arms if a in self.auto_arms]
                why = (f"auto, pinned on {self.cpu}" if len(auto) == len(arms) else
                       "the recipes' own" if not auto else
                       f"auto for {', '.join(auto)}, pinned on {self.cpu}")
                parts.append(f"{prec} ({why})" if len(self.trained_in()) == 1 else
                             f"{prec} for {', '.join(arms)} ({why})")
            return f"precision {'; '.join(parts)}; this CPU: {cpu_kind()}"
        if self.precision is None:
            return "precision not pinned (the plan predates it): train.precision auto per machine"
        return f"precision {self.precision} (pinned on {self.cpu}); this CPU: {cpu_kind()}"

    def to_dict(self) -> dict[str, Any]:
        pinned = {"precision": self.precision, "cpu": self.cpu} if self.precision else {}
        return {"format": PLAN_FORMAT, "study": self.study.name, "budget": self.budget.name,
                "epochs": self.budget.epochs, "data": self.data, "folds": self.folds,
                "seeds": self.seeds, **pinned,
                "command": self.command,
                "arms": [{"name": a.name, "label": a.label, "preset": a.preset,
                          "overrides": a.overrides, "needs": a.needs} for a in self.arms]}


def cell_name(seed: int, fold: int | None) -> str:
    return f"s{seed}" if fold is None else f"s{seed}-f{fold}"


def fixed_split(data: str) -> bool:
    """True for datasets that bring their own test split (everything but the built-ins)."""
    base = data.strip().partition(":")[0]
    return not (base in BUILTINS and not any(c in data for c in "/\\"))


def read_plan(out: Path) -> dict[str, Any] | None:
    """The plan.json of a study folder, None for a missing or empty folder; a folder that holds
    something else is refused."""
    return read_folder_state(out, "plan.json", PLAN_FORMAT, "study", "lightship study plan")


def read_folder_state(out: Path, file: str, fmt: str, what: str, kind: str
                      ) -> dict[str, Any] | None:
    """The state file ``file`` (JSON, ``"format": fmt``) of a study or lift folder ``out``;
    None for a missing or empty folder. A file in its place, a folder holding something else,
    or a state file of another kind is refused with one line."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the {what}")
    path = out / file
    if not path.exists():
        if any(out.iterdir()):
            raise UserError(f"--out {out} is not empty and holds no {what} (no {file}); "
                            "give a new or empty folder")
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        saved = None
    if not isinstance(saved, dict) or saved.get("format") != fmt:
        raise UserError(f"{path} is not a {kind}; give another --out")
    return saved


def make_plan(study: Study, budget_name: str, *, seeds: int | None, folds: int | None,
              data: str | None, out: Path, command: str, arms: list[str] | None = None,
              epochs: int | None = None, precision: str = "auto") -> Plan:
    """Check the options and build the grid (of the ``arms`` named, default all; ``epochs``
    replaces the budget's, and what the study scales with it; ``precision`` what
    ``train.precision: auto`` becomes in the cells, default this machine's choice); refuse a
    folder made by another study, with other options or in another precision (one line each).
    For a new study folder the first cell's data is loaded once, so data that does not load or
    folds that do not fit are refused before anything is written."""
    if budget_name not in BUDGETS:
        raise UserError(f"unknown budget '{budget_name}'{closest(budget_name, BUDGETS)}; "
                        f"budgets: {', '.join(BUDGETS)}")
    if budget_name not in study.budgets:
        if study.budgets["default"].converges:
            raise UserError(f"{study.name} has no {budget_name} budget: its default converges "
                            "(`lightship study list` says what it measured); use --budget "
                            "default")
        raise UserError(f"{study.name} has no {budget_name} budget yet (its default was not "
                        "sized and measured to converge: `lightship study list` says what it "
                        "measured); give --epochs N for a longer default, with its own --out")
    budget = study.budgets[budget_name]
    data = data if data is not None else budget.data
    if data is None:
        raise UserError(f"the {budget.name} budget of {study.name} is the paper's own setting "
                        "on its own data: give --data PATH (e.g. PATH/cifar-10-batches-py)")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs {epochs} must be at least 1")
    if epochs is not None and epochs != budget.epochs:  # plan.json stores the epochs it ran
        budget = replace(budget, epochs=epochs, note=f"{budget.note}; --epochs {epochs} "
                         f"instead of the budget's {budget.epochs}")
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds} must be at least 1")
    if folds is not None and folds < 2:
        raise UserError(f"--folds {folds} must be at least 2 (K-fold needs two parts); leave it "
                        f"out for the budget's {budget.folds or 'own split'}")
    if fixed_split(data):
        if folds is not None:
            raise UserError(f"--folds does not apply to {data}: it has a fixed test split, which "
                            "results are compared on; drop --folds (seeds vary instead)")
        k = None
    else:
        k = folds if folds is not None else (budget.folds or 5)
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    n_seeds = seeds if seeds is not None else budget.seeds
    seed_list = list(range(n_seeds))
    saved = read_plan(out)
    unpinned = saved is not None and "precision" not in saved  # planned before the pin
    if saved is not None:
        if saved.get("study") != study.name:
            raise UserError(f"{out} holds study '{saved.get('study')}', not '{study.name}'; give "
                            f"{study.name} its own --out")
        for key, value in (("budget", budget.name), ("epochs", budget.epochs), ("data", data),
                           ("folds", k)):
            if key in saved and saved.get(key) != value:
                raise UserError(f"{out} was made with {key} {saved.get(key)!r}, not {value!r}; "
                                "re-run with the same options or give another --out")
    chosen = study.arms(budget)
    if not arms and budget.arms is not None:  # a budget that trains only some arms
        chosen = _with_needs(chosen, set(budget.arms))
    if arms:
        chosen += study.extra_arms(budget)
        known = [a.name for a in chosen]
        for name in arms:
            if name not in known:
                raise UserError(f"--arms: study {study.name} has no arm '{name}'"
                                f"{closest(name, known)}; its arms: {', '.join(known)}")
        chosen = _with_needs(chosen, set(arms))
    cells = []
    for arm in chosen:
        for seed in seed_list:
            for fold in ([None] if k is None else range(k)):
                rel = f"cells/{arm.name}/{cell_name(seed, fold)}"
                over = {"data.name": data, "train.seed": seed, "run.dir": str(out / "cells" /
                        arm.name), "run.name": cell_name(seed, fold), **arm.overrides}
                if k is not None:
                    over.update({"data.folds": k, "data.fold": fold})
                if budget.final_eval_only:  # the loop always evaluates the last epoch
                    over["train.eval_every"] = 10**6
                needs = tuple(f"cells/{a}/{cell_name(seed, fold)}" for a in arm.needs.values())
                over.update({key: str(out / rel_) for key, rel_ in zip(arm.needs, needs,
                                                                       strict=True)})
                recipe = build_recipe(arm.preset, over)
                if saved is None and not cells:  # a new study: its data loads,
                    load_data(recipe.data)  # its folds fit, before plan.json (or 10⁶ cells)
                cells.append(Cell(arm.name, seed, fold, rel, recipe,
                                  arm.cost * recipe.train.epochs, needs))
    auto_arms = frozenset(c.arm for c in cells if c.recipe.train.precision == "auto")
    pinned = None if unpinned else pin_precision([c.recipe for c in cells], precision)
    if saved is not None and not unpinned and saved["precision"] != pinned:
        raise UserError(f"{out} was planned in {saved['precision']} (on {saved.get('cpu')}) but "
                        f"would continue in {pinned} here (on {cpu_kind()}), mixing two "
                        f"precisions in one comparison; add --precision {saved['precision']} to "
                        f"continue it as planned, or give a new --out for a {pinned} study")
    return Plan(study, budget, data, seed_list, k, out, cells, command, chosen, pinned,
                (saved or {}).get("cpu") or cpu_kind(), auto_arms)


TWINS = "twins"
"""Subfolder of a study folder holding the ×2-schedule twins of its cells (``--confirm``)."""


def twin_rel(cell_rel: str) -> str:
    """Where the twin of the cell at ``cells/ARM/NAME`` lives: ``twins/ARM/NAME``."""
    _, arm, name = cell_rel.split("/")
    return f"{TWINS}/{arm}/{name}"


def twin_cells(plan: Plan, records: dict[str, dict], arms: set[str]) -> list[Cell]:
    """The ×2-schedule twins (:func:`lightship.diagnose.twin_recipe`: every length in epochs
    doubled, all else kept, the same teacher or source cell) of the finished cells of ``arms``
    whose convergence the verdict does not confirm: the convergence test that trains, for the
    cells a claim on trained nets reads."""
    from lightship.diagnose.twin import twin_recipe
    from lightship.studies.cells import cell_converged

    out = []
    for c in plan.cells:
        rec = records.get(c.rel)
        if c.arm not in arms or rec is None or rec.get("status") != "finished":
            continue
        if cell_converged(plan.out / c.rel) is True:
            continue
        rel = twin_rel(c.rel)
        twin = twin_recipe(c.recipe, 2, cell_name(c.seed, c.fold))
        twin.run.dir = str(plan.out / rel.rsplit("/", 1)[0])
        out.append(Cell(c.arm, c.seed, c.fold, rel, twin, 2 * c.units))
    return out


def pin_precision(recipes: list[Recipe], precision: str) -> str:
    """What ``train.precision: auto`` becomes in a study or lift: ``precision`` when it names
    one, else this machine's choice for the recipes' device; written into every recipe that
    says auto."""
    if precision == "auto":
        chosen = {choose_precision("auto", "auto", choose_device(r.train.device)).name
                  for r in recipes if r.train.precision == "auto"}
        if len(chosen) > 1:
            raise UserError(f"the study's cells train on devices where precision auto means "
                            f"{' or '.join(sorted(chosen))}; pin one with --precision")
        precision = chosen.pop() if chosen else choose_precision(
            "auto", "auto", choose_device("auto")).name
    for r in recipes:
        if r.train.precision == "auto":
            r.train.precision = precision  # a fresh recipe per cell, validated on set
    return precision


def _with_needs(arms: list[Arm], names: set[str]) -> list[Arm]:
    """The arms named, plus every arm they need (a teacher, a pretrained source), in study
    order."""
    by_name = {a.name: a for a in arms}
    todo = list(names)
    while todo:
        for dep in by_name[todo.pop()].needs.values():
            if dep not in names:
                names.add(dep)
                todo.append(dep)
    return [a for a in arms if a.name in names]


def _ready(cell: Cell, records: dict[str, dict]) -> bool | None:
    """True when every cell ``cell`` needs has finished, False while one is still to run, None
    when one of them failed (so this cell cannot run)."""
    for rel in cell.needs:
        rec = records.get(rel)
        if rec is None:
            return False
        if rec.get("status") != "finished":
            return None
    return True


def _blocked(cell: Cell, records: dict[str, dict]) -> dict[str, Any]:
    bad = [rel for rel in cell.needs if records.get(rel, {}).get("status") != "finished"]
    return {"arm": cell.arm, "seed": cell.seed, "fold": cell.fold, "run": cell.rel,
            "status": "failed", "error": f"not trained: {', '.join(bad)}, which it needs, failed"}


def check_cells(plan: Plan) -> None:
    """A started cell must have been made from the recipe the plan builds now."""
    check_recipes(plan.out, plan.cells)


def _init_worker(jobs: int, parent: int) -> None:
    from lightship.train.malloc import keep_freed_memory
    from lightship.train.threads import fit_threads, manage_threads

    interrupt.ignore_in_worker()  # Ctrl-C is the study's to handle: it stops the workers
    keep_freed_memory()  # a worker process only trains (lightship.train.malloc)
    manage_threads(jobs)  # cores / jobs threads at most, fewer beside other work
    fit_threads()  # the share from the start (every epoch re-fits it)

    def orphan_watch() -> None:  # a killed study must not leave workers training on
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=orphan_watch, daemon=True).start()


def _epochs_done(root: Path) -> int:
    try:  # bytes: a damaged line is the reader's to report, not the progress poller's
        text = (root / "metrics.jsonl").read_bytes()
    except OSError:
        return 0
    return text.count(b'"kind": "eval"')


class StudyProgress:
    """Cells done / total and an ETA from the work finished in this session (cells weighted by
    their expected cost); a rich bar on a terminal, one line per finished cell otherwise."""

    def __init__(self, title: str, cells: list[Cell], done: set[str], rich: bool | None,
                 quiet: bool = False, setup: str = "") -> None:
        self.cells = {c.rel: c for c in cells}
        self.done = set(done)
        self.total_units = sum(c.units for c in cells)
        self.base_units = sum(self.cells[r].units for r in self.done)
        self.partial: dict[str, float] = {}
        self.quiet = quiet
        self.rich = (sys.stderr.isatty() if rich is None else rich) and not quiet
        self.t0 = time.perf_counter()
        self.bar = None
        if not quiet:  # also with the bar (stderr): the precision is what a reader checks first
            print(f"{title}: {len(self.done)}/{len(self.cells)} cells done"
                  + (f"; {setup}" if setup else ""), flush=True)
        if self.rich:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                TextColumn("{task.fields[cells]}"), TimeElapsedColumn(),
                                TextColumn("eta {task.fields[eta]}"),
                                console=Console(stderr=True))
            self.task = self.bar.add_task(title, total=self.total_units,
                                          completed=self.base_units, cells=self._cells(),
                                          eta="…")
            self.bar.start()

    def _cells(self) -> str:
        return f"cells {len(self.done)}/{len(self.cells)}"

    def _units(self) -> float:
        return sum(self.cells[r].units for r in self.done) + sum(self.partial.values())

    def eta(self) -> str:
        gained = self._units() - self.base_units
        spent = time.perf_counter() - self.t0
        if gained <= 0 or spent < 1:
            return "…"
        left = (self.total_units - self._units()) * spent / gained
        m, s = divmod(int(round(left)), 60)
        h, m = divmod(m, 60)
        return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")

    def poll(self, running: list[Cell], out: Path) -> None:
        for c in running:
            epochs = c.recipe.train.epochs
            self.partial[c.rel] = c.units * min(_epochs_done(out / c.rel), epochs) / epochs
        self._refresh()

    def finished(self, cell: Cell, record: dict[str, Any]) -> None:
        self.done.add(cell.rel)
        self.partial.pop(cell.rel, None)
        self._refresh()
        if self.rich or self.quiet:
            return
        if record.get("status") == "finished":
            what = (f"test top-1 {record['test_top1']:.2f}%, train CE {record['train_ce']:.4f}, "
                    f"{record['wall_time_s']:.0f}s")
        else:
            what = f"failed: {record.get('error')}"
        print(f"[{len(self.done)}/{len(self.cells)}] {cell.rel}: {what}; eta {self.eta()}",
              flush=True)

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self._units(), cells=self._cells(),
                            eta=self.eta())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _spec(out: Path, cell: Cell) -> dict[str, Any]:
    return {"run_dir": str(out / cell.rel), "rel": cell.rel, "arm": cell.arm,
            "seed": cell.seed, "fold": cell.fold, "recipe": cell.recipe.to_dict()}


def check_recipes(out: Path, cells: list[Cell]) -> None:
    """A started cell must have been made from the recipe the plan builds now."""
    for cell in cells:
        root = out / cell.rel
        if (root / "recipe.yaml").exists():
            diff = recipe_differs(root, cell.recipe)
            if diff:
                raise UserError(f"{root} was trained with another recipe (key {diff}); remove "
                                "that cell folder or give another --out")


def execute(plan: Plan, jobs: int = 1, progress: bool | None = None, quiet: bool = False,
            on_record: Callable[[Cell, dict], None] | None = None, executor: str = "local",
            address: str | None = None) -> dict[str, dict]:
    """Bring every cell of ``plan`` to done; return cell records by cell path."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1")
    check_cells(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    write_json(plan.out / "plan.json", plan.to_dict())
    return run_cells(plan.out, plan.cells, jobs, f"study {plan.study.name} ({plan.budget.name})",
                     plan.setup(), progress, quiet, on_record, executor, address)


def run_cells(out: Path, cells: list[Cell], jobs: int = 1, title: str = "cells",
              setup: str = "", progress: bool | None = None, quiet: bool = False,
              on_record: Callable[[Cell, dict], None] | None = None, executor: str = "local",
              address: str | None = None) -> dict[str, dict]:
    """Bring every cell (run folders under ``out``) to done, ``jobs`` at a time (a cell starts
    after the cells it needs); return their records by cell path. The study runner's and
    ``lightship lift``'s one way to train cells. ``executor="ray"``: each cell a task on the
    Ray cluster at ``address`` (None: a local one), ``jobs`` cells per machine
    (lightship.studies.on_ray)."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1")
    on_ray.check_executor(executor, address)
    records: dict[str, dict] = {}
    todo = []
    for cell in cells:
        if cell_state(out / cell.rel) == "done":
            records[cell.rel] = json.loads((out / cell.rel / CELL_FILE).read_text())
        else:
            todo.append(cell)
    # Seed by seed, fold by fold (a study stopped early still has every arm on the same cells
    # to pair); within a fold, cells that others need (teachers) first, then longest first.
    needed = {rel for c in cells for rel in c.needs}
    todo.sort(key=lambda c: (c.seed, -1 if c.fold is None else c.fold, c.rel not in needed,
                             -c.units))
    show = StudyProgress(title, cells, set(records), progress, quiet, setup)
    running: list[Cell] = []
    stop = threading.Event()

    def poller() -> None:
        while not stop.wait(1.0):
            show.poll(list(running), out)

    watcher = threading.Thread(target=poller, daemon=True)
    watcher.start()

    def finish(cell: Cell, record: dict) -> None:
        records[cell.rel] = record
        show.finished(cell, record)
        if on_record is not None:
            on_record(cell, record)

    try:
        if executor == "ray":
            on_ray.run(out, todo, jobs, address, running, finish, records, _spec, _blocked)
        elif jobs == 1:
            while todo:  # longest ready cell first; a cell waits for the cells it needs
                cell = next((c for c in todo if _ready(c, records) is not False), None)
                if cell is None:
                    raise RuntimeError(f"cells wait on cells that never run: {todo[0].needs}")
                todo.remove(cell)
                if _ready(cell, records) is None:
                    finish(cell, _blocked(cell, records))
                    continue
                running[:] = [cell]
                finish(cell, run_cell(_spec(out, cell)))
                running.clear()
        else:
            _parallel(out, todo, jobs, running, finish, records)
    finally:
        stop.set()
        show.close()
    return records


def _parallel(out: Path, todo: list[Cell], jobs: int, running: list[Cell],
              finish: Callable[[Cell, dict], None], records: dict[str, dict]) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with interrupt.spawning():  # a queue's semaphore is registered, then given its cleanup
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                   initargs=(jobs, os.getpid()))
    futures: dict[Future, Cell] = {}
    queue = list(todo)
    ok = False
    try:
        while queue or futures:
            for cell in [c for c in queue if _ready(c, records) is None]:
                queue.remove(cell)
                finish(cell, _blocked(cell, records))
            ready = [c for c in queue if _ready(c, records)]
            while ready and len(futures) < jobs:
                cell = ready.pop(0)
                queue.remove(cell)
                with interrupt.spawning():  # a submit starts a worker when one is missing
                    futures[pool.submit(run_cell, _spec(out, cell))] = cell
                running.append(cell)
            if not futures:
                if queue and not any(_ready(c, records) is not False for c in queue):
                    raise RuntimeError(f"cells wait on cells that never run: {queue[0].needs}")
                continue
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                cell = futures.pop(fut)
                running.remove(cell)
                try:
                    record = fut.result()
                except BrokenProcessPool:  # workers killed by a SIGTERM sent to them all
                    interrupt.check()  # ... is the study's SIGTERM, not a broken pool
                    raise
                finish(cell, record)
        ok = True
    finally:
        _stop_pool(pool, now=not ok)


def _stop_pool(pool: ProcessPoolExecutor, now: bool) -> None:
    """Shut the worker pool down and wait until its processes, queues and manager thread are
    gone. ``now`` (an error, Ctrl-C, SIGTERM): end the workers first; their cells resume next
    time. Left to the interpreter's exit, the pool's semaphores were at times still registered
    when the process ended, and resource_tracker warned of them as leaked."""
    if now:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.join(10)
            if proc.is_alive():  # stuck where SIGTERM waits (a write to a slow disk)
                proc.kill()
                proc.join()
    pool.shutdown(wait=True, cancel_futures=True)


def command_line(argv: list[str] | None = None) -> str:
    return "lightship " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
