"""Low-level file I/O shared by every layer: atomic writes, temporary-file markers, pid checks.

Nothing here knows about runs, weights or recipes; it sits below everything else in lightship.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"  # temporary files are ``.<name>.tmp-<pid>`` next to their target


def user_path(path: str | Path) -> Path:
    """A path as the user wrote it, with ``~`` expanded: the one rule for every path lightship
    reads or writes (recipes keep the ``~`` as written)."""
    return Path(path).expanduser()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a pid we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temps(folder: Path) -> None:
    """Delete temporary files that a killed writer left in ``folder`` (its pid is gone)."""
    try:
        entries = list(folder.glob(f".*{TMP_MARK}*"))
    except OSError:
        return
    for tmp in entries:
        pid = tmp.name.rpartition(TMP_MARK)[2]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` then fsync and rename onto ``path``, and fsync the folder.

    The temporary file lives in the same folder (so the rename is atomic) and is named
    ``.<name>.tmp-<pid>``; ones left by a killed process are removed on the next write there.
    A reader sees the old file or the new one, never a torn one, even after a power cut.
    """
    from safetensors import SafetensorError

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        try:
            write(tmp)
        except OSError as exc:  # name the file the user knows, not the temporary one
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        except SafetensorError as exc:
            code = errno.ENOSPC if "No space" in str(exc) else errno.EIO
            raise OSError(code, str(exc), str(path)) from exc
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically (a trailing newline when indented)."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + ("\n" if indent else ""))
