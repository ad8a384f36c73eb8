"""`lightship study transfer`: the arms hold the authors' settings, students read the teacher
cell of their own seed and fold, and the verdicts follow the numbers."""

from __future__ import annotations

import pytest

from lightship.studies import get_study
from lightship.studies.analysis import Analysis, to_markdown
from lightship.studies.runner import make_plan

STUDENTS = ("kd", "hint", "at", "dkd", "dml", "adversarial", "rocket-kd", "adversarial-last")


def _plan(tmp_path, budget="default", **kw):
    return make_plan(get_study("transfer"), budget, seeds=kw.pop("seeds", None), folds=None,
                     data="mnist5k", out=tmp_path / "s", command="test", **kw)


def _recipes(plan):
    return {c.arm: c.recipe for c in plan.cells if c.seed == 0 and c.fold == 0}


def test_arms_hold_the_authors_settings(tmp_path):
    r = _recipes(_plan(tmp_path))
    assert list(r) == ["teacher", "light", *STUDENTS]
    m = {k: v.method for k, v in r.items()}
    assert (m["kd"].name, m["kd"].alpha, m["kd"].T) == ("kd", 0.9, 4.0)
    assert (m["hint"].hint_weight, m["hint"].hint_reduction) == (0.01, "sum")
    assert (m["at"].name, m["at"].at_beta, m["at"].at_pairs) == ("at", 1000.0, None)
    d = m["dkd"]
    assert (d.dkd_alpha, d.dkd_beta, d.T, d.dkd_warmup) == (1.0, 2.0, 4.0, 8)  # 20/240 of 100
    assert (m["dml"].peers, m["dml"].dml_T, m["dml"].peer_model) == (1, 1.0, None)
    a = m["adversarial"]
    # the GAN-KD log's Namespace: lrD 5e-4, clamp ±0.03, a cosine term; weight 0.1 lightship's
    assert (a.adv_loss, a.adv_pairs, a.adv_weight, a.adv_lr, a.adv_clip, a.adv_cos) == (
        "wgan", None, 0.1, 5e-4, 0.03, 1.0)
    # the extra arm changes one thing: a single critic on the last stage
    assert m["adversarial-last"].model_dump(exclude={"adv_pairs", "teacher"}) == \
        a.model_dump(exclude={"adv_pairs", "teacher"})
    assert m["adversarial-last"].adv_pairs == [("layer3", "layer3")]
    rk = m["rocket-kd"]
    assert (rk.name, rk.booster, rk.share, rk.rocket_lambda, rk.gradient_block, rk.alpha,
            rk.kd_scale, rk.T) == ("rocket+kd", "resnet20", "interval", 0.03, True, 0.9,
                                   "rocket", 4.0)
    assert (r["teacher"].model.name, r["teacher"].model.width) == ("resnet8", 1.0)
    assert m["teacher"].name == m["light"].name == "supervised"
    # every arm is the same light net on the same recipe; only the method differs
    for name, rec in r.items():
        if name != "teacher":
            assert (rec.model.name, rec.model.width) == ("resnet8", 0.25)
        assert rec.model_dump(exclude={"method", "model", "run"}) == \
            r["light"].model_dump(exclude={"method", "model", "run"})
        assert (rec.train.epochs, rec.train.batch_size, rec.optim.lr) == (100, 64, 0.1)
    assert _recipes(_plan(tmp_path, epochs=48))["dkd"].method.dkd_warmup == 4


def test_students_wait_for_the_teacher_cell_of_their_seed_and_fold(tmp_path):
    plan = _plan(tmp_path)
    study = get_study("transfer")
    assert study.reference_arm(plan.budget) == "teacher"
    assert len(plan.cells) == 10 * 3 * 2
    for c in plan.cells:
        teacher = f"cells/teacher/s{c.seed}-f{c.fold}"
        if c.arm in ("teacher", "light", "dml"):
            assert c.needs == () and c.recipe.method.teacher.run is None
        else:
            assert c.needs == (teacher,)
            assert c.recipe.method.teacher.run == str(plan.out / teacher)
    only = _plan(tmp_path, arms=["kd"])  # --arms brings the teacher along
    assert [a.name for a in only.arms] == ["teacher", "kd"]


