"""`lightship lift`: the light-backbone workflow on the user's data, within a wall-time budget.

1. **Plan** (nothing written until every input is checked): the light net's recipe, the
   teacher (a run folder or weights file, or an architecture the lift trains on each fold),
   the candidates that apply (:mod:`lightship.lift.arms`), each one's training step timed on
   this machine. A budget too small for even the baseline is refused with what it needs.
2. **Race** on K validation folds carved from the training split (``data.folds_of: train``:
   the test split is never read): round 1 trains every admitted arm on folds 0..2 (the budget
   admits candidates in order while the predicted time fits), then one fold per round for the
   arms still in the race; after each fold the racing rule (:mod:`lightship.lift.race`) drops
   the candidates whose interval to the leader lies below 0. A round that would not fit the
   budget (with the final runs reserved) is not started.
3. **Decide**: the diagnosis (converged? underfits against the teacher?) and the
   recommendation (Holm over every raced candidate's "beats the light net alone").
4. **Final**: the light net alone and the winner trained once on all training images and
   evaluated once on the test split; the winner (or, with none, the light net) exported.

Lift folder::

    <out>/lift.json                  options, plan, the race's decisions, results (resume state)
    <out>/cells/<arm>/s0-f<fold>/    ordinary run folders on validation folds (+ cell.json)
    <out>/final/<arm>/               the final runs on all training images
    <out>/export/                    the recommended net: model.safetensors (+ model.onnx)
    <out>/lift.md, report.html

Re-running the same command continues a lift (after Ctrl-C or kill -9): finished cells are
kept, an interrupted one resumes from its checkpoint, and decisions already taken (which arms
were admitted, dropped, which folds ran) are replayed from lift.json, so the recommendation
is the one an uninterrupted run makes. The time spent before counts against the budget.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightship.errors import UserError, closest
from lightship.fileio import user_path
from lightship.lift.arms import ORDER, LiftArm, candidate_arms, measure_steps, teacher_recipe
from lightship.lift.page import duration, unit_name, write_pages
from lightship.lift.race import LIGHT, LONGER, TEACHER, behind, diagnose, recommend
from lightship.recipe import Recipe, build_recipe
from lightship.runs import write_json
from lightship.studies.cells import cell_state
from lightship.studies.on_ray import check_executor, connected
from lightship.studies.runner import (
    Cell,
    check_recipes,
    pin_precision,
    read_folder_state,
    run_cells,
)

FORMAT = "lightship-lift-1"
FIRST_FOLDS = 3
"""Folds every admitted arm trains before the first racing decision (an interval needs 3)."""
REPEATS = 4
"""Default of --repeats: repetitions of the K-fold split the race may run while the budget
lasts (r × K-fold: each repetition reshuffles the split, data.seed + r, and trains with
train.seed + r)."""
OVERHEAD = 1.25
"""Cell time ≈ OVERHEAD × steps × step time + START_S: evaluation, the fit measurement and
the checkpoints on top of the training steps (measured on MNIST-5k and digits cells)."""
START_S = 1.0
"""Seconds a cell spends outside its steps (data, model, worker start)."""
REPORT_S = 10.0
"""Seconds the decision, the export and the pages take at the end."""


def parse_budget(text: str | float | int) -> float:
    """Seconds of a budget: ``30m``, ``90s``, ``1h``, ``1h30m``; a bare number is minutes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text) * 60
    else:
        s = str(text).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s) * 60
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
            if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([hms])", "", s).strip():
                raise UserError(f"--budget {text}: give a wall time such as 30m, 90s, 1h or "
                                "1h30m")
            seconds = sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)
    if not seconds > 0:
        raise UserError(f"--budget {text} must be more than 0")
    return seconds


@dataclass
class LiftResult:
    out: Path
    case: str
    winner: str | None
    lines: list[str]
    state: dict[str, Any] = field(repr=False, default_factory=dict)


# ------------------------------------------------------------------ planning


def _light_recipe(recipe: str, model: str, data: str, overrides: list[str]) -> Recipe:
    return build_recipe(recipe, [("model.name", model), ("data.name", data), *overrides])


