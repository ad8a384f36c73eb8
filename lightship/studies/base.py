"""What a study is: arms (recipes), budgets, paired comparisons and the claims they settle.

A study is a grid of arms × seeds × folds. Every cell is an ordinary run folder trained by the
normal training entry point; a study only chooses the recipes, then reads the run folders.
Budgets: ``quick`` checks the machinery (≤ 3 minutes, numbers mean nothing), ``default`` keeps
the claim's regime at a size that fits 60 minutes on 2 quiet CPU cores with ``--jobs 2``,
``converged`` (where the default's primary arms do not converge within the hour) the default
trained long enough for them to converge, with its measured wall time, ``full`` is the paper's
own setting for a GPU and CIFAR.

A study holds no inference: its claims are :mod:`lightship.judge` values, and the judge decides
them all (agrees / contradicts / not settled, with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lightship.judge import Claim, Unit

BUDGETS = ("quick", "default", "converged", "full")
"""Every study has quick, default and full; ``converged`` only where it was sized and measured
(and not where the default converges: ``Budget.converges``)."""


def no_converged_budget(default: Budget) -> str:
    """Why a study has no ``converged`` budget (``lightship study list``, ``--help``, the
    refusal of ``--budget converged``)."""
    if default.converges:
        return "not needed: the default converges (measured)"
    return "none yet: the default's unconverged arms were not sized and measured to converge"


@dataclass(frozen=True)
class Budget:
    """A study's size: epochs, how many seeds and folds by default, and what was scaled down."""

    name: str
    epochs: int
    seeds: int
    folds: int | None
    """K of the stratified K-fold over the pooled built-in dataset; None = its own split."""
    note: str
    """What this budget keeps and what it scales down relative to the paper."""
    options: dict[str, Any] = field(default_factory=dict)
    """Study-specific knobs (depths, widths, model, batch size, data fraction)."""
    final_eval_only: bool = False
    """Evaluate on the test part only after the last epoch (quick budgets: the test pass would
    cost more than the training)."""
    data: str | None = "mnist5k"
    """The built-in dataset the budget is sized on (``--data`` replaces it); None: the user
    must give ``--data`` (the full budgets: the paper's own dataset)."""
    confirm: bool = False
    """Train the ×2-schedule twins of cells the verdict does not call converged (``--confirm``):
    for claims about loss floors, which the verdict's headroom rule cannot confirm above ~0.016
    clean train CE."""
    measured: str | None = None
    """What a quiet run of this budget measured: wall time with ``--jobs 2`` on 2 cores and
    how many of its cells converged (``lightship study list`` and ``--help`` print it)."""
    converges: bool = False
    """A default budget whose quiet run converged every cell its primary claims read (its
    ``measured`` says so): the study needs no ``converged`` budget."""
    arms: tuple[str, ...] | None = None
    """The arms this budget trains (and every arm they need); None: all of the study's.
    ``--arms`` replaces it. Claims about arms left out are reported as not run."""


def converged_budget(default: Budget, epochs: int, why: str, measured: str,
                     **changes: Any) -> Budget:
    """The ``converged`` budget: ``default`` at ``epochs`` (everything the study scales with
    the epochs follows, e.g. milestones and warm-up) and any other ``changes`` (e.g. options
    that train one arm longer), ``why`` it is sized so, ``measured`` what a quiet run of it
    measured (a converged budget is never an estimate)."""
    length = (f" at {epochs} epochs instead of {default.epochs}" if epochs != default.epochs
              else "")
    return replace(default, name="converged", epochs=epochs, measured=measured,
                   note=f"the default budget{length}: {why}", **changes)


def arm_epochs(budget: Budget, key: Any) -> tuple[int, str]:
    """An arm's epochs under the budget's ``epoch_factor`` option (arm key → a multiple of the
    budget's epochs: the arms a converged budget trains longer; the key is the study's, e.g.
    the arm's name or underfit's width), and the label suffix that says so ('' for an arm at
    the budget's epochs)."""
    factor = budget.options.get("epoch_factor", {})
    epochs = budget.epochs * factor.get(key, 1)
    return epochs, (f", {epochs} epochs" if key in factor else "")


class Results(Protocol):
    """What a study reads of its analysed cells (``lightship.studies.analysis.Analysis`` is
    one). Named here so that this module knows nothing of the analysis, which imports it."""

    budget: Budget

    def arm(self, name: str) -> Any: ...

    def diff(self, a: str, b: str, metric: str) -> Any: ...


@dataclass(frozen=True)
class Arm:
    """One recipe of the study: a preset plus dotted-key overrides."""

    name: str
    """Folder-safe name, unique in the study (cells live in cells/<name>/)."""
    label: str
    """What the tables show."""
    preset: str
    overrides: dict[str, Any]
    cost: float = 1.0
    """Relative seconds per epoch (measured per-epoch timings), for ordering cells and the ETA."""
    needs: dict[str, str] = field(default_factory=dict)
    """Recipe key → arm name: the key is set to that arm's run folder of the same seed and fold
    (e.g. ``{"method.teacher.run": "teacher"}``, ``{"model.init": "source"}``), and the cell
    starts only after that one has finished."""


@dataclass(frozen=True)
class Comparison:
    """Paired difference ``b − a`` of ``metric`` over the cells both arms share."""

    a: str
    b: str
    metric: str
    """"test_top1" (points) or "train_ce" (the clean training CE of the final weights)."""
    label: str


class Study:
    """Base class: subclasses set the class attributes and implement arms, comparisons and
    claims."""

    name: str = ""
    title: str = ""
    paper: str = ""
    """Short citation of the claims' source."""
    claim: str = ""
    metric_names: dict[str, str] = {}
    """Table names of metrics the study adds in :meth:`annotate`."""
    budgets: dict[str, Budget] = {}

    def arms(self, budget: Budget) -> list[Arm]:
        raise NotImplementedError

    def comparisons(self, budget: Budget) -> list[Comparison]:
        raise NotImplementedError

    def extra_arms(self, budget: Budget) -> list[Arm]:
        """Arms trained only when named with ``--arms`` (a targeted extra run)."""
        return []

    def claims(self, budget: Budget, unit: Unit) -> list[Claim]:
        """The paper's claims as judge values on ``unit``, fixed before any cell runs (margins
        included); claims about extra arms are exploratory. A claim whose arms the run did not
        plan is reported as not run, not judged."""
        raise NotImplementedError

    def notes(self, res: Results) -> list[str]:
        """Facts printed under the verdicts that are not claims (e.g. what the cells' start
        records say); never a verdict."""
        return []

    def plots(self, res: Results) -> dict[str, Any]:
        """Extra figures: file name → a matplotlib Figure (learning curves per arm are shared)."""
        return {}

    def annotate(self, res: Results) -> None:
        """Add per-cell numbers a study's comparisons use beyond the cell records (e.g. from
        the cells' learning curves), before the comparisons are computed."""

    def reference_arm(self, budget: Budget) -> str | None:
        """An arm whose cells serve as `diagnose --reference` for the others (heavier net)."""
        return None
