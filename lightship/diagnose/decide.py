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
2. ``too short to judge``: fewer than 3 evaluations after the warm-up epochs (one suffices when
   the final clean fit is logged: ``fast`` evaluates once, at the end).
3. ``overfitting``: the test loss has not improved for ``patience`` evaluations, has risen by more
   than the tolerance above its best, and the train loss fell over the same evaluations.
4. ``still improving`` / ``cannot tell``: a run stopped before its schedule ended (``total_epochs``
   not reached, or a cosine/linear lr still above 5 % of the peak when it is unknown) is still
   improving: the rest of the schedule lowers the loss. A finished run is judged on the
   question a user has, "would the ×2 schedule of the same recipe end at a lower clean train
   CE by more than the tolerance max(0.01, 10 %)?" (the ground truth of
   benchmarks/convergence_truth.py): from the final clean train CE that the loop logs with the
   last evaluation, its headroom above the objective's floor (0, or −ln(1 − ε + ε/K) under
   label smoothing) times the share of it a ×2 schedule removed on the tuning grid
   (``HEADROOM_RHO``) is the expected drop; above the tolerance by more than ``CANNOT_TELL``:
   still improving; within it: cannot tell (confirm with ``lightship diagnose --confirm``);
   below: on to underfitting / converged. The slope of the last epochs cannot answer it on an
   annealed schedule, whose loss falls to the last epoch by construction. Runs without a
   logged clean fit (made before it was logged, or on data streamed from disk) fall back to
   the curve: the epoch train loss improved within the last ``patience`` evaluations, or the lr
   dropped (≥ 2x, step schedules) fewer than ``patience`` evaluations ago; a flat tail of a
   finished schedule is ``converged``.
5. ``underfitting``: the curve is flat and either (a) with a ``reference`` run (another net on
   the same data): the light net's level (best train loss, or its floor when the fits agree)
   exceeds the reference's best train loss by more than ``max(0.5·|ref|, 0.02)`` (i.e. > 1.5x and
   > ref + 0.02 for positive losses) while train ≈ test (``|gap| ≤ max(0.2·|train|, 0.05)``), so
   the fit, not generalization, is the limit. It is called *capacity* (and distilling from the
   heavier net suggested) only when the reference has at least ``HEAVIER``× the light net's
   parameters (``params`` of the runs' ``start`` records); at about equal size (plain20 vs
   resnet20) the reason names the architecture instead, and with a count missing it claims
   neither; or (b) without a reference, conservatively: on each
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
gradient-norm trend (median per epoch after warm-up, same trend rule at 10 %)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightship.diagnose.floor import fit_floor
from lightship.diagnose.result import (
    CANNOT_TELL,
    HEADROOM_RHO,
    MIN_EVALS,
    Numbers,
    Opts,
    Verdict,
    fmt_loss,
)
from lightship.diagnose.signals import (
    Series,
    diverged,
    gap_numbers,
    grad_trend,
    noise_level,
    overfit,
    params_of,
    plateau,
    schedule_info,
    series,
    slope_per_eval,
    steps_of,
    tol,
    underfit_by_reference,
    underfit_by_regularization,
)
from lightship.diagnose.twin import twin_tolerance
from lightship.diagnose.wording import context, more_epochs, rising_warning
from lightship.errors import UserError


def verdict(records: list[dict], *, schedule: str | None = None, warmup_epochs: float = 0,
            total_epochs: int | None = None, reference: list[dict] | None = None,
            atol: float = 1e-3, rtol: float = 0.01, patience: int = 3,
            mix_off_epochs: int = 0, label_smoothing: float = 0.0) -> Verdict:
    """Judge a run's convergence from its raw metrics records (see the module docstring).

    ``schedule`` is the lr schedule name (None: inferred from the eval lr values);
    ``total_epochs`` the planned epochs (tells a finished schedule from a stopped one);
    ``reference`` another net's records on the same data (enables the capacity test, which
    compares the two runs' parameter counts);
    ``mix_off_epochs`` (with ``total_epochs``) the recipe's last epochs without mixup/cutmix:
    their train loss drops because the targets became clean, not because training progressed,
    so the plateau test and the floor fit stop before them;
    ``label_smoothing`` the recipe's ε (it sets the clean CE's floor).
    """
    if patience < 1:
        raise UserError(f"patience must be at least 1 evaluation (got {patience})")
    opts = Opts(schedule, math.ceil(warmup_epochs), total_epochs, atol, rtol, patience,
                 mix_off_epochs)
    s, steps = series(records), steps_of(records)
    div = diverged(s, records, steps)
    if div is not None:
        return Verdict("diverged", [div[0]], Numbers(**div[1]),
                       "lower optim.lr (e.g. ÷3) and/or set optim.grad_clip=1.0, then train again")
    judged = s.after(opts.warm)
    clean = _clean_fit(records, label_smoothing)
    if len(judged) < MIN_EVALS and (clean is None or not len(judged)):
        return _too_short(s, judged, opts.warm)
    nums = _describe(judged, steps, opts)
    if clean is not None:
        nums.update(clean)
    nums.light_params = params_of(records)
    label, head, suggestion = _decide(judged, nums, reference, opts)
    return Verdict(label, [head, *context(nums)], nums, suggestion)


