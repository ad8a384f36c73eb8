"""Start-up cost: what a `lightship train` command spends outside its epochs, vs `import torch`.

Runs, alternately, ``python -c "import torch"``, the smallest PyTorch training start (import
torch, then one SGD step: torch.optim's first step imports torch._dynamo, 2.3–2.9 s here, which a
plain PyTorch program pays and a lightship run that does not compile skips, see
lightship/train/dynamo.py) and a short ``lightship train`` (by default the `fast` recipe for 2
epochs), each in a fresh process. A run's *fixed cost* is its wall time minus
the span its metrics.jsonl timestamps give to the epochs (from the `start` record to the last
`eval` record: training steps, evaluations, per-epoch checkpoints). What is left is imports, data
loading, model building, the run folder, the final weights, the verdict and interpreter exit.
Goal (issue 13): fixed cost ≤ `import torch` + 1.5 s. Prints medians and the machine load.

On a busy machine wall times swing by seconds; CPU seconds (user + system) barely move. With
``--set data.fraction=0.05`` the epochs shrink to a few hundred images (the whole MNIST-5k file
is still read), so the command's CPU time is its fixed cost in CPU seconds, next to the CPU
seconds of ``import torch`` and of torch + one step (columns "cpu").

    python benchmarks/startup.py [--repeats 5] [--recipe fast] [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightship.runs import read_records

TORCH_STEP = ("import torch; p = torch.zeros(1, requires_grad=True); "
              "o = torch.optim.SGD([p], lr=0.1); p.sum().backward(); o.step()")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the process and its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def epoch_span(run: Path) -> float:
    recs = read_records(run)
    return recs.evals[-1]["time"] - recs.starts[0]["time"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--recipe", default="fast")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every process")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    torch_walls, step_walls, fixed, walls = [], [], [], []
    cpus: dict[str, list[float]] = {"torch": [], "step": [], "train": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for key, walls_of, code in (("torch", torch_walls, "import torch"),
                                        ("step", step_walls, TORCH_STEP)):
                wall, cpu = timed([sys.executable, "-c", code], env)
                walls_of.append(wall)
                cpus[key].append(cpu)
            cmd = [sys.executable, "-m", "lightship", "train", "--recipe", args.recipe,
                   "--epochs", str(args.epochs), "--out", tmp, "--name", f"s{i}", "--no-progress",
                   *[f"--set={o}" for o in args.overrides]]
            wall, cpu = timed(cmd, env)
            walls.append(wall)
            cpus["train"].append(cpu)
            fixed.append(wall - epoch_span(Path(tmp) / f"s{i}"))
            print(f"run {i}: import torch {torch_walls[-1]:.2f} s, + one SGD step "
                  f"{step_walls[-1]:.2f} s; lightship train {wall:.2f} s, "
                  f"of which fixed {fixed[-1]:.2f} s; load {os.getloadavg()[0]:.2f}", flush=True)
    med_t, med_s = statistics.median(torch_walls), statistics.median(step_walls)
    med_f = statistics.median(fixed)
    print(f"\nmedians over {args.repeats} runs of --recipe {args.recipe} --epochs {args.epochs}"
          f" (threads {args.threads or 'torch default'}; load {os.getloadavg()[0]:.2f}):")
    print("| import torch | + one SGD step | lightship fixed cost (range) | fixed − import torch | "
          "fixed − (torch + step) | whole command |")
    print("|---|---|---|---|---|---|")
    print(f"| {med_t:.2f} s | {med_s:.2f} s | {med_f:.2f} s ({min(fixed):.2f}–{max(fixed):.2f})"
          f" | {med_f - med_t:+.2f} s | {med_f - med_s:+.2f} s | "
          f"{statistics.median(walls):.2f} s |")
    med = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"cpu: import torch {med['torch']:.2f} s, + one SGD step {med['step']:.2f} s, "
          f"whole lightship command {med['train']:.2f} s: {med['train'] - med['torch']:+.2f} s "
          f"vs import torch, {med['train'] - med['step']:+.2f} s vs torch + step")


if __name__ == "__main__":
    main()
