"""`lightship study`: paired statistics, the K-fold split, bad input, resume after a kill, the
parallel path (the re-run after the kill uses two workers), verdict wording and
`lightship report STUDY_DIR`.

End-to-end runs use the quick budget on synthetic data (a built-in, so K-fold applies): the
machinery is the same as on MNIST-5k, the runs take seconds.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from lightship.cli import main
from lightship.data import load_dataset
from lightship.data.builtin import _mnist5k_arrays
from lightship.data.folds import kfold_indices
from lightship.errors import UserError
from lightship.studies import STUDIES, get_study
from lightship.studies.analysis import Analysis, to_markdown, without_session
from lightship.studies.base import Arm, Budget, Study
from lightship.studies.runner import Cell, _blocked, _ready, execute, make_plan
from lightship.studies.stats import Paired

DATA = "synthetic:n=8000,classes=4,size=8,channels=1"
ROOT = Path(__file__).resolve().parents[1]


def paired(a, b):
    """b − a as a study reports it: the judge's estimate over seeds (one cell per seed)."""
    from lightship.judge import estimate

    cells = [{"arm": arm, "seed": i, "fold": None, "m": v}
             for arm, vals in (("a", a), ("b", b)) for i, v in enumerate(vals)]
    e = estimate(cells, "b", "a", "m")
    lo, hi = e.interval if e.interval is not None else (None, None)
    return Paired(e.estimate, e.sd, e.n, lo, hi)


# ---------------------------------------------------------------- statistics


def test_paired_interval_matches_a_hand_computation():
    a = [97.0, 98.0, 96.5, 97.5, 98.5]
    b = [97.4, 98.1, 97.3, 97.6, 98.9]
    # differences 0.4, 0.1, 0.8, 0.1, 0.4: mean 0.36, sample variance
    # (0.04² + 0.26² + 0.44² + 0.26² + 0.04²) / 4 = 0.332 / 4 = 0.083,
    # t(0.975, df 4) = 2.776445 (tables), half width 2.776445 · √(0.083 / 5) = 0.35772
    half = 2.776445 * math.sqrt(0.083 / 5)
    d = paired(a, b)
    assert d.n == 5
    assert d.mean == pytest.approx(0.36)
    assert d.sd == pytest.approx(math.sqrt(0.083))
    assert d.lo == pytest.approx(0.36 - half, abs=1e-5)
    assert d.hi == pytest.approx(0.36 + half, abs=1e-5)
    assert d.lo == pytest.approx(0.0023, abs=1e-4)  # just above 0
    assert d.excludes_zero and d.sign == 1
    flat = paired([1.0, 2.0, 3.0], [1.5, 1.5, 3.1])  # differences +0.5, −0.5, +0.1
    assert not flat.excludes_zero and flat.sign == 0
    worse = paired([1.0, 1.0, 1.0], [0.5, 0.4, 0.6])
    assert worse.sign == -1
    one = paired([1.0], [2.0])
    assert one.lo is None and not one.excludes_zero and "no interval" in one.text()


# ---------------------------------------------------------------- K-fold


def test_kfold_tests_every_mnist5k_digit_once_and_never_trains_on_it():
    _, y = _mnist5k_arrays()
    pooled = np.concatenate([load_dataset("mnist5k").train_labels,
                             load_dataset("mnist5k").test_labels])
    assert len(pooled) == 5000
    seen = []
    for fold in range(5):
        data = load_dataset("mnist5k", folds=5, fold=fold)
        assert (data.info.n_train, data.info.n_test) == (4000, 1000)
        train = {bytes(r) for r in data.x_train.numpy().reshape(4000, -1)}
        test = [bytes(r) for r in data.x_test.numpy().reshape(1000, -1)]
        assert not train.intersection(test), f"fold {fold} trains on one of its test digits"
        assert np.bincount(data.test_labels, minlength=10).tolist() == [100] * 10
        seen += test
    assert len(seen) == len(set(seen)) == 5000  # every digit tested exactly once (all distinct)
    for tr, te in kfold_indices(pooled, 5, seed=0):
        assert not set(tr) & set(te) and len(tr) + len(te) == 5000
    again = load_dataset("mnist5k", folds=5, fold=3)
    assert bytes(again.x_test.numpy()) == bytes(load_dataset("mnist5k", folds=5,
                                                             fold=3).x_test.numpy())


# ---------------------------------------------------------------- bad input


def _npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8),
             y_train=np.arange(40) % 4, x_test=rng.integers(0, 255, (8, 8, 8, 1), dtype=np.uint8),
             y_test=np.arange(8) % 4)
    return path


