"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a normalised batch.

Both draw λ ~ Beta(α, α) once per batch, pair every image with the image at a random permutation
of the batch and return soft targets ``λ·onehot(y) + (1 − λ)·onehot(y[perm])``. All randomness
comes from the CPU ``generator`` the caller passes, so a batch mixes the same way on any device
and after a resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightship.errors import UserError


def _beta(alpha: float, generator: torch.Generator) -> float:
    if not alpha > 0:
        raise UserError(f"mixup/cutmix alpha {alpha} must be > 0 (set it to 0 to switch it off)")
    # torch has no public Beta sampler that takes a generator; seed numpy's from it instead.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _pairs(x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator) -> tuple[
        Tensor, Tensor, Tensor]:
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    return perm, onehot, onehot[perm]


def mixup(x: Tensor, y: Tensor, num_classes: int, alpha: float,
          generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mixup: ``λ·x + (1 − λ)·x[perm]`` with λ ~ Beta(α, α); returns (x_mixed, soft targets)."""
    lam = _beta(alpha, generator)
    perm, target_a, target_b = _pairs(x, y, num_classes, generator)
    mixed = x.mul(lam).add_(x[perm], alpha=1.0 - lam)  # x.mul keeps x's memory format
    return mixed, target_a.mul_(lam).add_(target_b, alpha=1.0 - lam)


def cutmix_box(height: int, width: int, lam: float,
               generator: torch.Generator) -> tuple[int, int, int, int]:
    """The CutMix box (y0, y1, x0, x1): area ≈ (1 − λ)·H·W, centre uniform, clipped at borders."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy - ch // 2 + ch, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx - cw // 2 + cw, width)
    return y0, y1, x0, x1


def cutmix(x: Tensor, y: Tensor, num_classes: int, alpha: float,
           generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """CutMix: paste a box of ``x[perm]`` into ``x``; λ becomes the exact kept-area ratio
    (box clipped at the borders), so targets weigh each label by its visible pixels."""
    lam = _beta(alpha, generator)
    perm, target_a, target_b = _pairs(x, y, num_classes, generator)
    h, w = x.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(h, w, lam, generator)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, target_a.mul_(lam).add_(target_b, alpha=1.0 - lam)
