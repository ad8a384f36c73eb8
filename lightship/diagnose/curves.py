"""Convergence verdicts from a run's raw ``metrics.jsonl`` records.

:func:`verdict` reads the per-epoch ``eval`` records (and the per-step ``step`` records for the
gradient norm and for divergence) and answers one question: is this run done? The label is one
of :data:`LABELS`; every reason carries its numbers so the user can check the call.

Signals, checked in priority order (the first that fires sets the label):

1. ``diverged``: a NaN/inf loss (any step or eval record), or the train loss exploding past
   10x its initial value (``x > init + 9·|init|``, sign-safe); the initial value is the median of
   the first (up to 10) step losses of the first epoch, else the first eval's train loss.
   Explosion is judged on eval train losses and on the median of the last 10 step losses (a
   crash mid-epoch), never on one spike.
2. ``too short to judge``: fewer than 3 evaluations after the warm-up epochs.
3. ``overfitting``: the test loss has not improved for ``patience`` evaluations, has risen by more
   than the tolerance above its best, and the train loss fell over the same evaluations.
4. ``still improving``: the epoch train loss improved within the last ``patience`` evaluations;
   or the lr dropped (≥ 2x between evaluations, step schedules only) fewer than ``patience``
   evaluations ago (cool-down: the drop's effect has not played out); or the tail is flat but the
   schedule is unfinished (stopped early: ``total_epochs`` not reached, or a cosine/linear lr still
   above 5 % of the peak when ``total_epochs`` is unknown), since the decay still to come lowers
   the loss. A finished schedule (last lr ≤ 5 % of the peak, or ``total_epochs`` reached) with a
   flat tail is ``converged``.
5. ``underfitting``: the curve is flat and either (a) with a ``reference`` run (a heavier net on the
   same data): the light net's level (best train loss, or its floor when the fits agree) exceeds
   the reference's best train loss by more than ``max(0.5·|ref|, 0.02)`` (i.e. > 1.5x and
   > ref + 0.02 for positive losses) while train ≈ test (``|gap| ≤ max(0.2·|train|, 0.05)``), so
   capacity, not generalization, is the limit; or (b) without a reference, conservatively: on each
   of the last ``patience`` evaluations train top-1 < test top-1 − 5 points and train loss >
   test loss, i.e. regularization (mixup, smoothing, augmentation) holds the net back. Low
   accuracy with a flat curve and a gap near 0 is *not* called underfitting without a reference.
6. ``converged``: otherwise.

Plateau test (sign-safe): ``improved = x < best − max(atol, rtol·|best|, noise)``; ``best`` only
moves on a real improvement, so a slow steady decline still counts as improving. ``noise`` is
twice the eval-to-eval noise of the last 10 values (robust, from second differences, see
:func:`noise_level`): without it a lucky low draw on a flat but noisy curve would read as
progress. Patience is counted in evaluations (eval records), on the epoch train loss (and on the
test loss for overfitting). Warm-up epochs (``epoch ≤ ceil(warmup_epochs)``) are ignored by every
test except divergence; with ``mix_off_epochs`` the final clean-target epochs are left out of the
plateau test and the fit (their train loss drops because the targets changed).

Reported signals: the training-loss floor from :func:`fit_floor` (three curve families fitted
by least squares, bootstrap intervals, expected further drop, epochs to go; on
a step schedule only the segment after the last lr drop); the test−train gap at the end and its
trend over the last ``max(5, 2·patience)`` evaluations (rising/falling only when the change
exceeds 5 % of the test loss and the slope 2 standard errors); train/test slopes; the
gradient-norm trend (median per epoch after warm-up, same trend rule at 10 %).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightship.errors import UserError, closest

LABELS = ("converged", "still improving", "diverged", "underfitting", "overfitting",
          "too short to judge")
SCHEDULES = ("cosine", "linear", "step", "multistep", "constant")
MIN_EVALS = 3          # evaluations after warm-up needed for any judgement
MIN_FIT_POINTS = 5     # 3 parameters per family: fewer points leave the residuals meaningless
EXPLODE = 10.0         # loss above this multiple of the initial one = diverged
DROP = 2.0             # an lr ratio of at least this between evaluations = an lr drop
FINISHED_LR = 0.05     # last lr at most this fraction of the peak = the schedule has finished
BOOTS = 150
SEED = 0


@dataclass
class Verdict:
    """The outcome of :func:`verdict`: a label, reasons with numbers, and what to do next."""

    label: str
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    suggestion: str | None = None

    def one_line(self) -> str:
        """The label with its main reason, the floor and the gap, e.g. for a runs table."""
        parts = self.reasons[:1]
        floor, ci = self.numbers.get("floor"), self.numbers.get("floor_ci")
        if floor is not None and ci is not None:
            parts.append(f"floor ≈ {_loss(floor)} {_interval(*ci)}")
        if self.numbers.get("gap") is not None:
            parts.append(f"test−train gap {self.numbers['gap']:.2g} {self.numbers['gap_trend']}")
        return f"{self.label}: " + ", ".join(parts) if parts else self.label


# ---------------------------------------------------------------- loading


def load_records(run_dir: Path) -> list[dict]:
    """Read ``run_dir/metrics.jsonl``; a torn last line (a crash mid-write) is skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist; pass a run folder such as runs/<name>")
    if not (run_dir / "recipe.yaml").exists():
        raise UserError(f"{run_dir} is not a lightship run folder (no recipe.yaml); "
                        "pass a folder made by `lightship train`")
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"{path} is missing: the run has not started training; "
                        "start or resume it first")
    records = _parse_lines(path)
    if not records:
        raise UserError(f"{path} is empty: the run has not finished an epoch; "
                        "judge it after its first evaluation")
    return records


