"""What a verdict is: its labels and thresholds, the typed :class:`Numbers` it rests on, the
:class:`Verdict` itself, and how its numbers are printed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LABELS = ("converged", "still improving", "diverged", "underfitting", "overfitting",
          "cannot tell", "too short to judge")


SCHEDULES = ("cosine", "linear", "step", "multistep", "constant")


def converged_flag(label: str | None, numbers: Numbers | None = None) -> bool | None:
    """What a verdict says of the convergence test's question (would the ×2 schedule lower the
    clean train CE by more than the tolerance?). With the headroom numbers of a finished run
    (``numbers.twin_drop``) the answer is theirs, whatever the label: True when the expected
    drop is below the tolerance by more than ``CANNOT_TELL``, False when above it by more,
    None in between; so an ``overfitting`` run (a test-side label that takes precedence) whose
    train side has converged counts as converged. Otherwise from the label: True for
    ``converged`` and ``underfitting`` (a flat curve at a high level), False for ``still
    improving``, ``overfitting`` and ``diverged``, None where it does not say (``cannot tell``,
    ``too short to judge``, no verdict). A study's cells carry it, so the judge can refuse to
    decide a claim on under-trained cells."""
    if label == "diverged":
        return False
    if numbers is not None and numbers.twin_drop is not None and \
            numbers.drop_tolerance is not None and not numbers.unfinished:
        tol = numbers.drop_tolerance
        if numbers.twin_drop <= (1 - CANNOT_TELL) * tol:
            return True
        if numbers.twin_drop > (1 + CANNOT_TELL) * tol:
            return False
        return None
    if label in ("converged", "underfitting"):
        return True
    if label in ("still improving", "overfitting"):
        return False
    return None


MIN_EVALS = 3          # evaluations after warm-up needed for any judgement


MIN_FIT_POINTS = 5     # 3 parameters per family: fewer points leave the residuals meaningless


EXPLODE = 10.0         # loss above this multiple of the initial one = diverged


DROP = 2.0             # an lr ratio of at least this between evaluations = an lr drop


FINISHED_LR = 0.05     # last lr at most this fraction of the peak = the schedule has finished
# The convergence rule (benchmarks/convergence_truth.py; docs/results.md, "Has it converged?").
# The ground truth asks whether the ×2 schedule ends at a lower clean train CE by more than the
# tolerance max(0.01, 10 % of the CE) (lightship.diagnose.twin). No schedule takes the clean CE
# below its floor (0, or −ln(1 − ε + ε/K) under label smoothing ε with K classes), so the
# headroom H = CE − floor bounds the drop. On the tuning half of the grid (sklearn digits, 53
# (run, ×2 twin) pairs, every schedule) the twin removed a fraction ρ of H with quantiles
# 5 % 0.21, 50 % 0.55, 95 % 0.89. The verdict expects a drop of 0.55·H in [0.21·H, 0.89·H] (a
# 90 % range) and calls the run "still improving" when that expectation exceeds the tolerance
# by more than CANNOT_TELL (10 %), "converged" when it falls short of it by more than that, and
# "cannot tell" in between. (The slope of the last epochs, the rule before, called almost
# every annealed run "still improving": on an annealed schedule the loss falls to the last epoch
# by construction.)
HEADROOM_RHO = {"lo": 0.21, "mid": 0.55, "hi": 0.89}
CANNOT_TELL = 0.1
HEAVIER = 1.5
"""A reference with at least this many times the light net's parameters counts as heavier."""



@dataclass(frozen=True)
class Opts:
    """How a verdict judges: the schedule facts and the plateau test's tolerances."""

    schedule: str | None
    warm: int
    total_epochs: int | None
    atol: float
    rtol: float
    patience: int
    mix_off_epochs: int


