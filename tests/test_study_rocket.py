"""`lightship study rocket`: the Rocket paper's arms with the authors' values, the teacher wiring,
verdicts that follow the numbers, and one tiny end-to-end run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lightship.cli import main
from lightship.studies import get_study
from lightship.studies.analysis import Analysis, to_markdown
from lightship.studies.runner import make_plan

DATA = "synthetic:n=8000,classes=4,size=8,channels=1"
LIGHT_ARMS = ("light", "at", "kd", "rocket-interval", "rocket-kd", "no-gb", "no-share",
              "neither")


def _plan(tmp_path: Path, budget: str = "default", seeds: int | None = None, **kw):
    return make_plan(get_study("rocket"), budget, seeds=seeds, folds=None, data="mnist5k",
                     out=tmp_path / "s", command="test", **kw)


def _recipes(plan) -> dict:
    return {c.arm: c.recipe for c in plan.cells if c.seed == 0 and c.fold == 1}


ALL = ["light", "at", "kd", "rocket-interval", "bottom-light", "rocket-bottom", "rocket-kd",
       "booster", "no-gb", "no-share", "neither"]
CORE = ["light", "kd", "rocket-interval", "rocket-kd", "booster", "no-gb", "no-share"]


def test_rocket_arms_hold_the_authors_values(tmp_path):
    # a default run trains the seven arms the claims need; the rest of the tables with --arms
    assert list(_recipes(_plan(tmp_path))) == CORE
    assert _plan(tmp_path).budget.epochs == 100
    plan = _plan(tmp_path, arms=ALL)
    r = _recipes(plan)
    assert list(r) == CORE + ["at", "bottom-light", "rocket-bottom", "neither"]
    e = plan.budget.epochs
    for arm, rec in r.items():  # the authors' CIFAR schedule, scaled to the budget's epochs
        assert (rec.optim.name, rec.optim.lr, rec.optim.momentum, rec.optim.nesterov,
                rec.optim.weight_decay, rec.train.batch_size) == ("sgd", 0.1, 0.9, False, 5e-4,
                                                                  128), arm
        assert rec.schedule.name == "multistep" and rec.schedule.gamma == 0.2
        assert rec.schedule.milestones == pytest.approx([0.3 * e, 0.6 * e, 0.8 * e])
        assert rec.model.width == 0.25 and rec.train.label_smoothing == 0
    assert {a for a in r if r[a].model.name == "wrn-16-1"} == set(LIGHT_ARMS)
    assert r["booster"].model.name == "wrn-40-1" and r["booster"].method.name == "supervised"
    assert r["bottom-light"].model.name == r["rocket-bottom"].model.name == "wrn-40-1-s2"
    # their KD column (--alpha 0.9) on their scale: 0.1·CE + 2·0.9/K·KD, K from the data
    assert (r["kd"].method.name, r["kd"].method.alpha, r["kd"].method.kd_scale,
            r["kd"].method.T) == ("kd", 0.9, "rocket", 4.0)
    assert (r["at"].method.name, r["at"].method.at_beta) == ("at", 1000.0)
    rocket = {a: r[a].method for a in ("rocket-interval", "rocket-bottom", "rocket-kd", "no-gb",
                                       "no-share", "neither")}
    for m in rocket.values():
        assert m.booster == "wrn-40-1" and m.rocket_lambda == 0.03
    assert [(rocket[a].share, rocket[a].gradient_block) for a in rocket] == [
        ("interval", True), ("bottom", True), ("interval", True), ("interval", False),
        ("none", True), ("none", False)]
    # their Rocket+KD: α 0.9 on a KL averaged over batch × classes and doubled (2·0.9/K)
    assert (rocket["rocket-kd"].alpha, rocket["rocket-kd"].kd_scale) == (0.9, "rocket")
    assert rocket["rocket-kd"].name == "rocket+kd" and rocket["rocket-kd"].T == 4.0
    # the paper's full setting keeps full width and 200 epochs (a new plan loads its data first)
    from tests.test_data import write_cifar10

    write_cifar10(cifar := tmp_path / "cifar-10-batches-py")
    full = make_plan(get_study("rocket"), "full", seeds=None, folds=None,
                     data=str(cifar), out=tmp_path / "f", command="t")
    assert full.cells[0].recipe.model.width == 1.0 and full.cells[0].recipe.train.epochs == 200
    assert full.cells[0].recipe.schedule.milestones == [60, 120, 160]
    assert [c.arm for c in full.cells if c.seed == 0] == ALL  # the full budget: every arm


def test_kd_at_and_rocket_kd_learn_from_the_booster_cell_of_their_seed_and_fold(tmp_path):
    plan = _plan(tmp_path, seeds=2, arms=ALL)
    taught = [c for c in plan.cells if c.arm in ("kd", "at", "rocket-kd")]
    assert len(taught) == 3 * 2 * plan.budget.folds
    for c in taught:
        rel = f"cells/booster/s{c.seed}-f{c.fold}"
        assert c.needs == (rel,)
        assert c.recipe.method.teacher.run == str(tmp_path / "s" / rel)
    assert all(not c.needs for c in plan.cells if c.arm not in ("kd", "at", "rocket-kd"))
    only = _plan(tmp_path, arms=["rocket-kd"])  # the teacher comes along
    assert {c.arm for c in only.cells} == {"rocket-kd", "booster"}


def test_extra_arms_train_only_when_named(tmp_path):
    assert not any(c.arm.endswith("-narrow") for c in _plan(tmp_path).cells)
    extra = _plan(tmp_path, arms=["light-narrow", "rocket-interval-narrow"])
    r = _recipes(extra)
    assert set(r) == {"light-narrow", "rocket-interval-narrow"}
    assert r["light-narrow"].model.width == r["rocket-interval-narrow"].model.width == 0.125
    # below width 0.5, NCHW: channels_last crashes this torch's CPU backward there
    assert r["light-narrow"].train.channels_last is False
    assert r["rocket-interval-narrow"].method.rocket_lambda == 0.03
    assert not any(c.arm.endswith("-wide") for c in _plan(tmp_path).cells)
    wide = _recipes(_plan(tmp_path, arms=["light-wide", "booster-wide",
                                          "rocket-interval-wide"]))
    assert {a: (w.model.name, w.model.width) for a, w in wide.items()} == {
        "light-wide": ("wrn-16-1", 0.5), "booster-wide": ("wrn-40-1", 0.5),
        "rocket-interval-wide": ("wrn-16-1", 0.5)}
    assert wide["rocket-interval-wide"].method.share == "interval"
    assert wide["light-wide"].train.channels_last == "auto"  # ×0.5: no NCHW workaround


def _fake(plan, top1: dict[str, float], ce: dict[str, float] | None = None) -> dict:
    """cell.json-like records with the given test top-1 (and train CE) per arm, plus a little
    cell-to-cell spread that the paired differences cancel."""
    out = {}
    for c in plan.cells:
        spread = 0.3 * (c.fold or 0) + 0.2 * c.seed + 0.1 * random.Random(
            f"{c.arm}/{c.seed}/{c.fold}").uniform(-1, 1)
        out[c.rel] = {"arm": c.arm, "seed": c.seed, "fold": c.fold, "run": c.rel,
                      "status": "finished", "test_top1": top1[c.arm] + spread, "test_loss": 0.1,
                      "train_ce": (ce or {}).get(c.arm, 0.05) + 0.001 * (c.fold or 0),
                      "train_top1": 99.0, "n_train": 3333, "n_test": 1667, "train_loss": 0.05,
                      "epochs": 8, "params": 1000, "macs": 1, "verdict": "converged",
                      "converged": True, "wall_time_s": 1.0}
    return out


def _judged(plan, top1, ce=None):
    res = Analysis(plan, _fake(plan, top1, ce), convergence=False)
    return res, {d.claim.text(): d for d in res.decisions}


def test_rocket_claims_are_judged_on_the_numbers(tmp_path):
    plan = _plan(tmp_path, arms=ALL, seeds=3)
    paper_like = {"light": 91.0, "at": 91.5, "kd": 91.8, "rocket-interval": 92.5,
                  "bottom-light": 90.0, "rocket-bottom": 91.0, "rocket-kd": 93.2,
                  "booster": 93.5, "no-gb": 92.0, "no-share": 91.9, "neither": 91.5}
    res, got = _judged(plan, paper_like, {"light": 0.2, "rocket-interval": 0.1})
    assert res.unit == "seed" and all(d.outcome == "agrees" for d in got.values()), got
    main = got["Rocket interval beats the light net alone"]
    assert main.estimate == pytest.approx(1.5, abs=0.15) and main.n == 3
    # Rocket no better than light alone, the gradient block hurting, Rocket+KD below KD
    against = dict(paper_like, **{"rocket-interval": 91.0, "no-gb": 91.6, "rocket-kd": 91.0})
    res, got = _judged(plan, against)
    assert got["Rocket interval beats the light net alone"].outcome == "not settled"
    assert got["the gradient block helps"].outcome == "contradicts"
    assert got["Rocket + KD beats Rocket interval and KD"].outcome == "contradicts"
    md = to_markdown(res, res.verdict_lines(), {}, [])
    assert "| Rocket + KD (their α 0.9) |" in md and "| 6/6 |" in md
    assert "| sharing: Rocket vs no sharing | train CE |" in md
    # a default run has no Rocket bottom pair: that claim is listed as not run
    default = _plan(tmp_path, seeds=3)
    res, got = _judged(default, paper_like)
    assert "Rocket bottom beats its light net alone" not in got
    assert any(line.startswith("not run — Rocket bottom beats its light net alone: train "
                               "rocket-bottom,bottom-light with --arms")
               for line in res.verdict_lines())
    assert got["Rocket interval beats the light net alone"].outcome == "agrees"
    # a study of the extra arms alone judges only what it has, as exploratory claims
    extra = _plan(tmp_path, arms=["light-narrow", "rocket-interval-narrow"], seeds=3)
    res, got = _judged(extra, {"light-narrow": 80.0, "rocket-interval-narrow": 82.0})
    (d,) = got.values()
    assert d.exploratory and d.outcome == "agrees" and "(exploratory)" in d.text()


def test_rocket_kd_study_runs_end_to_end_with_its_teacher(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["study", "rocket", "--budget", "quick", "--data", DATA, "--arms", "rocket-kd",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "study.json").read_text())
    assert result["cells_done"] == result["cells_total"] == 4
    assert {c["arm"] for c in result["cells"]} == {"booster", "rocket-kd"}
    assert all(c["status"] == "finished" for c in result["cells"])
    saved = (out / "cells/rocket-kd/s0-f1/recipe.yaml").read_text()
    assert str(out / "cells/booster/s0-f1") in saved
    assert (out / "rocket.png").exists() and "Rocket + KD vs KD" not in (
        out / "study.md").read_text()  # KD was not trained: that comparison is left out
