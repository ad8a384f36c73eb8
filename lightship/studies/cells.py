"""One cell of a study: an ordinary run folder, trained by the normal entry point, then measured.

:func:`train_run` is the only place a study calls training, so it can be re-pointed at the public
``lightship.train`` API in one line. After training, :func:`measure_fit` evaluates the final
weights on the cell's own training images (eval mode, no augmentation): the clean training CE that
the loss-floor claims are about. The training loss the loop logs is the objective on augmented,
smoothed, mixed batches in train mode, which differs between arms that use those tricks.

``cell.json`` is written last and marks the cell done; a re-run skips done cells, resumes a cell
that has a checkpoint and starts the rest afresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightship.diagnose.result import converged_flag
from lightship.errors import UserError
from lightship.evaluate import measure_fit
from lightship.recipe import Recipe
from lightship.runs import RunPaths, write_json

CELL_FILE = "cell.json"


def train_run(recipe: Recipe | None = None, *, resume: Path | None = None) -> dict[str, Any]:
    """Train ``recipe`` into its run folder (replacing a run that never reached a checkpoint),
    or continue the run folder ``resume``; return the run's summary. Silent: the study shows
    its own progress."""
    from lightship.train.loop import train

    if resume is not None:
        return train(resume=resume, progress=False, quiet=True).summary
    return train(recipe, overwrite=True, progress=False, quiet=True).summary


def cell_state(run_dir: Path) -> str:
    """``done`` (cell.json), ``measure`` (trained, not yet measured), ``resume`` (has a
    checkpoint) or ``new`` (nothing usable: train from the start)."""
    paths = RunPaths(run_dir)
    if (run_dir / CELL_FILE).exists():
        return "done"
    if not paths.is_run():
        return "new"
    if paths.summary.exists() and paths.weights.exists():
        try:
            if json.loads(paths.summary.read_text()).get("status") == "finished":
                return "measure"
        except (OSError, json.JSONDecodeError):
            pass
    return "resume" if paths.last.exists() else "new"


def cell_converged(run_dir: Path) -> bool | None:
    """The convergence test's answer for a trained cell: its verdict's headroom numbers (or its
    label where they are missing), as :func:`lightship.diagnose.result.converged_flag` reads
    them. The judge calls a claim on cells without ``True`` "not settled: under-trained"."""
    from lightship.diagnose.judge import judge_run

    try:
        v = judge_run(run_dir)
    except (OSError, ValueError, UserError):  # a torn or pruned cell folder: not known
        return None
    return converged_flag(v.label, v.numbers)


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Bring one cell to done and return its record (also in cell.json). Runs in the study's
    process or in a worker process; ``spec`` holds the recipe as a plain dict."""
    run_dir = Path(spec["run_dir"])
    recipe = Recipe.model_validate(spec["recipe"])
    state = cell_state(run_dir)
    record = {"arm": spec["arm"], "seed": spec["seed"], "fold": spec["fold"],
              "run": spec["rel"]}
    if state == "done":
        return json.loads((run_dir / CELL_FILE).read_text())
    try:
        if state == "resume":
            summary = train_run(resume=run_dir)
        elif state == "new":
            summary = train_run(recipe)
        else:
            summary = json.loads(RunPaths(run_dir).summary.read_text())
    except UserError as exc:
        if "loss became" not in str(exc):  # only divergence is a result; the rest is input
            raise
        record.update(status="failed", error=str(exc).strip().splitlines()[-1])
        write_json(run_dir / CELL_FILE, record)
        return record
    fit = measure_fit(run_dir)
    record.update(status="finished", test_top1=summary["test_top1"],
                  test_loss=summary["test_loss"], **fit, train_loss=summary["train_loss"],
                  epochs=summary["epochs"], params=summary["params"], macs=summary["macs"],
                  verdict=summary.get("verdict"), verdict_line=summary.get("verdict_line"),
                  converged=cell_converged(run_dir),
                  wall_time_s=summary["wall_time_s"])
    write_json(run_dir / CELL_FILE, record)
    return record
