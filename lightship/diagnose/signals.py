"""Signals of a training curve: the eval series, the sign-safe plateau test, the schedule, and
each symptom (divergence, overfitting, the test−train gap, gradient-norm trend, underfitting
against a reference or by regularization)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightship.diagnose.result import (
    DROP,
    EXPLODE,
    FINISHED_LR,
    HEAVIER,
    MIN_EVALS,
    SCHEDULES,
    Numbers,
    Opts,
    fmt_loss,
)
from lightship.errors import UserError, closest
from lightship.runs import RunRecords


@dataclass
class Series:
    """Eval records as arrays, one entry per epoch (the last record wins after a resume)."""

    epoch: np.ndarray
    train: np.ndarray
    test: np.ndarray
    lr: np.ndarray
    train_top1: np.ndarray
    test_top1: np.ndarray

    def __len__(self) -> int:
        return len(self.epoch)

    def after(self, epoch: float) -> Series:
        keep = self.epoch > epoch
        return Series(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def series(records: Sequence[dict]) -> Series:
    evals = RunRecords(list(records)).evals  # one record per epoch, the last one wins

    def col(key: str) -> np.ndarray:
        # a missing value (no test pass that epoch, null) is NaN; diverged reads the raw records
        return np.array([r[key] if _finite(r.get(key)) or isinstance(r.get(key), float)
                         else math.nan for r in evals], dtype=float)

    # Knowledge-transfer runs log the CE part as train_ce: judge that, so train and test losses
    # are the same quantity (the combined objective includes KD/hint terms).
    train_key = "train_ce" if evals and all("train_ce" in r for r in evals) else "train_loss"
    return Series(col("epoch"), col(train_key), col("test_loss"), col("lr"),
                   col("train_top1"), col("test_top1"))


def steps_of(records: Sequence[dict]) -> list[dict]:
    return RunRecords(list(records)).steps  # one record per step, in step order


def tol(best: float, atol: float, rtol: float, noise: float = 0.0) -> float:
    return max(atol, rtol * abs(best), noise)


def improved(x: float, best: float, atol: float = 1e-3, rtol: float = 0.01,
             noise: float = 0.0) -> bool:
    """Sign-safe improvement: ``x < best − max(atol, rtol·|best|, noise)`` (works for negative
    losses, where ``best·(1 − rtol)`` would move the wrong way)."""
    return x < best - tol(best, atol, rtol, noise)


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


def schedule_info(s: Series, steps: list[dict], schedule: str | None,
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


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def diverged(s: Series, records: Sequence[dict],
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


def _exploded(s: Series, steps: list[dict]) -> tuple[str, dict[str, Any]] | None:
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


def slope_per_eval(y: np.ndarray) -> tuple[float, float]:
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
    slope, se = slope_per_eval(y)
    change = slope * (len(y) - 1)
    if abs(change) <= tol or abs(slope) <= 2 * se:
        return "stable"
    return "rising" if slope > 0 else "falling"


def gap_numbers(s: Series, k: int, atol: float) -> dict[str, Any]:
    """test − train loss at the end and its trend over the last k evaluations."""
    ok = np.isfinite(s.test)
    if not ok.any():
        return {}
    gap = (s.test - s.train)[ok][-k:]
    slope, _ = slope_per_eval(gap)
    # A trend must matter in practice too: a change of 5 % of the test loss over the window.
    tol = max(2 * atol, 0.05 * float(np.mean(np.abs(s.test[ok][-k:]))))
    return {"gap": float(gap[-1]), "gap_slope": slope, "gap_trend": _trend(gap, tol)}


def overfit(s: Series, opts: Opts) -> tuple[str, dict] | None:
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
    if stale < opts.patience or rise <= tol(test[best_i], atol, rtol, noise) or not train_fell:
        return None
    return (f"test loss rose {fmt_loss(test[best_i])} → {fmt_loss(test[-1])} over {stale} "
            f"evaluations since epoch {int(epoch[best_i])} while train loss fell "
            f"{fmt_loss(train[best_i])} → {fmt_loss(train[-1])}", nums)


def grad_trend(steps: list[dict], after_epoch: float) -> dict[str, Any]:
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
            "grad_norm_slope": slope_per_eval(med)[0], "grad_norm_trend": trend}


def _level(nums: Numbers) -> float:
    """The light run's loss level: its lowest train loss (clean-target epochs included), or its
    floor when the fits agree and it lies lower."""
    best = min(nums.train_best, nums.train_last)
    if nums.fits_agree and nums.floor is not None:
        return min(best, nums.floor)
    return best


def params_of(records: Sequence[dict]) -> int | None:
    """The model's parameter count from a run's ``start`` record (None when not recorded)."""
    counts = [r["params"] for r in RunRecords(list(records)).starts if r.get("params")]
    return int(counts[0]) if counts else None


def underfit_by_reference(nums: Numbers, reference: Sequence[dict]) -> tuple[str, str] | None:
    ref = series(reference).train
    ref = ref[np.isfinite(ref)]
    if not len(ref) or nums.gap is None:
        return None
    ref_level, light = float(ref.min()), _level(nums)
    nums.update(reference_level=ref_level, light_level=light, reference_params=params_of(reference))
    close = abs(nums.gap) <= max(0.2 * abs(nums.train_last), 0.05)
    if light - ref_level <= max(0.5 * abs(ref_level), 0.02) or not close:
        return None
    head = (f"light floor {fmt_loss(light)} vs reference {fmt_loss(ref_level)} with train ≈ test "
            f"(gap {nums.gap:.2g})")
    n_light, n_ref = nums.light_params, nums.reference_params
    if n_light is None or n_ref is None:
        return (f"{head}: the reference fits the training data better (parameter counts not "
                "recorded, so capacity is not judged)",
                "if the reference is the heavier net, try kd or rocket from it (or a wider "
                "light net)")
    if n_ref >= HEAVIER * n_light:
        return (f"{head}: underfitting by capacity",
                "try kd or rocket from the heavier reference net (or a wider light net)")
    return (f"{head}: the reference architecture fits better at {n_ref:,} vs {n_light:,} "
            f"parameters, so the light architecture, not its size, limits it",
            "try the reference's architecture at this size, or kd from it")


def underfit_by_regularization(s: Series, opts: Opts) -> tuple[str, str] | None:
    """Without a reference: train accuracy well below test and train loss above test loss on
    each of the last ``patience`` evaluations (regularization holds the net back)."""
    patience = opts.patience
    tail = slice(-patience, None)
    acc_gap = s.test_top1[tail] - s.train_top1[tail]
    loss_gap = s.train[tail] - s.test[tail]
    if len(acc_gap) < patience or not np.all(acc_gap > 5.0):
        return None
    if not all(g > tol(t, opts.atol, opts.rtol)
               for g, t in zip(loss_gap, s.test[tail], strict=True)):
        return None
    reason = (f"train top-1 {s.train_top1[-1]:.1f} below test top-1 {s.test_top1[-1]:.1f} and "
              f"train loss above test loss for {patience} evaluations: regularization-bound")
    return reason, ("weaken regularization (mixup/cutmix, label smoothing, weight decay, "
                    "augmentation) or try kd / rocket from a heavier net")

