"""Time to accuracy: wall seconds from pressing Enter to a model at ≥ 98.4 % test top-1 on MNIST-5k.

Each run is a fresh ``python -m lightship train --recipe R --seed S`` process. Its clock starts
just before the process is launched (so interpreter start and every import count) and the time
to accuracy is read from metrics.jsonl: the wall timestamp of the first evaluation at or above the
threshold, minus the launch time. Also recorded: the final test top-1, the whole command's wall
time and the machine load (1-minute load average) around each run. Recipes alternate within each
seed (fast, default, baseline, fast, ...) so that a change in machine load hits all of them alike.

Prints a markdown table (median and range over seeds), the ratios default/fast and
baseline/fast of the median times, and saves a Pareto plot (test top-1 vs wall seconds: every
evaluation of every run, final results marked) to docs/time_to_accuracy.png.

    python benchmarks/time_to_accuracy.py                 # fast, default, baseline × 5 seeds
    python benchmarks/time_to_accuracy.py --quick         # fast and default, 2 seeds, no plot
    python benchmarks/time_to_accuracy.py --seeds 0 1 2 --recipes fast default --threads 2

A smoke run of the whole script (every recipe, table, ratios, plot; accuracies meaningless, ~1 min
on a quiet machine): ``--seeds 0 --set train.epochs=2 --set data.fraction=0.1 --plot /tmp/p.png``.
The full run (3 recipes × 5 seeds, ~15–20 min) needs a quiet machine: its wall times are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightship.runs import read_records

ROOT = Path(__file__).resolve().parent.parent


def run_once(recipe: str, seed: int, out: Path, env: dict[str, str],
             overrides: list[str]) -> dict:
    """One fresh process; ``recipe@fp32`` / ``recipe@bf16`` pins the precision."""
    preset, _, precision = recipe.partition("@")
    name = f"{recipe.replace('@', '-')}-{seed}"
    pin = [f"--set=train.precision={precision}"] if precision else []
    cmd = [sys.executable, "-m", "lightship", "train", "--recipe", preset, "--seed", str(seed),
           "--out", str(out), "--name", name, "--no-progress",
           *[f"--set={o}" for o in overrides], *pin]
    load_before = os.getloadavg()[0]
    launch = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - launch
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    run = out / name
    recs = read_records(run)
    start = recs.starts[0]
    evals = [(r["time"] - launch, r["test_top1"], r["epoch"]) for r in recs.evals
             if "test_top1" in r]
    summary = json.loads((run / "summary.json").read_text())
    return {"recipe": recipe, "seed": seed, "wall": wall, "launch_to_start": start["time"] - launch,
            "evals": evals, "final": summary["test_top1"], "epochs": summary["epochs"],
            "load": (load_before + os.getloadavg()[0]) / 2}


def cpu_name() -> str:
    """The CPU's model name and its widest vector units: the machines this runs on differ
    between sessions (2026-12-01: one 2-core VM ran the same recipe 1.9× faster than another)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or "unknown CPU"
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())  # the first CPU's
    flags = set(fields.get("flags", "").split())
    units = [u for u in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if u in flags]
    name = fields.get("model name", "unknown CPU")
    return f"{name} ({', '.join(units) or 'no AVX2'})"


def time_to(run: dict, threshold: float) -> float | None:
    # An epoch without evaluation repeats the last evaluated numbers, so the first record at or
    # above the threshold is always an evaluation that happened then.
    return next((t for t, acc, _ in run["evals"] if acc >= threshold), None)


def _range(values: list[float], fmt: str = ".1f") -> str:
    if not values:
        return "—"
    return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})")


def table(runs: list[dict], recipes: list[str], threshold: float) -> str:
    lines = [f"| recipe | reached ≥ {threshold} % | time to ≥ {threshold} %, s: median (range) | "
             "final test top-1 (%) mean ± std [min] | whole command, s: median (range) | "
             "load (1-min avg) |", "|---|---|---|---|---|---|"]
    for recipe in recipes:
        mine = [r for r in runs if r["recipe"] == recipe]
        times = [t for r in mine if (t := time_to(r, threshold)) is not None]
        finals = [r["final"] for r in mine]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        lines.append(
            f"| {recipe} | {len(times)}/{len(mine)} | {_range(times)} | "
            f"{statistics.mean(finals):.2f} ± {sd:.2f} [{min(finals):.2f}] | "
            f"{_range([r['wall'] for r in mine])} | "
            f"{_range([r['load'] for r in mine], '.2f')} |")
    return "\n".join(lines)


