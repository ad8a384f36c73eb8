"""Convergence verdicts on synthetic curves whose truth is known (no training involved)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lightship.diagnose import Verdict, fit_floor, load_records, verdict
from lightship.diagnose.signals import improved, plateau
from lightship.errors import UserError

STEPS_PER_EPOCH = 4


def records(train, test=None, lr=None, *, train_top1=None, test_top1=None, grad_norm=None,
            params=None):
    """metrics.jsonl records for per-epoch train losses (each epoch's steps share its loss)."""
    n = len(train)
    lr = [0.1] * n if lr is None else list(lr)
    out = [{"kind": "start", "step": 0, "epoch": 0, "lr_peak": max(lr),
            "steps_per_epoch": STEPS_PER_EPOCH}]
    if params is not None:
        out[0]["params"] = params
    step = 0
    for i, loss in enumerate(train):
        for _ in range(STEPS_PER_EPOCH):
            step += 1
            out.append({"kind": "step", "step": step, "epoch": i + 1, "loss": float(loss),
                        "lr": lr[i], "ips": 100.0,
                        "grad_norm": 1.0 if grad_norm is None else float(grad_norm[i])})
        rec = {"kind": "eval", "step": step, "epoch": i + 1, "train_loss": float(loss),
               "train_top1": 60.0 if train_top1 is None else float(train_top1[i]),
               "lr": lr[min(i + 1, n - 1)], "epoch_time": 1.0, "ips": 100.0}
        if test is not None:
            rec.update(test_loss=float(test[i]), test_top5=90.0,
                       test_top1=60.0 if test_top1 is None else float(test_top1[i]))
        out.append(rec)
    return out


def cosine(n, peak=0.1, warmup=0):
    """lr during each epoch: linear warm-up, then cosine to 0 at the end of epoch n."""
    return [peak * (e + 1) / (warmup + 1) if e < warmup
            else peak * 0.5 * (1 + math.cos(math.pi * (e + 1 - warmup) / (n - warmup)))
            for e in range(n)]


def noise(n, sigma, seed=0):
    return np.random.default_rng(seed).normal(0.0, sigma, n)


def exp_curve(n, a=1.5, b=0.3, floor=0.4, sigma=0.003, seed=0):
    t = np.arange(1, n + 1)
    return a * np.exp(-b * t) + floor + noise(n, sigma, seed)


# ---------------------------------------------------------------- plateau test


def test_improved_is_sign_safe():
    # best·(1 − rtol) would call −5.01 an improvement on −5 (and miss real ones on the way up)
    assert not improved(-5.01, -5.0, atol=1e-3, rtol=0.01)
    assert improved(-5.06, -5.0, atol=1e-3, rtol=0.01)
    assert improved(0.9, 1.0) and not improved(0.995, 1.0)
    assert not improved(0.0005, 0.001, atol=1e-3, rtol=0.01)  # atol guards losses near 0


def test_plateau_counts_slow_declines_against_the_best():
    # 0.5 % a step never beats a 1 % tolerance step to step, but beats the unmoved best
    values = [1.0 * 0.995 ** i for i in range(8)]
    best_i, stale = plateau(values)
    assert stale <= 1 and best_i >= 6
    assert plateau([1.0, 0.5, 0.499, 0.5005, 0.4995]) == (1, 3)


# ---------------------------------------------------------------- labels


def test_exponential_to_floor_under_full_cosine_is_converged():
    n = 30
    train = exp_curve(n)
    v = verdict(records(train, train + 0.02 + noise(n, 0.003, 1), cosine(n)),
                schedule="cosine", total_epochs=n)
    assert isinstance(v, Verdict) and v.label == "converged"
    lo, hi = v.numbers.floor_ci
    assert lo <= 0.4 <= hi and hi - lo < 0.01
    assert v.numbers.floor_family == "exp" and v.numbers.fits_agree
    assert v.numbers.expected_drop < 0.01 and v.numbers.epochs_to_go < 5
    assert v.numbers.lr_frac <= 0.05 and not v.numbers.unfinished
    assert v.numbers.evals_since_improvement >= 3
    assert v.numbers.gap_trend == "stable" and abs(v.numbers.gap - 0.02) < 0.01
    assert v.suggestion is None
    line = v.one_line()
    assert line.startswith("converged: train loss flat for") and "floor ≈ 0.399" in line
    assert "test−train gap" in line and "stable" in line


def test_power_law_at_constant_lr_is_still_improving():
    n = 30
    t = np.arange(1, n + 1)
    train = 2.0 * t ** -0.5 + 0.3 + noise(n, 0.002)
    v = verdict(records(train, train + 0.05, [0.1] * n))
    assert v.label == "still improving"
    assert v.numbers.schedule == "constant"
    assert v.numbers.floor_family == "power"
    lo, hi = v.numbers.floor_ci
    assert lo <= 0.3 <= hi
    assert v.numbers.expected_drop > 0.3
    assert v.numbers.epochs_to_go > 100
    assert "train much longer" in v.suggestion


def test_still_linear_descent_is_still_improving_with_no_floor_in_sight():
    n = 20
    train = 2.0 - 0.05 * np.arange(1, n + 1)
    v = verdict(records(train, train + 0.05))
    assert v.label == "still improving"
    assert v.numbers.train_slope == pytest.approx(-0.05, abs=1e-6)
    assert v.numbers.evals_since_improvement == 0
    assert v.numbers.floor_identified is False and v.numbers.floor is None
    assert any("no floor in sight" in r for r in v.reasons)
    assert "train more epochs" in v.suggestion


def test_rising_test_loss_with_falling_train_loss_is_overfitting():
    n = 25
    t = np.arange(1, n + 1)
    train = 2.0 * np.exp(-0.2 * t) + 0.2 + noise(n, 0.003)
    test = 0.6 + 2.0 * np.exp(-0.3 * np.minimum(t, 10)) + 0.02 * np.maximum(t - 10, 0)
    v = verdict(records(train, test + noise(n, 0.003, 1)))
    assert v.label == "overfitting"
    assert v.numbers.test_best_epoch in (9, 10, 11)
    assert v.numbers.test_evals_since_best >= 3
    assert v.numbers.gap_trend == "rising" and v.numbers.gap_slope > 0.01
    assert "augmentation" in v.suggestion and "weight decay" in v.suggestion


def test_nan_loss_is_diverged():
    train = exp_curve(10)
    recs = records(train, train + 0.02)
    bad = next(r for r in recs if r["kind"] == "step" and r["step"] == 17)
    bad["loss"] = float("nan")
    v = verdict(recs)
    assert v.label == "diverged" and v.numbers.nonfinite_step == 17
    assert "nan" in v.reasons[0] and "grad_clip" in v.suggestion
    # eval records alone (no step records) are enough
    only_evals = [r for r in records(train, train + 0.02) if r["kind"] == "eval"]
    only_evals[4]["test_loss"] = float("inf")
    v = verdict(only_evals)
    assert v.label == "diverged" and v.numbers.nonfinite_epoch == 5


def test_exploding_loss_is_diverged_but_one_spike_is_not():
    train = [2.3, 1.8, 1.5, 4.0, 12.0, 40.0]
    v = verdict(records(train, train))
    assert v.label == "diverged"
    assert v.numbers.explode_ratio == pytest.approx(40.0 / 2.3)
    assert "exploded" in v.reasons[0]
    train = exp_curve(20)
    recs = records(train, train + 0.02)
    next(r for r in recs if r.get("step") == 30)["loss"] = 100.0  # one bad batch
    assert verdict(recs).label != "diverged"


@pytest.mark.parametrize("epochs", [1, 2])
def test_one_or_two_epochs_are_too_short(epochs):
    train = [2.3, 1.9][:epochs]
    v = verdict(records(train, train))
    assert v.label == "too short to judge"
    assert v.numbers.n_judged == epochs and v.numbers.train_last == train[-1]
    assert f"only {epochs} evaluation" in v.reasons[0]


def test_too_short_counts_only_evaluations_after_warmup():
    train = [2.3, 2.5, 1.9, 1.7]
    v = verdict(records(train, train), warmup_epochs=2)
    assert v.label == "too short to judge" and v.numbers.n_judged == 2
    assert "warm-up" in v.reasons[0] and "epoch 5" in v.suggestion
    v = verdict([])
    assert v.label == "too short to judge" and "no evaluation yet" in v.reasons[0]


def test_warmup_bump_is_ignored():
    n, warm = 25, 2
    train = np.concatenate([[2.3, 2.6], exp_curve(n - warm, a=1.7, b=0.5, floor=0.3)])
    v = verdict(records(train, train + 0.01, cosine(n, warmup=warm)), warmup_epochs=warm)
    assert v.label == "converged"
    assert v.numbers.n_judged == n - warm
    assert v.numbers.schedule == "decay"  # inferred from the lr values
    lo, hi = v.numbers.floor_ci
    assert lo <= 0.3 <= hi


def test_step_decay_converges_after_the_last_cooldown():
    floors, lrs, train = [1.0, 0.6, 0.5], [0.1, 0.01, 0.001], []
    level = 2.0
    for floor in floors:
        t = np.arange(1, 11)
        seg = (level - floor) * np.exp(-0.6 * t) + floor
        train.extend(seg)
        level = seg[-1]
    n = len(train)
    lr = [lrs[i // 10] for i in range(n)]
    train = np.array(train) + noise(n, 0.002)
    v = verdict(records(train, train + 0.03, lr), schedule="multistep", total_epochs=n)
    assert v.label == "converged"
    assert v.numbers.drop_epochs == [10, 20] and v.numbers.evals_since_drop == 10
    lo, hi = v.numbers.floor_ci
    assert lo <= 0.5 <= hi  # fitted on the last segment only


def test_step_decay_cooldown_is_still_improving():
    # flat for 8 evaluations, then an lr drop whose effect has not shown after 2 evaluations
    n = 12
    train = 0.8 + noise(n, 0.002)
    lr = [0.1] * 10 + [0.01] * 2
    v = verdict(records(train, train + 0.03, lr))
    assert v.numbers.schedule == "step"
    assert v.label == "still improving"
    assert v.numbers.evals_since_drop == 2 and v.numbers.drop_epochs == [10]
    assert "cool-down" in v.reasons[0] and "1 more epoch" in v.suggestion


def test_flat_tail_of_unfinished_cosine_is_stopped_early():
    n, stop = 30, 18
    train = exp_curve(stop, b=0.6)
    v = verdict(records(train, train + 0.02, cosine(n)[:stop]), schedule="cosine",
                total_epochs=n)
    assert v.label == "still improving"
    assert v.numbers.unfinished and v.numbers.lr_frac > 0.2
    assert "stopped early" in v.reasons[0] and "resume" in v.suggestion
    # without total_epochs the lr still high (> 5 % of peak) tells the same
    assert verdict(records(train, train + 0.02, cosine(n)[:stop])).label == "still improving"


def test_negative_losses_plateau_and_floor():
    n = 30
    train = exp_curve(n) - 5.0  # floor −4.6: a naive best·(1 − rtol) would never see it flat
    v = verdict(records(train, train + 0.02, cosine(n)), total_epochs=n)
    assert v.label == "converged"
    assert v.numbers.train_best < -4.5
    lo, hi = v.numbers.floor_ci
    assert lo <= -4.6 <= hi


def _n_params(name):
    from lightship.models import create_model

    return sum(p.numel() for p in create_model(name, 10, 1, 28).parameters())


def test_reference_with_much_lower_floor_is_underfitting():
    n = 30
    light = exp_curve(n, floor=0.17)
    heavy = exp_curve(n, a=2.0, floor=0.05, seed=3)
    ref = records(heavy, heavy + 0.1, cosine(n), params=_n_params("resnet20"))
    v = verdict(records(light, light + 0.01, cosine(n), params=_n_params("resnet8")),
                reference=ref, total_epochs=n)
    assert v.label == "underfitting"
    assert v.numbers.light_level == pytest.approx(0.17, abs=0.01)
    assert v.numbers.reference_level == pytest.approx(0.05, abs=0.01)
    assert "kd" in v.suggestion and "rocket" in v.suggestion and "heavier" in v.suggestion
    assert "underfitting by capacity" in v.reasons[0]
    # a reference only a little better: the light net is fine
    close = exp_curve(n, floor=0.16, seed=4)
    v = verdict(records(light, light + 0.01, cosine(n)), total_epochs=n,
                reference=records(close, close, cosine(n)))
    assert v.label == "converged"


def test_capacity_is_claimed_only_when_the_reference_has_more_parameters():
    """plain20 vs resnet20: equal size (option-A shortcuts have no weights), so a lower floor
    says the architecture fits better, not that the light net lacks capacity."""
    n = 30
    light = exp_curve(n, floor=0.17)
    heavy = exp_curve(n, a=2.0, floor=0.05, seed=3)
    plain, res = _n_params("plain20"), _n_params("resnet20")
    assert plain == res
    ref = records(heavy, heavy + 0.1, cosine(n), params=res)
    v = verdict(records(light, light + 0.01, cosine(n), params=plain), reference=ref,
                total_epochs=n)
    assert v.label == "underfitting"
    assert "capacity" not in v.reasons[0] and "heavier" not in v.suggestion
    assert f"{res:,} vs {plain:,} parameters" in v.reasons[0]
    assert "architecture" in v.reasons[0] and "architecture" in v.suggestion
    assert (v.numbers.light_params, v.numbers.reference_params) == (plain, res)
    # counts not recorded (older runs): no capacity claim either
    v = verdict(records(light, light + 0.01, cosine(n)), reference=records(
        heavy, heavy + 0.1, cosine(n)), total_epochs=n)
    assert v.label == "underfitting" and "capacity is not judged" in v.reasons[0]


def test_underfitting_without_reference_is_conservative():
    n = 20
    train = exp_curve(n, floor=1.2)
    low_acc = [30.0] * n
    # low accuracy, train ≈ test, flat: converged (nothing says a bigger net would do better)
    v = verdict(records(train, train + 0.01, cosine(n), train_top1=low_acc, test_top1=low_acc))
    assert v.label == "converged"
    # train accuracy well below test and train loss above test: regularization holds it back
    v = verdict(records(train, train - 0.2, cosine(n), train_top1=low_acc,
                        test_top1=[45.0] * n))
    assert v.label == "underfitting" and "regularization" in v.suggestion
    assert "train top-1 30.0 below test top-1 45.0" in v.reasons[0]


def test_grad_norm_trend_is_reported():
    n = 20
    train = exp_curve(n)
    v = verdict(records(train, train + 0.02, cosine(n), grad_norm=np.linspace(2.0, 0.5, n)))
    assert v.numbers.grad_norm_trend == "falling"
    assert v.numbers.grad_norm_first > v.numbers.grad_norm_last
    assert any(r.startswith("grad-norm median") for r in v.reasons)


def test_unknown_schedule_is_a_user_error():
    train = exp_curve(6)
    with pytest.raises(UserError, match="did you mean 'cosine'"):
        verdict(records(train, train), schedule="cosin")


def test_fit_floor_needs_five_points_and_is_deterministic():
    assert fit_floor([1, 2, 3, 4], [1.0, 0.8, 0.7, 0.65]) is None
    t = np.arange(1, 16)
    y = exp_curve(15, seed=5)
    a, b = fit_floor(t, y), fit_floor(t, y)
    assert a["ci"] == b["ci"] and set(a["fits"]) == {"exp", "power", "logpow"}


# ---------------------------------------------------------------- load_records


def _run_dir(tmp_path, lines):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("model: {name: cnn4}\n")
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return run


def test_load_records_skips_a_torn_last_line(tmp_path):
    recs = records(exp_curve(5), exp_curve(5))
    recs[3]["loss"] = float("nan")
    run = _run_dir(tmp_path, [json.dumps(r) for r in recs] + ['{"kind": "step", "st'])
    loaded = load_records(run)
    assert len(loaded) == len(recs) and math.isnan(loaded[3]["loss"])
    assert verdict(loaded).label == "diverged"


def test_load_records_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_records(tmp_path / "missing")
    with pytest.raises(UserError, match="no recipe.yaml"):
        load_records(tmp_path)
    run = _run_dir(tmp_path, [])
    with pytest.raises(UserError, match="metrics.jsonl is empty: the run has not finished"):
        load_records(run)
    (run / "metrics.jsonl").write_text('{"kind": "start"}\nnot json\n{"kind": "eval"}\n')
    with pytest.raises(UserError, match="line 2"):
        load_records(run)
    (run / "metrics.jsonl").unlink()
    with pytest.raises(UserError, match="missing"):
        load_records(run)


def test_undecodable_bytes_follow_the_torn_line_rule(tmp_path, capsys):
    """Issue 24: bytes that are not UTF-8 in metrics.jsonl made diagnose and report exit 1 with
    a UnicodeDecodeError traceback. Such a line is a damaged line: skipped when it is the last
    one (a torn write), else the file is corrupt, said in one line naming the line."""
    from lightship.cli import main

    recs = records(exp_curve(5), exp_curve(5))
    good = [json.dumps(r).encode() for r in recs]
    run = _run_dir(tmp_path, [])
    (run / "metrics.jsonl").write_bytes(b"\n".join(good) + b'\n{"kind": "st\xff\xfe')
    assert len(load_records(run)) == len(recs)
    (run / "metrics.jsonl").write_bytes(b"\n".join([good[0], b'{"kind": "\xe9t\xff"}',
                                                    *good[1:]]) + b"\n")
    with pytest.raises(UserError, match="line 2 is not a JSON record"):
        load_records(run)
    for argv in (["diagnose", str(run)], ["report", str(run), "-o", str(tmp_path / "r.html")]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "line 2 is not a JSON record" in err, err


def test_an_empty_metrics_file_of_a_finished_run_is_damage_not_youth(tmp_path):
    """Issue 24: a 0-byte metrics.jsonl of a run whose summary.json says finished was reported
    as "has not finished an epoch"; it is an empty (damaged) file."""
    run = _run_dir(tmp_path, [])
    (run / "summary.json").write_text(json.dumps({"status": "finished", "epochs": 5}))
    with pytest.raises(UserError) as err:
        load_records(run)
    msg = str(err.value)
    assert "is empty" in msg and "finished" in msg and "not finished an epoch" not in msg, msg
    assert "\n" not in msg


def test_clean_target_epochs_are_left_out_of_the_plateau_test():
    # mixup off for the last 3 epochs: the train loss steps down (clean targets), not progress
    n = 30
    train = exp_curve(n, b=0.5, floor=0.9)
    train[-3:] -= 0.3
    recs = records(train, train - 0.25, cosine(n))
    assert verdict(recs, total_epochs=n).label == "still improving"
    v = verdict(recs, total_epochs=n, mix_off_epochs=3)
    assert v.label == "converged" and v.numbers.mix_off_from_epoch == 28
    assert v.numbers.mix_off_train_change == pytest.approx(-0.3, abs=0.02)
    assert v.numbers.floor == pytest.approx(0.9, abs=0.01)


def test_resumed_runs_and_sparse_test_evaluations():
    n = 20
    train = exp_curve(n, b=0.5)
    recs = records(train, train + 0.02, cosine(n))
    evals = [r for r in recs if r["kind"] == "eval"]
    for r in evals[::2]:  # train.eval_every=2: odd epochs have no test pass
        for key in ("test_loss", "test_top1", "test_top5"):
            r.pop(key)
    # a resume that redid epoch 6: its later record wins (the first one would read as diverged)
    stale = dict(evals[5], train_loss=50.0)
    at = recs.index(evals[5]) - STEPS_PER_EPOCH
    recs = recs[:at] + [stale, {"kind": "start", "step": at, "epoch": 5}] + recs[at:]
    v = verdict(recs, schedule="cosine", total_epochs=n)
    assert v.label == "converged" and v.numbers.n_judged == n
    assert v.numbers.gap == pytest.approx(0.02)
    json.dumps(v.numbers.to_dict())  # plain numbers, ready for a report file


def test_transfer_runs_are_judged_on_their_ce_term():
    from lightship.diagnose import verdict as judge

    recs = []
    for e in range(1, 11):
        ce = 0.2 + 0.5 * 0.5 ** e
        recs.append({"kind": "eval", "epoch": e, "step": 10 * e, "train_loss": ce + 0.7,
                     "train_ce": ce, "test_loss": ce + 0.01, "lr": 0.1 * (11 - e) / 10,
                     "train_top1": 90.0, "test_top1": 90.0})
    v = judge(recs, schedule="cosine", total_epochs=10)
    assert abs(v.numbers.gap) < 0.05, v.numbers  # CE vs test loss, not the combined objective


def test_an_open_interval_bound_reads_as_unbounded_not_inf():
    nums = {"floor": 0.0221, "floor_ci": (-math.inf, 0.0236)}
    v = Verdict("converged", ["train loss flat"], nums)
    line = v.one_line()
    assert "[unbounded, 0.0236]" in line and "inf" not in line
