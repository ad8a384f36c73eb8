"""Normalization layers chosen by name, so every model family offers the same choices."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from lightship.errors import UserError, closest

NORMS = ("bn", "gn", "syncbn", "none")


def check_norm(kind: str) -> str:
    """Validate a norm name before any model is built; return it unchanged.

    Raises:
        UserError: unknown name, or ``syncbn`` without CUDA and an initialised process group.
    """
    if kind not in NORMS:
        raise UserError(f"unknown norm '{kind}'{closest(str(kind), NORMS)}; "
                        f"use one of {', '.join(NORMS)}")
    if kind == "syncbn":
        distributed = dist.is_available() and dist.is_initialized()
        if not (torch.cuda.is_available() and distributed):
            raise UserError("norm 'syncbn' needs CUDA GPUs and a distributed run (torchrun); "
                            "use norm: bn on CPU")
    return kind


def gn_group_count(channels: int, groups: int) -> int:
    """The largest group count <= ``groups`` that divides ``channels`` (GroupNorm requires it)."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def make_norm(kind: str, channels: int, groups: int = 8) -> nn.Module:
    """Build a 2-D norm: ``bn``, ``gn`` (at most ``groups`` groups), ``syncbn`` or ``none``."""
    check_norm(kind)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        if groups < 1:
            raise UserError(f"gn_groups must be >= 1 (got {groups}); use e.g. gn_groups: 8")
        return nn.GroupNorm(gn_group_count(channels, groups), channels)
    if kind == "syncbn":
        return nn.SyncBatchNorm(channels)
    return nn.Identity()
