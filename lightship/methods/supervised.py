"""Supervised objective: cross-entropy with label smoothing, on hard or mixed (soft) targets.

Label smoothing (Szegedy et al. 2016): the target puts 1 − ε on the true class and ε/K on every
class (``torch.nn.functional.cross_entropy(label_smoothing=ε)``). With mixup/cutmix the targets are
already probability vectors; torch applies the same smoothing to them. :func:`smoothed_ce` is the
one label-smoothed CE every objective and partner uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def smoothed_ce(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean CE of ``logits`` (in fp32) against class indices or probability vectors, ε-smoothed."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


class Supervised:
    """The objective of method ``supervised``: CE only, no partners (see
    :class:`lightship.methods.objective.Objective` for the interface)."""

    name = "supervised"
    term_names = ("ce",)
    side_optimizer = None  # partners with their own optimizer (discriminators): none here

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def trainable(self) -> dict[str, nn.Module]:
        return {}

    def partners(self) -> dict[str, nn.Module]:
        return {}

    def evaluated(self) -> dict[str, nn.Module]:
        return {}

    def side_step(self, autocast: Callable[[], Any],
                  average_grads: Callable[[list[Any]], None] | None) -> None:
        return None

    def set_epoch(self, epoch: int) -> None:
        pass

    def loss(self, model: nn.Module, x: Tensor, target: Tensor
             ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        logits = model(x)
        ce = smoothed_ce(logits, target, self.label_smoothing)
        return ce, {"ce": ce.detach()}, logits
