"""`lightship` command line: thin wrappers that parse arguments and call the library.

Every user-fixable problem ends as one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import NoReturn

from lightship import interrupt
from lightship.errors import Interrupted, UserError
from lightship.fileio import user_path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default prints usage)
        raise UserError(f"{message}; see '{self.prog} --help'")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--recipe", help="preset (baseline, tricks, fast, default) or a YAML "
                   "file; default: the default preset")
    p.add_argument("--data", help="dataset name or path (sets data.name)")
    p.add_argument("--model", help="model name (sets model.name); `lightship models` lists them")
    p.add_argument("--epochs", type=int, help="sets train.epochs")
    p.add_argument("--batch-size", type=int, help="sets train.batch_size")
    p.add_argument("--lr", type=float, help="sets optim.lr (the base LR before linear scaling)")
    p.add_argument("--seed", type=int, help="sets train.seed")
    p.add_argument("--init", metavar="SOURCE", help="start from these weights (sets model.init): "
                   "a run folder, a .safetensors file or a .pt/.pth state_dict; tensors match by "
                   "name and shape, a head of another class count is re-initialised")
    p.add_argument("--device", help="sets train.device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key, e.g. --set schedule.name=cosine (repeatable)")
    p.add_argument("--name", help="run folder name (default <model>_<data>_<time>)")
    p.add_argument("--out", help="parent folder of run folders (sets run.dir; default runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run folder exactly where its "
                   "last checkpoint left it (its saved recipe is used)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of a bar")
    p.add_argument("--print-recipe", action="store_true",
                   help="print the resolved recipe as YAML and exit without training")


def _overrides(args: argparse.Namespace) -> list[str | tuple[str, object]]:
    """Shortcut flags as (key, value) pairs with argparse's types (``--name 2024`` is the string
    '2024', not YAML's integer), then the ``--set`` strings (read as YAML)."""
    flags = {"data": "data.name", "model": "model.name", "epochs": "train.epochs",
             "batch_size": "train.batch_size", "lr": "optim.lr", "seed": "train.seed",
             "init": "model.init",
             "device": "train.device", "name": "run.name", "out": "run.dir"}
    out: list[str | tuple[str, object]] = [(key, getattr(args, attr))
                                           for attr, key in flags.items()
                                           if getattr(args, attr) is not None]
    return out + list(args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from lightship.api import train
    from lightship.recipe import build_recipe

    progress = False if args.no_progress else None
    if args.resume:
        if args.recipe or _overrides(args):
            raise UserError("--resume continues a run with its saved recipe; drop the other "
                            "recipe options (or start a new run without --resume)")
        train(resume=args.resume, progress=progress)
        return 0
    recipe = build_recipe(args.recipe, _overrides(args))
    if args.print_recipe:
        print(recipe.to_yaml(), end="")
        return 0
    train(recipe, overwrite=args.overwrite, progress=progress)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    if args.resume:  # the saved recipe already names the method and teacher
        return cmd_train(args)
    extra: list[tuple[str, object]] = [("method.name", args.method)]  # as written, not YAML
    if args.teacher:
        teacher = user_path(args.teacher)
        key = "weights" if teacher.suffix == ".safetensors" else "run"
        extra.append((f"method.teacher.{key}", str(teacher)))
    if args.booster:
        extra.append(("method.booster", args.booster))
    if args.teacher_model:
        extra.append(("method.teacher.model", args.teacher_model))
    args.overrides = [*extra, *args.overrides]
    return cmd_train(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from lightship.api import evaluate

    res = evaluate(args.target, data=args.data, batch_size=args.batch_size, device=args.device,
                   image_size=args.image_size, tta=args.tta, precision=args.precision)
    print(f"{res.model} on {res.data}: test top-1 {res.test_top1:.2f}%  "
          f"top-5 {res.test_top5:.2f}%  loss {res.test_loss:.4f}  ({res.n_test} images); "
          f"TTA: {'on' if res.tta else 'off'}; {res.setup}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lightship.data import describe_dataset
    from lightship.models import create_model, list_models, model_stats

    info = describe_dataset(args.data)
    k, c, s = info["num_classes"], info["in_chans"], info["input_size"]
    table = Table(title=f"models at {c}×{s}×{s}, {k} classes ({args.data})")
    for col in ("name", "params", "MACs"):
        table.add_column(col, justify="left" if col == "name" else "right")
    names = [args.name] if args.name else list_models()
    for name in names:
        stats = model_stats(create_model(name, k, c, s), c, s)
        table.add_row(name, f"{stats['params'] / 1e6:.3f} M", f"{stats['macs'] / 1e6:.1f} M")
    Console().print(table)
    print("also: timm:NAME and torchvision:NAME when those packages are installed")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from lightship.data import describe_dataset, list_datasets

    if args.action == "list" or args.action is None:
        print("built-in datasets: " + ", ".join(list_datasets()))
        print("paths: a CIFAR-10/100 python folder, MNIST IDX files, an ImageFolder tree "
              "(train/, val/), or an .npz with x_train, y_train, x_test, y_test")
        return 0
    if not args.spec:
        raise UserError("lightship data describe needs a dataset name or path")
    info = describe_dataset(args.spec)
    for key, value in info.items():
        print(f"{key}: {value}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from lightship.api import confirm, diagnose

    seeds = _seed_list(args.seeds) if args.seeds else ()
    if (seeds or args.factor != 2) and not args.confirm:
        raise UserError("--seeds and --factor go with --confirm (they choose the twins it trains)")
    if args.factor < 2:
        raise UserError(f"--factor {args.factor}: the twin's schedule must be at least 2× longer")
    for run in args.runs:
        v = diagnose(run, reference=args.reference)
        print(f"{run}: {v.one_line()}")
        for reason in v.reasons:
            print(f"  - {reason}")
        if v.suggestion:
            print(f"  suggestion: {v.suggestion}")
        if args.confirm:
            print(f"  confirming: training the ×{args.factor} twin"
                  + (f" and seeds {', '.join(map(str, seeds))}" if seeds else "") + " ...",
                  flush=True)
            c = confirm(run, factor=args.factor, seeds=seeds, quiet=True)
            print(f"  confirm: {c.one_line()}")
            for s, r, t, a, b in zip(c.seeds, c.runs, c.twins, c.ce, c.ce_twin, strict=True):
                print(f"    seed {s}: {r} CE {a:.4f}, twin {t} CE {b:.4f}")
    return 0


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--seeds {text}: give seeds as integers separated by commas, e.g. "
                        "1,2") from None
    if not seeds:
        raise UserError("--seeds: give at least one seed, e.g. 1,2")
    return seeds


def make_parser() -> argparse.ArgumentParser:
    from lightship import __version__
    from lightship.methods.terms import method_help
    from lightship.train.precision import PRECISIONS

    parser = _Parser(prog="lightship", description="Train light image classifiers to "
                     "convergence and lift them toward heavy ones.")
    parser.add_argument("--version", action="version", version=f"lightship {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("train", help="train a model from a recipe into a run folder")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a light student with knowledge from a teacher")
    _add_train_args(p)
    p.add_argument("--teacher",
                   help="teacher: a lightship run folder or a lightship .safetensors file "
                   "(needed by kd, hint, at, dkd, adversarial)")
    p.add_argument("--method", default="kd", help=method_help())
    p.add_argument("--teacher-model", metavar="NAME",
                   help="architecture of a --teacher .safetensors without lightship metadata "
                   "(a registry name, timm:NAME or torchvision:NAME)")
    p.add_argument("--booster", help="rocket: the booster net (sets method.booster), e.g. "
                   "resnet56 for a resnet20 student")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="evaluate a run folder or a weights file on a test split")
    p.add_argument("target", help="run folder or .safetensors weights file")
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--image-size", type=int, metavar="N", help="resize --data's images to N×N "
                   "(without it, data of another input size is refused)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation on or off (default: as the run's last "
                   "evaluation, for a run folder and its weights file alike)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="as train.precision (default auto: bf16 where the device computes it "
                   "natively, else fp32)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("diagnose", help="convergence verdict of run folders, with reasons")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--reference", metavar="RUN_DIR",
                   help="another (usually heavier) net's run on the same data, to compare "
                   "loss floors")
    p.add_argument("--confirm", action="store_true",
                   help="train the ×2-schedule twin (same recipe, seed, data; its own folder "
                   "RUN_DIR-x2) and compare the final clean train CE: the convergence test "
                   "when the curve cannot tell")
    p.add_argument("--factor", type=int, default=2, help="with --confirm: the twin's schedule "
                   "length factor (default 2)")
    p.add_argument("--seeds", metavar="S,S", help="with --confirm: also train the run and its "
                   "twin at these seeds, for an interval over seeds")
    p.set_defaults(func=cmd_diagnose)

    from lightship.export import add_export_parser

    add_export_parser(sub)
    from lightship.report.cli import add_report_parser

    add_report_parser(sub)
    from lightship.probes.cli import add_probe_parser

    add_probe_parser(sub)
    from lightship.studies.cli import add_study_parser

    add_study_parser(sub)
    from lightship.lift.cli import add_lift_parser

    add_lift_parser(sub)

    p = sub.add_parser("models", help="list models with parameters and MACs")
    p.add_argument("--data", default="mnist5k", help="dataset that sets input size and classes")
    p.add_argument("--name", help="show one model only")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="list datasets or describe one")
    p.add_argument("action", nargs="?", choices=["list", "describe"], default="list")
    p.add_argument("spec", nargs="?", help="dataset name or path (for describe)")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    with interrupt.handled():
        try:
            parser = make_parser()  # imports torch: seconds in which Ctrl-C is common
            args = parser.parse_args(argv)
            args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given
            if not getattr(args, "func", None):
                parser.print_help()
                return 2
            return args.func(args)
        except UserError as exc:
            if interrupt.interrupted():  # the failure is Ctrl-C's doing, not the input's
                print(f"lightship: {interrupt.stopped()}", file=sys.stderr)
                return interrupt.exit_code()
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            print(f"lightship: error: {lines[-1] if lines else 'invalid input'}", file=sys.stderr)
            return exc.exit_code
        except BrokenPipeError:  # `lightship diagnose ... | head`: the reader left; not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except KeyboardInterrupt as exc:  # a run's Interrupted says how to go on
            print(f"lightship: {exc if isinstance(exc, Interrupted) else interrupt.stopped()}",
                  file=sys.stderr)
            return interrupt.exit_code()


def run() -> NoReturn:
    """The `lightship` command: glibc's malloc told to keep freed memory, torch threads fit to
    the CPUs it gets, :func:`main`, then a quick exit.

    Python's own teardown of torch's thousands of modules (more with torch._dynamo and sympy,
    which a compiled run imports) takes 1–3 s of wall time after the work is done
    (benchmarks/startup.py). Every file lightship writes is complete and closed when main()
    returns, so the exit handlers are run, the streams flushed, and the process ends there.
    """
    from lightship.train.malloc import keep_freed_memory
    from lightship.train.threads import manage_threads

    keep_freed_memory()  # this process trains: reuse freed activations (lightship.train.malloc)
    manage_threads()  # and fits its torch threads to the CPUs it gets (lightship.train.threads)
    code = main()
    atexit._run_exitfuncs()  # what a normal exit runs (multiprocessing, logging, ...)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # reader gone / stream closed: nothing to flush
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    run()
