"""Checkpoints: weights as safetensors, the rest as a small tensor-only state file.

Writes are atomic (temporary file, fsync, rename), so a run killed at any moment keeps a loadable
last checkpoint. Nothing is ever unpickled: weights load through safetensors, the state file through
``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import errno
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lightship.errors import UserError

TMP_MARK = ".tmp-"  # temporary files are ``.<name>.tmp-<pid>`` next to their target


def _pid_alive(pid: int) -> bool:
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
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then fsync and rename onto ``path``, and fsync the folder.

    The temporary file lives in the same folder (so the rename is atomic) and is named
    ``.<name>.tmp-<pid>``; ones left by a killed process are removed on the next write there.
    A reader sees the old file or the new one, never a torn one, even after a power cut.
    """
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


def save_weights(path: Path, module: nn.Module, metadata: dict[str, Any] | None = None) -> None:
    """Save a module's state_dict as safetensors (metadata values JSON-encoded)."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file: (tensors, decoded metadata). Corrupt files are a UserError."""
    if not path.exists():
        raise UserError(f"weights file {path} does not exist; check the path")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable safetensors file ({reason}); "
                        "point to a weights file written by lightship or safetensors") from None
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return tensors, meta


def load_weights(module: nn.Module, path: Path) -> dict[str, Any]:
    """Load safetensors weights into ``module``; a mismatch names the architecture problem."""
    tensors, meta = read_weights(path)
    own = module.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    wrong = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        arch = meta.get("model", "another architecture")
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, "
                  f"{len(wrong)} wrong-shape tensors")
        raise UserError(f"{path} holds weights of {arch} ({detail}); load it with the model it "
                        "was trained with")
    module.load_state_dict(tensors)
    return meta


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_reason(exc: Exception) -> str:
    """The telling part of a torch.load failure (weights_only errors start with boilerplate)."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:
        return found.group(1).split(" was not an allowed global")[0].strip()[:120]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = [ln for ln in lines[1:] if not ln.startswith("Check the documentation")]
        if lines:
            return lines[0].split(" whose module")[0][:120]
        return "it names objects other than plain tensors"
    first = lines[0][:120] if lines else ""
    return f"{type(exc).__name__}: {first}" if len(first) < 30 else first


def load_state(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a state file with ``weights_only=True``: tensors and plain containers only.

    A file that holds code (a pickled object with ``__reduce__``), a torn or foreign file, or a
    dict without the ``required`` keys is a one-line UserError; nothing in it is executed.
    """
    if not path.exists():
        raise UserError(f"checkpoint state {path} is missing; the run has no checkpoint to resume")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn and foreign files fail in many exception types
        raise UserError(f"refusing to load {path}: not a lightship state file "
                        f"({_load_reason(exc)}); checkpoints are only read as plain tensors, "
                        "never as code") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if not isinstance(state, dict) or missing:
        raise UserError(f"refusing to load {path}: not a lightship state file (no "
                        f"{', '.join(missing) or 'dict'}); resume a run written by lightship")
    return state
