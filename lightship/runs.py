"""The run folder: layout, lock, raw metrics log, summary.

```
runs/<name>/
  recipe.yaml        the full recipe (re-run: `lightship train --recipe runs/<name>/recipe.yaml`)
  metrics.jsonl      one JSON object per step ("kind": "step") and per evaluation ("kind": "eval")
  checkpoints/       step-<N>.safetensors + step-<N>.state.pt, and last.json pointing at the pair
  weights.safetensors  the final model (EMA weights when EMA is on), with preprocessing metadata
  summary.json       final numbers
```
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightship.errors import UserError


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock file, so two processes never write the same run folder."""

    def __init__(self, paths: RunPaths) -> None:
        self.path = paths.lock
        self.held = False

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _pid_alive(pid) and pid != os.getpid():
                    raise UserError(f"run folder {self.path.parent} is in use by process {pid}; "
                                    "wait for it or choose another --name") from None
                self.path.unlink(missing_ok=True)  # stale lock of a killed process
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return
        raise UserError(f"could not lock {self.path.parent}; remove {self.path} if no run uses it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def prepare_new_run(paths: RunPaths, overwrite: bool) -> None:
    """Check a new run may use ``paths.root``; with ``overwrite``, clear an earlier run there."""
    if paths.root.exists() and any(paths.root.iterdir()):
        if not overwrite:
            raise UserError(f"run folder {paths.root} already exists; choose another --name, "
                            "continue it with --resume, or replace it with --overwrite")
        if not paths.is_run():
            raise UserError(f"{paths.root} is not a lightship run folder; refusing to overwrite it")
        shutil.rmtree(paths.root)


class MetricsLog:
    """Appends raw records (never smoothed) to metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (work lost to a crash, redone on resume)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and _record_step(line) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records)
        if not lines:
            return
        try:
            with open(self.path, "a") as fh:
                fh.write(lines)
        except OSError as exc:
            raise UserError(f"cannot write {self.path} ({exc.strerror}); free disk space and "
                            "continue with --resume") from None


def _record_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, ValueError):
        return 1 << 62  # a torn last line: drop it


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read metrics.jsonl, skipping a torn final line."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_json(path: Path, obj: dict[str, Any]) -> None:
    from lightship.train.checkpoint import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))
