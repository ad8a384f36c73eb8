"""The wording of a verdict: its secondary reasons and suggestions, each with its numbers."""

from __future__ import annotations

import math

from lightship.diagnose.result import (
    FINISHED_LR,
    MIN_FIT_POINTS,
    Numbers,
    fmt_interval,
    fmt_loss,
)


def more_epochs(nums: Numbers) -> str:
    togo = nums.epochs_to_go
    if togo is None:
        return (f"train more epochs (e.g. 2x): the loss still falls "
                f"{-nums.train_slope:.3g} per evaluation with no floor in sight")
    drop = nums.expected_drop
    if togo <= 4 * nums.n_judged:
        return f"train ~{max(1, math.ceil(togo))} more epochs (expected further drop {drop:.3g})"
    return (f"train much longer (e.g. 2x the epochs): the fit expects a further drop of "
            f"{drop:.3g} but > {4 * nums.n_judged} epochs to reach it")


def rising_warning(nums: Numbers) -> str | None:
    """A flat verdict whose loss crept back up from its best: the lr is likely too high."""
    rise = nums.train_judged_last - nums.train_best
    if rise <= 5 * nums.tolerance:
        return None
    return f"lower the lr or add grad_clip: the train loss crept {rise:.3g} above its best"


def context(nums: Numbers) -> list[str]:
    """Secondary reasons, each with its numbers. The floor fit of the logged loss is left out
    when the clean fit answered: its interval held the ×2 twin's final loss on 13-27 % of the
    grid (benchmarks/convergence_truth.py), far from its nominal 95 %."""
    floor = _floor_reason(nums) if nums.twin_drop is None else None
    out = [r for r in (floor, _gap_reason(nums)) if r]
    if nums.mix_off_from_epoch is not None:
        out.append(f"clean-target epochs from {nums.mix_off_from_epoch} (no mixup/cutmix) left "
                   f"out of the plateau test and the fit (train loss change "
                   f"{nums.mix_off_train_change:+.3g})")
    if nums.grad_norm_trend:
        out.append(f"grad-norm median {nums.grad_norm_first:.3g} → {nums.grad_norm_last:.3g}"
                   f" (least-squares trend over all epochs: {nums.grad_norm_trend})")
    if math.isfinite(nums.lr_frac):
        out.append(f"schedule {nums.schedule}: last lr {100 * nums.lr_frac:.1f} % of peak"
                   + (f", drops at epochs {nums.drop_epochs}" if nums.drop_epochs else ""))
    return out


def _floor_reason(nums: Numbers) -> str | None:
    if nums.fits is None:
        return f"fewer than {MIN_FIT_POINTS} evaluations to fit: no floor extrapolation"
    if nums.floor is None:
        return ("no floor in sight: the curve has not started to bend (the best fit, "
                f"{nums.floor_family}, puts its floor at its bound)")
    lo, hi = nums.floor_ci
    used = nums.fit_families
    worse = [k for k in nums.fits if k not in used]
    agree = ("families agree" if nums.fits_agree else "families disagree") + ": " + ", ".join(
        f"{k} {fmt_loss(nums.fits[k]['floor'])}" for k in used)
    if worse:
        agree += f"; {', '.join(worse)} fit worse"
    text = (f"floor ≈ {fmt_loss(nums.floor)} {fmt_interval(lo, hi)} "
            f"({nums.floor_family} fit; {agree}); ")
    if nums.lr_frac <= FINISHED_LR:  # the schedule ended: no more of this run
        return text + (f"a longer run of this schedule could lower it by ~"
                       f"{nums.expected_drop:.3g} (the fit's ~{nums.epochs_to_go:.3g} more "
                       f"epochs at the curve's pace)")
    return text + (f"expected further drop {nums.expected_drop:.3g}, "
                   f"~{nums.epochs_to_go:.3g} epochs to go")


def _gap_reason(nums: Numbers) -> str | None:
    if nums.gap is None:
        return None
    return (f"test−train gap {nums.gap:.3g} ({nums.gap_trend}, "
            f"{nums.gap_slope:+.2g}/evaluation)")

