"""The Python API: what ``import lightship`` offers (see docs/api.md).

The CLI is a thin layer over these functions. Heavy modules (torch) are imported when a function
is called, so ``import lightship`` stays quick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightship.convergence import Confirmation
    from lightship.diagnose.result import Verdict
    from lightship.evaluate import EvalResult
    from lightship.recipe import Recipe
    from lightship.runs import RunRecords
    from lightship.train.loop import RunResult

    RecipeLike = Recipe | dict[str, Any] | str | Path | None


def make_recipe(recipe: RecipeLike = None, overrides: dict[str, Any] | None = None,
                **keyword_overrides: Any) -> Recipe:
    """A validated :class:`Recipe` from a Recipe, a dict, a preset name or a YAML path.

    Overrides are ``{"optim.lr": 0.05}`` or keywords with ``__`` for the dot
    (``optim__lr=0.05``); they apply on top of ``recipe``.
    """
    from lightship.recipe import Recipe, build_recipe

    over = {**(overrides or {}), **{k.replace("__", "."): v for k, v in keyword_overrides.items()}}
    if isinstance(recipe, Recipe):
        if not over:
            return recipe
        recipe = recipe.to_dict()
    return build_recipe(str(recipe) if isinstance(recipe, Path) else recipe, over)


def train(recipe: RecipeLike = None, *, resume: str | Path | None = None,
          overwrite: bool = False, progress: bool | None = False, quiet: bool = False,
          overrides: dict[str, Any] | None = None, **keyword_overrides: Any) -> RunResult:
    """Train a recipe's student into a run folder (``run.dir/run.name``); see :class:`RunResult`.

    ``resume`` continues a run folder from its last checkpoint with its saved recipe (no other
    arguments then). ``progress`` shows a progress bar; ``quiet`` silences the printed lines.
    """
    from lightship.train.loop import train as train_loop

    if resume is not None:
        if recipe is not None or overrides or keyword_overrides:
            from lightship.errors import UserError

            raise UserError("resume continues a run with its saved recipe; drop the recipe and "
                            "overrides (or start a new run without resume)")
        return train_loop(resume=resume, progress=progress, quiet=quiet)
    return train_loop(make_recipe(recipe, overrides, **keyword_overrides), overwrite=overwrite,
                      progress=progress, quiet=quiet)


def distill(recipe: RecipeLike = None, *, teacher: str | Path | None = None, method: str = "kd",
            booster: str | None = None, teacher_model: str | None = None,
            overrides: dict[str, Any] | None = None, **keyword_overrides: Any) -> RunResult:
    """Train a light student with a transfer method (``kd``, ``rocket+kd``, ...).

    ``teacher`` is a run folder or a lightship .safetensors file (``teacher_model`` names the
    architecture of a plain safetensors state_dict); ``booster`` is Rocket's booster net.
    Other keywords are as in :func:`train`.
    """
    over: dict[str, Any] = {"method.name": method, **(overrides or {})}
    if teacher is not None:
        key = "weights" if Path(teacher).suffix == ".safetensors" else "run"
        over[f"method.teacher.{key}"] = str(teacher)
    if booster is not None:
        over["method.booster"] = booster
    if teacher_model is not None:
        over["method.teacher.model"] = teacher_model
    run_args = {k: keyword_overrides.pop(k) for k in ("overwrite", "progress", "quiet")
                if k in keyword_overrides}
    return train(make_recipe(recipe, over, **keyword_overrides), **run_args)


def evaluate(target: str | Path, data: str | None = None, *, batch_size: int = 512,
             device: str = "auto", image_size: int | None = None, tta: bool | None = None,
             precision: str = "auto") -> EvalResult:
    """Test top-1/top-5/loss of a run folder or a weights file on ``data`` (default: its own).

    Data other than the model's own is refused when its input shape differs, unless
    ``image_size`` asks to resize it. ``tta`` (test-time augmentation) None: as the run's last
    evaluation, for a run folder and its weights file alike; ``precision`` as
    ``train.precision`` (``auto``: bf16 where the device computes it natively). The result says
    which were used (``tta``, ``precision``, ``setup``)."""
    from lightship.evaluate import evaluate_target

    return evaluate_target(target, data=data, batch_size=batch_size, device=device,
                           image_size=image_size, tta=tta, precision=precision)


def diagnose(run_dir: str | Path, reference: str | Path | None = None) -> Verdict:
    """The convergence verdict of a run folder (``reference``: a heavier net's run on the same
    data, to compare loss floors)."""
    from lightship.diagnose import judge_run
    from lightship.fileio import user_path
    from lightship.runs import read_records

    run_dir = user_path(run_dir)
    ref = read_records(user_path(reference)) if reference is not None else None
    return judge_run(run_dir, records=read_records(run_dir), reference=ref)


def confirm(run_dir: str | Path, factor: int = 2, seeds: list[int] | tuple[int, ...] = (),
            quiet: bool = True) -> Confirmation:
    """The convergence test that trains: the ×``factor``-schedule twin of a finished run (its
    own folder ``<run>-x2`` next to it; with ``seeds`` the run and twin at those seeds too),
    compared on final clean train CE. See :class:`lightship.convergence.Confirmation`."""
    from lightship.convergence import confirm as run_confirm

    return run_confirm(run_dir, factor=factor, seeds=seeds, quiet=quiet)


@dataclass
class Run:
    """A run folder read back: its recipe, its records (parsed once) and its summary."""

    path: Path
    recipe: Recipe
    records: RunRecords
    summary: dict[str, Any] | None

    @property
    def status(self) -> str:
        """``finished``, ``stopped``, or ``running`` (no summary yet, or a crash)."""
        return self.summary["status"] if self.summary else "running"

    @property
    def evals(self) -> list[dict[str, Any]]:
        return self.records.evals

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.records.steps

    @property
    def test_top1(self) -> float | None:
        """Test top-1 of the last evaluation."""
        return next((r["test_top1"] for r in reversed(self.evals) if "test_top1" in r), None)

    @property
    def train_ce(self) -> float | None:
        """The student's train CE of the last epoch (the total loss for supervised runs)."""
        last = self.evals[-1] if self.evals else {}
        return last.get("train_ce", last.get("train_loss"))

    @property
    def weights(self) -> Path | None:
        from lightship.runs import RunPaths

        path = RunPaths(self.path).weights
        return path if path.exists() else None


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder (finished, stopped or crashed): recipe, metrics and summary."""
    from lightship.fileio import user_path
    from lightship.recipe import load_saved_recipe
    from lightship.runs import RunPaths, read_records

    paths = RunPaths(user_path(run_dir))
    records = read_records(paths.root)
    summary = None
    if paths.summary.exists():
        try:
            summary = json.loads(paths.summary.read_text())
        except (json.JSONDecodeError, OSError):
            summary = None
    return Run(paths.root, load_saved_recipe(paths.recipe), records, summary)


def lift(data: str, model: str, **options: Any) -> Any:
    """The light-backbone workflow on ``data`` for the light net ``model`` within a wall-time
    budget (``lightship lift``; options as :func:`lightship.lift.core.lift`: teacher,
    teacher_model, booster, budget, methods, jobs, out, recipe, overrides, folds, executor,
    address): returns a
    ``LiftResult`` with the case, the winner (or None) and the printed lines."""
    from lightship.lift.core import lift as run_lift

    return run_lift(data, model, **options)
