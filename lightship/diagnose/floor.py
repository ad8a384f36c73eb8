"""Floor fitting: where a training-loss curve is heading.

Three families ``y = a·g(t; b) + c`` (exponential, power, log-power) are fitted by profiling the
rate ``b`` on a grid and solving ``a, c`` by least squares, refined with
``scipy.optimize.curve_fit``; bootstrap resampling of the residuals gives an interval for the
floor ``c``, and the fitted curve the epochs to reach it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightship.diagnose.result import MIN_FIT_POINTS

BOOTS = 150


SEED = 0



@dataclass(frozen=True)
class _Family:
    """``y = a·g(t; b) + c`` with g decreasing to 0: linear in (a, c) for a fixed b."""

    name: str
    basis: Callable[[np.ndarray, float], np.ndarray]
    log_inner: Callable[[np.ndarray], np.ndarray]  # g = exp(−b·log_inner(t)): ∂g/∂b = −g·that
    b_grid: np.ndarray
    reach: Callable[[float, float], float]  # t at which a·g(t; b) == threshold (a > threshold)

    def model(self, t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a * self.basis(t, b) + c

    def jacobian(self, t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        """Analytic derivatives: several times fewer model calls than finite differences."""
        g = self.basis(t, b)
        return np.column_stack([g, -a * g * self.log_inner(t), np.ones_like(t)])


def _exp_reach(ratio: float, b: float) -> float:
    return math.log(ratio) / b


def _power_reach(ratio: float, b: float) -> float:
    return math.exp(min(math.log(ratio) / b, 700.0))


def _logpow_reach(ratio: float, b: float) -> float:
    return math.exp(min(_power_reach(ratio, b), 700.0)) - 1.0


_B_GRID = np.geomspace(1e-4, 50.0, 1000)  # 1.3 % steps


FAMILIES = (
    _Family("exp", lambda t, b: np.exp(-b * t), lambda t: t, _B_GRID,
            _exp_reach),
    _Family("power", lambda t, b: t ** (-b), np.log, _B_GRID, _power_reach),
    _Family("logpow", lambda t, b: np.log1p(t) ** (-b), lambda t: np.log(np.log1p(t)),
            _B_GRID, _logpow_reach),
)


_LOW = (0.0, 1e-4, -20.0)   # in normalized units (y − min) / range: a floor ≤ 20 ranges below


_HIGH = (np.inf, 50.0, 2.0)


def _profile(fam: _Family, t: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) for each column of ``ys`` over the family's b grid, with a ≥ 0
    and c solved exactly for every b (variable projection), all columns at once. Returns a
    3 × columns array; a floor below the bound (curve not bent yet) comes back as −inf."""
    g = np.stack([fam.basis(t, b) for b in fam.b_grid])            # grid × n
    gc = g - g.mean(axis=1, keepdims=True)
    sgg = np.maximum(np.sum(gc ** 2, axis=1), 1e-300)[:, None]     # grid × 1
    yc = ys - ys.mean(axis=0)
    sgy = gc @ yc                                                   # grid × columns
    gain = np.where(sgy > 0, sgy ** 2 / sgg, 0.0)                   # SSE drop; a ≥ 0 only
    pick = np.argmax(gain, axis=0)
    cols = np.arange(ys.shape[1])
    a = np.maximum(sgy[pick, cols], 0.0) / sgg[pick, 0]
    c = ys.mean(axis=0) - a * g[pick].mean(axis=1)
    return np.stack([a, fam.b_grid[pick], np.where(c < _LOW[2], -np.inf, c)])


