"""Descriptive statistics of a study: mean ± std per arm, and the :class:`Paired` row a table
or figure shows for b − a (computed by :func:`lightship.judge.estimate` on the study's unit of
analysis; the verdicts are the judge's decisions, never these rows)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MeanStd:
    mean: float | None
    std: float | None
    n: int

    def text(self, fmt: str = ".2f") -> str:
        if self.mean is None:
            return "—"
        if self.std is None:
            return f"{self.mean:{fmt}}"
        return f"{self.mean:{fmt}} ± {self.std:{fmt}}"


def mean_std(values: list[float]) -> MeanStd:
    """Mean and sample standard deviation (n − 1); std is None for fewer than 2 values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return MeanStd(None, None, 0)
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    return MeanStd(statistics.fmean(vals), sd, len(vals))


@dataclass(frozen=True)
class Paired:
    """B − A over n paired cells: mean, sample sd, and the 95 % t-interval (None when n < 2)."""

    mean: float
    sd: float | None
    n: int
    lo: float | None
    hi: float | None

    @property
    def excludes_zero(self) -> bool:
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)

    @property
    def sign(self) -> int:
        """+1 / −1 when the interval lies above / below 0, else 0 (no measurable effect)."""
        if not self.excludes_zero:
            return 0
        return 1 if self.lo is not None and self.lo > 0 else -1

    def text(self, fmt: str = "+.2f") -> str:
        if self.lo is None or self.hi is None:
            return f"{self.mean:{fmt}} (n={self.n}: no interval)"
        return f"{self.mean:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"

    def to_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}