def _too_short(s: Series, judged: Series, warm: int) -> Verdict:
    if not len(s):
        head = "no evaluation yet: the run has not finished an epoch"
    else:
        skipped = f" after {warm} warm-up epoch(s)" if warm else ""
        head = (f"only {len(judged)} evaluation(s){skipped}; need {MIN_EVALS} to tell a "
                "plateau from noise")
    nums = Numbers(n_evals=len(s), n_judged=len(judged),
                   train_last=float(s.train[-1]) if len(s) else None)
    return Verdict("too short to judge", [head], nums,
                   f"train (or resume) until at least {MIN_EVALS} evaluations past warm-up "
                   f"(epoch {warm + MIN_EVALS}), then judge again")


def _mixing_end(s: Series, opts: Opts) -> int:
    """How many judged evaluations precede the clean-target (mix-off) epochs; all of them when
    there are none or too few would be left to judge."""
    if not opts.mix_off_epochs or opts.total_epochs is None:
        return len(s)
    end = int(np.sum(s.epoch <= opts.total_epochs - opts.mix_off_epochs))
    return end if end >= MIN_EVALS else len(s)


def _describe(s: Series, steps: list[dict], opts: Opts) -> dict:
    """Every number the decision and the reasons use."""
    nums = Numbers(**schedule_info(s, steps, opts.schedule, opts.total_epochs))
    drops = nums.drops
    nums.evals_since_drop = len(s) - 1 - drops[-1] if drops else None
    nums.drop_epochs = [int(s.epoch[i]) for i in drops]
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
    k = nums.trend_window
    finite_test = s.test[np.isfinite(s.test)]
    if len(finite_test) >= 2:
        nums.test_slope = slope_per_eval(finite_test[-k:])[0]
    nums.update(gap_numbers(s, k, opts.atol))
    nums.update(grad_trend(steps, opts.warm))
    return nums


