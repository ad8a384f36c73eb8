"""Checkpoints: weights as safetensors, the rest as a small tensor-only state file.

Writes are atomic (temporary file, fsync, rename), so a run killed at any moment keeps a loadable
last checkpoint. Nothing is ever unpickled: weights load through safetensors, the state file through
``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lightship.errors import UserError


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then fsync and rename onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
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


def load_state(path: Path) -> dict[str, Any]:
    """Load a state file with ``weights_only=True``: tensors and plain containers only."""
    if not path.exists():
        raise UserError(f"checkpoint state {path} is missing; the run has no checkpoint to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"refusing to load {path}: not a lightship state file ({first[:120]}); "
                        "checkpoints are only read as safe tensors") from None
