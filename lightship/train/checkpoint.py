"""Checkpoints: the training state of a run (:class:`TrainState`) saved and restored exactly.

A checkpoint is ``checkpoints/step-N.safetensors`` (student weights with their metadata, see
:mod:`lightship.weights`), optional ``.ema`` and ``.partners`` weights, and ``step-N.state.pt``
(optimizer, scheduler, scaler, RNG, counters), committed by rewriting ``last.json``. Writes are
atomic (:mod:`lightship.fileio`), so a run killed at any moment keeps a loadable last checkpoint.
Nothing is ever unpickled: weights load through safetensors, the state file through
``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightship.errors import UserError
from lightship.fileio import atomic_write, atomic_write_json
from lightship.runs import RunPaths
from lightship.weights import load_plain, load_weights, save_weights


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: _torch_save(state, tmp))


def _torch_save(state: dict[str, Any], path: Path) -> None:
    # Through a Python file: a full disk is then OSError(ENOSPC), which says so in one line.
    # Given a path, torch's own writer fails with "[enforce fail at inline_container.cc]",
    # which names neither the cause nor the file.
    with open(path, "wb") as fh:
        torch.save(state, fh)


def load_state(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a state file with ``weights_only=True``: tensors and plain containers only.

    A file that holds code (a pickled object with ``__reduce__``), a torn or foreign file, or a
    dict without the ``required`` keys is a one-line UserError; nothing in it is executed.
    """
    if not path.exists():
        raise UserError(f"checkpoint state {path} is missing; the run has no checkpoint to resume")
    state = load_plain(path, "not a lightship state file",
                       "checkpoints are only read as plain tensors, never as code")
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if not isinstance(state, dict) or missing:
        raise UserError(f"refusing to load {path}: not a lightship state file (no "
                        f"{', '.join(missing) or 'dict'}); resume a run written by lightship")
    return state


@dataclass
class TrainState:
    """Everything a checkpoint keeps: the stepped modules, their optimizers, and the counters.

    ``partners`` are the modules the objective trains besides the student (booster, peers,
    adapters, critics); ``side`` is the optimizer of partners with their own (discriminators).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: nn.Module | None = None
    scaler: Any = None
    partners: dict[str, nn.Module] = field(default_factory=dict)
    side: torch.optim.Optimizer | None = None
    epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    best_top1: float = -1.0
    best_epoch: int = -1
    last_eval: dict[str, float] = field(default_factory=dict)

    def note_eval(self, result: dict[str, float]) -> None:
        """Remember an evaluation of the current epoch and the best test top-1 so far."""
        self.last_eval = result
        if result["test_top1"] > self.best_top1:
            self.best_top1, self.best_epoch = result["test_top1"], self.epoch


def save_checkpoint(paths: RunPaths, state: TrainState, metadata: dict[str, Any]) -> None:
    """Write step-N weights and state, then point last.json at them (the atomic commit). A
    write that fails (a full disk) removes this checkpoint's files: the last one stays whole."""
    tag = f"step-{state.step:08d}"
    try:
        _write_checkpoint(paths, state, metadata, tag)
    except BaseException:
        if _committed(paths) != tag:
            for part in paths.checkpoints.glob(f"{tag}.*"):
                part.unlink(missing_ok=True)
        raise
    for old in paths.checkpoints.glob("step-*"):
        if not old.name.startswith(tag + "."):
            old.unlink(missing_ok=True)


def _committed(paths: RunPaths) -> str | None:
    """The tag last.json points at, or None."""
    try:
        return json.loads(paths.last.read_text())["tag"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_checkpoint(paths: RunPaths, state: TrainState, metadata: dict[str, Any],
                      tag: str) -> None:
    save_weights(paths.checkpoints / f"{tag}.safetensors", state.model, metadata)
    if state.ema is not None:
        save_weights(paths.checkpoints / f"{tag}.ema.safetensors", state.ema)
    if state.partners:
        save_weights(paths.checkpoints / f"{tag}.partners.safetensors",
                     nn.ModuleDict(state.partners))
    save_state(paths.checkpoints / f"{tag}.state.pt", {
        "epoch": state.epoch,
        "step": state.step,
        "elapsed": state.elapsed,
        "best_top1": state.best_top1,
        "best_epoch": state.best_epoch,
        "last_eval": dict(state.last_eval),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else {},
        "side_optimizer": state.side.state_dict() if state.side is not None else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })
    atomic_write_json(paths.last, {"tag": tag, "step": state.step, "epoch": state.epoch},
                      indent=None)


def restore_checkpoint(paths: RunPaths, state: TrainState) -> None:
    """Load the last checkpoint of ``paths`` into ``state`` (modules, optimizers, RNG, counters)."""
    if not paths.last.exists():
        raise UserError(f"{paths.root} has no checkpoint yet (checkpoints/last.json); start it "
                        "again with --overwrite")
    tag = json.loads(paths.last.read_text())["tag"]
    load_weights(state.model, paths.checkpoints / f"{tag}.safetensors")
    if state.ema is not None:
        load_weights(state.ema, paths.checkpoints / f"{tag}.ema.safetensors")
    if state.partners:
        load_weights(nn.ModuleDict(state.partners),
                     paths.checkpoints / f"{tag}.partners.safetensors")
    saved = load_state(paths.checkpoints / f"{tag}.state.pt")
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.side is not None and saved.get("side_optimizer"):
        state.side.load_state_dict(saved["side_optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    if state.scaler is not None and saved["scaler"]:
        state.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state.epoch, state.step, state.elapsed = saved["epoch"], saved["step"], saved["elapsed"]
    state.best_top1, state.best_epoch = saved["best_top1"], saved["best_epoch"]
    state.last_eval = saved["last_eval"]
