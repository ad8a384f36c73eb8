"""Floor fitting: where a training-loss curve is heading.

Three families ``y = a·g(t; b) + c`` (exponential, power, log-power) are fitted by profiling the
rate ``b`` on a grid and solving ``a, c`` by least squares, refined by a golden-section search
over ``b`` (no scipy: a training run does not pay for importing it); bootstrap resampling of the
residuals gives an interval for the floor ``c``, and the fitted curve the epochs to reach it.
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
    """Least-squares (a, b, c) within the bounds. For a fixed b the model is linear in (a, c),
    solved exactly (variable projection), so the fit is a search over b alone: the best point of
    the b grid (global, so no poor local minimum), then a golden-section search between its two
    grid neighbours. This replaced a bounded ``scipy.optimize.curve_fit`` polish from the same
    start (the same optimum to its tolerance): importing scipy.optimize cost every
    `lightship train` about 15 % of an `import torch` at the end of the run."""
    grid = fam.b_grid
    sse = _solve(fam, t, y, grid)[0]
    i = int(np.argmin(sse))
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])

    def f(x: float) -> float:
        return float(_solve(fam, t, y, np.array([math.exp(x)]))[0][0])

    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(48):  # the bracket shrinks to ~1e-10 of two grid steps
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - inv_phi * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + inv_phi * (hi - lo)
            f2 = f(x2)
    best = min((float(sse[i]), float(grid[i])), (f1, math.exp(x1)), (f2, math.exp(x2)))[1]
    _, a, c = _solve(fam, t, y, np.array([best]))
    return np.array([a[0], best, c[0]])


def _solve(fam: _Family, t: np.ndarray, y: np.ndarray,
           bs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sse, a, c) for each b in ``bs``: the least-squares a ≥ 0 and c in [_LOW, _HIGH]."""
    g = np.stack([fam.basis(t, b) for b in bs])                     # bs × n
    gc, yc = g - g.mean(axis=1, keepdims=True), y - y.mean()
    a = np.maximum(gc @ yc, 0.0) / np.maximum(np.sum(gc ** 2, axis=1), 1e-300)
    c = y.mean() - a * g.mean(axis=1)
    out = (c < _LOW[2]) | (c > _HIGH[2])  # the floor at its bound: a alone is free there
    if out.any():
        c = np.clip(c, _LOW[2], _HIGH[2])
        a_bound = np.maximum(g @ y - c * g.sum(axis=1), 0.0) / np.maximum(
            np.sum(g ** 2, axis=1), 1e-300)
        a = np.where(out, a_bound, a)
    r = y[None, :] - a[:, None] * g - c[:, None]
    return np.sum(r ** 2, axis=1), a, c


def _bootstrap_floors(fam: _Family, t: np.ndarray, params: np.ndarray, resid: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Floors refitted on fitted + resampled residuals (scaled up by √(n/(n−3)): fitted residuals
    underestimate the noise). Refits use the b-grid profile, vectorized over resamples:
    milliseconds instead of a least-squares search per resample."""
    n = len(t)
    fitted = fam.model(t, *params)
    scaled = resid * math.sqrt(n / max(n - 3, 1))
    ys = fitted[:, None] + rng.choice(scaled, size=(n, BOOTS), replace=True)
    floors = _profile(fam, t, np.column_stack([fitted, ys]))[2]
    if not math.isfinite(floors[0]):
        return floors[1:]
    # Recentre on the fitted floor by the grid's own answer for the noise-free fitted curve:
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
    pessimistic one). Each is fitted by least squares: the best b of a grid, refined (a and c
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

