"""Supervised objective: cross-entropy with label smoothing, on hard or mixed (soft) targets.

Label smoothing (Szegedy et al. 2016): the target puts 1 − ε on the true class and ε/K on every
class (``torch.nn.functional.cross_entropy(label_smoothing=ε)``). With mixup/cutmix the targets are
already probability vectors; torch applies the same smoothing to them.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Supervised:
    """``loss(model, x, target) -> (loss, named terms, logits)``: the objective plug-in interface.

    Every method (KD, Rocket, ...) implements the same call; the loop only sums and logs.
    """

    name = "supervised"
    side_optimizer = None  # partners with their own optimizer (discriminators): none here

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def trainable(self) -> dict[str, nn.Module]:
        """Extra trainable modules besides the student (boosters, peers); none here."""
        return {}

    def partners(self) -> dict[str, nn.Module]:
        """Modules a checkpoint keeps besides the student; none here."""
        return {}

    def evaluated(self) -> dict[str, nn.Module]:
        """Partners whose test accuracy is logged; none here."""
        return {}

    def loss(self, model: nn.Module, x: Tensor, target: Tensor
             ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        logits = model(x)
        ce = F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
        return ce, {"ce": ce.detach()}, logits