def _fit(fam: _Family, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """curve_fit (bounded) from the profile's global start, so it cannot land in a poor local
    minimum; a failed polish keeps the start."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    start = _profile(fam, t, y[:, None])[:, 0]
    start = np.clip(np.nan_to_num(start, neginf=_LOW[2]), np.array(_LOW) + 1e-9,
                    np.array(_HIGH) - 1e-9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(fam.model, t, y, p0=start, jac=fam.jacobian,
                                  bounds=(_LOW, _HIGH))
    except (RuntimeError, ValueError):
        return start
    return params


def _bootstrap_floors(fam: _Family, t: np.ndarray, params: np.ndarray, resid: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Floors refitted on fitted + resampled residuals (scaled up by √(n/(n−3)): fitted residuals
    underestimate the noise). Refits use the b-grid profile, vectorized over resamples:
    milliseconds instead of a curve_fit call per resample."""
    n = len(t)
    fitted = fam.model(t, *params)
    scaled = resid * math.sqrt(n / max(n - 3, 1))
    ys = fitted[:, None] + rng.choice(scaled, size=(n, BOOTS), replace=True)
    floors = _profile(fam, t, np.column_stack([fitted, ys]))[2]
    if not math.isfinite(floors[0]):
        return floors[1:]
    # Recentre on curve_fit's floor by the grid's own answer for the noise-free fitted curve:
    # c and b are strongly correlated, and this cancels the grid's discretization of b.
    return floors[1:] - floors[0] + params[2]


def _fit_family(fam: _Family, t: np.ndarray, y: np.ndarray, lo: float, span: float,
                t_last: float) -> dict[str, Any]:
    yn = (y - lo) / span
    params = _fit(fam, t, yn)
    resid = yn - fam.model(t, *params)
    floors = _bootstrap_floors(fam, t, params, resid, np.random.default_rng(SEED))
    ci = np.quantile(floors, [0.025, 0.975], method="lower")
    a, b, c = (float(p) for p in params)
    return {"floor": lo + span * c, "identified": c > _LOW[2] + 0.1,
            "ci": [float(lo + span * ci[0]), float(lo + span * ci[1])],
            "rmse": span * float(np.sqrt(np.mean(resid ** 2))),
            "params": {"a": a * span, "b": b, "c": lo + span * c},
            "epochs_to_go": _epochs_to_go(fam, a, b, t_last)}


def _epochs_to_go(fam: _Family, a: float, b: float, t_last: float) -> float:
    """Epochs until the fitted curve is within 1 % of the loss range of its floor (inf past a
    million: that family sees no floor within any practical run)."""
    if a <= 0.01:
        return 0.0
    togo = max(0.0, fam.reach(a / 0.01, b) - t_last)
    return togo if togo <= 1e6 else math.inf


def fit_floor(epochs: Sequence[float], losses: Sequence[float]) -> dict[str, Any] | None:
    """Extrapolate the floor of a decreasing loss curve; None with fewer than 5 points.

    Families (``t`` = epochs since the window start, from 1): exponential ``a·exp(−b·t)+c``,
    power law ``a·t^(−b)+c`` and log-power ``a·ln(1+t)^(−b)+c`` (slower than any power: the
    pessimistic one). Each is fitted by ``curve_fit`` from the best start on a grid of b (a and c
    solved exactly there), on losses normalized by their range. Its floor ``c`` gets a 95 %
    bootstrap interval (150 resamples of the scaled residuals, seeded: deterministic). The
    families *agree* when each plausible family's floor (rmse ≤ 2x the best + 1 % of the range)
    lies in every other's interval, or all lie within 10 % of the loss range. The reported floor
    is the best-fitting family's; a floor pinned at the fit's bound (20 ranges below the lowest
    loss: the curve has not bent yet) is *not identified*, and identified floors are needed to
    agree.
    """
    t = np.asarray(epochs, dtype=float)
    y = np.asarray(losses, dtype=float)
    if len(y) < MIN_FIT_POINTS:
        return None
    t = t - t[0] + 1.0
    lo, span = float(y.min()), float(y.max() - y.min())
    if span <= 0:
        span = max(abs(lo), 1.0) * 1e-6  # a perfectly flat curve: its floor is its value
    fits = {fam.name: _fit_family(fam, t, y, lo, span, float(t[-1])) for fam in FAMILIES}
    best = min(fits, key=lambda k: fits[k]["rmse"])
    plausible = [k for k, f in fits.items() if f["rmse"] <= 2 * fits[best]["rmse"] + 0.01 * span]
    return {"fits": fits, "family": best, "floor": fits[best]["floor"], "ci": fits[best]["ci"],
            "identified": fits[best]["identified"], "plausible": plausible,
            "agree": _agree([fits[k] for k in plausible], span), "range": span,
            "epochs_to_go": fits[best]["epochs_to_go"]}


def _agree(fits: list[dict[str, Any]], span: float) -> bool:
    if not all(f["identified"] for f in fits):
        return False
    floors = [f["floor"] for f in fits]
    if max(floors) - min(floors) <= 0.1 * span:
        return True
    return all(f["ci"][0] <= g["floor"] <= f["ci"][1] for f in fits for g in fits)

