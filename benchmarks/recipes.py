"""Bag-of-Tricks study: the `baseline` and `tricks` presets on MNIST-5k at the same epoch budget.

Trains each preset for several seeds and prints mean ± std of test top-1 and of the final
training loss (the mean CE of the last epoch, which for `tricks` includes label smoothing: read it
as "where the optimiser ended", not as a like-for-like fit number), plus wall time, as a markdown
table for docs/results.md.

    python benchmarks/recipes.py [--model resnet20] [--epochs 15] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from lightship.recipe import build_recipe
from lightship.train.loop import train


def _ms(values: list[float], fmt: str = ".2f") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--model", default=None, help="default: the default recipe's model")
    ap.add_argument("--epochs", type=int, default=None, help="default: the default recipe's")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--presets", nargs="+", default=["baseline", "tricks"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            top1, loss, wall = [], [], []
            for seed in args.seeds:
                over = [f"data.name={args.data}", f"train.seed={seed}", f"run.dir={tmp}",
                        f"run.name={preset}-{seed}", *args.overrides]
                if args.model:
                    over.append(f"model.name={args.model}")
                if args.epochs:
                    over.append(f"train.epochs={args.epochs}")
                recipe = build_recipe(preset, over)
                s = train(recipe, progress=False, quiet=True).summary
                top1.append(s["test_top1"])
                loss.append(s["train_loss"])
                wall.append(s["wall_time_s"])
                print(f"{preset} seed {seed}: test top-1 {s['test_top1']:.2f}%  "
                      f"train loss {s['train_loss']:.4f}  {s['wall_time_s']:.0f}s", flush=True)
            rows.append((preset, recipe.model.name, recipe.train.epochs, _ms(top1),
                         _ms(loss, ".4f"), f"{statistics.mean(wall):.0f}"))
    print()
    print("| preset | model | epochs | test top-1 (%) | final train loss | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(f"\nseeds {args.seeds}; data {args.data}")


if __name__ == "__main__":
    main()