@dataclass
class Numbers:
    """Every number a verdict is based on (None: not measured for this run)."""

    # schedule
    schedule: str | None = None            # decay, step, constant, unknown
    lr_max: float = math.nan
    lr_last: float = math.nan
    lr_frac: float = math.nan              # last lr as a fraction of the peak
    drops: list[int] = field(default_factory=list)        # eval indices after an lr drop
    drop_epochs: list[int] = field(default_factory=list)
    evals_since_drop: int | None = None
    unfinished: bool = False               # stopped before its schedule ended
    # counts
    n_evals: int | None = None
    n_judged: int | None = None
    last_epoch: int | None = None
    # train loss and the plateau test
    train_last: float | None = None
    train_judged_last: float | None = None
    train_best: float | None = None
    train_best_epoch: int | None = None
    evals_since_improvement: int | None = None
    train_noise: float | None = None
    tolerance: float | None = None
    train_slope: float | None = None
    trend_window: int | None = None
    mix_off_from_epoch: int | None = None
    mix_off_train_change: float | None = None
    # floor fit
    fits: dict[str, dict[str, Any]] | None = None
    floor_family: str | None = None
    fits_agree: bool | None = None
    fit_families: list[str] | None = None
    floor_identified: bool | None = None
    floor: float | None = None
    floor_ci: tuple[float, float] | None = None
    epochs_to_go: float | None = None
    expected_drop: float | None = None
    # the ×2 schedule's expected effect on the clean train CE (the headroom rule)
    train_ce_clean: float | None = None    # final weights on the training images, no augment
    ce_floor: float | None = None          # the least clean CE the objective allows
    headroom: float | None = None          # train_ce_clean − ce_floor
    twin_drop: float | None = None         # expected drop of the clean CE under ×2
    twin_drop_range: tuple[float, float] | None = None    # its 90 % range
    drop_tolerance: float | None = None    # a ×2 drop above this = not converged
    # test loss, gap, gradients
    test_slope: float | None = None
    gap: float | None = None
    gap_slope: float | None = None
    gap_trend: str | None = None
    test_best: float | None = None
    test_best_epoch: int | None = None
    test_evals_since_best: int | None = None
    test_noise: float | None = None
    grad_norm_first: float | None = None
    grad_norm_last: float | None = None
    grad_norm_slope: float | None = None
    grad_norm_trend: str | None = None
    # capacity against a reference run
    reference_level: float | None = None
    light_level: float | None = None
    light_params: int | None = None        # from the runs' start records
    reference_params: int | None = None
    # divergence
    nonfinite_step: int | None = None
    nonfinite_epoch: int | None = None
    initial_loss: float | None = None
    explode_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The numbers as plain JSON-ready values."""
        return asdict(self)

    def update(self, values: dict[str, Any] | None = None, **more: Any) -> None:
        """Set measured numbers; an unknown name is an error (the fields are the schema)."""
        for key, value in {**(values or {}), **more}.items():
            if key not in self.__dataclass_fields__:
                raise KeyError(f"Numbers has no field {key!r}")
            setattr(self, key, value)


@dataclass
class Verdict:
    """The outcome of :func:`verdict`: a label, reasons with numbers, and what to do next."""

    label: str
    reasons: list[str] = field(default_factory=list)
    numbers: Numbers = field(default_factory=Numbers)
    suggestion: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.numbers, dict):  # Verdict(label, reasons, {"floor": ...})
            self.numbers = Numbers(**self.numbers)

    def one_line(self) -> str:
        """The label with its main reason, the floor and the gap, e.g. for a runs table."""
        parts = self.reasons[:1]
        floor, ci = self.numbers.floor, self.numbers.floor_ci
        if self.numbers.twin_drop is None and floor is not None and ci is not None:
            parts.append(f"floor ≈ {fmt_loss(floor)} {fmt_interval(*ci)}")
        if self.numbers.gap is not None:
            parts.append(f"test−train gap {self.numbers.gap:.2g} {self.numbers.gap_trend}")
        return f"{self.label}: " + ", ".join(parts) if parts else self.label


def fmt_interval(lo: float, hi: float) -> str:
    """A bootstrap interval; a bound at ±inf (resampled curves that had not bent yet, so their
    floor sits at the fit's bound) reads as unbounded rather than as a number."""
    low = "unbounded" if lo == -math.inf else fmt_loss(lo)
    high = "unbounded" if hi == math.inf else fmt_loss(hi)
    return f"[{low}, {high}]"


def fmt_loss(x: float) -> str:
    """A loss with enough digits to see the plateau tolerance."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3f}" if abs(x) >= 0.1 else f"{x:.4f}"

