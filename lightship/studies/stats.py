"""Statistics of a study: mean ± std per arm and paired differences with a 95 % t-interval.

Two arms of a study are compared *paired*: cell (seed, fold) of arm A and cell (seed, fold) of
arm B saw the same training images in the same order and were scored on the same test digits, so
the difference d = B − A per cell removes most of the seed-to-seed and fold-to-fold spread. The
interval is Student's t over those n differences: mean(d) ± t(0.975, n − 1) · sd(d) / √n. An
effect is called real only when the interval excludes 0.

Folds share training images, so their differences are not fully independent and the interval is
somewhat too narrow (Nadeau & Bengio 2003); treat a bound close to 0 with care.
"""

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


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired(a: list[float], b: list[float], level: float = 0.95) -> Paired:
    """Paired difference b − a (same order: element i of both is the same cell)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    if not a:
        raise ValueError("no paired cells to compare")
    d = [float(y) - float(x) for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = statistics.fmean(d)
    if n < 2:
        return Paired(mean, None, n, None, None)
    sd = statistics.stdev(d)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Paired(mean, sd, n, mean - half, mean + half)
