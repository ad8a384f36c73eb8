"""The run folder: layout, lock, the raw metrics log and its one reader, summary.

```
runs/<name>/
  recipe.yaml        the full recipe (re-run: `lightship train --recipe runs/<name>/recipe.yaml`)
  metrics.jsonl      one JSON object per step ("kind": "step") and per evaluation ("kind": "eval"),
                     each with its wall-clock "time" (Unix seconds) for time-to-accuracy
  checkpoints/       step-<N>.safetensors + step-<N>.state.pt, and last.json pointing at the pair
  weights.safetensors  the final model (EMA weights when EMA is on), with preprocessing metadata
  summary.json       final numbers
```

``metrics.jsonl`` is read only through :func:`read_records` (or :func:`parse_records` for a bare
file): one rule for a torn last line (a crash mid-write: skipped; a bad line before the last one:
the file is corrupt), and one de-duplication (the last record of a step or an epoch wins, as a
resumed run rewrites the work it lost). Record kinds and the step record's fixed keys are the
constants below; every other number in a step record is a named loss term.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightship.errors import UserError
from lightship.fileio import TMP_MARK, atomic_write_json, pid_alive

# Record kinds and keys of metrics.jsonl.
START, STEP, EVAL = "start", "step", "eval"
STEP_FIELDS = ("kind", "step", "epoch", "loss", "lr", "grad_norm", "ips", "time")
"""Step-record keys that are not loss terms; every other number in a step record is a term."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.json"

    @property
    def weights(self) -> Path:
        return self.root / "weights.safetensors"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def is_run(self) -> bool:
        return self.recipe.exists()


def summary_says_finished(paths: RunPaths) -> bool:
    """Whether the run's summary.json (if readable) says it finished."""
    try:
        return json.loads(paths.summary.read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


def how_to_continue(root: Path) -> str:
    """How to go on with a run folder that stopped: ``--resume`` only when it has a checkpoint to
    resume from, ``--overwrite`` when it exists without one, else the same command again."""
    paths = RunPaths(root)
    if summary_says_finished(paths):
        return f"nothing to resume: {root} has finished"
    if paths.last.exists():
        return f"continue with --resume {root}"
    if root.exists():
        return f"start it again with --overwrite ({root} has no checkpoint to resume)"
    return "run the command again"


def run_finished(paths: RunPaths, epochs: int) -> bool:
    """Whether a run folder holds a finished run: final weights, summary, last checkpoint at the
    last of its ``epochs`` (``--resume`` of it is refused before anything is written)."""
    if not (paths.weights.exists() and paths.summary.exists()):
        return False
    try:
        return int(json.loads(paths.last.read_text())["epoch"]) >= epochs
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_error(path: Path, exc: OSError, root: Path | None = None) -> UserError:
    """A one-line UserError for a failed write: disk full (ENOSPC, EDQUOT) gets its own fix."""
    again = how_to_continue(root) if root is not None else "run it again"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"disk full while writing {path}; free space, then {again}")
    reason = exc.strerror or type(exc).__name__
    return UserError(f"cannot write {path} ({reason}); check that the folder is writable and "
                     f"has free space, then {again}")


class RunLock:
    """An exclusive lock file holding the owner's pid, so two processes never write the same run
    folder. A lock left by a killed process (its pid no longer alive) is taken over."""

    def __init__(self, paths: RunPaths) -> None:
        self.path = paths.lock
        self.held = False

    def holder(self) -> int | None:
        """The pid of another live process holding the lock, or None."""
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and pid != os.getpid() and pid_alive(pid) else None

    def _create(self) -> bool:
        """Create the lock file with our pid already inside (no empty-file window another
        process could mistake for a stale lock); False if it exists."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(str(os.getpid()))
            try:
                os.link(tmp, self.path)  # atomic, and fails if the lock exists
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: O_EXCL, then write
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w") as fh:
                    fh.write(str(os.getpid()))
            return True
        except OSError as exc:
            raise write_error(self.path, exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> None:
        for _ in range(2):
            if self._create():
                self.held = True
                return
            pid = self.holder()
            if pid is not None:
                raise UserError(f"run folder {self.path.parent} is in use by process {pid}; "
                                "wait for it or choose another --name")
            self.path.unlink(missing_ok=True)  # stale lock of a killed process
        raise UserError(f"could not lock {self.path.parent}; remove {self.path} if no run uses it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _check_parent(root: Path) -> None:
    """The run folder can be made: its nearest existing ancestor is a folder we may write."""
    if root.exists() and not root.is_dir():
        raise UserError(f"run folder {root} exists but is a file, not a folder; choose another "
                        "--name or --out")
    parent = root.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{parent} is a file, not a folder, so the run folder {root} cannot be "
                        "made there; give --out a folder (or a path to create)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create the run folder {root}: {parent} is not writable; give "
                        "--out a folder you can write")


def never_started(paths: RunPaths) -> bool:
    """A folder holding only a dead run's lock and temporary files (killed before recipe.yaml)."""
    names = [p.name for p in paths.root.iterdir()]
    if not names or not all(n == ".lock" or TMP_MARK in n for n in names):
        return False
    try:
        pid = int(paths.lock.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    return not (pid and pid_alive(pid) and pid != os.getpid())


def prepare_new_run(paths: RunPaths, overwrite: bool) -> None:
    """Check a new run may use ``paths.root``; with ``overwrite``, clear an earlier run there
    (never one another process is still writing)."""
    _check_parent(paths.root)
    if paths.root.exists() and any(paths.root.iterdir()):
        if not overwrite:
            raise UserError(f"run folder {paths.root} already exists; choose another --name, "
                            "continue it with --resume, or replace it with --overwrite")
        if not paths.is_run() and not never_started(paths):
            raise UserError(f"{paths.root} is not a lightship run folder; refusing to overwrite it")
        pid = RunLock(paths).holder()
        if pid is not None:
            raise UserError(f"run folder {paths.root} is in use by process {pid}; refusing to "
                            "overwrite it: wait for that run or choose another --name")
        try:
            shutil.rmtree(paths.root)
        except OSError as exc:
            raise UserError(f"cannot remove {paths.root} for --overwrite "
                            f"({exc.strerror or type(exc).__name__}); remove it yourself or "
                            "choose another --name") from None


class MetricsLog:
    """Appends raw records (never smoothed) to metrics.jsonl. A failed write (disk full, say)
    is a one-line UserError naming the file; the run keeps its last checkpoint for --resume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (work lost to a crash, redone on resume)."""
        if not self.path.exists():
            return
        keep = [line for line in _lines(self.path) if _record_step(line) <= step]
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(b"".join(line + b"\n" for line in keep))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(self.path, exc, self.path.parent) from None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records)
        if not lines:
            return
        try:
            self._append(lines)
        except OSError as exc:
            raise write_error(self.path, exc, self.path.parent) from None

    def _append(self, lines: str) -> None:
        with open(self.path, "a") as fh:
            fh.write(lines)
            fh.flush()  # surface ENOSPC here, not later in close()


