"""The convergence verdict against the ×2-twin ground truth, and the twin test itself.

Synthetic runs carry the final clean train CE the loop logs with a finished run's last
evaluation; the verdict's headroom rule (lightship.diagnose.result.HEADROOM_RHO) must give each
label where the truth is known: a clean CE within the tolerance of its floor cannot drop by
more under any schedule; far above it, the tuning grid's smallest ratio still exceeds the
tolerance. The twin test trains real tiny runs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lightship.diagnose import verdict
from lightship.diagnose.result import CANNOT_TELL, HEADROOM_RHO
from lightship.diagnose.twin import twin_recipe, twin_tolerance
from lightship.errors import UserError
from lightship.recipe import build_recipe

EPOCHS = 10


def records(final_ce=None, *, epochs=EPOCHS, schedule="cosine", evals=None, classes=10,
            total=None):
    """A finished run whose train loss falls to its last epoch under an annealed lr (as every
    annealed run's does), with its final clean train CE."""
    total = total or epochs
    out = [{"kind": "start", "step": 0, "epoch": 0, "num_classes": classes,
            "steps_per_epoch": 4}]
    step = 0
    for e in range(1, epochs + 1):
        lr = 0.1 if schedule == "constant" else 0.05 * (1 + math.cos(math.pi * e / total))
        loss = 0.05 + 1.0 / e
        for _ in range(4):
            step += 1
            out.append({"kind": "step", "step": step, "epoch": e, "loss": loss, "lr": lr,
                        "grad_norm": 1.0, "ips": 1.0})
        if evals is not None and e not in evals:
            continue
        rec = {"kind": "eval", "step": step, "epoch": e, "train_loss": loss, "train_top1": 90.0,
               "test_loss": loss + 0.02, "test_top1": 90.0, "test_top5": 99.0, "lr": lr}
        if e == epochs and final_ce is not None:
            rec.update(train_ce_clean=final_ce, train_top1_clean=99.0)
        out.append(rec)
    return out


def judge(recs, **kw):
    return verdict(recs, schedule=kw.pop("schedule", "cosine"),
                   total_epochs=kw.pop("total_epochs", EPOCHS), **kw)


def test_a_clean_ce_near_zero_is_converged_although_the_loss_fell_to_the_end():
    v = judge(records(0.004))
    assert v.label == "converged", v.one_line()
    assert v.numbers.twin_drop == pytest.approx(HEADROOM_RHO["mid"] * 0.004)
    assert "clean train CE 0.0040" in v.reasons[0]


def test_a_clean_ce_far_above_its_floor_is_still_improving():
    # even the grid's smallest ratio (5 %) of the headroom exceeds the tolerance
    v = judge(records(0.3))
    assert HEADROOM_RHO["lo"] * 0.3 > twin_tolerance(0.3)
    assert v.label == "still improving", v.one_line()
    lo, hi = v.numbers.twin_drop_range
    assert lo == pytest.approx(HEADROOM_RHO["lo"] * 0.3) and hi == pytest.approx(
        HEADROOM_RHO["hi"] * 0.3)
    assert "--confirm" in v.suggestion


def test_label_smoothing_sets_the_floor():
    eps, k = 0.1, 10
    floor = -math.log(1 - eps + eps / k)  # 0.0943: the smoothed optimum's clean CE
    at_floor = judge(records(floor + 0.004), label_smoothing=eps)
    assert at_floor.label == "converged", at_floor.one_line()
    assert at_floor.numbers.ce_floor == pytest.approx(floor)
    # the same clean CE without smoothing has its whole value as headroom
    assert judge(records(floor + 0.004)).label == "still improving"


def test_near_the_tolerance_the_verdict_cannot_tell():
    tol = twin_tolerance(0.018)
    ce = tol / HEADROOM_RHO["mid"]  # expected drop == tolerance
    assert abs(HEADROOM_RHO["mid"] * ce - tol) < CANNOT_TELL * tol
    v = judge(records(ce))
    assert v.label == "cannot tell", v.one_line()
    assert "cannot settle" in v.reasons[0] and "--confirm" in v.suggestion


def test_a_constant_lr_run_is_judged_by_its_headroom_too():
    assert judge(records(0.2, schedule="constant"), schedule="constant").label == \
        "still improving"
    assert judge(records(0.003, schedule="constant"), schedule="constant").label == "converged"


def test_a_run_stopped_before_its_schedule_ended_is_still_improving():
    v = judge(records(0.004, epochs=6, total=12), total_epochs=12)
    assert v.label == "still improving" and "stopped early" in v.reasons[0]


def test_one_evaluation_is_enough_when_the_clean_fit_is_logged():
    # `fast` evaluates once, at the end
    v = judge(records(0.3, evals={EPOCHS}), warmup_epochs=1)
    assert v.label == "still improving", v.one_line()
    assert judge(records(None, evals={EPOCHS}), warmup_epochs=1).label == "too short to judge"


def test_without_a_clean_fit_the_curve_rule_answers():
    # runs made before the clean fit was logged, or data streamed from disk
    v = judge(records(None))
    assert v.numbers.train_ce_clean is None and v.label == "still improving"
    assert "train loss still improving" in v.reasons[0]


def test_a_converged_light_net_far_above_its_reference_is_underfitting():
    light = records(0.004)
    light[0]["params"] = 1_000
    for r in light:  # train ≈ test at a level the reference beats many times over
        if r["kind"] == "eval":
            r["train_loss"], r["test_loss"] = 0.5, 0.52
    ref = records(0.001)
    ref[0]["params"] = 10_000
    for r in ref:
        if r["kind"] == "eval":
            r["train_loss"] = 0.02
    v = judge(light, reference=ref)
    assert v.label == "underfitting", v.one_line()
    assert "capacity" in v.reasons[0]


def test_converged_flag_says_what_each_label_claims():
    from lightship.diagnose.result import LABELS, converged_flag

    assert {label: converged_flag(label) for label in LABELS} == {
        "converged": True, "underfitting": True, "still improving": False,
        "overfitting": False, "diverged": False, "cannot tell": None,
        "too short to judge": None}
    assert converged_flag(None) is None


def test_overfitting_still_comes_first():
    recs = records(0.004)
    for r in recs:
        if r["kind"] == "eval" and r["epoch"] > 4:
            r["test_loss"] = 0.2 + 0.1 * r["epoch"]
    assert judge(recs).label == "overfitting"


# ---------------------------------------------------------------- the twin recipe


def test_twin_recipe_stretches_every_length_in_epochs():
    r = build_recipe("tricks", {"train.epochs": 12, "schedule.name": "multistep",
                                "schedule.milestones": [6, 9], "schedule.warmup_epochs": 1.5,
                                "augment.mix_off_epochs": 2, "run.name": "r"})
    t = twin_recipe(r, 2)
    assert t.train.epochs == 24 and t.schedule.warmup_epochs == 3.0
    assert t.schedule.milestones == [12, 18] and t.augment.mix_off_epochs == 4
    assert t.schedule.step_epochs == 2 * r.schedule.step_epochs
    assert t.method.dkd_warmup == 2 * r.method.dkd_warmup
    assert t.run.name == "r-x2"
    same = ("optim", "model", "data")
    assert all(getattr(t, k) == getattr(r, k) for k in same)
    assert t.train.seed == r.train.seed and t.train.batch_size == r.train.batch_size
    with pytest.raises(UserError):
        twin_recipe(r, 1)


def test_tolerance_is_absolute_or_relative_whichever_is_larger():
    assert twin_tolerance(0.02) == pytest.approx(0.01)
    assert twin_tolerance(0.5) == pytest.approx(0.05)


# ---------------------------------------------------------------- real runs


def _tiny(tmp_path, name="tiny", **over):
    import lightship

    over = {"train__epochs": 3, **over}
    return lightship.train("baseline", data__name="digits", model__name="cnn4",
                           train__precision="fp32", run__dir=str(tmp_path), run__name=name,
                           **over)


def test_confirm_trains_the_twin_next_to_the_run_and_reports_the_drop(tmp_path):
    import lightship

    run = _tiny(tmp_path)
    c = lightship.confirm(run.run_dir)
    twin = tmp_path / "tiny-x2"
    assert c.twins == [twin] and (twin / "weights.safetensors").exists()
    saved = (twin / "recipe.yaml").read_text()
    assert "epochs: 6" in saved
    assert c.drop == pytest.approx(c.ce[0] - c.ce_twin[0])
    assert c.label == ("not converged" if c.drop > c.tolerance else "converged")
    # a second call reuses the finished twin (no retraining: same file)
    mtime = (twin / "weights.safetensors").stat().st_mtime_ns
    again = lightship.confirm(run.run_dir)
    assert (twin / "weights.safetensors").stat().st_mtime_ns == mtime
    assert again.ce_twin == c.ce_twin


def test_confirm_over_seeds_gives_a_paired_interval(tmp_path):
    from scipy import stats

    import lightship

    run = _tiny(tmp_path, train__epochs=2)
    c = lightship.confirm(run.run_dir, seeds=[1, 2])
    assert c.seeds == [0, 1, 2] and len(c.runs) == 3
    drops = np.array(c.ce) - np.array(c.ce_twin)
    lo, hi = stats.t.interval(0.95, 2, loc=drops.mean(), scale=stats.sem(drops))
    assert c.interval == pytest.approx((lo, hi))


def test_confirm_refuses_a_folder_that_holds_another_recipe(tmp_path):
    import lightship

    run = _tiny(tmp_path)
    _tiny(tmp_path, name="tiny-x2", train__epochs=2)  # not the twin
    with pytest.raises(UserError, match="another recipe"):
        lightship.confirm(run.run_dir)


def test_verdict_survives_moving_and_resuming_the_run(tmp_path):
    import lightship
    from lightship.train.loop import train

    whole = _tiny(tmp_path, name="whole", train__epochs=4)
    recipe = lightship.make_recipe("baseline", data__name="digits", model__name="cnn4",
                                   train__epochs=4, train__precision="fp32",
                                   run__dir=str(tmp_path), run__name="parts")
    train(recipe, stop_after_epochs=2, quiet=True)
    parts = train(resume=tmp_path / "parts", quiet=True)
    line = lightship.diagnose(whole.run_dir).one_line()
    assert lightship.diagnose(parts.run_dir).one_line() == line
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(whole.run_dir), moved)
    assert lightship.diagnose(moved).one_line() == line
    assert json.loads((moved / "summary.json").read_text())["verdict_line"] == line


def test_cli_confirm_prints_the_comparison(tmp_path):
    run = _tiny(tmp_path)
    out = subprocess.run([sys.executable, "-m", "lightship", "diagnose", str(run.run_dir),
                          "--confirm"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "confirm: " in out.stdout and "×2 schedule clean train CE" in out.stdout
    assert (tmp_path / "tiny-x2" / "summary.json").exists()
    bad = subprocess.run([sys.executable, "-m", "lightship", "diagnose", str(run.run_dir),
                          "--seeds", "1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--confirm" in bad.stderr
    assert "Traceback" not in bad.stderr