@pytest.mark.parametrize("argv, needle", [
    (["study", "degradatoin"], "unknown study 'degradatoin' (did you mean 'degradation'?)"),
    (["study", "tricks", "--folds", "1"], "--folds 1 must be at least 2"),
    (["study", "tricks", "--budget", "huge"], "unknown budget 'huge'"),
    (["study", "tricks", "--seeds", "0"], "--seeds 0 must be at least 1"),
    (["study", "tricks", "--jobs", "0", "--out", "NEW"], "--jobs 0 must be at least 1"),
    (["study", "tricks", "--folds", "5", "--data", "NPZ"], "has a fixed test split"),
    (["study", "tricks", "--out", "OTHER"], "holds study 'degradation', not 'tricks'"),
    (["study", "degradation", "--budget", "default", "--out", "OTHER"],
     "was made with budget 'quick', not 'default'"),
    (["study", "tricks", "--out", "JUNK"], "is not empty and holds no study"),
    (["study", "pretrain", "--budget", "converged", "--out", "NEW"],
     "pretrain has no converged budget: its default converges"),
    (["study", "degradation", "--budget", "quick", "--epochs", "5", "--out", "OTHER"],
     "was made with epochs 1, not 5"),
    (["study", "degradation", "--arms", "resnet21", "--out", "NEW"],
     "has no arm 'resnet21' (did you mean"),
    (["train", "--data", "NPZ", "--set", "data.folds=3"], "data.folds needs a dataset without"),
    (["train", "--set", "data.fold=2"], "data.fold needs data.folds"),
])
def test_bad_study_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    other = tmp_path / "other"
    plan = make_plan(get_study("degradation"), "quick", seeds=None, folds=None, data="mnist5k",
                     out=other, command="test")
    other.mkdir()
    (other / "plan.json").write_text(json.dumps(plan.to_dict()))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    subs = {"NPZ": str(_npz(tmp_path)), "OTHER": str(other), "JUNK": str(junk),
            "NEW": str(tmp_path / "new")}
    argv = [subs.get(a, a) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "runs")]
    before = sorted(p.name for p in other.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightship: error:"), err
    assert needle in err[0]
    assert sorted(p.name for p in other.iterdir()) == before  # nothing written
    assert (junk / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("bad, needle", [
    (["--folds", "1000"], "data.folds=1000 needs at least 1000 images of every class"),
    (["--data", "NOT_DATA"], "is not a dataset folder lightship knows"),
])
def test_bad_data_or_folds_are_refused_before_plan_json(bad, needle, tmp_path, capsys):
    """Issue 24: --folds 1000 (more than a class has) or --data at a folder that holds no
    dataset was one line, but plan.json was written first, so the corrected command on the
    same --out was refused ("was made with folds 1000, not 2"). Nothing is written now."""
    out, not_data = tmp_path / "study", tmp_path / "not-data"
    not_data.mkdir()
    argv = ["study", "degradation", "--budget", "quick", "--no-progress", "--out", str(out),
            *[str(not_data) if a == "NOT_DATA" else a for a in bad]]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()
    plan = make_plan(get_study("degradation"), "quick", seeds=None, folds=None,
                     data="mnist5k", out=out, command="the corrected command")
    assert plan.folds == 2


def test_study_list_names_every_study_and_budget(capsys):
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    for name in STUDIES:
        assert out.count(f"{name}:") == 1
    n = len(STUDIES)
    assert n >= 3 and out.count("  quick:") == out.count("  default:") == out.count("  full:") == n
    assert out.count("  converged:") == n  # sized and measured, not needed, or "none yet"
    budgets = [cls().budgets for cls in STUDIES.values()]
    needless = sum("converged" not in b and b["default"].converges for b in budgets)
    assert out.count("  converged: not needed: the default converges (measured)") == needless
    assert out.count("  converged: none yet") == n - needless - sum(
        "converged" in b for b in budgets)
    assert "  converged: not needed" in out  # pretrain's default converges


def test_a_default_that_converges_says_what_it_measured_and_has_no_converged_budget():
    """Budget.converges: the default's quiet run converged every cell its primary claims read,
    so a converged budget would be the same run; --help says so per study."""
    from lightship.studies.cli import default_budgets_text

    text = default_budgets_text()
    for name, cls in STUDIES.items():
        budgets = cls().budgets
        if budgets["default"].converges:
            assert "converged" not in budgets and " min " in budgets["default"].measured
            assert f"  {name}: {budgets['default'].measured}\n    --budget converged: not " \
                   "needed: the default converges (measured)" in text
    assert get_study("pretrain").budgets["default"].converges


def test_converged_budgets_train_the_unconverged_arms_longer(tmp_path):
    """`--budget converged`: the default, trained long enough for its unconverged arms: rocket
    at 200 epochs (its milestones follow), underfit's ×0.125 net only at 8× (also under
    --epochs), every other width at the default's epochs; transfer's adversarial arm 2×;
    degradation at depths 20/32, its plain nets 4× (800); a budget that is never measured is
    not a converged budget."""
    rocket = get_study("rocket")
    conv, default = rocket.budgets["converged"], rocket.budgets["default"]
    assert conv.epochs == 200 and default.epochs == 100 and conv.confirm
    assert " min " in conv.measured and "not measured" not in conv.measured
    assert {a.name for a in rocket.arms(conv)} == {a.name for a in rocket.arms(default)}
    assert {a.overrides["train.epochs"] for a in rocket.arms(conv)} == {200}
    underfit = get_study("underfit")
    for epochs, long in ((None, 960), (10, 80)):
        plan = make_plan(underfit, "converged", seeds=1, folds=None, data="digits",
                         out=tmp_path / f"u{epochs}", command="test", epochs=epochs)
        by_arm = {c.arm: c.recipe.train.epochs for c in plan.cells}
        short = long // 8
        assert by_arm == {"resnet8-x0.125": long, "resnet8-x0.25": short, "resnet8-x0.5": short,
                          "resnet8-x1": short, "resnet8-x2": short}
    assert " min " in underfit.budgets["converged"].measured
    transfer = get_study("transfer")
    for epochs, long in ((None, 400), (10, 10)):  # the primary arms only, adversarial 2×
        plan = make_plan(transfer, "converged", seeds=1, folds=None, data="digits",
                         out=tmp_path / f"t{epochs}", command="test", epochs=epochs)
        assert {c.arm: c.recipe.train.epochs for c in plan.cells} == {
            "teacher": long, "light": long, "kd": long, "adversarial": 2 * long}
    assert " min " in transfer.budgets["converged"].measured
    named = make_plan(transfer, "converged", seeds=1, folds=None, data="digits",
                      out=tmp_path / "t2", command="test", arms=["dkd"])
    assert {c.arm for c in named.cells} == {"dkd", "teacher"}  # --arms replaces the budget's
    tricks = get_study("tricks")
    epochs = {a.name: a.overrides["train.epochs"] for a in tricks.arms(tricks.budgets["converged"])}
    assert set(epochs) == {a.name for a in tricks.arms(tricks.budgets["default"])}
    assert sorted(set(epochs.values())) == [200, 333]  # mixup rows 200/120 as long
    assert " min " in tricks.budgets["converged"].measured
    degradation = get_study("degradation")  # plain-56 does not converge: depths 20/32
    plan = make_plan(degradation, "converged", seeds=1, folds=None, data="digits",
                     out=tmp_path / "d", command="test")
    recipes = {c.arm: c.recipe for c in plan.cells}
    assert {a: r.train.epochs for a, r in recipes.items()} == {
        "plain20": 800, "plain32": 800, "resnet20": 200, "resnet32": 200, "resnet20-B": 200,
        "resnet20-C": 200}
    assert all(r.schedule.milestones is None for r in recipes.values())  # 50/75 % of each
    labels = [c.label for c in degradation.claims(plan.budget, "seed") if c.primary]
    assert labels[:2] == ["plain-32 trains to a higher train CE than plain-20",
                          "at depth 32 the shortcuts lower the train CE (plain − residual > 0)"]
    assert " min " in degradation.budgets["converged"].measured
    for cls in STUDIES.values():  # a budget's arms are the study's own
        study = cls()
        for b in study.budgets.values():
            if b.arms is not None:
                assert set(b.arms) <= {a.name for a in study.arms(b)}


# ---------------------------------------------------------------- recipes of the arms


def _auto_here() -> str:
    import torch

    from lightship.train.precision import choose_precision

    return choose_precision("auto", "auto", torch.device("cpu")).name


def test_a_study_pins_its_precision_and_refuses_to_continue_in_another(tmp_path, capsys):
    from lightship.train.precision import cpu_kind

    here, out = _auto_here(), tmp_path / "s"
    plan = make_plan(get_study("degradation"), "quick", seeds=None, folds=None, data="mnist5k",
                     out=out, command="test")
    assert (plan.precision, plan.cpu) == (here, cpu_kind())
    assert {c.recipe.train.precision for c in plan.cells} == {here}  # auto, pinned per cell
    saved = plan.to_dict()
    assert (saved["precision"], saved["cpu"]) == (here, cpu_kind())
    other = "fp32" if here == "bf16" else "bf16"  # as if planned on the other kind of CPU
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({**saved, "precision": other, "cpu": "a CPU"}))
    assert main(["study", "degradation", "--budget", "quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"was planned in {other} (on a CPU) but would continue in " \
        f"{here} here (on {cpu_kind()})" in err[0], err
    assert f"add --precision {other}" in err[0] and "a new --out" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["plan.json"]  # nothing written
    pinned = make_plan(get_study("degradation"), "quick", seeds=None, folds=None,
                       data="mnist5k", out=out, command="test", precision=other)
    assert pinned.precision == other and pinned.cpu == "a CPU"  # where it was planned
    assert {c.recipe.train.precision for c in pinned.cells} == {other}
    from lightship.studies.cli import plan_of

    assert plan_of(out).precision == other  # `lightship report` reads it on any machine
    legacy = {k: v for k, v in saved.items() if k not in ("precision", "cpu")}
    (out / "plan.json").write_text(json.dumps(legacy))  # planned before the pin: left as it was
    old = make_plan(get_study("degradation"), "quick", seeds=None, folds=None, data="mnist5k",
                    out=out, command="test")
    assert old.precision is None and "precision" not in old.to_dict()
    assert {c.recipe.train.precision for c in old.cells} == {"auto"}



def test_a_cell_trained_before_a_recipe_key_existed_is_not_another_recipe(tmp_path):
    """A key added to the schema later (absent from an old cell's recipe.yaml) counts as its
    default; a changed value is refused with the key named."""
    import yaml

    from lightship.studies.runner import check_cells

    plan = make_plan(get_study("degradation"), "quick", seeds=None, folds=None, data="mnist5k",
                     out=tmp_path / "s", command="test")
    cell = plan.cells[0]
    saved = yaml.safe_load(cell.recipe.to_yaml())
    del saved["augment"]["rotate"], saved["train"]["tta"]  # keys newer than the cell
    root = plan.out / cell.rel
    root.mkdir(parents=True)
    (root / "recipe.yaml").write_text(yaml.safe_dump(saved))
    check_cells(plan)  # no error
    saved["optim"]["lr"] = 0.5
    (root / "recipe.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match=r"another recipe \(key optim.lr \(0.5 there"):
        check_cells(plan)
    saved["optim"]["no_such_key"] = 1
    (root / "recipe.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match="no longer loads"):
        check_cells(plan)


def test_tricks_rows_are_cumulative_with_the_papers_values():
    study = get_study("tricks")
    budget = study.budgets["default"]
    arms = study.arms(budget)
    names = [a.name for a in arms]
    assert names == ["baseline", "large-batch", "zero-gamma", "no-bias-decay", "cosine",
                     "label-smoothing", "mixup", "resnet-c", "resnet-d"]
    base, big = arms[0].overrides, arms[1].overrides
    assert base["optim.lr"] == 0.1 and base["optim.lr_scaling"] and \
        base["optim.reference_batch"] == 256 and base["optim.weight_decay"] == 1e-4
    assert big["train.batch_size"] == 4 * base["train.batch_size"]
    assert big["schedule.warmup_epochs"] == pytest.approx(5 * budget.epochs / 120, abs=1e-3)
    for prev, arm in zip(arms, arms[1:], strict=False):
        changed = {k for k in arm.overrides if arm.overrides[k] != prev.overrides.get(k)}
        assert changed, f"{arm.name} changes nothing"
        assert set(prev.overrides) <= set(arm.overrides)  # cumulative: keeps every earlier trick
    last = arms[-1].overrides
    assert last["train.label_smoothing"] == 0.1 and last["augment.mixup_alpha"] == 0.2
    assert last["train.epochs"] == round(budget.epochs * 200 / 120)
    full = [a.name for a in study.arms(study.budgets["full"])]
    assert "resnet-b" in full  # bottleneck nets get the B row


def test_tricks_extra_arm_is_the_stack_without_zero_gamma(tmp_path):
    study = get_study("tricks")
    plan = make_plan(study, "default", seeds=None, folds=None, data="mnist5k",
                     out=tmp_path / "s", command="test")
    assert "stack-no-zero-gamma" not in {c.arm for c in plan.cells}  # only when named
    both = make_plan(study, "default", seeds=None, folds=None, data="mnist5k",
                     out=tmp_path / "b", command="test", arms=["resnet-d", "stack-no-zero-gamma"])
    r = {c.arm: c.recipe for c in both.cells if c.fold == 0}
    assert r["resnet-d"].model.zero_gamma and not r["stack-no-zero-gamma"].model.zero_gamma
    assert r["stack-no-zero-gamma"].model_dump(exclude={"model", "run"}) == \
        r["resnet-d"].model_dump(exclude={"model", "run"})
    assert r["stack-no-zero-gamma"].model.variant == "D"
    extra = make_plan(study, "default", seeds=None, folds=None, data="mnist5k",
                      out=tmp_path / "e", command="test",
                      arms=["baseline", "resnet-d", "stack-no-zero-gamma"])
    top1 = {"baseline": 95.0, "resnet-d": 94.0, "stack-no-zero-gamma": 96.0}
    cells = _fake(extra, {a: 0.1 for a in top1})
    for rec in cells.values():
        rec["test_top1"] += top1[rec["arm"]] - 98.0
    res = _analysis(extra, cells)
    got = {d.claim.text(): d for d in res.decisions}
    d = got["the whole stack without zero-γ beats the baseline"]
    assert d.exploratory and d.outcome == "agrees" and d.estimate == pytest.approx(1.0, abs=0.1)
    assert "(exploratory)" in d.text()
    assert got["the whole stack beats the baseline on test top-1"].outcome == "contradicts"
    # exploratory claims stay out of the Holm family: their adjusted p is their own
    assert d.p_adjusted == d.p


def test_tricks_preset_holds_the_papers_values():
    from lightship.recipe import build_recipe

    r = build_recipe("tricks")
    assert (r.optim.lr, r.optim.reference_batch, r.optim.weight_decay) == (0.1, 256, 1e-4)
    assert r.optim.lr_scaling and r.optim.nesterov and r.optim.no_bias_decay
    assert r.schedule.warmup_epochs == pytest.approx(5 * r.train.epochs / 120, abs=1e-3)
    assert (r.train.label_smoothing, r.augment.mixup_alpha) == (0.1, 0.2)


# ---------------------------------------------------------------- verdict wording


def _fake(plan, values, converged=True):
    """cell.json-like records with given train CE (and test top-1 near 98) per arm, a small
    reproducible per-cell jitter (paired differences that do not collapse), and the cells'
    convergence flag."""
    out = {}
    for c in plan.cells:
        jitter = random.Random(f"{c.arm}/{c.seed}/{c.fold}").uniform(-1, 1)
        ce = values[c.arm] + 0.001 * (c.fold or 0) + 0.0005 * c.seed + 0.002 * jitter
        out[c.rel] = {"arm": c.arm, "seed": c.seed, "fold": c.fold, "run": c.rel,
                      "status": "finished", "test_top1": 98.0 + 0.01 * (c.fold or 0)
                      + 0.05 * jitter, "test_loss": 0.1, "train_ce": ce, "train_top1": 99.0,
                      "n_train": 2500, "n_test": 2500, "train_loss": ce, "epochs": 10,
                      "params": 1000, "macs": 1, "verdict": "converged",
                      "converged": converged, "wall_time_s": 1.0}
    return out


def _analysis(plan, cells):
    """The analysis of made-up records: their own convergence flags (no run folders)."""
    return Analysis(plan, cells, convergence=False)


def _outcomes(res):
    """claim label → (outcome, reason) of the judge's decisions."""
    return {d.claim.text(): (d.outcome, d.reason) for d in res.decisions}


def test_degradation_claims_are_judged_on_the_numbers(tmp_path):
    study = get_study("degradation")
    plan = make_plan(study, "default", seeds=3, folds=2, data="mnist5k",
                     out=tmp_path / "s", command="test")
    paper_like = {"plain20": 0.05, "plain32": 0.08, "plain56": 0.15, "resnet20": 0.05,
                  "resnet32": 0.04, "resnet56": 0.03, "resnet20-B": 0.05, "resnet20-C": 0.05}
    res = _analysis(plan, _fake(plan, paper_like))
    assert res.unit == "seed"
    got = _outcomes(res)
    assert got["plain-56 trains to a higher train CE than plain-20"] == ("agrees", None)
    assert got["at depth 56 the shortcuts lower the train CE (plain − residual > 0)"] == \
        ("agrees", None)
    assert got["shortcut B − A at depth 20: test top-1 within ±1 point"] == ("agrees", None)
    reversed_ = dict(paper_like, plain20=0.15, plain56=0.05)
    res = _analysis(plan, _fake(plan, reversed_))
    d = next(d for d in res.decisions if d.claim.text().startswith("plain-56 trains"))
    assert d.outcome == "contradicts" and d.estimate == pytest.approx(-0.1, abs=0.005)
    md = to_markdown(res, res.verdict_lines(), {}, [])
    assert "## Scoreboard" in md and "**contradicts**" in md and "| plain-56 |" in md
    # the same numbers on cells that have not converged: not settled, never contradicts
    res = _analysis(plan, _fake(plan, reversed_, converged=False))
    d = next(d for d in res.decisions if d.claim.text().startswith("plain-56 trains"))
    assert (d.outcome, d.reason) == ("not settled", "under-trained (12 of 12 cells)")


def test_degradation_compares_shortcuts_a_b_and_c(tmp_path):
    """He et al. 2016 Table 3: A (zero padding), B (projection on shape change), C (projection on
    every shortcut), each judged as an equivalence within ±1 point of A."""
    study = get_study("degradation")
    plan = make_plan(study, "default", seeds=3, folds=None, data="mnist5k",
                     out=tmp_path / "s", command="test",
                     arms=["resnet20", "resnet20-B", "resnet20-C"])
    shortcut = {c.arm: c.recipe.model.shortcut for c in plan.cells}
    assert shortcut == {"resnet20": "A", "resnet20-B": "B", "resnet20-C": "C"}
    res = _analysis(plan, _fake(plan, {"resnet20": 0.05, "resnet20-B": 0.05,
                                       "resnet20-C": 0.05}))
    assert {c.label for c, _ in res.comparisons} == {
        "shortcut B vs A at depth 20", "shortcut C vs A at depth 20",
        "shortcut C vs B at depth 20"}
    got = _outcomes(res)
    for k in "BC":
        assert got[f"shortcut {k} − A at depth 20: test top-1 within ±1 point"] == \
            ("agrees", None)
    assert "resnet20-C" in {a.name for a in study.arms(study.budgets["full"])}
    # the claims on arms this run did not train are listed as not run, never judged
    assert any(line.startswith("not run — plain-56 trains") for line in res.verdict_lines())


def test_chosen_arms_only_train_those_and_judge_what_they_can(tmp_path):
    study = get_study("degradation")
    plan = make_plan(study, "default", seeds=6, folds=2, data="mnist5k", out=tmp_path / "s",
                     command="test", arms=["resnet20", "resnet20-B"])
    assert {c.arm for c in plan.cells} == {"resnet20", "resnet20-B"} and len(plan.cells) == 24
    assert [a["name"] for a in plan.to_dict()["arms"]] == ["resnet20", "resnet20-B"]
    res = _analysis(plan, _fake(plan, {"resnet20": 0.05, "resnet20-B": 0.05}))
    assert [d.claim.text() for d in res.decisions] == [
        "shortcut B − A at depth 20: test top-1 within ±1 point"]
    assert res.decisions[0].outcome == "agrees" and res.decisions[0].n == 6
    assert {c.label for c, _ in res.comparisons} == {"shortcut B vs A at depth 20"}
    longer = make_plan(get_study("tricks"), "default", seeds=None, folds=None, data="mnist5k",
                       out=tmp_path / "t", command="test", arms=["mixup"], epochs=30)
    r = longer.cells[0].recipe
    assert r.train.epochs == 50 and r.schedule.warmup_epochs == pytest.approx(1.25)
    assert longer.to_dict()["epochs"] == 30


def test_one_seed_over_k_folds_uses_the_corrected_fold_interval(tmp_path):
    """One seed × K folds: the unit is the fold, with Nadeau & Bengio's corrected variance; the
    descriptive comparison rows use the same unit, so table and verdict agree."""
    from lightship.judge import corrected_se

    study = get_study("degradation")
    plan = make_plan(study, "default", seeds=1, folds=4, data="mnist5k", out=tmp_path / "s",
                     command="test", arms=["resnet20", "resnet20-B"])
    cells = _fake(plan, {"resnet20": 0.05, "resnet20-B": 0.06})
    res = _analysis(plan, cells)
    assert res.unit == "fold"
    d = res.diff("resnet20", "resnet20-B", "train_ce")
    by = {(r["arm"], r["fold"]): r["train_ce"] for r in cells.values()}
    diffs = [by["resnet20-B", f] - by["resnet20", f] for f in range(4)]
    half = scipy.stats.t.ppf(0.975, 3) * corrected_se(diffs, 4)
    assert d.n == 4 and d.lo == pytest.approx(statistics.fmean(diffs) - half)


# ---------------------------------------------------------------- end to end


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _cmd(out: Path, jobs: int = 1) -> list[str]:
    return [sys.executable, "-m", "lightship", "study", "underfit", "--budget", "quick",
            "--data", DATA, "--out", str(out), "--jobs", str(jobs), "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "whole"
    proc = subprocess.run(_cmd(out), env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "6/6 cells" in proc.stdout
    from lightship.train.precision import cpu_kind

    # underfit's arms use the baseline recipe, which sets fp32: the pin of auto does not apply
    setup = f"precision fp32 (the recipes' own); this CPU: {cpu_kind()}"
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(f"cells done; {setup}")
    assert any(ln.startswith(f"study underfit (quick): 6/6 cells; {setup}; ") for ln in lines)
    progress = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert [ln.split("]")[0] for ln in progress] == [f"[{i}/6" for i in range(1, 7)]
    assert all("; eta " in ln for ln in progress)  # cells done / total and the ETA per line
    from lightship.diagnose.result import converged_flag

    cells = [json.loads(p.read_text()) for p in (out / "cells").glob("*/*/cell.json")]
    assert len(cells) == 6  # each says whether its verdict counts it as converged (the judge's)
    assert all(c["converged"] is converged_flag(c["verdict"]) for c in cells)
    return out


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    snap = {}
    for cell in (out / "cells").glob("*/*/cell.json"):
        w = cell.parent / "weights.safetensors"
        snap[str(cell.parent.relative_to(out))] = (w.stat().st_mtime_ns, w.stat().st_ino)
    return snap


@pytest.mark.timeout(1200)  # three short studies; minutes only when the machine is shared
def test_killed_study_resumes_and_ends_like_an_uninterrupted_one(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    victim = None
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            done = list((out / "cells").glob("*/*/cell.json"))
            mid = [p.parents[1] for p in (out / "cells").glob("*/*/checkpoints/last.json")
                   if not (p.parents[1] / "cell.json").exists()]
            if done and mid:
                os.killpg(proc.pid, signal.SIGKILL)  # mid-cell: checkpointed, not finished
                victim = mid[0]
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert victim is not None, "the study ended before a cell could be killed mid-way"
    finished = _snapshot(out)
    assert finished and str(victim.relative_to(out)) not in finished

    # The re-run also takes the parallel path: two worker processes, one torch thread each (as
    # the reference's single process), must give the same numbers.
    again = subprocess.run(_cmd(out, jobs=2), env=_env(), capture_output=True, text=True,
                           timeout=1200)
    assert again.returncode == 0, again.stderr[-2000:]
    after = _snapshot(out)
    for cell, stamp in finished.items():
        assert after[cell] == stamp, f"{cell} was trained again"
    starts = [json.loads(line) for line in (victim / "metrics.jsonl").read_text().splitlines()
              if '"kind": "start"' in line]
    assert [s["resumed"] for s in starts] == [False, True], "the killed cell did not resume"
    got = json.loads((out / "study.json").read_text())
    want = json.loads((uninterrupted / "study.json").read_text())
    assert got["complete"] and got["cells_done"] == 6
    assert without_session(got) == without_session(want)
    assert [s["jobs"] for s in got["sessions"]] == [2]  # the killed session wrote nothing


def test_report_accepts_a_study_folder(uninterrupted, capsys):
    before = json.loads((uninterrupted / "study.json").read_text())
    assert main(["report", str(uninterrupted)]) == 0
    out = capsys.readouterr().out
    assert "refreshed" in out and "report.html" in out
    html = (uninterrupted / "report.html").read_text()
    assert html.count("s0-f0") >= 3  # one paired cell per arm
    assert "<h2 id='scoreboard'>Scoreboard</h2>" in html  # the claims lead (studies/page.py)
    assert html.index("id='scoreboard'") < html.index("id='curves'") < html.index("s0-f0")
    after = json.loads((uninterrupted / "study.json").read_text())
    assert without_session(after) == without_session(before)
    md = (uninterrupted / "study.md").read_text()
    for needle in ("## Verdicts", "## Paired comparisons", "resnet8 ×0.125", "underfit.png",
                   "- precision: **fp32** (resnet8-x0.125, resnet8-x0.5, resnet8-x1: their "
                   "recipes' own)"):  # baseline sets fp32; the pin of auto does not apply
        assert needle in md, needle
    assert after["precision"] == _auto_here() and after["sessions"][0]["cpu"]
    assert after["trained_in"] == {"fp32": ["resnet8-x0.125", "resnet8-x0.5", "resnet8-x1"]}
    assert (uninterrupted / "underfit.png").stat().st_size > 1000
    assert len(list((uninterrupted / "curves").glob("*.png"))) == 3


class _TeacherStudent(Study):
    """A two-arm study whose student is distilled from the teacher cell of its seed and fold."""

    name = "toy-needs"
    budgets = {"quick": Budget("quick", epochs=1, seeds=1, folds=2, note="toy",
                               final_eval_only=True)}

    def arms(self, budget):
        tiny = {"model.name": "resnet8", "model.width": 0.25, "train.epochs": 1,
                "train.batch_size": 64}
        return [Arm("student", "student", "baseline", {**tiny, "method.name": "kd"},
                    needs={"method.teacher.run": "teacher"}),
                Arm("teacher", "teacher", "baseline", tiny, cost=5.0)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_cell_that_needs_another_arm_gets_its_run_folder_and_waits_for_it(jobs, tmp_path):
    out = tmp_path / "study"
    plan = make_plan(_TeacherStudent(), "quick", seeds=None, folds=None, data=DATA, out=out,
                     command="toy", arms=["student"])  # the teacher comes along
    assert sorted({c.arm for c in plan.cells}) == ["student", "teacher"]
    student = next(c for c in plan.cells if c.arm == "student" and c.fold == 1)
    assert student.needs == ("cells/teacher/s0-f1",)
    assert student.recipe.method.teacher.run == str(out / "cells/teacher/s0-f1")
    order = []
    records = execute(plan, jobs=jobs, quiet=True, on_record=lambda c, r: order.append(c.rel))
    assert all(r["status"] == "finished" for r in records.values())
    for fold in (0, 1):  # each student ran after its own teacher
        assert order.index(f"cells/teacher/s0-f{fold}") < order.index(f"cells/student/s0-f{fold}")
    start = json.loads((out / "cells/student/s0-f0/metrics.jsonl").read_text().splitlines()[0])
    assert "teacher" in json.dumps(start)


def test_a_cell_whose_needed_cell_failed_is_reported_not_run():
    cell = Cell("student", 0, 0, "cells/student/s0-f0", None, 1.0, ("cells/teacher/s0-f0",))
    assert _ready(cell, {}) is False
    assert _ready(cell, {"cells/teacher/s0-f0": {"status": "finished"}}) is True
    failed = {"cells/teacher/s0-f0": {"status": "failed"}}
    assert _ready(cell, failed) is None
    rec = _blocked(cell, failed)
    assert rec["status"] == "failed" and "cells/teacher/s0-f0" in rec["error"]


def test_confirm_trains_the_twins_and_lets_them_decide(tmp_path):
    """--confirm: each cell a claim on trained nets reads, unless its verdict says converged,
    gets its ×2-schedule twin under twins/; the analysis then takes convergence from the twin
    (drop of the clean train CE ≤ max(0.01, 10 %)), and a report re-reads it."""
    out = tmp_path / "s"
    code = main(["study", "underfit", "--budget", "quick", "--data", DATA, "--out", str(out),
                 "--arms", "resnet8-x0.125,resnet8-x1", "--confirm", "--no-progress"])
    assert code == 0
    got = json.loads((out / "study.json").read_text())
    for c in got["cells"]:
        twin = out / "twins" / c["arm"] / Path(c["run"]).name
        if c["converged_by"] == "×2 twin":
            t = json.loads((twin / "cell.json").read_text())
            assert t["epochs"] == 2 * c["epochs"] and c["twin_ce"] == t["train_ce"]
            assert c["converged"] == (c["train_ce"] - t["train_ce"]
                                      <= max(0.01, 0.1 * c["train_ce"]))
        else:  # only a cell the verdict already calls converged goes without a twin
            assert c["converged"] is True and not twin.exists()
    assert any(c["converged_by"] == "×2 twin" for c in got["cells"])
    # the twins are not cells: the plan, the arms and the cell count are the study's own
    assert got["cells_total"] == 4 and set(got["arms"]) == {"resnet8-x0.125", "resnet8-x1"}


def test_a_full_budget_needs_its_data_named(tmp_path):
    """The full budgets are the papers' own settings on their own data: without --data they are
    refused (one line) instead of running a CIFAR-length schedule on MNIST-5k."""
    for name in STUDIES:
        with pytest.raises(UserError, match="give --data PATH"):
            make_plan(get_study(name), "full", seeds=None, folds=None, data=None,
                      out=tmp_path / name, command="t")
        assert not (tmp_path / name).exists()
    assert make_plan(get_study("underfit"), "default", seeds=1, folds=None, data=None,
                     out=tmp_path / "d", command="t").data == "digits"
