"""TensorBoard scalars from a run folder's raw ``metrics.jsonl`` (after the fact, any run).

Step records become ``train/loss``, ``train/lr``, ``train/grad_norm`` and ``train/<term>`` (the
named loss terms: ``ce``, ``kd``, ``hint``, …); eval records become ``eval/<key>`` (train/test
loss and top-1, top-5, lr, epoch time). All at the global step, so the two families align.
Needs the optional ``tensorboard`` package: ``pip install 'lightship[tensorboard]'``.
"""

from __future__ import annotations

import math
from pathlib import Path

from lightship.errors import UserError

SUFFIX = ".lightship"  # event files we wrote: replaced on a re-run, other files left alone
SKIP = ("kind", "step", "epoch", "ips")


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("TensorBoard export needs the tensorboard package; install it with "
                        "pip install 'lightship[tensorboard]'") from None
    return SummaryWriter


def write_scalars(run_dir: str | Path, log_dir: str | Path | None = None) -> Path:
    """Write the run's metrics as TensorBoard scalars into ``log_dir`` (default
    ``RUN_DIR/tensorboard``) and return it. Re-running replaces the event files it wrote before,
    so the scalars never appear twice."""
    from lightship.runs import read_records

    SummaryWriter = _summary_writer()
    run_dir = Path(run_dir)
    records = read_records(run_dir)  # clear messages for folders that are not runs
    log_dir = Path(log_dir) if log_dir is not None else run_dir / "tensorboard"
    if log_dir.exists() and not log_dir.is_dir():
        raise UserError(f"{log_dir} is a file; give a folder for the TensorBoard logs")
    if not log_dir.parent.is_dir():
        raise UserError(f"folder {log_dir.parent} does not exist; create it "
                        f"(mkdir -p {log_dir.parent}) or choose another log folder")
    for old in log_dir.glob(f"events.out.tfevents.*{SUFFIX}"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(log_dir), filename_suffix=SUFFIX)
    try:  # one record per step and per epoch, the last one winning (a resumed run)
        for rec in records.steps:
            _add(writer, "train", rec, int(rec["step"]))
        for rec in records.evals:
            epoch = int(rec["epoch"])
            _add(writer, "eval", {**rec, "epoch_index": epoch}, int(rec.get("step", epoch)))
    finally:
        writer.close()
    return log_dir


def _add(writer, prefix: str, rec: dict, step: int) -> None:
    for key, value in rec.items():
        if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value) or prefix == "train":  # a NaN step loss is worth seeing
            writer.add_scalar(f"{prefix}/{key}", float(value), step)