def _lines(path: Path) -> list[bytes]:
    """The non-blank lines of a metrics file, as bytes: a line that is not UTF-8 is then one
    damaged line (for :func:`_parse_line`), not a UnicodeDecodeError for the whole file."""
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def _record_step(line: bytes) -> int:
    rec = _parse_line(line)
    try:
        return int(rec.get("step", 0)) if rec is not None else 1 << 62  # torn: drop it
    except (TypeError, ValueError):
        return 1 << 62


def parse_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file in order. Only the last line can be torn by a crash
    and is skipped; a bad line before it (not JSON, or not even UTF-8) means the file is corrupt
    (a one-line UserError)."""
    lines = _lines(path)
    out = []
    for i, line in enumerate(lines):
        rec = _parse_line(line)
        if rec is not None:
            out.append(rec)
        elif i < len(lines) - 1:
            raise UserError(f"{path} line {i + 1} is not a JSON record; the file is corrupt "
                            "(remove that line or re-run)")
    return out


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass
class RunRecords:
    """A run's metrics.jsonl, parsed once: every record in order, and the de-duplicated views."""

    records: list[dict[str, Any]]

    @property
    def starts(self) -> list[dict[str, Any]]:
        """One start record per launch (the first, then one per resume)."""
        return [r for r in self.records if r.get("kind") == START]

    @property
    def steps(self) -> list[dict[str, Any]]:
        """One record per step in step order; the last record of a step wins (a resume)."""
        by_step = {int(r["step"]): r for r in self.records
                   if r.get("kind") == STEP and _number(r.get("step"))}
        return [by_step[k] for k in sorted(by_step)]

    @property
    def evals(self) -> list[dict[str, Any]]:
        """One record per epoch in epoch order; the last record of an epoch wins (a resume)."""
        by_epoch = {int(r["epoch"]): r for r in self.records
                    if r.get("kind") == EVAL and _number(r.get("epoch"))}
        return [by_epoch[k] for k in sorted(by_epoch)]

    def terms(self) -> list[str]:
        """Names of the logged loss terms, in order of first appearance."""
        seen: dict[str, None] = {}
        for r in self.steps:
            for k, v in r.items():
                if k not in STEP_FIELDS and _number(v):
                    seen.setdefault(k, None)
        return list(seen)


def read_records(run_dir: Path | str) -> RunRecords:
    """Read ``run_dir/metrics.jsonl``, with a clear UserError for a folder that is not a run or
    a run that has not logged anything yet."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist; pass a run folder such as runs/<name>")
    paths = RunPaths(run_dir)
    if not paths.is_run():
        raise UserError(f"{run_dir} is not a lightship run folder (no recipe.yaml); "
                        "pass a folder made by `lightship train`")
    if not paths.metrics.exists():
        raise UserError(f"{paths.metrics} is missing: the run has not started training; "
                        "start or resume it first")
    records = parse_records(paths.metrics)
    if not records and summary_says_finished(paths):  # a finished run logged: the file is hurt
        raise UserError(f"{paths.metrics} is empty or damaged, although {run_dir} finished "
                        "(summary.json); its records are lost: train it again (--overwrite) "
                        "to judge it")
    if not records:
        raise UserError(f"{paths.metrics} is empty: the run has not finished an epoch; "
                        "judge it after its first evaluation")
    return RunRecords(records)


def write_json(path: Path, obj: dict[str, Any], root: Path | None = None) -> None:
    """Write ``obj`` as JSON atomically; a failed write is a one-line UserError (saying how to
    go on with the run folder ``root``, when given)."""
    try:
        atomic_write_json(path, obj)
    except OSError as exc:
        raise write_error(path, exc, root) from None