def ratios(runs: list[dict], recipes: list[str], threshold: float) -> list[str]:
    med = {}
    for recipe in recipes:
        times = [time_to(r, threshold) for r in runs if r["recipe"] == recipe]
        if times and all(t is not None for t in times):
            med[recipe] = statistics.median(times)
    out = []
    for other in ("default", "baseline"):
        if other not in recipes or "fast" not in recipes:
            continue
        if other in med and "fast" in med:
            out.append(f"ratio {other}/fast of the median time to ≥ {threshold} %: "
                       f"{med[other] / med['fast']:.2f}×")
        else:
            out.append(f"ratio {other}/fast: not defined (a run did not reach {threshold} %)")
        walls = {r: statistics.median(x["wall"] for x in runs if x["recipe"] == r)
                 for r in (other, "fast")}
        out.append(f"ratio {other}/fast of the median whole command: "
                   f"{walls[other] / walls['fast']:.2f}×")
    return out


def precision_ratios(runs: list[dict], recipes: list[str]) -> list[str]:
    """bf16 against fp32 of the same recipe, seed by seed: whole-command wall ratio (median) and
    the final test top-1 difference (mean, min)."""
    out = []
    for recipe in recipes:
        if not recipe.endswith("@bf16") or recipe.replace("@bf16", "@fp32") not in recipes:
            continue
        fp32 = {r["seed"]: r for r in runs if r["recipe"] == recipe.replace("@bf16", "@fp32")}
        pairs = [(r, fp32[r["seed"]]) for r in runs if r["recipe"] == recipe and r["seed"] in fp32]
        if not pairs:
            continue
        wall = statistics.median(b["wall"] / f["wall"] for b, f in pairs)
        diff = [b["final"] - f["final"] for b, f in pairs]
        out.append(f"{recipe} / {recipe.replace('@bf16', '@fp32')}: whole command ×{wall:.2f} "
                   f"(median of {len(pairs)} seeds); final top-1 bf16 − fp32 mean "
                   f"{statistics.mean(diff):+.2f}, min {min(diff):+.2f} points")
    return out


def plot(runs: list[dict], recipes: list[str], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(recipes, ["tab:green", "tab:blue", "tab:gray", "tab:red", "tab:purple",
                               "tab:orange", "tab:olive", "tab:cyan"],
                      strict=False))
    for recipe in recipes:
        mine = [r for r in runs if r["recipe"] == recipe]
        for i, r in enumerate(mine):
            t = [e[0] for e in r["evals"]]
            acc = [e[1] for e in r["evals"]]
            ax.plot(t, acc, "-", color=colors[recipe], alpha=0.35, lw=1)
            ax.plot([r["wall"]], [r["final"]], "o", color=colors[recipe],
                    label=f"{recipe} (end of command)" if i == 0 else None)
    ax.axhline(threshold, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_ylim(95, 100)
    ax.set_xlabel("wall seconds since the command was launched (log)")
    ax.set_ylabel("test top-1 (%) on MNIST-5k")
    ax.set_title("Time to accuracy: every evaluation (lines) and each run's end (dots)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=None,
                    help="default: fast default baseline (quick: fast default)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="default: 0 1 2 3 4 (quick: 0 1)")
    ap.add_argument("--quick", action="store_true", help="fast and default, 2 seeds, no plot")
    ap.add_argument("--both-precisions", action="store_true",
                    help="on a CPU with native bf16 (where `auto` trains in bf16) run each recipe "
                    "as RECIPE@fp32 and RECIPE@bf16, side by side, and print their ratios")
    ap.add_argument("--threshold", type=float, default=98.4)
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for the runs (default: torch's own choice)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override applied to every run, e.g. --set train.device=cuda")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "time_to_accuracy.png"))
    ap.add_argument("--json", help="also write every run's raw numbers to this file")
    args = ap.parse_args()
    recipes = args.recipes or (["fast", "default"] if args.quick else
                               ["fast", "default", "baseline"])
    seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2, 3, 4])
    if args.both_precisions:
        from lightship.train.precision import cpu_has_native_bf16

        if cpu_has_native_bf16():
            recipes = [f"{r}@{p}" for r in recipes for p in ("fp32", "bf16")]
        else:
            print("this CPU has no native bf16 (auto trains in fp32): one precision only")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for recipe in recipes:
                r = run_once(recipe, seed, Path(tmp), env, args.overrides)
                t = time_to(r, args.threshold)
                reached = f"{t:.1f} s" if t is not None else "never"
                print(f"{recipe} seed {seed}: ≥ {args.threshold} % at {reached}, final "
                      f"{r['final']:.2f} %, whole command {r['wall']:.1f} s (launch → first "
                      f"record {r['launch_to_start']:.1f} s), load {r['load']:.2f}", flush=True)
                runs.append(r)
    print()
    print(table(runs, recipes, args.threshold))
    for line in ratios(runs, recipes, args.threshold):
        print(line)
    for line in precision_ratios(runs, recipes):
        print(line)
    import torch

    print(f"\nseeds {seeds}; torch {torch.__version__}, {os.cpu_count()} × {cpu_name()}, "
          f"threads {args.threads or torch.get_num_threads()}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    if not args.quick and args.plot:
        plot(runs, recipes, args.threshold, Path(args.plot))


if __name__ == "__main__":
    main()
