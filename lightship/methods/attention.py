"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

The attention map of a feature map A ∈ R^{C×H×W} is Q = vec(mean_c |A_c|^p), L2-normalised per
example (p = 2 in the paper). For each (student, teacher) pair:

    AT = mean over batch and positions of (Q_s − Q_t)²        (the authors' implementation)

summed over pairs. The paper's objective adds ``β/2 · Σ_pairs ‖Q_s − Q_t‖₂`` with β = 1000; as in
the authors' code lightship multiplies the squared form above by ``method.at_beta`` (1000).
Maps of different spatial size are reconciled by adaptive average pooling of the larger feature
map to the smaller one before computing Q.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def attention_map(feat: Tensor, p: int = 2) -> Tensor:
    """Q = normalize(vec(mean over channels of |A|^p)), shape [N, H·W], float32."""
    return F.normalize(feat.float().abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(student_feats: list[Tensor], teacher_feats: list[Tensor], p: int = 2) -> Tensor:
    """Σ over pairs of mean((Q_s − Q_t)²)."""
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError("at_loss needs the same, non-zero number of student and teacher maps")
    total = 0.0
    for s, t in zip(student_feats, teacher_feats, strict=True):
        hs, ht = s.shape[-2:], t.shape[-2:]
        if hs != ht:
            size = (min(hs[0], ht[0]), min(hs[1], ht[1]))
            s = F.adaptive_avg_pool2d(s, size) if hs != size else s
            t = F.adaptive_avg_pool2d(t, size) if ht != size else t
        total = total + (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
    return total