def _parse_lines(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict):
            out.append(rec)
        elif i < len(lines) - 1:  # only the last line can be torn by a crash
            raise UserError(f"{path} line {i + 1} is not a JSON record; the file is corrupt "
                            "(remove that line or re-run)")
    return out


# ---------------------------------------------------------------- the series


@dataclass
class _Series:
    """Eval records as arrays, one entry per epoch (the last record wins after a resume)."""

    epoch: np.ndarray
    train: np.ndarray
    test: np.ndarray
    lr: np.ndarray
    train_top1: np.ndarray
    test_top1: np.ndarray

    def __len__(self) -> int:
        return len(self.epoch)

    def after(self, epoch: float) -> _Series:
        keep = self.epoch > epoch
        return _Series(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def _series(records: Sequence[dict]) -> _Series:
    by_epoch = {int(r["epoch"]): r for r in records if r.get("kind") == "eval" and "epoch" in r}
    evals = [by_epoch[e] for e in sorted(by_epoch)]

    def col(key: str) -> np.ndarray:
        # a missing value (no test pass that epoch, null) is NaN; _diverged reads the raw records
        return np.array([r[key] if _finite(r.get(key)) or isinstance(r.get(key), float)
                         else math.nan for r in evals], dtype=float)

    # Knowledge-transfer runs log the CE part as train_ce: judge that, so train and test losses
    # are the same quantity (the combined objective includes KD/hint terms).
    train_key = "train_ce" if evals and all("train_ce" in r for r in evals) else "train_loss"
    return _Series(col("epoch"), col(train_key), col("test_loss"), col("lr"),
                   col("train_top1"), col("test_top1"))


def _steps(records: Sequence[dict]) -> list[dict]:
    return sorted((r for r in records if r.get("kind") == "step"), key=lambda r: r.get("step", 0))


# ---------------------------------------------------------------- plateau


def _tol(best: float, atol: float, rtol: float, noise: float = 0.0) -> float:
    return max(atol, rtol * abs(best), noise)


def improved(x: float, best: float, atol: float = 1e-3, rtol: float = 0.01,
             noise: float = 0.0) -> bool:
    """Sign-safe improvement: ``x < best − max(atol, rtol·|best|, noise)`` (works for negative
    losses, where ``best·(1 − rtol)`` would move the wrong way)."""
    return x < best - _tol(best, atol, rtol, noise)


def plateau(values: Sequence[float], atol: float = 1e-3, rtol: float = 0.01,
            noise: float = 0.0) -> tuple[int, int]:
    """Return (index of the best value, evaluations since it). ``best`` moves only on a real
    improvement, so a slow steady decline keeps improving against it."""
    best_i = 0
    for i in range(1, len(values)):
        if improved(values[i], values[best_i], atol, rtol, noise):
            best_i = i
    return best_i, len(values) - 1 - best_i


def noise_level(values: Sequence[float], window: int = 10) -> float:
    """Twice the evaluation-to-evaluation noise of the last ``window`` values (0 with fewer than
    5). Second differences cancel a locally linear trend; the MAD ignores a jump such as an lr
    drop. Without it a new low that is only a lucky draw (noise above rtol·|best|) would keep a
    flat curve "improving" forever."""
    y = np.asarray(values, dtype=float)[-window:]
    if len(y) < 5:
        return 0.0
    d2 = np.diff(y, 2)
    mad = float(np.median(np.abs(d2 - np.median(d2))))
    return 2.0 * 1.4826 * mad / math.sqrt(6.0)  # var(Δ²) = 6σ² for white noise


# ---------------------------------------------------------------- floor extrapolation


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


# ---------------------------------------------------------------- schedule


def _schedule_info(s: _Series, steps: list[dict], schedule: str | None,
                   total_epochs: int | None) -> dict[str, Any]:
    """Schedule kind (given, or inferred from the eval lr values), lr drops, and whether the run
    finished its schedule."""
    lr = s.lr[np.isfinite(s.lr)]
    step_lr = [float(r["lr"]) for r in steps if _finite(r.get("lr"))]
    lr_max = max([*lr.tolist(), *step_lr], default=math.nan)
    kind = _kind(schedule, lr)
    drops = []
    if kind == "step" and len(lr) == len(s):
        drops = [i for i in range(1, len(s)) if s.lr[i] > 0 and s.lr[i - 1] >= DROP * s.lr[i]]
    lr_frac = float(lr[-1] / lr_max) if len(lr) and lr_max > 0 else math.nan
    last_epoch = int(s.epoch[-1]) if len(s) else 0
    finished = lr_frac <= FINISHED_LR or (total_epochs is not None and last_epoch >= total_epochs)
    if kind == "constant" or finished:
        unfinished = False
    else:  # a cosine/linear lr still high, or epochs left in any non-constant schedule
        unfinished = total_epochs is not None or kind == "decay"
    return {"schedule": kind, "lr_max": lr_max, "lr_last": float(lr[-1]) if len(lr) else math.nan,
            "lr_frac": lr_frac, "drops": drops, "unfinished": unfinished}


def _kind(schedule: str | None, lr: np.ndarray) -> str:
    if schedule is not None:
        if schedule not in SCHEDULES:
            raise UserError(f"unknown schedule '{schedule}'{closest(schedule, SCHEDULES)}; "
                            f"use one of {', '.join(SCHEDULES)}")
        return {"cosine": "decay", "linear": "decay", "multistep": "step"}.get(schedule, schedule)
    prev = lr[:-1]
    if len(lr) < 2 or not np.any(prev > 0):
        return "unknown"
    ratio = lr[1:][prev > 0] / prev[prev > 0]  # a cosine may end at exactly 0
    flat = np.abs(ratio - 1) <= 0.01
    if flat.all():
        return "constant"
    return "step" if np.all(flat | (ratio <= 1 / DROP)) else "decay"


# ---------------------------------------------------------------- signals


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _diverged(s: _Series, records: Sequence[dict],
              steps: list[dict]) -> tuple[str, dict[str, Any]] | None:
    """A NaN/inf loss, or the train loss past 10x its initial value (sign-safe)."""
    for r in steps:
        if "loss" in r and not _finite(r["loss"]):
            return (f"train loss became {r['loss']} at step {r.get('step')} "
                    f"(epoch {r.get('epoch')})", {"nonfinite_step": r.get("step")})
    for r in records:
        for key in ("train_loss", "test_loss"):
            if r.get("kind") == "eval" and r.get(key) is not None and not _finite(r[key]):
                return (f"{key.replace('_', ' ')} became {r[key]} at epoch {r.get('epoch')}",
                        {"nonfinite_epoch": r.get("epoch")})
    return _exploded(s, steps)


def _exploded(s: _Series, steps: list[dict]) -> tuple[str, dict[str, Any]] | None:
    step_loss = [float(r["loss"]) for r in steps if "loss" in r]
    first = [float(r["loss"]) for r in steps if "loss" in r and r.get("epoch") == steps[0].get(
        "epoch")] if steps else []
    if first:
        init = float(np.median(first[:10]))
    elif len(s):
        init = float(s.train[0])
    else:
        return None
    scale = max(abs(init), 1e-6)
    recent = float(np.median(step_loss[-10:])) if step_loss else -np.inf
    worst = max(float(np.max(s.train)) if len(s) else -np.inf, recent)
    ratio = (worst - init) / scale + 1.0  # = worst / init for positive losses
    if ratio <= EXPLODE:
        return None
    return (f"train loss exploded to {worst:.3g}, {ratio:.3g}x its initial {init:.3g}",
            {"initial_loss": init, "explode_ratio": ratio})


def _slope(y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope per evaluation and its standard error."""
    x = np.arange(len(y), dtype=float)
    if len(y) < 2:
        return 0.0, math.inf
    slope, icpt = np.polyfit(x, y, 1)
    dof = len(y) - 2
    if dof <= 0:
        return float(slope), math.inf
    se = math.sqrt(float(np.sum((y - (slope * x + icpt)) ** 2)) / dof / np.sum((x - x.mean()) ** 2))
    return float(slope), se


def _trend(y: np.ndarray, tol: float) -> str:
    """Rising/falling only when the change over the window exceeds ``tol`` *and* the slope is
    beyond 2 standard errors (practically and statistically real); else stable."""
    slope, se = _slope(y)
    change = slope * (len(y) - 1)
    if abs(change) <= tol or abs(slope) <= 2 * se:
        return "stable"
    return "rising" if slope > 0 else "falling"


def _gap(s: _Series, k: int, atol: float) -> dict[str, Any]:
    """test − train loss at the end and its trend over the last k evaluations."""
    ok = np.isfinite(s.test)
    if not ok.any():
        return {}
    gap = (s.test - s.train)[ok][-k:]
    slope, _ = _slope(gap)
    # A trend must matter in practice too: a change of 5 % of the test loss over the window.
    tol = max(2 * atol, 0.05 * float(np.mean(np.abs(s.test[ok][-k:]))))
    return {"gap": float(gap[-1]), "gap_slope": slope, "gap_trend": _trend(gap, tol)}


def _overfit(s: _Series, opts: _Opts) -> tuple[str, dict] | None:
    """Test loss stale for ``patience`` evaluations and above its best while train loss fell."""
    atol, rtol = opts.atol, opts.rtol
    ok = np.isfinite(s.test)
    test, train, epoch = s.test[ok], s.train[ok], s.epoch[ok]
    if len(test) < MIN_EVALS:
        return None
    noise = noise_level(test)
    best_i, stale = plateau(test, atol, rtol, noise)
    rise = float(test[-1] - test[best_i])
    train_fell = improved(train[-1], train[best_i], atol, rtol, noise_level(train))
    nums = {"test_best": float(test[best_i]), "test_best_epoch": int(epoch[best_i]),
            "test_evals_since_best": stale, "test_noise": noise}
    if stale < opts.patience or rise <= _tol(test[best_i], atol, rtol, noise) or not train_fell:
        return None
    return (f"test loss rose {_loss(test[best_i])} → {_loss(test[-1])} over {stale} evaluations "
            f"since epoch {int(epoch[best_i])} while train loss fell {_loss(train[best_i])} → "
            f"{_loss(train[-1])}", nums)


def _grad_trend(steps: list[dict], after_epoch: float) -> dict[str, Any]:
    """Median gradient norm per epoch (after warm-up) and the sign of its trend."""
    per_epoch: dict[int, list[float]] = {}
    for r in steps:
        if r.get("epoch", 0) > after_epoch and _finite(r.get("grad_norm")):
            per_epoch.setdefault(int(r["epoch"]), []).append(float(r["grad_norm"]))
    med = np.array([np.median(per_epoch[e]) for e in sorted(per_epoch)])
    if len(med) < 2:
        return {}
    trend = _trend(med, 0.1 * float(np.median(med)))
    return {"grad_norm_first": float(med[0]), "grad_norm_last": float(med[-1]),
            "grad_norm_slope": _slope(med)[0], "grad_norm_trend": trend}


def _level(nums: dict[str, Any]) -> float:
    """The light run's loss level: its lowest train loss (clean-target epochs included), or its
    floor when the fits agree and it lies lower."""
    best = min(nums["train_best"], nums["train_last"])
    if nums.get("fits_agree") and nums.get("floor") is not None:
        return min(best, nums["floor"])
    return best


def _underfit_ref(nums: dict[str, Any], reference: Sequence[dict]) -> tuple[str, str] | None:
    ref = _series(reference).train
    ref = ref[np.isfinite(ref)]
    if not len(ref) or nums.get("gap") is None:
        return None
    ref_level, light = float(ref.min()), _level(nums)
    nums.update(reference_level=ref_level, light_level=light)
    close = abs(nums["gap"]) <= max(0.2 * abs(nums["train_last"]), 0.05)
    if light - ref_level <= max(0.5 * abs(ref_level), 0.02) or not close:
        return None
    reason = (f"light floor {_loss(light)} vs reference {_loss(ref_level)} with train ≈ test "
              f"(gap {nums['gap']:.2g}): underfitting by capacity")
    return reason, "try kd or rocket from the heavier reference net (or a wider light net)"


def _underfit_reg(s: _Series, opts: _Opts) -> tuple[str, str] | None:
    """Without a reference: train accuracy well below test and train loss above test loss on
    each of the last ``patience`` evaluations (regularization holds the net back)."""
    patience = opts.patience
    tail = slice(-patience, None)
    acc_gap = s.test_top1[tail] - s.train_top1[tail]
    loss_gap = s.train[tail] - s.test[tail]
    if len(acc_gap) < patience or not np.all(acc_gap > 5.0):
        return None
    if not all(g > _tol(t, opts.atol, opts.rtol)
               for g, t in zip(loss_gap, s.test[tail], strict=True)):
        return None
    reason = (f"train top-1 {s.train_top1[-1]:.1f} below test top-1 {s.test_top1[-1]:.1f} and "
              f"train loss above test loss for {patience} evaluations: regularization-bound")
    return reason, ("weaken regularization (mixup/cutmix, label smoothing, weight decay, "
                    "augmentation) or try kd / rocket from a heavier net")


# ---------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class _Opts:
    schedule: str | None
    warm: int
    total_epochs: int | None
    atol: float
    rtol: float
    patience: int
    mix_off_epochs: int


def verdict(records: list[dict], *, schedule: str | None = None, warmup_epochs: float = 0,
            total_epochs: int | None = None, reference: list[dict] | None = None,
            atol: float = 1e-3, rtol: float = 0.01, patience: int = 3,
            mix_off_epochs: int = 0) -> Verdict:
    """Judge a run's convergence from its raw metrics records (see the module docstring).

    ``schedule`` is the lr schedule name (None: inferred from the eval lr values);
    ``total_epochs`` the planned epochs (tells a finished schedule from a stopped one);
    ``reference`` a heavier net's records on the same data (enables the capacity test);
    ``mix_off_epochs`` (with ``total_epochs``) the recipe's last epochs without mixup/cutmix:
    their train loss drops because the targets became clean, not because training progressed,
    so the plateau test and the floor fit stop before them.
    """
    if patience < 1:
        raise UserError(f"patience must be at least 1 evaluation (got {patience})")
    opts = _Opts(schedule, math.ceil(warmup_epochs), total_epochs, atol, rtol, patience,
                 mix_off_epochs)
    s, steps = _series(records), _steps(records)
    div = _diverged(s, records, steps)
    if div is not None:
        return Verdict("diverged", [div[0]], div[1],
                       "lower optim.lr (e.g. ÷3) and/or set optim.grad_clip=1.0, then train again")
    judged = s.after(opts.warm)
    if len(judged) < MIN_EVALS:
        return _too_short(s, judged, opts.warm)
    nums = _describe(judged, steps, opts)
    label, head, suggestion = _decide(judged, nums, reference, opts)
    return Verdict(label, [head, *_context(nums)], nums, suggestion)


def _too_short(s: _Series, judged: _Series, warm: int) -> Verdict:
    if not len(s):
        head = "no evaluation yet: the run has not finished an epoch"
    else:
        skipped = f" after {warm} warm-up epoch(s)" if warm else ""
        head = (f"only {len(judged)} evaluation(s){skipped}; need {MIN_EVALS} to tell a "
                "plateau from noise")
    nums = {"n_evals": len(s), "n_judged": len(judged),
            "train_last": float(s.train[-1]) if len(s) else None}
    return Verdict("too short to judge", [head], nums,
                   f"train (or resume) until at least {MIN_EVALS} evaluations past warm-up "
                   f"(epoch {warm + MIN_EVALS}), then judge again")


def _mixing_end(s: _Series, opts: _Opts) -> int:
    """How many judged evaluations precede the clean-target (mix-off) epochs; all of them when
    there are none or too few would be left to judge."""
    if not opts.mix_off_epochs or opts.total_epochs is None:
        return len(s)
    end = int(np.sum(s.epoch <= opts.total_epochs - opts.mix_off_epochs))
    return end if end >= MIN_EVALS else len(s)


def _describe(s: _Series, steps: list[dict], opts: _Opts) -> dict:
    """Every number the decision and the reasons use."""
    nums = _schedule_info(s, steps, opts.schedule, opts.total_epochs)
    drops = nums["drops"]
    nums["evals_since_drop"] = len(s) - 1 - drops[-1] if drops else None
    nums["drop_epochs"] = [int(s.epoch[i]) for i in drops]
    end = _mixing_end(s, opts)
    if end < len(s):
        nums.update(mix_off_from_epoch=int(s.epoch[end]), mix_off_train_change=float(
            s.train[-1] - s.train[end - 1]))
    nums.update(_train_numbers(s.train[:end], s.epoch[:end], opts))
    nums.update(n_judged=len(s), last_epoch=int(s.epoch[-1]), train_last=float(s.train[-1]))
    # A step schedule's last segment is one smooth curve. An eval's lr is the lr *after* its
    # epoch, so the segment starts with the next evaluation.
    start = drops[-1] + 1 if drops else 0
    nums.update(_floor_numbers(s.epoch[start:end], s.train[start:end]))
    k = nums["trend_window"]
    finite_test = s.test[np.isfinite(s.test)]
    if len(finite_test) >= 2:
        nums["test_slope"] = _slope(finite_test[-k:])[0]
    nums.update(_gap(s, k, opts.atol))
    nums.update(_grad_trend(steps, opts.warm))
    return nums


def _train_numbers(train: np.ndarray, epoch: np.ndarray, opts: _Opts) -> dict[str, Any]:
    """The plateau test on the epoch train loss, with its tolerance and recent slope."""
    noise = noise_level(train)
    best_i, stale = plateau(train, opts.atol, opts.rtol, noise)
    k = min(len(train), max(5, 2 * opts.patience))
    return {"train_best": float(train[best_i]), "train_best_epoch": int(epoch[best_i]),
            "evals_since_improvement": stale, "train_noise": noise,
            "tolerance": _tol(train[best_i], opts.atol, opts.rtol, noise),
            "train_slope": _slope(train[-k:])[0], "trend_window": k,
            "train_judged_last": float(train[-1])}


def _floor_numbers(epoch: np.ndarray, train: np.ndarray) -> dict[str, Any]:
    fit = fit_floor(epoch, train)
    if fit is None:
        return {}
    out = {"fits": fit["fits"], "floor_family": fit["family"], "fits_agree": fit["agree"],
           "fit_families": fit["plausible"], "floor_identified": fit["identified"]}
    if fit["identified"]:
        out.update(floor=fit["floor"], floor_ci=fit["ci"], epochs_to_go=fit["epochs_to_go"],
                   expected_drop=max(0.0, float(train[-1]) - fit["floor"]))
    return out


def _decide(s: _Series, nums: dict, reference: list[dict] | None,
            opts: _Opts) -> tuple[str, str, str | None]:
    """(label, main reason, suggestion) by priority: overfitting > still improving >
    underfitting > converged."""
    over = _overfit(s, opts)
    if over is not None:
        nums.update(over[1])
        return ("overfitting", over[0], "add augmentation / weight decay / mixup, or stop near "
                f"epoch {over[1]['test_best_epoch']} (the best test loss)")
    busy = _still_improving(nums, opts.patience)
    if busy is not None:
        return ("still improving", *busy)
    under = _underfit_ref(nums, reference) if reference else None
    if under is None and not reference:
        under = _underfit_reg(s, opts)
    if under is not None:
        return ("underfitting", *under)
    head = (f"train loss flat for {nums['evals_since_improvement']} evaluations "
            f"(best {_loss(nums['train_best'])})")
    return "converged", head, _rising_warning(nums)


def _still_improving(nums: dict, patience: int) -> tuple[str, str] | None:
    since_drop = nums["evals_since_drop"]
    if since_drop is not None and since_drop < patience:
        return (f"lr dropped at epoch {nums['drop_epochs'][-1]}, {since_drop} evaluation(s) ago: "
                f"within the cool-down of {patience}",
                f"train at least {patience - since_drop} more epoch(s) after the lr drop")
    stale = nums["evals_since_improvement"]
    if stale < patience:
        return (f"train loss still improving (best {_loss(nums['train_best'])} at epoch "
                f"{nums['train_best_epoch']}, slope {nums['train_slope']:.2g}/evaluation)",
                _more_epochs(nums))
    if nums["unfinished"]:
        frac = nums["lr_frac"]
        lr = f" with lr at {100 * frac:.0f} % of its peak" if math.isfinite(frac) else ""
        return (f"train loss flat for {stale} evaluations but the run stopped early (epoch "
                f"{nums['last_epoch']}{lr}): the rest of the schedule usually lowers the loss",
                "resume the run to finish its schedule")
    return None


def _more_epochs(nums: dict) -> str:
    togo = nums.get("epochs_to_go")
    if togo is None:
        return (f"train more epochs (e.g. 2x): the loss still falls "
                f"{-nums['train_slope']:.3g} per evaluation with no floor in sight")
    drop = nums["expected_drop"]
    if togo <= 4 * nums["n_judged"]:
        return f"train ~{max(1, math.ceil(togo))} more epochs (expected further drop {drop:.3g})"
    return (f"train much longer (e.g. 2x the epochs): the fit expects a further drop of "
            f"{drop:.3g} but > {4 * nums['n_judged']} epochs to reach it")


def _rising_warning(nums: dict) -> str | None:
    """A flat verdict whose loss crept back up from its best: the lr is likely too high."""
    rise = nums["train_judged_last"] - nums["train_best"]
    if rise <= 5 * nums["tolerance"]:
        return None
    return f"lower the lr or add grad_clip: the train loss crept {rise:.3g} above its best"


def _context(nums: dict) -> list[str]:
    """Secondary reasons, each with its numbers."""
    out = [r for r in (_floor_reason(nums), _gap_reason(nums)) if r]
    if nums.get("mix_off_from_epoch") is not None:
        out.append(f"clean-target epochs from {nums['mix_off_from_epoch']} (no mixup/cutmix) left "
                   f"out of the plateau test and the fit (train loss change "
                   f"{nums['mix_off_train_change']:+.3g})")
    if nums.get("grad_norm_trend"):
        out.append(f"grad-norm median {nums['grad_norm_first']:.3g} → {nums['grad_norm_last']:.3g}"
                   f" (least-squares trend over all epochs: {nums['grad_norm_trend']})")
    if math.isfinite(nums.get("lr_frac", math.nan)):
        out.append(f"schedule {nums['schedule']}: last lr {100 * nums['lr_frac']:.1f} % of peak"
                   + (f", drops at epochs {nums['drop_epochs']}" if nums["drop_epochs"] else ""))
    return out


def _floor_reason(nums: dict) -> str | None:
    if "fits" not in nums:
        return f"fewer than {MIN_FIT_POINTS} evaluations to fit: no floor extrapolation"
    if nums.get("floor") is None:
        return ("no floor in sight: the curve has not started to bend (the best fit, "
                f"{nums['floor_family']}, puts its floor at its bound)")
    lo, hi = nums["floor_ci"]
    used = nums["fit_families"]
    worse = [k for k in nums["fits"] if k not in used]
    agree = ("families agree" if nums["fits_agree"] else "families disagree") + ": " + ", ".join(
        f"{k} {_loss(nums['fits'][k]['floor'])}" for k in used)
    if worse:
        agree += f"; {', '.join(worse)} fit worse"
    text = (f"floor ≈ {_loss(nums['floor'])} {_interval(lo, hi)} "
            f"({nums['floor_family']} fit; {agree}); ")
    if nums.get("lr_frac", math.nan) <= FINISHED_LR:  # the schedule ended: no more of this run
        return text + (f"a longer run of this schedule could lower it by ~"
                       f"{nums['expected_drop']:.3g} (the fit's ~{nums['epochs_to_go']:.3g} more "
                       f"epochs at the curve's pace)")
    return text + (f"expected further drop {nums['expected_drop']:.3g}, "
                   f"~{nums['epochs_to_go']:.3g} epochs to go")


def _gap_reason(nums: dict) -> str | None:
    if nums.get("gap") is None:
        return None
    return (f"test−train gap {nums['gap']:.3g} ({nums['gap_trend']}, "
            f"{nums['gap_slope']:+.2g}/evaluation)")


def _interval(lo: float, hi: float) -> str:
    """A bootstrap interval; a bound at ±inf (resampled curves that had not bent yet, so their
    floor sits at the fit's bound) reads as unbounded rather than as a number."""
    low = "unbounded" if lo == -math.inf else _loss(lo)
    high = "unbounded" if hi == math.inf else _loss(hi)
    return f"[{low}, {high}]"


def _loss(x: float) -> str:
    """A loss with enough digits to see the plateau tolerance."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3f}" if abs(x) >= 0.1 else f"{x:.4f}"