def _fake(plan, values):
    """cell.json-like records: arm → (train CE, test top-1), with a small spread per cell."""
    out = {}
    arms = sorted(values)
    for c in plan.cells:
        ce, top = values[c.arm]
        jitter = 0.001 * (c.fold or 0) + 0.0007 * c.seed + 0.0004 * ((arms.index(c.arm) + c.fold
                                                                     + 2 * c.seed) % 3)
        out[c.rel] = {"arm": c.arm, "seed": c.seed, "fold": c.fold, "run": c.rel,
                      "status": "finished", "test_top1": top + 10 * jitter,
                      "test_loss": 0.1, "train_ce": ce + jitter, "train_top1": 99.0,
                      "n_train": 2500, "n_test": 2500, "train_loss": ce, "epochs": 12,
                      "params": 4934, "macs": 1, "verdict": "underfitting",
                      "converged": True, "wall_time_s": 1.0}
    return out


def _judged(plan, values):
    res = Analysis(plan, _fake(plan, values), convergence=False)
    return res, {d.claim.text().split(" lowers")[0].split(" (")[0]: d for d in res.decisions}


def test_claims_are_judged_on_the_numbers(tmp_path):
    study, plan = get_study("transfer"), _plan(tmp_path, seeds=3)
    light = (0.12, 96.0)
    values = {"teacher": (0.03, 98.3), "light": light, "kd": (0.09, 96.6),
              "adversarial": (0.12, 96.0), **{n: light for n in STUDENTS[1:5]},
              "rocket-kd": (0.14, 95.5), "adversarial-last": (0.12, 96.0)}
    res, got = _judged(plan, values)
    assert len(got) == 1 + len(STUDENTS) and res.unit == "seed"
    under = got["the light net's train CE lies above the teacher's"]
    assert under.outcome == "agrees" and under.estimate == pytest.approx(0.09, abs=0.002)
    assert got["kd"].outcome == "agrees" and not got["kd"].exploratory
    assert got["adversarial"].outcome == "not settled" and not got["adversarial"].exploratory
    assert got["rocket+kd"].outcome == "contradicts" and got["rocket+kd"].exploratory
    assert got["hint"].exploratory and got["adversarial, one critic on the last stage"].exploratory
    # the claim fails when KD raises the floor, however much it helps the test top-1
    _, worse = _judged(plan, dict(values, kd=(0.15, 97.0)))
    assert worse["kd"].outcome == "contradicts"
    assert [p.outcome for p in worse["kd"].parts] == ["contradicts", "agrees"]
    # a light net that does not underfit is not said to
    _, flat = _judged(plan, dict(values, teacher=light))
    assert flat["the light net's train CE lies above the teacher's"].outcome == "not settled"
    md = to_markdown(res, res.verdict_lines(), {}, [])
    kd_ce = res.diff("light", "kd", "train_ce").mean
    assert f"| kd vs light alone | train CE | {kd_ce:+.4f} |" in md
    gap = res.diff("teacher", "light", "train_ce")
    assert f"| light alone vs teacher | train CE | {gap.mean:+.4f} |" in md
    assert "transfer.png" in study.plots(res)


def test_missing_arms_leave_their_claims_not_run(tmp_path):
    plan = _plan(tmp_path, arms=["light", "kd"], seeds=3)
    res, got = _judged(plan, {"teacher": (0.03, 98.0), "light": (0.1, 96.0), "kd": (0.08, 96.5)})
    assert got["kd"].outcome == "agrees"
    assert sum(line.startswith("not run — ") for line in res.verdict_lines()) == 7


@pytest.mark.parametrize("budget", ["quick", "full"])
def test_other_budgets_keep_the_arms(tmp_path, budget):
    r = _recipes(_plan(tmp_path, budget))
    assert list(r) == ["teacher", "light", *STUDENTS]
    assert r["rocket-kd"].method.rocket_lambda == 0.03 and r["at"].method.at_beta == 1000.0
