"""The convergence test that trains: a finished run against its ×2-schedule twin.

When a run's curve cannot settle whether it has converged (the verdict says "cannot tell"), or
when a study must know, :func:`confirm` answers the counterfactual directly: it trains the same
recipe, seed and data with the schedule ×``factor`` (:func:`lightship.diagnose.twin_recipe`)
into its own run folder next to the run (``<run>-x2``), measures both final models' clean
training CE (:func:`lightship.evaluate.measure_fit`) and compares them with the ground truth's
tolerance (:func:`lightship.diagnose.twin.twin_tolerance`). With ``seeds`` it also trains the
run and its twin at those seeds (``<run>-s1``, ``<run>-s1-x2``) and gives the mean difference a
paired t interval over seeds. Twins already trained are reused; a stopped one is resumed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from lightship.diagnose.twin import twin_recipe, twin_tolerance
from lightship.errors import UserError
from lightship.fileio import user_path
from lightship.recipe import Recipe, load_saved_recipe, recipe_differs
from lightship.runs import RunPaths, run_finished


@dataclass
class Confirmation:
    """What :func:`confirm` measured: per seed (run CE, twin CE, run folders), and the answer."""

    factor: int
    seeds: list[int]
    ce: list[float]
    ce_twin: list[float]
    runs: list[Path]
    twins: list[Path]
    tolerance: float
    label: str                      # "converged", "not converged" or "cannot tell"
    drop: float                     # mean of ce − ce_twin over seeds
    interval: tuple[float, float] | None = None   # 95 % paired t interval (≥ 2 seeds)

    def one_line(self) -> str:
        ci = (f" [{self.interval[0]:+.4f}, {self.interval[1]:+.4f}] over {len(self.seeds)} "
              "seeds" if self.interval else "")
        mean, twin = statistics.fmean(self.ce), statistics.fmean(self.ce_twin)
        ce = (f"clean train CE {mean:.4f} → {twin:.4f}"
              + (" (means)" if len(self.ce) > 1 else ""))
        return (f"{self.label}: ×{self.factor} schedule {ce}, drop {self.drop:+.4f}{ci} "
                f"(tolerance {self.tolerance:.4f})")


def _ensure(recipe: Recipe, quiet: bool) -> Path:
    """Train ``recipe`` into its folder unless it finished there already (resume a stopped
    one; a folder holding another recipe is refused, never overwritten)."""
    from lightship.train.loop import train

    paths = RunPaths(user_path(recipe.run.dir) / str(recipe.run.name))
    if paths.is_run():
        diff = recipe_differs(paths.root, recipe)
        if diff:
            raise UserError(f"{paths.root} exists with another recipe ({diff}); move it away or "
                            "pick another folder for the twin (nothing was overwritten)")
        if run_finished(paths, recipe.train.epochs):
            return paths.root
        if paths.last.exists():
            return train(resume=paths.root, progress=False, quiet=quiet).run_dir
    return train(recipe, overwrite=True, progress=False, quiet=quiet).run_dir


def confirm(run_dir: str | Path, factor: int = 2, seeds: list[int] | tuple[int, ...] = (),
            quiet: bool = True) -> Confirmation:
    """Train the ×``factor`` twin of a finished run (and, with ``seeds``, the run and its twin
    at those seeds) and compare their final clean training CE.

    The answer for one seed is "not converged" when the twin's CE is lower by more than the
    tolerance, else "converged". With seeds, the paired t interval of the mean drop decides:
    above the tolerance → "not converged"; below it → "converged"; straddling → "cannot tell".
    """
    from lightship.evaluate import measure_fit

    paths = RunPaths(user_path(run_dir))
    if not paths.is_run():
        raise UserError(f"{run_dir}: not a lightship run folder (no recipe.yaml)")
    if not paths.weights.exists():
        raise UserError(f"{run_dir} has not finished (no weights.safetensors); finish it with "
                        "--resume first, then confirm")
    recipe = load_saved_recipe(paths.recipe)
    parent, name = paths.root.parent, paths.root.name
    base = recipe.model_copy(update={"run": recipe.run.model_copy(
        update={"dir": str(parent), "name": name})})
    seed0 = recipe.train.seed
    all_seeds = [seed0, *[s for s in seeds if s != seed0]]
    runs, twins = [], []
    for s in all_seeds:
        if s == seed0:
            runs.append(paths.root)
            run_recipe = base
        else:
            tree = base.to_dict()
            tree["train"]["seed"] = s
            tree["run"]["name"] = f"{name}-s{s}"
            run_recipe = Recipe.model_validate(tree)
            runs.append(_ensure(run_recipe, quiet))
        twins.append(_ensure(twin_recipe(run_recipe, factor), quiet))
    ce = [measure_fit(r)["train_ce"] for r in runs]
    ce_twin = [measure_fit(t)["train_ce"] for t in twins]
    drops = [a - b for a, b in zip(ce, ce_twin, strict=True)]
    drop = statistics.fmean(drops)
    tol = twin_tolerance(statistics.fmean(ce))
    interval = _t_interval(drops) if len(drops) >= 2 else None
    if interval is None:
        label = "not converged" if drop > tol else "converged"
    elif interval[0] > tol:
        label = "not converged"
    elif interval[1] < tol:
        label = "converged"
    else:
        label = "cannot tell"
    return Confirmation(factor, all_seeds, ce, ce_twin, runs, twins, tol, label, drop, interval)


def _t_interval(x: list[float]) -> tuple[float, float]:
    """The 95 % paired t interval of the mean of ``x`` (the per-seed drops)."""
    from scipy import stats

    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=statistics.fmean(x), scale=stats.sem(x))
    return float(lo), float(hi)