def _train_numbers(train: np.ndarray, epoch: np.ndarray, opts: Opts) -> dict[str, Any]:
    """The plateau test on the epoch train loss, with its tolerance and recent slope."""
    noise = noise_level(train)
    best_i, stale = plateau(train, opts.atol, opts.rtol, noise)
    k = min(len(train), max(5, 2 * opts.patience))
    return {"train_best": float(train[best_i]), "train_best_epoch": int(epoch[best_i]),
            "evals_since_improvement": stale, "train_noise": noise,
            "tolerance": tol(train[best_i], opts.atol, opts.rtol, noise),
            "train_slope": slope_per_eval(train[-k:])[0], "trend_window": k,
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


def _decide(s: Series, nums: Numbers, reference: list[dict] | None,
            opts: Opts) -> tuple[str, str, str | None]:
    """(label, main reason, suggestion) by priority: overfitting > still improving >
    underfitting > converged."""
    over = overfit(s, opts)
    if over is not None:
        nums.update(over[1])
        return ("overfitting", over[0], "add augmentation / weight decay / mixup, or stop near "
                f"epoch {over[1]['test_best_epoch']} (the best test loss)")
    busy = _still_improving(nums, opts.patience)
    if busy is not None:
        return busy
    under = underfit_by_reference(nums, reference) if reference else None
    if under is None and not reference:
        under = underfit_by_regularization(s, opts)
    if under is not None:
        return ("underfitting", *under)
    if nums.twin_drop is not None:
        lo, hi = nums.twin_drop_range
        head = (f"clean train CE {fmt_loss(nums.train_ce_clean)} is within the tolerance "
                f"{nums.drop_tolerance:.2g} of what a ×2 schedule is expected to reach (drop "
                f"{nums.twin_drop:.2g} [{lo:.2g}, {hi:.2g}])")
    else:
        head = (f"train loss flat for {nums.evals_since_improvement} evaluations "
                f"(best {fmt_loss(nums.train_best)})")
    return "converged", head, rising_warning(nums)


def _clean_fit(records: list[dict], label_smoothing: float) -> dict[str, Any] | None:
    """The final clean train CE (logged with the last evaluation of a finished run), its floor
    under the objective, the headroom and the ×2 drop the tuning grid expects (None: not
    logged, as for data streamed from disk or runs made before it was)."""
    evals = [r for r in records if r.get("kind") == "eval"]
    ce = evals[-1].get("train_ce_clean") if evals else None
    if not isinstance(ce, (int, float)) or not math.isfinite(ce):
        return None
    k = next((r.get("num_classes") for r in records if r.get("kind") == "start"), None)
    eps = label_smoothing
    floor = -math.log(1 - eps + eps / k) if eps and isinstance(k, int) and k > 1 else 0.0
    head = max(0.0, float(ce) - floor)
    rho = HEADROOM_RHO
    return {"train_ce_clean": float(ce), "ce_floor": floor, "headroom": head,
            "twin_drop": rho["mid"] * head, "twin_drop_range": (rho["lo"] * head,
                                                                 rho["hi"] * head),
            "drop_tolerance": twin_tolerance(float(ce))}


def _still_improving(nums: Numbers, patience: int) -> tuple[str, str, str] | None:
    """(label, reason, suggestion) when a longer schedule would lower the train loss ("still
    improving") or the curve cannot say ("cannot tell"); None when it would not."""
    if nums.unfinished:
        frac = nums.lr_frac
        lr = f" with lr at {100 * frac:.0f} % of its peak" if math.isfinite(frac) else ""
        return ("still improving", f"the run stopped early (epoch {nums.last_epoch}{lr}): the "
                "rest of the schedule usually lowers the loss", "resume the run to finish its "
                "schedule")
    if nums.train_ce_clean is not None:
        return _by_headroom(nums)
    since_drop = nums.evals_since_drop
    if since_drop is not None and since_drop < patience:
        return ("still improving",
                f"lr dropped at epoch {nums.drop_epochs[-1]}, {since_drop} evaluation(s) ago: "
                f"within the cool-down of {patience}",
                f"train at least {patience - since_drop} more epoch(s) after the lr drop")
    stale = nums.evals_since_improvement
    if stale < patience:
        return ("still improving",
                f"train loss still improving (best {fmt_loss(nums.train_best)} at epoch "
                f"{nums.train_best_epoch}, slope {nums.train_slope:.2g}/evaluation)",
                more_epochs(nums))
    return None


def _by_headroom(nums: Numbers) -> tuple[str, str, str] | None:
    """Judged on the clean CE's headroom above its floor (see HEADROOM_RHO): on an annealed
    schedule the train loss falls to the last epoch by construction, so the tail's slope cannot
    tell, and at a constant lr a flat noisy loss hid clean-CE gains on the tuning grid."""
    tol, expect = nums.drop_tolerance, nums.twin_drop
    lo, hi = nums.twin_drop_range
    head = nums.headroom
    what = (f"clean train CE {fmt_loss(nums.train_ce_clean)}, {fmt_loss(head)} above its floor "
            f"{fmt_loss(nums.ce_floor)}: the ×2 schedule is expected to lower it by "
            f"{nums.twin_drop:.2g} [{lo:.2g}, {hi:.2g}]")
    if expect > (1 + CANNOT_TELL) * tol:
        return ("still improving", f"{what}, more than the tolerance {tol:.2g}",
                "train with the schedule ×2 (train.epochs ×2; warmup and milestones scale "
                "with it), or confirm with `lightship diagnose RUN --confirm`")
    if expect > (1 - CANNOT_TELL) * tol:
        return ("cannot tell", f"{what}: within {100 * CANNOT_TELL:.0f} % of the tolerance "
                f"{tol:.2g}, which this run alone cannot settle",
                "confirm with `lightship diagnose RUN --confirm` (trains the ×2 twin and "
                "compares the final clean train CE)")
    return None
