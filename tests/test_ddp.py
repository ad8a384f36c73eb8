"""torchrun + DistributedDataParallel on CPU (gloo): two processes with batch B follow the same loss
trajectory as one process with batch 2B, only rank 0 writes, and `distill` runs the same way."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DATA = "synthetic:n=256,classes=4,size=8,channels=1"
# GroupNorm: per-sample normalisation, so the 2-process run is the 1-process run up to float
# summation order (BatchNorm would see per-rank batch statistics: see docs).
COMMON = ["--recipe", "baseline", "--data", DATA, "--model", "resnet8", "--epochs", "2",
          "--lr", "0.05", "--no-progress", "--set", "augment.crop_padding=0",
          "--set", "augment.hflip=false", "--set", "model.norm=gn"]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], cwd: Path, nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc > 1:
        cmd = [str(TORCHRUN), f"--nproc_per_node={nproc}", f"--master_port={_port()}",
               "-m", "lightship", *args]
    else:
        cmd = [sys.executable, "-m", "lightship", *args]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def _steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "step"]


pytestmark = pytest.mark.skipif(not TORCHRUN.exists(),
                                reason="torchrun is not installed next to this python")


def test_two_gloo_processes_match_one_process_with_the_global_batch(tmp_path):
    out = str(tmp_path / "runs")
    _run(["train", *COMMON, "--batch-size", "32", "--out", out, "--name", "one"], tmp_path)
    _run(["train", *COMMON, "--batch-size", "16", "--out", out, "--name", "two"], tmp_path, 2)
    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    a, b = _steps(one), _steps(two)
    assert len(a) == len(b) == 16  # 256·0.8 train images / 32 per global batch, 2 epochs
    assert [r["step"] for r in b] == list(range(1, 17))  # rank 0 alone wrote: no duplicates
    diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=True))
    assert diff < 1e-5, diff
    start = json.loads((two / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    wa, wb = load_file(one / "weights.safetensors"), load_file(two / "weights.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert json.loads((two / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow  # end to end, tens of seconds: `pytest -m slow`
def test_distill_runs_under_torchrun(tmp_path):
    out = str(tmp_path / "runs")
    _run(["train", *COMMON, "--batch-size", "32", "--out", out, "--name", "t"], tmp_path)
    _run(["distill", "--teacher", str(tmp_path / "runs" / "t"), "--method", "kd", *COMMON,
          "--batch-size", "16", "--out", out, "--name", "s"], tmp_path, 2)
    steps = _steps(tmp_path / "runs" / "s")
    assert len(steps) == 16 and all("kd" in r for r in steps)


def test_rocket_under_torchrun_matches_one_process(tmp_path):
    out = str(tmp_path / "runs")
    rocket = ["--method", "rocket", "--booster", "resnet14"]
    _run(["distill", *rocket, *COMMON, "--batch-size", "32", "--out", out, "--name", "one"],
         tmp_path)
    _run(["distill", *rocket, *COMMON, "--batch-size", "16", "--out", out, "--name", "two"],
         tmp_path, 2)
    a, b = _steps(tmp_path / "runs" / "one"), _steps(tmp_path / "runs" / "two")
    assert len(a) == len(b) == 16
    for key in ("loss", "booster_ce", "rocket"):
        diff = max(abs(x[key] - y[key]) for x, y in zip(a, b, strict=True))
        assert diff < 1e-4, (key, diff)
