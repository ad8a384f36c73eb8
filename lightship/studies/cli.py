"""`lightship study NAME|list` and the study side of `lightship report STUDY_DIR`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightship import interrupt
from lightship.errors import UserError
from lightship.studies import BUDGETS, STUDIES, get_study
from lightship.studies.base import no_converged_budget
from lightship.studies.on_ray import add_executor_args, check_executor, connected
from lightship.studies.runner import Plan, command_line, execute, make_plan, read_plan, twin_cells
from lightship.train.precision import PRECISIONS


def _previous_sessions(out: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((out / "study.json").read_text()).get("sessions", []))
    except (OSError, json.JSONDecodeError, AttributeError):
        return []


def run_study(name: str, *, budget: str = "default", seeds: int | None = None,
              folds: int | None = None, jobs: int = 1, out: str | Path | None = None,
              data: str | None = None, progress: bool | None = None, quiet: bool = False,
              command: str | None = None, arms: list[str] | None = None,
              epochs: int | None = None, precision: str = "auto",
              confirm: bool | None = None, executor: str = "local", address: str | None = None):
    """Run (or continue) a study and write its outputs; return the analysis. ``data``: the
    dataset (None: the budget's own, e.g. sklearn digits or MNIST-5k). ``confirm``: train the
    ×2-schedule twin of every cell a claim on trained nets reads whose verdict does not say
    converged, and judge its convergence by the twin (None: the budget's choice). ``precision``:
    what ``train.precision: auto`` becomes in the cells (default: this machine's choice, pinned
    in plan.json; a study is not continued in another precision). ``executor="ray"``: each
    cell a Ray task on the cluster at ``address`` (None: a local one), ``jobs`` per machine."""
    from lightship.studies.analysis import session_facts, write_outputs

    study = get_study(name)
    out = Path(out) if out is not None else Path("runs") / "studies" / name
    cmd = command or (f"lightship study {name} --budget {budget}"
                      + (f" --seeds {seeds}" if seeds is not None else "")
                      + (f" --folds {folds}" if folds is not None else "")
                      + (f" --data {data}" if data is not None else "")
                      + (f" --precision {precision}" if precision != "auto" else "")
                      + f" --jobs {jobs} --out {out}"
                      + (f" --executor {executor}" if executor != "local" else "")
                      + (f" --address {address}" if address else ""))
    check_executor(executor, address)
    plan = make_plan(study, budget, seeds=seeds, folds=folds, data=data, out=out, command=cmd,
                     arms=arms, epochs=epochs, precision=precision)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    run = dict(jobs=jobs, progress=progress, quiet=quiet, executor=executor, address=address)
    with connected(executor, address):  # one Ray connection for the cells and their twins
        records = execute(plan, **run)
        if plan.budget.confirm if confirm is None else confirm:
            twins = twin_cells(plan, records, converged_arms(plan))
            if twins:
                execute(replace(plan, cells=twins), **run)
    facts = session_facts(t0, load0, jobs, executor)
    facts["sessions"] = [*_previous_sessions(out), {k: facts[k] for k in
                                                     ("wall_time_s", "load", "jobs", "cpu",
                                                      "created", "executor")}]
    return write_outputs(plan, records, facts)


def converged_arms(plan: Plan) -> set[str]:
    """The arms read by the study's claims that need converged cells."""
    from lightship.judge import leaves, unit_for

    unit = unit_for(len(plan.seeds), plan.folds)
    return {arm for claim in plan.study.claims(plan.budget, unit) for leaf in leaves(claim)
            if leaf.needs_converged for arm in leaf.arms}


def cmd_study(args: argparse.Namespace) -> int:
    if args.name == "list":
        for name, cls in STUDIES.items():
            study = cls()
            print(f"{name}: {study.title} — {study.paper}")
            for b in BUDGETS:
                if b not in study.budgets:
                    print(f"  {b}: {no_converged_budget(study.budgets['default'])}")
                    continue
                bud = study.budgets[b]
                split = f"{bud.folds} folds" if bud.folds else "own test split"
                data = f" of {bud.data}" if bud.data else " (give --data)"
                print(f"  {b}: {bud.epochs} epochs{data}, {bud.seeds} seed(s), {split}"
                      + (f"; measured: {bud.measured}" if bud.measured else "")
                      + f"; {bud.note}")
        return 0
    try:
        res = run_study(args.name, budget=args.budget, seeds=args.seeds, folds=args.folds,
                        jobs=args.jobs, out=args.out, data=args.data,
                        progress=False if args.no_progress else None,
                        command=command_line(args.argv),
                        arms=[a for a in (args.arms or "").split(",") if a] or None,
                        epochs=args.epochs, precision=args.precision, confirm=args.confirm,
                        executor=args.executor, address=args.address)
    except KeyboardInterrupt:
        print(f"lightship: {interrupt.stopped()}; run the same command again to continue the "
              "study (finished cells are kept, the interrupted one resumes)", file=sys.stderr)
        return interrupt.exit_code()
    out = res.plan.out
    print(f"study {res.study.name} ({res.budget.name}): {res.n_done}/{res.n_total} cells; "
          f"{res.plan.setup()}; {out / 'study.md'}")
    for line in json.loads((out / "study.json").read_text())["verdicts"]:
        print(f"  {line}")
    return 0


def default_budgets_text() -> str:
    """Per study: what its default budget measured (wall time, converged cells)."""
    lines = ["default and converged budgets, wall time measured with --jobs 2 on 2 CPU cores "
             "(little else running: upper bounds of the quiet time) and converged cells:"]
    for name, cls in STUDIES.items():
        budgets = cls().budgets
        lines.append(f"  {name}: {budgets['default'].measured or 'not measured yet'}")
        conv = budgets.get("converged")
        lines.append("    --budget converged: " + (conv.measured if conv else
                                                    no_converged_budget(budgets["default"])))
    return "\n".join(lines)


def add_study_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("study", help="run a seed paper's claim as a grid of arms × seeds × "
                       "folds with paired statistics (lightship study list)",
                       epilog=default_budgets_text(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help=f"{', '.join(STUDIES)}, or list")
    p.add_argument("--budget", default="default", help="quick (≤ 3 min, checks the "
                   "machinery), default (sized for ≤ 60 min on 2 quiet CPU cores with --jobs 2: "
                   "see below), converged (where the default's arms do not converge: the "
                   "default trained longer, its wall time measured), full (the paper's "
                   "setting, GPU and CIFAR)")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the budget's)")
    p.add_argument("--folds", type=int, help="stratified K-fold over all images of a built-in "
                   "dataset (default: the budget's)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained in parallel processes, "
                   "each with cores/jobs torch threads (default 1)")
    add_executor_args(p)
    p.add_argument("--out", help="study folder (default runs/studies/NAME); re-running "
                   "continues it")
    p.add_argument("--data", help="dataset (default: the budget's, as `lightship study "
                   "list` shows); a CIFAR folder for the full budget")
    p.add_argument("--arms", metavar="A,B", help="train only these arms (a targeted extra "
                   "run, e.g. more seeds for one comparison, or a study's extra arms, which "
                   "run only when named); default all")
    p.add_argument("--epochs", type=int, help="replace the budget's epochs (what the study "
                   "scales with them, warmup and milestones, follows): a targeted extra run")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="what the cells' "
                   "train.precision auto becomes (default: this machine's choice, bf16 on CPUs "
                   "with native bf16, else fp32); pinned in plan.json, and a study is not "
                   "continued in another precision")
    p.add_argument("--confirm", action=argparse.BooleanOptionalAction, default=None,
                   help="train the ×2-schedule twin of each cell whose claims need trained nets "
                   "and whose verdict does not say converged, and let the twin decide (the "
                   "convergence test that trains; default: the budget's choice)")
    p.add_argument("--no-progress", action="store_true", help="one line per cell instead of "
                   "a bar")
    p.set_defaults(func=cmd_study)
    return p


def is_study(folder: Path) -> bool:
    return (folder / "plan.json").is_file()


def plan_of(folder: Path) -> Plan:
    """The plan of an existing study folder, rebuilt from its plan.json."""
    saved = read_plan(folder)
    if saved is None:
        raise UserError(f"{folder} holds no study (no plan.json)")
    study = get_study(str(saved.get("study")))
    return make_plan(study, saved["budget"], seeds=len(saved["seeds"]), folds=saved["folds"],
                     data=saved["data"], out=folder, command=saved.get("command", ""),
                     arms=[a["name"] for a in saved.get("arms", [])] or None,
                     epochs=saved.get("epochs"), precision=saved.get("precision") or "auto")


def report_study(folder: Path, output: Path | None = None) -> list[str]:
    """Re-analyse a study folder from its cells (finished or not) and write report.html (the
    claims' scoreboard and forest plot, curves per arm, one cell per arm: studies/page.py);
    return the lines to print."""
    from lightship.studies.analysis import load_records, write_outputs
    from lightship.studies.page import write_study_page

    plan = plan_of(folder)
    records = load_records(plan)
    try:
        prev = json.loads((folder / "study.json").read_text())
    except (OSError, json.JSONDecodeError):
        prev = {}
    wall = {k: prev[k] for k in ("wall_time_s", "load", "cores", "cpu", "jobs", "executor",
                                 "created", "sessions")
            if k in prev}
    res = write_outputs(plan, records, wall)
    return [f"refreshed {folder / 'study.md'} and study.json ({res.n_done}/{res.n_total} "
            "cells)", f"wrote {write_study_page(folder, output)}"]
