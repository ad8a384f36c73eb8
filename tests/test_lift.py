"""`lightship lift`: the racing rule, the recommendation and the diagnosis on hand-made cell
records; validation folds that never read the test split; and whole lifts on tiny data (the
choice unchanged by poisoned test labels, kill -9 then re-run, a budget that binds, bad
input refused with nothing written)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lightship.cli import main
from lightship.data import load_dataset
from lightship.data.builtin import load_builtin
from lightship.errors import UserError
from lightship.lift.core import makespan, parse_budget
from lightship.lift.race import behind, diagnose, recommend

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ rules on records


def _cells(arm: str, values: list[float], metric: str = "test_top1", **extra) -> list[dict]:
    return [{"arm": arm, "seed": 0, "fold": f, metric: v, **extra} for f, v in enumerate(values)]


def test_budget_text():
    assert parse_budget("30m") == 1800
    assert parse_budget("1h30m") == 5400
    assert parse_budget("90s") == 90
    assert parse_budget("2") == 120
    for bad in ("soon", "0m", "30x", "-5"):
        with pytest.raises(UserError):
            parse_budget(bad)


def test_makespan_orders_needed_cells_first():
    assert makespan([(10, False), (10, False)], 2) == 10
    assert makespan([(10, False), (10, False), (10, False)], 2) == 20
    assert makespan([], 2) == 0


def test_racing_rule_drops_only_arms_whose_interval_is_behind():
    cells = (_cells("light", [90.0, 91.0, 90.5, 90.2, 90.8])
             + _cells("lead", [95.0, 95.5, 95.2, 95.1, 95.4])
             + _cells("behind", [80.0, 80.6, 80.2, 80.1, 80.5])      # clearly behind: dropped
             + _cells("noisy", [99.0, 84.0, 97.0, 83.0, 96.0]))      # mean below, CI spans 0
    drops = behind(cells, ["light", "lead", "behind", "noisy"], folds=5)
    assert set(drops) == {"behind"}
    d = drops["behind"]
    assert d.claim.b == "lead" and d.interval[1] < 0  # its interval lies wholly below 0
    # the light net alone is never dropped, however far behind
    assert "light" not in behind(cells, ["light", "lead"], folds=5)
    # fewer than 3 paired folds settle nothing: nobody is dropped
    few = [c for c in cells if c["fold"] < 2]
    assert behind(few, ["light", "lead", "behind"], folds=5) == {}


def test_recommendation_needs_the_holm_corrected_interval():
    light = _cells("light", [90.0, 90.4, 89.8, 90.1, 90.3])
    good = _cells("good", [93.0, 93.5, 93.1, 92.9, 93.4])
    # alone this one would pass (p < 0.05), but not after Holm over 6 candidates
    marginal = _cells("marginal", [91.0, 90.9, 91.3, 90.7, 91.5])  # + [1.0, 0.5, 1.5, 0.6, 1.2]
    noise = [0.3, -0.2, 0.1, -0.3, 0.1]
    flat = [_cells(f"flat{i}", [v + noise[(f + i) % 5] for f, v in enumerate(
        [90.0, 90.4, 89.8, 90.1, 90.3])]) for i in range(4)]
    cells = light + good + marginal + sum(flat, [])
    alone = recommend(light + marginal, ["marginal"], folds=5)
    assert alone.winner == "marginal"
    rec = recommend(cells, ["marginal", "good", *[f"flat{i}" for i in range(4)]], folds=5)
    assert rec.winner == "good"
    assert rec.decisions["marginal"].outcome == "not settled"
    assert rec.decisions["marginal"].p_adjusted > rec.decisions["marginal"].p
    # identical arms: a zero-width difference is degenerate, never a winner
    same = recommend(light + _cells("copy", [90.0, 90.4, 89.8, 90.1, 90.3]), ["copy"], 5)
    assert same.winner is None and same.decisions["copy"].reason == "degenerate"


def test_diagnosis_cases():
    light = _cells("light", [0.50, 0.52, 0.49], "train_ce")
    twin_low = _cells("longer", [0.30, 0.31, 0.29], "train_ce")      # ×2 lowers CE: not converged
    twin_same = _cells("longer", [0.49, 0.51, 0.48], "train_ce")     # within 10 %: converged
    teacher_low = _cells("teacher", [0.05, 0.07, 0.06], "train_ce")
    teacher_same = _cells("teacher", [0.50, 0.53, 0.47], "train_ce")
    assert diagnose(light + twin_low + teacher_low, 5).case == "not converged"
    assert diagnose(light + twin_same + teacher_low, 5).case == "underfits"
    assert diagnose(light + twin_same + teacher_same, 5).case == "at the floor"
    assert diagnose(light + twin_same, 5).case == "converged"
    d = diagnose(light + twin_low + teacher_low, 5)
    assert d.converged_folds == (0, 3) and d.floor.outcome == "agrees"


# ------------------------------------------------------------------ validation folds


def _npz(path: Path, poison: bool = False, n: int = 240, classes: int = 4, size: int = 12,
         drop_class_to: int | None = None) -> Path:
    a = load_builtin(f"synthetic:n={n},classes={classes},size={size},channels=1")
    y_test = a.y_test.copy()
    if poison:  # every test label wrong, pixels scrambled
        y_test = (y_test + 1) % classes
    x_test = a.x_test[::-1].copy() if poison else a.x_test
    x_train, y_train = a.x_train, a.y_train
    if drop_class_to is not None:
        keep = np.flatnonzero(y_train == 0)[:drop_class_to]
        rest = np.flatnonzero(y_train != 0)
        idx = np.sort(np.concatenate([keep, rest]))
        x_train, y_train = x_train[idx], y_train[idx]
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def test_train_folds_never_read_the_test_split(tmp_path):
    clean = _npz(tmp_path / "clean.npz")
    bad = _npz(tmp_path / "bad.npz", poison=True)
    a = load_dataset(str(clean), folds=3, fold=1, folds_of="train")
    b = load_dataset(str(bad), folds=3, fold=1, folds_of="train")
    assert np.array_equal(a.train_labels, b.train_labels)
    assert np.array_equal(a.test_labels, b.test_labels)
    xa = next(iter(a.test_batches(1000)))[0]
    xb = next(iter(b.test_batches(1000)))[0]
    assert (xa == xb).all()  # the validation images: training images, not the test split
    full = load_dataset(str(clean))
    assert a.info.n_train + a.info.n_test == full.info.n_train  # the folds split train only
    # the folds cover the training split: each image validates once
    vals = [load_dataset(str(clean), folds=3, fold=f, folds_of="train").info.n_test
            for f in range(3)]
    assert sum(vals) == full.info.n_train


def test_imagefolder_train_folds_do_not_list_test(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b"):
            d = tmp_path / "imgs" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(d / f"{i}.png")
    (tmp_path / "imgs" / "test" / "a" / "broken.png").write_bytes(b"not an image")
    data = load_dataset(str(tmp_path / "imgs"), folds=3, fold=0, folds_of="train")
    assert data.info.n_train == 8 and data.info.n_test == 4  # 12 training images, 3 folds
    with pytest.raises(UserError):  # without folds the test split is read (and refused here)
        load_dataset(str(tmp_path / "imgs"))


# ------------------------------------------------------------------ whole lifts

ARGS = ["--model", "resnet8", "--set", "model.width=0.25", "--set", "train.epochs=2",
        "--set", "train.batch_size=32", "--teacher-model", "resnet8", "--methods", "kd",
        "--folds", "3", "--repeats", "1", "--no-progress"]


def _lift(data: Path, out: Path, budget: str = "20m", extra: list[str] | None = None) -> dict:
    code = main(["lift", "--data", str(data), *ARGS, "--budget", budget, "--out", str(out),
                 *(extra or [])])
    assert code == 0
    return json.loads((out / "lift.json").read_text())


def _choice(state: dict) -> tuple:
    return (state["winner"], state["diagnosis"]["case"],
            {a: (c["outcome"], c["estimate"], c["interval"]) for a, c in state["claims"].items()},
            [(r["folds"], r["arms"], r.get("dropped")) for r in state["rounds"]])


@pytest.fixture(scope="module")
def clean_lift(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lift")
    data = _npz(tmp / "clean.npz")
    return data, _lift(data, tmp / "clean"), tmp / "clean"


def test_lift_writes_its_folder(clean_lift, capsys):
    _, state, out = clean_lift
    assert state["stopped"].startswith("every unit raced")
    assert {"light", "longer", "kd", "teacher"} <= {c["arm"] for c in state["validation"]}
    assert (out / "lift.md").read_text().startswith("# lift: resnet8")
    html = (out / "report.html").read_text()
    assert "Leaderboard" in html and "data:image/png;base64," in html
    assert (out / "export" / "model.safetensors").exists()
    fin = state["final"]
    assert fin["final/light"]["status"] == "finished"
    # every arm is an ordinary run folder: diagnose reads one
    assert main(["diagnose", str(out / "cells" / "kd" / "s0-f0")]) == 0
    # the final runs evaluated the test split once (eval only at the end)
    evals = [json.loads(line) for line in (out / "final" / "light" / "metrics.jsonl")
             .read_text().splitlines() if '"kind": "eval"' in line]
    assert len(evals) == 2 and [e.get("test_top1") is not None for e in evals] == [False, True]


def test_report_renders(clean_lift, tmp_path):
    from test_report import assert_renders

    assert_renders(clean_lift[2] / "report.html", tmp_path)


def test_poisoned_test_labels_leave_the_choice_unchanged(clean_lift, tmp_path):
    _, state, _ = clean_lift
    bad = _npz(tmp_path / "bad.npz", poison=True)
    poisoned = _lift(bad, tmp_path / "bad")
    assert _choice(poisoned) == _choice(state)
    # ... while the one test evaluation sees the poison
    assert poisoned["final"]["final/light"]["test_top1"] != state["final"]["final/light"][
        "test_top1"]


@pytest.mark.slow  # end to end, tens of seconds: `pytest -m slow`
def test_kill_9_then_rerun_gives_the_same_recommendation(clean_lift, tmp_path):
    """Both lifts run as the command does (a subprocess: the CLI fits torch's threads, and a
    float sum depends on the thread count); the killed one is re-run by the same command."""
    data = clean_lift[0]

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "lightship", "lift", "--data", str(data), *ARGS,
                "--budget", "20m", "--out", str(out)]

    ref = tmp_path / "whole"
    subprocess.run(command(ref), cwd=ROOT, check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("cells/*/*/cell.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()  # killed mid-race
    subprocess.run(command(out), cwd=ROOT, check=True, capture_output=True)
    again = json.loads((out / "lift.json").read_text())
    whole = json.loads((ref / "lift.json").read_text())
    assert _choice(again) == _choice(whole)
    def numbers(state: dict) -> list[dict]:
        return [{k: v for k, v in c.items() if k != "wall_time_s"} for c in state["validation"]]

    assert numbers(again) == numbers(whole)  # cell by cell, bit for bit
    assert len(again["sessions"]) == 2


@pytest.mark.slow  # end to end, tens of seconds: `pytest -m slow`
def test_small_budget_is_kept(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", n=600)
    extra = ["--set", "train.epochs=6", "--methods", "kd,dkd,hint,at,dml", "--folds", "5"]
    # the least this machine needs (the refusal says it): 40 s fits the baseline on a 2-core
    # AVX-512 CPU but not on a slower one, so the budget is sized from the machine's own need
    assert main(["lift", "--data", str(data), *ARGS, "--budget", "1s",
                 "--out", str(tmp_path / "none"), *extra]) == 2
    need = re.search(r"need about (\w+) here", capsys.readouterr().err)
    assert need, "the refusal names what the baseline needs"
    budget = max(40.0, 1.25 * parse_budget(need.group(1)))
    state = _lift(data, tmp_path / "small", budget=f"{budget:.0f}s", extra=extra)
    # the budget bound: some arm or fold was left out, and the command kept to it
    assert state["not_raced"] or state["stopped"].startswith("budget")
    assert state["wall_s"] <= 1.1 * budget + 5


def test_a_trained_teacher_is_measured_on_each_fold(clean_lift, tmp_path):
    """--teacher RUN: the teacher is not retrained; its floor is its clean train CE on each
    validation fold's training part, and the transfer arms read it."""
    data = clean_lift[0]
    assert main(["train", "--data", str(data), "--model", "resnet8", "--epochs", "2",
                 "--out", str(tmp_path / "runs"), "--name", "heavy", "--no-progress"]) == 0
    args = list(ARGS)
    i = args.index("--teacher-model")
    args[i:i + 2] = ["--teacher", str(tmp_path / "runs" / "heavy")]
    assert main(["lift", "--data", str(data), *args, "--budget", "20m",
                 "--out", str(tmp_path / "lift")]) == 0
    state = json.loads((tmp_path / "lift" / "lift.json").read_text())
    assert sorted(state["teacher_fit"]) == ["0", "1", "2"]
    assert not (tmp_path / "lift" / "cells" / "teacher").exists()
    assert state["diagnosis"]["floor"] is not None
    from lightship.recipe import load_saved_recipe

    kd = load_saved_recipe(tmp_path / "lift" / "cells" / "kd" / "s0-f0" / "recipe.yaml")
    assert kd.method.teacher.run == str((tmp_path / "runs" / "heavy").resolve())


@pytest.mark.parametrize("case,extra,words", [
    ("budget", ["--budget", "1s"], "too small for even the baseline"),
    ("larger", ["--teacher-model", "resnet8", "--set", "model.width=2"], "is larger than its "
     "teacher"),
    ("few", [], "no validation possible"),
    ("classes", [], "teacher predicts"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, extra, words):
    data = _npz(tmp_path / "d.npz", drop_class_to=2 if case == "few" else None)
    args = ["lift", "--data", str(data), *ARGS, "--out", str(tmp_path / "out"), *extra]
    if case == "classes":  # a teacher trained on 3 classes for 4-class data
        other = _npz(tmp_path / "three.npz", classes=3)
        assert main(["train", "--data", str(other), "--model", "resnet8", "--epochs", "1",
                     "--out", str(tmp_path / "runs"), "--name", "t3", "--no-progress"]) == 0
        i = args.index("--teacher-model")
        args[i:i + 2] = ["--teacher", str(tmp_path / "runs" / "t3")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "out").exists()