def _params(net: Any) -> int:
    return sum(p.numel() for p in net.parameters())


def _fold_data_info(light: Recipe, folds: int) -> tuple[Any, int, float]:
    """Info of validation fold 0, the number of training images of the whole split, and the
    seconds an epoch spends streaming data from disk (an ImageFolder: one pass of the training
    part and one of the validation part, timed; 0 for data held in memory)."""
    from lightship.data import load_data

    cfg = light.data.model_copy(update={"folds": folds, "fold": 0, "folds_of": "train"})
    try:
        data = load_data(cfg)
    except UserError as exc:
        if "needs at least" not in str(exc):
            raise
        raise UserError(f"no validation possible on {light.data.name} with {folds} folds: "
                        f"{str(exc).split(': ', 1)[-1].split(';')[0]}; lift carves its "
                        f"validation folds from the training images, so give at least {folds} "
                        f"training images of every class (or --folds {FIRST_FOLDS})") from None
    info = data.info
    stream_s = 0.0
    if not hasattr(data, "train_eval_batches"):  # streamed from disk: time one epoch of it
        from lightship.build import build_augment

        t0 = time.perf_counter()
        for _ in data.train_batches(light.train.batch_size, 0, 0, build_augment(light, info)):
            pass
        for _ in data.test_batches(512):
            pass
        stream_s = time.perf_counter() - t0
    return info, info.n_train + info.n_test, stream_s


def _cell_seconds(arm: LiftArm, n_train: int, stream_s: float = 0.0) -> float:
    """Predicted seconds of a cell: its timed steps, the data it streams (``stream_s`` per
    epoch), the evaluations and start."""
    r = arm.recipe.train
    return (OVERHEAD * arm.step_s * math.ceil(n_train / r.batch_size) + stream_s) * r.epochs \
        + START_S


def makespan(durations: list[tuple[float, bool]], jobs: int) -> float:
    """Wall time of cells (seconds, needed-first flag) on ``jobs`` workers, in the runner's
    order (needed cells first, then longest first), each to the first free worker."""
    free = [0.0] * jobs
    for d, _ in sorted(durations, key=lambda x: (not x[1], -x[0])):
        i = free.index(min(free))
        free[i] += d
    return max(free) if durations else 0.0


