"""The convergence verdict on real runs: three MNIST-5k runs whose honest verdicts differ.

1. a short constant-LR run (resnet8, 4 epochs): the loss is still falling;
2. a full cosine run (the baseline recipe, resnet8, 20 epochs): it has converged;
3. a tiny student (cnn4, 1.7 k parameters, 20 epochs cosine) judged against run 2 as the
   reference: its loss floor sits far above the heavy net's with train ≈ test, i.e. underfitting.

Prints each verdict line with its reasons, as `lightship diagnose` would.

    python benchmarks/verdicts.py [--out runs/verdicts]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightship.diagnose import judge_run
from lightship.recipe import build_recipe
from lightship.runs import RunPaths, read_records
from lightship.train.loop import train

RUNS = {
    "constant-short": ["model.name=resnet8", "schedule.name=constant", "train.epochs=4"],
    "cosine-full": ["model.name=resnet8", "schedule.name=cosine", "train.epochs=20"],
    "tiny-student": ["model.name=cnn4", "schedule.name=cosine", "train.epochs=20"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/verdicts")
    ap.add_argument("--data", default="mnist5k")
    args = ap.parse_args()
    for name, sets in RUNS.items():
        recipe = build_recipe("baseline", [f"data.name={args.data}", *sets,
                                           f"run.dir={args.out}", f"run.name={name}"])
        train(recipe, overwrite=True, progress=False, quiet=True)
    reference = read_records(Path(args.out) / "cosine-full")
    for name in RUNS:
        paths = RunPaths(Path(args.out) / name)
        recipe = build_recipe(paths.recipe)
        ref = reference if name == "tiny-student" else None
        v = judge_run(paths.root, recipe, reference=ref)
        suffix = " (reference: cosine-full)" if ref else ""
        print(f"{name}{suffix}: {v.one_line()}")
        for reason in v.reasons:
            print(f"  - {reason}")
        if v.suggestion:
            print(f"  suggestion: {v.suggestion}")


if __name__ == "__main__":
    main()
