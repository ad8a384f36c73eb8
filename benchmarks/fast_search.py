"""How `fast` and `default` were chosen: 5-fold validation inside MNIST-5k's training digits.

The 4,000 training digits are cut into 5 stratified folds of 800; fold k trains on the other
3,200 with seed k and is validated on its own 800. The 1,000 test digits are never read. Each arm
changes one thing in the chosen recipe (one lever at a time) and is compared with it *paired*
(same folds, seeds and data order): mean difference of validation top-1 with a 95 % t-interval
over the runs. ``--repeats R`` runs every fold R times (run j: fold j mod 5, seed j), which
narrows the interval where 5 runs leave an effect of 0.2–0.3 points undecided. An override
``+name`` applies a lever of benchmarks/airbench_levers.py instead of a recipe key.
Training time is CPU seconds of the training epochs with the given threads
(robust to other jobs on a shared machine, unlike wall time); read it as a relative cost.

    python benchmarks/fast_search.py --study fast [--folds 5] [--threads 1] [--arms tta-off lr-0.2]
    python benchmarks/fast_search.py --study default
    python benchmarks/fast_search.py --study fast --threads 2 --repeats 2 --arms whiten lookahead
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from airbench_levers import LEVERS, levers

from lightship.data.builtin import mnist5k
from lightship.recipe import build_recipe
from lightship.train.loop import train

#: Arms: name → overrides of the study's recipe ("chosen" = the recipe as it is).
STUDIES: dict[str, tuple[str, dict[str, list[str]]]] = {
    # Arms change the recipe as it is now; the tables in docs/results.md say which recipe each
    # search started from (until 2026-12-01 11:30 `fast` was `fastcnn`, 3 convs; the arm
    # model-fastcnn16-4 is now the recipe itself).
    "fast": ("fast", {
        "chosen": [],
        "model-cnn": ["model.name=cnn"],
        "model-resnet8": ["model.name=resnet8"],
        "model-fastcnn16-4": ["model.name=fastcnn16-4"],
        "fastcnn16-4-epochs-5": ["model.name=fastcnn16-4", "train.epochs=5",
                                 "train.eval_every=5", "train.checkpoint_every=5"],
        "model-fastcnn12-4": ["model.name=fastcnn12-4"],
        "model-fastcnn14-4": ["model.name=fastcnn14-4"],
        "tta-off": ["train.tta=false"],
        "smoothing-0": ["train.label_smoothing=0"],
        "smoothing-0.2": ["train.label_smoothing=0.2"],
        "ema-0.9": ["train.ema=0.9"],
        "lr-0.05": ["optim.lr=0.05"],
        "lr-0.2": ["optim.lr=0.2"],
        "batch-32": ["train.batch_size=32", "optim.lr=0.05"],
        "batch-128": ["train.batch_size=128", "optim.lr=0.2"],
        "cosine": ["schedule.name=cosine"],
        "no-warmup": ["schedule.warmup_epochs=0"],
        "epochs-4": ["train.epochs=4", "train.eval_every=4", "train.checkpoint_every=4"],
        "epochs-7": ["train.epochs=7", "train.eval_every=7", "train.checkpoint_every=7"],
        "epochs-8": ["train.epochs=8", "train.eval_every=8", "train.checkpoint_every=8"],
        "lr-0.15": ["optim.lr=0.15"],
        "warmup-0.5": ["schedule.warmup_epochs=0.5"],
        "crop-2": ["augment.crop_padding=2"],
        "rotate-10": ["augment.rotate=10"],
        "rotate-15": ["augment.rotate=15"],
        "no-bias-decay-off": ["optim.no_bias_decay=false"],
        "nesterov-off": ["optim.nesterov=false"],
        "model-fastcnn": ["model.name=fastcnn"],
        "model-fastcnn20-4": ["model.name=fastcnn20-4"],
        "model-fastcnn24-4": ["model.name=fastcnn24-4"],
        **{lever: [f"+{lever}"] for lever in LEVERS},
    }),
    "default": ("default", {
        "chosen": [],
        "model-fastcnn": ["model.name=fastcnn"],
        "model-fastcnn16-4": ["model.name=fastcnn16-4"],
        "model-fastcnn32": ["model.name=fastcnn32"],
        "epochs-10": ["train.epochs=10"],
        "epochs-20": ["train.epochs=20"],
        "epochs-24": ["train.epochs=24"],
        "tta-on": ["train.tta=true"],
        "smoothing-0": ["train.label_smoothing=0"],
        "ema-0.99": ["train.ema=0.99"],
        "cosine": ["schedule.name=cosine"],
        "rotate-10": ["augment.rotate=10"],
        "rotate-15": ["augment.rotate=15"],
        "tta-rotate-10": ["train.tta=true", "augment.rotate=10"],
        "epochs-18": ["train.epochs=18"],
        "model-fastcnn32-4": ["model.name=fastcnn32-4"],
        **{lever: [f"+{lever}"] for lever in LEVERS},
    }),
}


def folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """k stratified folds of indices (each class shuffled once with ``seed``, dealt in turn)."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        for i, idx in enumerate(rng.permutation(np.flatnonzero(y == c))):
            out[i % k].append(int(idx))
    return [np.sort(np.array(f)) for f in out]