class Lift:
    """One lift folder: its plan, its state (lift.json) and the steps that move it on."""

    def __init__(self, opts: dict[str, Any], out: Path, jobs: int, progress: bool | None,
                 quiet: bool, executor: str = "local", address: str | None = None) -> None:
        self.opts, self.out, self.jobs = opts, out, jobs
        self.executor, self.address = executor, address
        self.slots = jobs  # cells trained at once: jobs here, more on a Ray cluster
        self.progress, self.quiet = progress, quiet
        self.budget = parse_budget(opts["budget"])
        self.folds = int(opts["folds"])
        self.repeats = int(opts["repeats"])
        self.t0 = time.perf_counter()
        self.state: dict[str, Any] = {}
        self.spent_before = 0.0

    # -- the plan --------------------------------------------------------------

    def plan(self) -> None:
        o = self.opts
        if self.folds < FIRST_FOLDS:
            raise UserError(f"--folds {self.folds}: lift needs at least {FIRST_FOLDS} "
                            "validation folds (an interval needs 3 paired folds)")
        if self.repeats < 1:
            raise UserError(f"--repeats {self.repeats} must be at least 1")
        if o["teacher"] and o["teacher_model"]:
            raise UserError("give --teacher RUN_OR_WEIGHTS or --teacher-model NAME, not both")
        unknown = [m for m in o["methods"] or [] if m not in ORDER]
        if unknown:
            raise UserError(f"--methods: no candidate '{unknown[0]}'"
                            f"{closest(unknown[0], ORDER)}; candidates: {', '.join(ORDER)}")
        light = _light_recipe(o["recipe"], o["model"], o["data"], o["overrides"])
        self.info, self.n_train, self.stream_s = _fold_data_info(light, self.folds)
        info = self.info
        from lightship.build import build_model

        light_net = build_model(light, info.num_classes, info.in_chans, info.input_size)
        self.arms: dict[str, LiftArm] = {LIGHT: LiftArm(LIGHT, f"light alone ({light.model.name})",
                                                        "light", light)}
        teacher_keys: dict[str, Any] | None = None
        teacher_net = None
        if o["teacher_model"]:
            t_recipe = teacher_recipe(light, o["teacher_model"])
            teacher_net = build_model(t_recipe, info.num_classes, info.in_chans, info.input_size)
            self.arms[TEACHER] = LiftArm(TEACHER, f"teacher ({o['teacher_model']}, trained per "
                                         "fold)", "teacher", t_recipe)
            teacher_keys = {"method.teacher.run": str(self._cell_dir(TEACHER, 0))}
        elif o["teacher"]:
            from lightship.weights import check_fits, resolve_source

            src = resolve_source(o["teacher"], role="teacher")
            check_fits(src.meta, info, "teacher")
            teacher_net = src.build(info.num_classes, info.in_chans, info.input_size)
            key = "run" if user_path(o["teacher"]).is_dir() else "weights"
            teacher_keys = {f"method.teacher.{key}": str(user_path(o["teacher"]).resolve())}
        if teacher_net is not None:
            lp, tp = _params(light_net), _params(teacher_net)
            self.params = {"light": lp, "teacher": tp}
            if lp > tp:
                raise UserError(f"the light net {light.model.name} ({lp:,} parameters) is larger "
                                f"than its teacher ({tp:,}); give a heavier teacher or a lighter "
                                "--model")
        else:
            self.params = {"light": _params(light_net)}
        chosen = set(o["methods"] or ORDER) | {LONGER}  # the twin is the convergence test
        for arm in candidate_arms(light, teacher_keys, o["booster"]):
            if arm.name in chosen:
                self.arms[arm.name] = arm
        self.precision = pin_precision([a.recipe for a in self.arms.values()], o["precision"])
        measure_steps(list(self.arms.values()), info, teacher_net,
                      max(1, (os.cpu_count() or 1) // self.jobs))
        self.n_fold_train = info.n_train

    def unit(self, u: int) -> tuple[int, int]:
        """Repetition and fold of validation unit ``u`` (u = r·K + fold)."""
        return divmod(u, self.folds)

    def unit_name(self, u: int) -> str:
        return unit_name(u, self.folds)

    def _cell_dir(self, arm: str, u: int) -> Path:
        return self.out / "cells" / arm / self.unit_name(u)

    def cell_s(self, arm: str, final: bool = False) -> float:
        a = self.arms[arm]
        scale = self.state.get("scale", 1.0)
        n = self.n_train if final else self.n_fold_train
        return scale * _cell_seconds(a, n, self.stream_s * n / self.n_fold_train)

    def _needs_teacher(self, arms: list[str]) -> bool:
        return TEACHER in self.arms and any(self.arms[a].needs_teacher for a in arms)

    def fold_time(self, arms: list[str], folds: list[int]) -> float:
        cells = [(self.cell_s(a), a == TEACHER) for a in arms for _ in folds]
        return makespan(cells, self.slots)

    def final_time(self, candidates: list[str]) -> float:
        """The final runs in the worst case: the light net, the costliest candidate, and the
        teacher on all training images when that candidate needs it."""
        worst = max(candidates, key=lambda a: self.cell_s(a, True), default=None)
        cells = [(self.cell_s(LIGHT, True), False)]
        if worst is not None:
            cells.append((self.cell_s(worst, True), False))
            if self._needs_teacher([worst]):
                cells.append((self.cell_s(TEACHER, True), True))
        return makespan(cells, self.slots) + REPORT_S

    def spent(self) -> float:
        return self.spent_before + time.perf_counter() - self.t0

    # -- the state -------------------------------------------------------------

    def options_key(self) -> dict[str, Any]:
        o = self.opts
        return {k: o[k] for k in ("data", "model", "recipe", "overrides", "teacher",
                                  "teacher_model", "booster", "methods", "folds", "repeats",
                                  "budget")}

    def open_folder(self) -> None:
        out = self.out
        saved = read_folder_state(out, "lift.json", FORMAT, "lift", "lightship lift")
        if saved is not None:
            mine = self.options_key()
            for key, value in saved["options"].items():
                if mine.get(key) != value:
                    raise UserError(f"{out} is a lift with {key} {value!r}, not "
                                    f"{mine.get(key)!r}; re-run the same command to continue "
                                    "it, or give another --out")
            if saved["precision"] != self.precision:
                raise UserError(f"{out} was planned in {saved['precision']} (on "
                                f"{saved['cpu']}) but would continue in {self.precision} here; "
                                f"add --precision {saved['precision']} or give another --out")
            self.state = saved
            self.spent_before = float(saved.get("spent_s", 0.0))
            self.stream_s = float(saved.get("stream_s", self.stream_s))
            for name, step in saved["step_s"].items():  # the plan's timings, not new ones
                if name in self.arms:
                    self.arms[name].step_s = step
        else:
            from lightship.train.precision import cpu_kind

            self.state = {"format": FORMAT, "options": self.options_key(),
                          "command": self.opts["command"], "precision": self.precision,
                          "cpu": cpu_kind(), "jobs": self.jobs, "budget_s": self.budget,
                          "params": self.params,
                          "step_s": {n: a.step_s for n, a in self.arms.items()},
                          "stream_s": self.stream_s,
                          "not_applicable": {n: a.why_not for n, a in self.arms.items()
                                             if a.why_not},
                          "rounds": [], "dropped": {}, "not_raced": {}, "cells": {},
                          "sessions": []}
        self.state.setdefault("sessions", []).append({"started": time.strftime(
            "%Y-%m-%dT%H:%M:%S"), "jobs": self.jobs, "executor": self.executor,
            "slots": self.slots})

    def save(self) -> None:
        self.state["spent_s"] = self.spent()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "lift.json", self.state)

    # -- cells -----------------------------------------------------------------

    def _with_teacher(self, arms: list[str]) -> list[str]:
        """``arms``, led by the teacher when one of them reads the teacher the lift trains."""
        return [TEACHER, *arms] if self._needs_teacher(arms) and TEACHER not in arms else arms

    def _cell(self, arm: str, rel: str, seed: int, fold: int | None, over: dict[str, Any],
              teacher_rel: str, final: bool = False) -> Cell:
        """The cell of ``arm`` at ``rel``: its recipe with ``over``; an arm that reads a teacher
        the lift trains reads (and waits for) the teacher cell at ``teacher_rel``."""
        a = self.arms[arm]
        needs: tuple[str, ...] = ()
        if a.needs_teacher and TEACHER in self.arms:
            over = {**over, "method.teacher.run": str(self.out / teacher_rel)}
            needs = (teacher_rel,)
        return Cell(arm, seed, fold, rel, build_recipe(a.recipe.to_dict(), over),
                    self.cell_s(arm, final), needs)

    def cells_for(self, arms: list[str], folds: list[int]) -> list[Cell]:
        """The cells of ``arms`` on validation units ``folds`` (and the teacher's they read)."""
        out = []
        for arm in self._with_teacher(arms):
            a = self.arms[arm]
            for u in folds:
                r, f = self.unit(u)
                name = self.unit_name(u)
                over: dict[str, Any] = {
                    "data.folds": self.folds, "data.fold": f, "data.folds_of": "train",
                    "data.seed": a.recipe.data.seed + r, "train.seed": a.recipe.train.seed + r,
                    "run.dir": str(self.out / "cells" / arm), "run.name": name}
                out.append(self._cell(arm, f"cells/{arm}/{name}", r, f, over,
                                      f"cells/{TEACHER}/{name}"))
        return out

    def final_cells(self, arms: list[str]) -> list[Cell]:
        """The final runs of ``arms`` on all training images; the test split is evaluated once,
        at the end (``train.eval_every`` beyond the schedule)."""
        return [self._cell(arm, f"final/{arm}", 0, None,
                           {"run.dir": str(self.out / "final"), "run.name": arm,
                            "train.eval_every": 10**6}, f"final/{TEACHER}", final=True)
                for arm in dict.fromkeys(self._with_teacher(arms))]

    def train(self, cells: list[Cell], title: str) -> dict[str, dict]:
        check_recipes(self.out, cells)
        t_start = self.spent()

        def on_record(cell: Cell, record: dict) -> None:
            self.state["cells"][cell.rel] = {"arm": cell.arm, "seed": cell.seed,
                                             "fold": cell.fold,
                                             "end_s": round(self.spent(), 1),
                                             "wall_s": record.get("wall_time_s")}
            self.save()

        whole = not any(cell_state(self.out / c.rel) == "done" for c in cells)
        t = time.perf_counter()
        predicted = makespan([(c.units, c.arm == TEACHER) for c in cells], self.slots)
        records = run_cells(self.out, cells, self.jobs, title,
                            f"{duration(t_start)} of {duration(self.budget)} spent",
                            self.progress, self.quiet, on_record, self.executor, self.address)
        took = time.perf_counter() - t
        if whole and predicted > 30:  # every cell trained now: calibrate the cost model
            ratio = min(4.0, max(0.5, took / predicted))
            self.state["scale"] = self.state.get("scale", 1.0) * ratio
        self.save()
        return records

    def records(self) -> list[dict]:
        out = []
        for arm in self.arms:
            base = self.out / "cells" / arm
            for u in range(self.folds * self.repeats):
                path = base / self.unit_name(u) / "cell.json"
                if path.exists():
                    rec = json.loads(path.read_text())
                    if rec.get("status") == "finished":
                        out.append(rec)
        return out

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    # -- the steps ---------------------------------------------------------------

    def check_baseline(self) -> None:
        """Refuse a budget too small for the light net, its ×2 twin (and the teacher) on the
        first folds and the final runs (before anything is written)."""
        first = list(range(FIRST_FOLDS))
        need = self.fold_time([LIGHT, LONGER] + ([TEACHER] if TEACHER in self.arms else []),
                              first) + self.final_time([LONGER])
        if need > self.budget - self.spent():
            raise UserError(f"--budget {self.opts['budget']} is too small for even the baseline: "
                            f"the light net and its ×2-schedule twin on {FIRST_FOLDS} validation "
                            + ("folds, the teacher on each, " if TEACHER in self.arms else
                               "folds, ")
                            + f"and the final runs need about {duration(need)} here; give "
                            f"--budget {math.ceil(need * 1.1 / 60)}m or more")

    def admit(self) -> list[str]:
        """Round 1's arms: the light net, its ×2 twin (and the teacher it trains), then each
        candidate in order while round 1 and the final runs fit the budget."""
        base = [LIGHT, LONGER] + ([TEACHER] if TEACHER in self.arms else [])  # its floor
        first = list(range(FIRST_FOLDS))
        admitted = list(base)
        for name, arm in self.arms.items():
            if arm.kind != "candidate" or name in admitted:
                continue
            if arm.why_not:
                continue
            trial = admitted + [name]
            need = self.fold_time(trial, first) + self.final_time(
                [a for a in trial if a not in (LIGHT, TEACHER)])
            if need <= self.budget - self.spent():
                admitted = trial
            else:
                self.state["not_raced"][name] = (
                    f"budget: with it, round 1 and the final runs would need about "
                    f"{duration(need)} of the {duration(self.budget - self.spent())} left")
        return admitted

    def teacher_floor(self, folds: list[int]) -> list[dict]:
        """Pseudo cells of a given (not trained) teacher: its clean train CE on each fold's
        training part, measured once and kept in lift.json."""
        if TEACHER in self.arms or not (self.opts["teacher"]):
            return []
        saved = self.state.setdefault("teacher_fit", {})
        todo = [u for u in folds if str(u) not in saved]
        if todo:
            from lightship.data import load_data
            from lightship.evaluate import evaluate, train_fit
            from lightship.train.precision import choose_device, choose_precision
            from lightship.weights import resolve_source

            light = self.arms[LIGHT].recipe
            src = resolve_source(self.opts["teacher"], role="teacher")
            prec = choose_precision(self.precision, light.train.channels_last,
                                    choose_device(light.train.device))
            for u in todo:
                r, f = self.unit(u)
                data = load_data(light.data.model_copy(update={
                    "folds": self.folds, "fold": f, "folds_of": "train",
                    "seed": light.data.seed + r}))
                info = data.info
                net = src.build(info.num_classes, info.in_chans, info.input_size)
                net = net.to(prec.device, memory_format=prec.memory_format)
                data.to(prec.device)
                fit = train_fit(net, data, prec)["train_ce_clean"]
                saved[str(u)] = {"train_ce": fit, "test_top1": evaluate(net, data, prec)[
                    "test_top1"]}
            self.save()
        return [{"arm": TEACHER, "seed": r, "fold": f, **v} for u, v in saved.items()
                if int(u) in folds for r, f in [self.unit(int(u))]]

    def race(self) -> None:
        st = self.state
        if not st["rounds"]:
            st["rounds"].append({"folds": list(range(FIRST_FOLDS)), "arms": self.admit()})
            self.save()
        i = 0
        while True:
            rnd = st["rounds"][i]
            arms = list(rnd["arms"])
            self.say(f"lift round {i + 1}: {', '.join(map(self.unit_name, rnd['folds']))}, "
                     f"{len(arms)} arms ({', '.join(arms)}); {duration(self.spent())} of "
                     f"{duration(self.budget)} spent")
            self.train(self.cells_for(arms, rnd["folds"]), f"lift round {i + 1}")
            last = rnd["folds"][-1]
            if "dropped" not in rnd:
                cells = self.records()
                alive = [a for a in arms if a != TEACHER]
                drops = behind(cells, alive, self.folds) if len(alive) > 1 else {}
                rnd["dropped"] = sorted(drops)
                for name, dec in drops.items():
                    lo, hi = dec.interval or (float("nan"),) * 2
                    line = (f"behind {dec.claim.b} by {dec.estimate:+.2f} [{lo:+.2f}, {hi:+.2f}] "
                            f"points of validation top-1 (p {dec.p:.3g}, {dec.n} units)")
                    st["dropped"][name] = {"after_fold": last, "behind": dec.claim.b,
                                           "line": line}
                    self.say(f"  dropped {name}: {line}")
                self.save()
            if i + 1 < len(st["rounds"]):
                i += 1
                continue
            if "stopped" in st:
                return
            alive = [a for a in arms if a != TEACHER and a not in rnd["dropped"]]
            nxt = last + 1
            if nxt >= self.folds * self.repeats:
                st["stopped"] = (f"every unit raced ({self.repeats} repetition(s) of the "
                                 f"{self.folds}-fold split)")
            elif alive == [LIGHT]:
                st["stopped"] = "every candidate dropped"
            else:
                need = self.fold_time(alive + ([TEACHER] if self._needs_teacher(alive) else []),
                                      [nxt]) + self.final_time([a for a in alive if a != LIGHT])
                if need > self.budget - self.spent():
                    st["stopped"] = (f"budget: unit {self.unit_name(nxt)} and the final runs "
                                     "would need about "
                                     f"{duration(need)}, {duration(self.budget - self.spent())} "
                                     "left")
                else:
                    st["rounds"].append({"folds": [nxt], "arms": alive})
            self.save()
            if "stopped" in st:
                self.say(f"race stopped: {st['stopped']}")
                return
            i += 1

    def decide(self) -> None:
        st = self.state
        cells = self.records()
        raced_folds = sorted({f for r in st["rounds"] for f in r["folds"]})
        cells += self.teacher_floor(raced_folds)
        raced = [a for a in st["rounds"][0]["arms"] if a not in (LIGHT, TEACHER)]
        rec = recommend(cells, raced, self.folds)
        diag = diagnose(cells, self.folds)
        st["diagnosis"] = {"case": diag.case, "sentence": diag.sentence(), "lines": diag.lines(),
                           "converged_folds": list(diag.converged_folds),
                           "floor": diag.floor.to_dict() if diag.floor else None}
        st["claims"] = {a: d.to_dict() for a, d in rec.decisions.items()}
        st["winner"] = rec.winner
        st["validation"] = cells
        self.save()

    def final(self) -> None:
        st = self.state
        winner = st["winner"]
        arms = [LIGHT] + ([winner] if winner else [])
        st["final_arms"] = arms
        self.say(f"lift final: {' and '.join(arms)} on all {self.n_train} training images, "
                 "evaluated once on the test split")
        records = self.train(self.final_cells(arms), "lift final")
        st["final"] = {c: {k: r.get(k) for k in ("status", "test_top1", "test_loss", "train_ce",
                                                    "params", "wall_time_s", "error")}
                       for c, r in records.items()}
        chosen = self.out / "final" / (winner or LIGHT)
        from lightship.export import export_run

        (self.out / "export").mkdir(exist_ok=True)
        exported = [str(export_run(chosen, "safetensors", self.out / "export" /
                                   "model.safetensors"))]
        try:
            import onnx  # noqa: F401  (the optional extra)

            exported.append(str(export_run(chosen, "onnx", self.out / "export" / "model.onnx")))
        except ImportError:
            st["onnx"] = "not exported: the onnx extra is not installed (pip install " \
                         "'lightship[onnx]')"
        st["exported"] = exported
        self.save()


def lift(data: str, model: str, *, teacher: str | Path | None = None,
         teacher_model: str | None = None, booster: str | None = None,
         budget: str | float = "30m", methods: list[str] | None = None, jobs: int = 1,
         out: str | Path | None = None, recipe: str = "default",
         overrides: list[str] | None = None, folds: int = 5, repeats: int = REPEATS,
         precision: str = "auto",
         progress: bool | None = None, quiet: bool = False,
         command: str | None = None, executor: str = "local",
         address: str | None = None) -> LiftResult:
    """Lift the light net ``model`` on ``data`` within ``budget`` wall time: diagnose it,
    race the candidates on validation folds of the training split, recommend one only when
    its gain over the light net alone holds after Holm, train it on all training images,
    evaluate it once on the test split and export it (docs/lift.md). Re-running with the same
    arguments continues the lift in ``out``. ``executor="ray"``: cells are Ray tasks on the
    cluster at ``address`` (None: a local one; lightship.studies.on_ray)."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1")
    out = user_path(out) if out is not None else Path("runs") / "lift" / str(model)
    opts = {"data": str(data), "model": model, "recipe": str(recipe),
            "overrides": list(overrides or []), "teacher": str(teacher) if teacher else None,
            "teacher_model": teacher_model, "booster": booster,
            "methods": list(methods) if methods else None, "folds": folds, "repeats": repeats,
            "budget": str(budget), "precision": precision,
            "command": command or "lightship lift " + " ".join(shlex.quote(a)
                                                               for a in sys.argv[1:])}
    check_executor(executor, address)
    run = Lift(opts, out, jobs, progress, quiet, executor, address)
    run.plan()
    with connected(executor, address) as cluster:  # after the input checks: Ray takes seconds
        if cluster is not None:
            run.slots = cluster.slots(jobs)
        run.open_folder()
        if not run.state["rounds"]:
            run.check_baseline()
        run.save()  # every input checked: from here on the folder is written
        run.race()
        run.decide()
        if "final" not in run.state or any(v.get("status") != "finished"
                                           for v in run.state["final"].values()):
            run.final()
        run.state["wall_s"] = run.spent()
        lines = write_pages(run.out, run.state)
        run.state["wall_s"] = run.spent()
        run.save()
        for line in lines:
            run.say(line)
    return LiftResult(out, run.state["diagnosis"]["case"], run.state["winner"], lines,
                      run.state)
