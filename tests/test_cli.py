"""CLI behaviour: help, the main commands, and every bad-input path (exit 2, one line, no
traceback, nothing written outside the new run folder, earlier runs untouched)."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from lightship.cli import main
from lightship.diagnose import load_records
from lightship.diagnose.signals import params_of as _params
from lightship.models import create_model
from lightship.runs import read_records
from tests.conftest import write_npz

TINY = ["--recipe", "baseline", "--model", "cnn4", "--epochs", "1", "--batch-size", "8",
        "--no-progress"]


def _snapshot(root):
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def earlier_run(tmp_path):
    out = tmp_path / "runs"
    assert main(["train", "--data", "synthetic:n=48,classes=3,size=8,channels=1", *TINY,
                 "--out", str(out), "--name", "old"]) == 0
    return out


def _bad_cases(tmp):
    (tmp / "empty_dir").mkdir()
    (tmp / "img" / "train" / "a").mkdir(parents=True)
    (tmp / "img" / "train" / "b").mkdir(parents=True)
    (tmp / "img" / "val" / "a").mkdir(parents=True)
    (tmp / "img" / "val" / "b").mkdir(parents=True)
    from PIL import Image

    for split in ("train", "val"):
        for c in "ab":
            for i in range(3):
                Image.new("L", (8, 8), color=40 * i).save(tmp / "img" / split / c / f"{i}.png")
    good = (tmp / "img" / "train" / "a" / "0.png").read_bytes()
    (tmp / "img" / "train" / "b" / "broken.png").write_bytes(good[: len(good) // 2])
    nan_x = np.full((30, 8, 8), np.nan, dtype=np.float32)
    return {
        "unknown model": (["--model", "resnt20"], "did you mean 'resnet20'"),
        "unknown dataset": (["--data", "mnist5"], "mnist5k"),
        "missing path": (["--data", str(tmp / "nope")], "nope"),
        "unknown layout": (["--data", str(tmp / "empty_dir")], "empty_dir"),
        "truncated image": (["--data", str(tmp / "img")], "broken.png"),
        "labels out of range": (
            ["--data", write_npz(tmp / "lab.npz", y_train=np.arange(30) % 3 - 1)], "label"),
        "nan pixels": (["--data", write_npz(tmp / "nan.npz", x_train=nan_x)], "NaN"),
        "empty class": (["--data", write_npz(tmp / "ec.npz", y_train=(np.arange(30) % 2) * 2)],
                        "class"),
        "batch too large": (["--data", "synthetic:n=48,classes=3,size=8,channels=1",
                             "--set", "train.batch_size=4096"], "batch"),
        "mistyped key": (["--set", "optim.lrr=0.1"], "did you mean 'lr'"),
        "negative lr": (["--lr", "-1"], "optim.lr"),
        "zero epochs": (["--set", "train.epochs=0"], "train.epochs"),
        "syncbn on cpu": (["--set", "model.norm=syncbn"], "syncbn"),
    }


@pytest.mark.parametrize("case", [
    "unknown model", "unknown dataset", "missing path", "unknown layout", "truncated image",
    "labels out of range", "nan pixels", "empty class", "batch too large", "mistyped key",
    "negative lr", "zero epochs", "syncbn on cpu"])
def test_bad_input_is_one_line_exit_2(case, tmp_path, earlier_run, capsys):
    args, words = _bad_cases(tmp_path)[case]
    before = _snapshot(tmp_path)
    base = ["train", "--data", "synthetic:n=48,classes=3,size=8,channels=1", *TINY,
            "--out", str(earlier_run), "--name", "new"]
    capsys.readouterr()
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightship: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and words in err, err
    assert _snapshot(tmp_path) == before  # nothing written, the earlier run untouched
    assert not (earlier_run / "new").exists()


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lightship", "train", "--model", "resnt20",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "did you mean 'resnet20'" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_quick_exit_keeps_files_and_exit_handlers(tmp_path):
    """`lightship` ends with os._exit after main() (skipping torch's 1–3 s module teardown): the
    run folder must be complete, exit handlers must still run, the exit code must pass through."""
    from lightship.runs import read_records
    from lightship.weights import read_weights

    code = ("import atexit, sys; atexit.register(print, 'exit handler ran', flush=True); "
            "sys.argv = ['lightship', *sys.argv[1:]]; from lightship.cli import run; run()")
    data = "synthetic:n=48,classes=3,size=8,channels=1"
    ok = subprocess.run([sys.executable, "-c", code, "train", "--data", data, *TINY,
                         "--out", str(tmp_path), "--name", "r"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.rstrip().endswith("exit handler ran"), ok.stdout
    assert "verdict:" in ok.stdout  # everything printed before the exit was flushed
    run_dir = tmp_path / "r"
    records = read_records(run_dir)
    assert records.evals and records.evals[-1]["epoch"] == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    tensors, meta = read_weights(run_dir / "weights.safetensors")
    assert tensors and meta
    bad = subprocess.run([sys.executable, "-c", code, "train", "--model", "resnt20", "--out",
                          str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "exit handler ran" in bad.stdout
    assert "Traceback" not in bad.stderr


def test_help_for_every_command():
    for cmd in ([], ["train"], ["eval"], ["models"], ["data"]):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, "--help"])
        assert exc.value.code == 0


def test_train_eval_models_data(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--data", "synthetic:n=48,classes=3,size=8,channels=1", *TINY,
                 "--out", str(out), "--name", "r"]) == 0
    printed = capsys.readouterr().out
    assert "test top-1" in printed and str(out / "r") in printed
    assert main(["eval", str(out / "r")]) == 0
    assert "test top-1" in capsys.readouterr().out
    assert main(["eval", str(out / "r" / "weights.safetensors")]) == 0
    assert main(["models", "--data", "digits", "--name", "resnet20"]) == 0
    assert "resnet20" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    assert "mnist5k" in capsys.readouterr().out
    assert main(["data", "describe", "digits"]) == 0
    assert "num_classes: 10" in capsys.readouterr().out
    assert main(["train", "--recipe", "baseline", "--print-recipe"]) == 0
    assert "multistep" in capsys.readouterr().out


def test_eval_refuses_corrupt_weights(tmp_path, capsys):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00" * 40)
    assert main(["eval", str(bad)]) == 2
    assert "safetensors" in capsys.readouterr().err


def test_resume_rejects_recipe_options(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2


def test_gz_idx_is_read(tmp_path):
    # MNIST IDX, gzipped: the data layer's own tests cover formats in depth; this checks the CLI.
    def idx(path, arr, magic):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        with gzip.open(path, "wb") as fh:
            fh.write(header + arr.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 8, 8)), 2051)
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 4, 2049)
    assert main(["train", "--data", str(tmp_path), *TINY, "--out", str(tmp_path / "runs")]) == 0


def test_diagnose_prints_a_verdict_and_rejects_non_runs(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--data", "synthetic:n=48,classes=3,size=8,channels=1", *TINY,
                 "--epochs", "4", "--out", str(out), "--name", "r"]) == 0
    assert "verdict: " in capsys.readouterr().out
    assert main(["diagnose", str(out / "r"), "--reference", str(out / "r")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out / 'r'}: ") and "  - " in printed
    # the capacity test compares parameter counts read from the runs' start records
    cnn4 = sum(p.numel() for p in create_model("cnn4", 3, 1, 8).parameters())
    assert _params(load_records(out / "r")) == cnn4
    assert main(["diagnose", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_runs_and_evals_record_and_print_their_precision_and_cpu(tmp_path, capsys):
    import torch

    from lightship.train.precision import choose_precision, cpu_has_native_bf16, cpu_kind

    kind = cpu_kind()
    assert ("with native bf16" in kind) == cpu_has_native_bf16()  # what `auto` decides on
    setup = choose_precision("fp32", "auto", torch.device("cpu")).describe()
    assert setup == f"fp32 on cpu, {kind}"
    out = tmp_path / "runs"
    assert main(["train", "--data", "synthetic:n=48,classes=3,size=8,channels=1", *TINY,
                 "--out", str(out), "--name", "r"]) == 0  # baseline: train.precision fp32
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"steps; {setup}")
    assert next(ln for ln in lines if ln.startswith("finished:")).endswith(
        f", {setup}; run folder: {out / 'r'}")
    start = read_records(out / "r").starts[0]
    summary = json.loads((out / "r" / "summary.json").read_text())
    assert (start["precision"], start["cpu"]) == (summary["precision"], summary["cpu"]) == \
        ("fp32", kind)
    assert main(["eval", str(out / "r"), "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"; TTA: off; {setup}")


def _scores(argv, capsys):
    assert main(["eval", *argv]) == 0
    line = capsys.readouterr().out.strip()
    return line.split(": ", 1)[1]  # the numbers and what was used, without the model's name


def test_a_run_folder_and_its_weights_file_evaluate_alike(tmp_path, capsys):
    from lightship.weights import read_weights

    out = tmp_path / "runs"
    assert main(["train", "--recipe", "tricks", "--model", "cnn4", "--epochs", "2",
                 "--batch-size", "16", "--data", "synthetic:n=96,classes=3,size=8,channels=1",
                 "--set", "train.tta=true", "--no-progress", "--out", str(out),
                 "--name", "t"]) == 0
    capsys.readouterr()
    run, weights = out / "t", out / "t" / "weights.safetensors"
    assert read_weights(weights)[1]["tta"] is True  # the run's choice travels with the file
    with_tta = _scores([str(run)], capsys)
    assert "TTA: on" in with_tta and _scores([str(weights)], capsys) == with_tta
    assert _scores([str(run), "--tta"], capsys) == with_tta
    without = _scores([str(run), "--no-tta"], capsys)
    assert "TTA: off" in without and _scores([str(weights), "--no-tta"], capsys) == without
    assert without.split(";")[0] != with_tta.split(";")[0]  # TTA changes the loss (and top-1)
    evals = read_records(run).evals
    assert f"loss {evals[-1]['test_loss']:.4f}" in with_tta  # as the run's last evaluation