def write_fold(tmp: Path, k: int, parts: list[np.ndarray]) -> Path:
    a = mnist5k()
    val = parts[k]
    tr = np.sort(np.concatenate([p for i, p in enumerate(parts) if i != k]))
    path = tmp / f"fold{k}.npz"
    np.savez(path, x_train=a.x_train[tr], y_train=a.y_train[tr], x_test=a.x_train[val],
             y_test=a.y_train[val])
    return path


def ci95(diffs: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    m = statistics.mean(diffs)
    if len(diffs) < 2:
        return m, float("nan"), float("nan")
    h = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return m, m - h, m + h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", choices=sorted(STUDIES), default="fast")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--use", type=int, default=None, help="run only the first N folds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="runs per fold (run j: seed j)")
    ap.add_argument("--arms", nargs="*", help="arms to run (default: all); 'chosen' is always run")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra override applied to every arm")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset, arms = STUDIES[args.study]
    names = ["chosen", *[a for a in (args.arms or arms) if a != "chosen"]]
    a = mnist5k()
    parts = folds(a.y_train, args.folds)
    use = range(args.use or args.folds)
    runs = [(j, j % len(use)) for j in range(len(use) * args.repeats)]  # (seed, fold)
    acc: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_fold(Path(tmp), k, parts) for k in use]
        for name in names:
            acc[name], cpu[name] = [], []
            keys = [o for o in arms[name] if not o.startswith("+")]
            named = [o[1:] for o in arms[name] if o.startswith("+")]  # airbench levers
            for seed, k in runs:
                recipe = build_recipe(preset, [f"data.name={paths[k]}", f"train.seed={seed}",
                                               f"run.dir={tmp}", f"run.name={name}-{seed}",
                                               *keys, *args.overrides])
                t0 = time.process_time()
                with levers(named):
                    s = train(recipe, progress=False, quiet=True, overwrite=True).summary
                cpu[name].append(time.process_time() - t0)
                acc[name].append(s["test_top1"])  # the fold's validation digits
            each = " ".join(f"{v:.2f}" for v in acc[name])
            print(f"{name}: val top-1 {statistics.mean(acc[name]):.2f} ({each}), "
                  f"cpu {statistics.mean(cpu[name]):.1f} s", flush=True)
    print(f"\n{args.study}: {len(runs)} runs on {len(use)} folds of 800 validation digits (from "
          f"the 4,000 training digits), {args.threads} thread(s)")
    print("| arm | overrides | val top-1 (%) | Δ vs chosen [95 % CI] | CPU s per run |")
    print("|---|---|---|---|---|")
    for name in names:
        vals = acc[name]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        if name == "chosen":
            delta = "—"
        else:
            m, lo, hi = ci95([x - y for x, y in zip(vals, acc["chosen"], strict=True)])
            delta = f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        print(f"| {name} | {' '.join(arms[name]) or '(the recipe)'} | "
              f"{statistics.mean(vals):.2f} ± {sd:.2f} | {delta} | "
              f"{statistics.mean(cpu[name]):.1f} |")


if __name__ == "__main__":
    main()
