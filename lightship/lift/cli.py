"""`lightship lift`: parse the options, call lightship.lift.core.lift, print its lines."""

from __future__ import annotations

import argparse
import sys

from lightship import interrupt
from lightship.lift.arms import ORDER
from lightship.studies.on_ray import add_executor_args
from lightship.train.precision import PRECISIONS


def cmd_lift(args: argparse.Namespace) -> int:
    from lightship.lift.core import lift
    from lightship.studies.runner import command_line

    try:
        lift(args.data, args.model, teacher=args.teacher, teacher_model=args.teacher_model,
             booster=args.booster, budget=args.budget,
             methods=[m for m in (args.methods or "").split(",") if m] or None,
             jobs=args.jobs, out=args.out, recipe=args.recipe, overrides=args.set or [],
             folds=args.folds, repeats=args.repeats, precision=args.precision,
             progress=False if args.no_progress else None, command=command_line(args.argv),
             executor=args.executor, address=args.address)
    except KeyboardInterrupt:
        print(f"lightship: {interrupt.stopped()}; run the same command again to continue the "
              "lift (finished cells and decisions are kept, the interrupted cell resumes)",
              file=sys.stderr)
        return interrupt.exit_code()
    return 0


def add_lift_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "lift", help="diagnose a light net, race the candidates that might lift it (longer "
        "training, tricks, transfer from a heavy net) on validation folds within a time "
        "budget, recommend one only when its gain holds, train it on all data and export it",
        description="The light-backbone workflow on your data: is the light net converged, "
        "does it underfit against the teacher, and does anything beat it? Candidates race on "
        "validation folds carved from the training split (the test split is read once, by "
        "the final runs); a winner is named only when its gain over the light net alone has "
        "an interval above 0 after Holm. Re-running the same command continues it.")
    p.add_argument("--data", required=True, help="dataset: a built-in name (mnist5k, digits) "
                   "or a path (ImageFolder with train/ and test/ or val/, CIFAR, MNIST IDX, "
                   ".npz)")
    p.add_argument("--model", required=True, help="the light net (lightship models), e.g. "
                   "resnet8 with --set model.width=0.25")
    p.add_argument("--teacher", metavar="RUN_OR_WEIGHTS", help="a trained heavy net: a "
                   "lightship run folder or .safetensors file trained on this data")
    p.add_argument("--teacher-model", metavar="HEAVY", help="a heavy architecture the lift "
                   "trains itself on each validation fold (and on all data if its winner "
                   "needs it)")
    p.add_argument("--booster", help="rocket+kd's booster, a deeper net of the light net's "
                   "family (default: resnet8 → resnet20, resnet20 → resnet56, wrn-16-1 → "
                   "wrn-40-1; none known: rocket is not a candidate)")
    p.add_argument("--budget", default="30m", help="wall time for the whole command (30m, "
                   "90s, 1h30m; a bare number is minutes; default 30m); a budget too small "
                   "for the baseline is refused with what it needs")
    p.add_argument("--methods", metavar="A,B", help=f"candidates to race (default all that "
                   f"apply: {', '.join(ORDER)}); `longer` always runs, as the convergence test")
    p.add_argument("--recipe", default="default", help="the light net's recipe: a preset or "
                   "a YAML file (default: default)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override, "
                   "repeatable (e.g. model.width=0.25, train.epochs=30)")
    p.add_argument("--folds", type=int, default=5, help="validation folds carved from the "
                   "training split (default 5; the race starts after 3)")
    p.add_argument("--repeats", type=int, default=4, help="at most this many repetitions "
                   "of the K-fold split, each reshuffled, while the budget lasts (r × K units "
                   "with the corrected interval; default 4)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained in parallel processes "
                   "(default 1)")
    add_executor_args(p)
    p.add_argument("--out", help="lift folder (default runs/lift/MODEL); re-running continues "
                   "it")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="what the cells' "
                   "train.precision auto becomes (default: this machine's choice), pinned in "
                   "lift.json")
    p.add_argument("--no-progress", action="store_true", help="one line per cell instead of "
                   "a bar")
    p.set_defaults(func=cmd_lift)
    return p
