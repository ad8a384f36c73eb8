"""The ×k-schedule twin of a recipe: the convergence test's counterfactual.

"Would a longer schedule of the same recipe end at a lower training loss?" has a ground truth:
train the same recipe, seed and data with every length in the schedule multiplied by ``k`` and
compare the final clean training CE. :func:`twin_recipe` is the one place that says what
"the same recipe, k times longer" means; the benchmark (benchmarks/convergence_truth.py) and
``lightship diagnose --confirm`` both use it.
"""

from __future__ import annotations

from lightship.errors import UserError
from lightship.recipe import Recipe

# The ground truth's tolerance (fixed before any verdict was scored against it): a ×2 schedule
# that lowers the final clean train CE by more than 0.01 nats *and* by more than 10 % of the
# run's own CE means the run had not converged. 0.01 nats is about the seed-to-seed spread of a
# converged MNIST-5k net's clean CE; 10 % keeps high-loss runs (label smoothing, tiny nets) from
# being called unconverged for a drop that is small against their level.
TWIN_ATOL = 0.01
TWIN_RTOL = 0.10


def twin_tolerance(ce: float) -> float:
    """The drop of the clean train CE under the ×2 schedule above which a run has not
    converged."""
    return max(TWIN_ATOL, TWIN_RTOL * abs(ce))


def twin_recipe(recipe: Recipe, factor: int = 2, name: str | None = None) -> Recipe:
    """``recipe`` with its schedule stretched ``factor`` times.

    Every length measured in epochs scales: ``train.epochs``, ``schedule.warmup_epochs``,
    ``schedule.step_epochs``, explicit ``schedule.milestones``, ``augment.mix_off_epochs`` and
    ``method.dkd_warmup``. So the learning rate at a fraction f of training is the same in both
    runs; only the number of steps spent at it changes. Milestones left at None are already
    relative (50 % / 75 %). Evaluation and checkpoint intervals stay per epoch, so the twin's
    curve can be judged by the verdict as any run is. Everything else (seed, data, batch
    size, peak lr, model) stays, so the twin is paired with the run.
    ``name`` sets ``run.name`` (default: the run's name + ``-x{factor}``).
    """
    if not isinstance(factor, int) or factor < 2:
        raise UserError(f"the twin's schedule factor must be an integer ≥ 2 (got {factor!r})")
    tree = recipe.to_dict()
    s, t = tree["schedule"], tree["train"]
    t["epochs"] *= factor
    s["warmup_epochs"] *= factor
    s["step_epochs"] *= factor
    if s.get("milestones") is not None:
        s["milestones"] = [m * factor for m in s["milestones"]]
    tree["augment"]["mix_off_epochs"] *= factor
    tree["method"]["dkd_warmup"] *= factor
    base = recipe.run.name or "run"
    tree["run"]["name"] = name or f"{base}-x{factor}"
    return Recipe.model_validate(tree)
