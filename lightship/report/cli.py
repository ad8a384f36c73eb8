"""`lightship report`: the HTML report of run folders (and TensorBoard scalars on request)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lightship.errors import UserError
from lightship.fileio import user_path


def cmd_report(args: argparse.Namespace) -> int:
    from lightship.report.html import write_report
    from lightship.report.tensorboard import write_scalars

    runs = [user_path(r) for r in args.runs]
    from lightship.studies.cli import is_study, report_study

    if len(runs) == 1 and is_study(runs[0]):  # a study folder: its analysis and its page
        if args.reference or args.tensorboard or args.tensorboard_dir:
            raise UserError("--reference and --tensorboard take run folders, not a study "
                            "folder; give the study's cell folders (STUDY/cells/ARM/CELL)")
        for line in report_study(runs[0], Path(args.output) if args.output else None):
            print(line)
        return 0
    if args.output:
        output = user_path(args.output)
    elif len(runs) == 1:
        output = runs[0] / "report.html"
    else:
        output = Path("report.html")
    log_dirs = []
    if args.tensorboard or args.tensorboard_dir:
        from lightship.report.tensorboard import _summary_writer

        _summary_writer()  # fail before any work when tensorboard is missing
        base = user_path(args.tensorboard_dir) if args.tensorboard_dir else None
        if base is not None and len(runs) > 1 and len({r.name for r in runs}) < len(runs):
            raise UserError("two run folders share a name; use --tensorboard without "
                            "--tensorboard-dir (each run's logs go to RUN_DIR/tensorboard)")
        if base is not None and not base.parent.is_dir():
            raise UserError(f"--tensorboard-dir {base}: folder {base.parent} does not exist; "
                            f"create it (mkdir -p {base.parent}) or choose another")
        log_dirs = [base / r.name if base is not None else None for r in runs]
    path = write_report(runs, output, reference=args.reference and
                        user_path(args.reference))
    print(f"wrote {path} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
    if not log_dirs:
        return 0
    if args.tensorboard_dir:
        user_path(args.tensorboard_dir).mkdir(exist_ok=True)
    written = [write_scalars(run, log_dir) for run, log_dir in zip(runs, log_dirs, strict=True)]
    for run, log_dir in zip(runs, written, strict=True):
        print(f"wrote TensorBoard scalars of {run} to {log_dir}")
    if args.tensorboard_dir or len(runs) == 1:
        view = f"--logdir {args.tensorboard_dir or written[0]}"
    else:
        view = "--logdir_spec " + ",".join(f"{r.name}:{d}" for r, d in zip(runs, written,
                                                                           strict=True))
    print(f"view them with: tensorboard {view}")
    return 0


def add_report_parser(sub) -> argparse.ArgumentParser:
    """Add the `report` subcommand to the CLI's subparsers."""
    p = sub.add_parser("report", help="HTML report of run folders: curves, loss terms, LR, "
                       "verdicts, comparison table")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders, or one study folder (lightship study): refreshes its "
                   "study.md/study.json and writes its page: the claims' scoreboard and "
                   "forest plot, curves per arm, one paired cell per arm")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="HTML file to write (default RUN_DIR/report.html for one run, "
                   "report.html for several)")
    p.add_argument("--reference", metavar="RUN_DIR",
                   help="another (usually heavier) net's run on the same data: compare loss "
                   "floors")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars to RUN_DIR/tensorboard "
                   "(needs pip install 'lightship[tensorboard]')")
    p.add_argument("--tensorboard-dir", metavar="LOG_DIR",
                   help="write the TensorBoard scalars to LOG_DIR/<run name> instead "
                   "(implies --tensorboard)")
    p.set_defaults(func=cmd_report)
    return p
