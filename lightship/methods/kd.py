"""Logit-level knowledge transfer terms: Hinton KD, logit hints, decoupled KD.

``kd_loss`` — Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network":
    KD = T² · KL( softmax(t/T) ‖ softmax(s/T) ),  KL averaged over the batch (``batchmean``).
    lightship's objective is ``(1 − α)·CE + α·KD`` (α multiplies KD; default α = 0.9, T = 4 as in
    RepDistiller). Some toolkits put α on CE instead: check before copying numbers.
    ``rocket_kd_weight`` — the Rocket Launching authors' scale (Zhou et al. 2018, ``utils.py``
    ``distillation`` / ``rocket_distillation``): ``F.kl_div`` at its old default averages the KL
    over batch × classes, and they multiply by 2·T²·α, so their α is ``2·α/K`` on this
    batch-mean KD (K classes): 0.18 for α 0.9 on CIFAR-10, 0.018 on CIFAR-100
    (``method.kd_scale: rocket``).

``hint_loss`` — logit matching (Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?"), the
hint of Rocket Launching (Zhou et al. 2018): MSE between pre-softmax logits.
    reduction "sum":  mean over the batch of Σ_k (s_k − t_k)²  (the per-example squared L2 of the
                      Rocket code; scales with the class count)
    reduction "mean": mean over batch and classes (``F.mse_loss`` default)
    The objective adds ``hint_weight · hint`` (default 0.01, ``method.hint_weight``).

``dkd_loss`` — Zhao et al. CVPR 2022, "Decoupled Knowledge Distillation":
    TCKD = T² · KL( [p_t, 1 − p_t] of teacher ‖ same of student )   (binary target/non-target)
    NCKD = T² · KL( softmax over non-target classes, teacher ‖ student )
    DKD  = α·TCKD + β·NCKD, paper defaults α = 1, β = 8, T = 4, the DKD weight ramped linearly
    over the first 20 epochs (``dkd_warmup``). The binary pair is computed in log space
    (log p_t = z_t − LSE(z_t, LSE_{k≠t} z_k), the rest likewise): ``1 − p_t`` cancels to 0 in
    float32 once the softmax saturates (logit std ~40 and up), and mdistiller's sum of the
    non-target probabilities underflows to 0 there.
All terms are computed in float32 whatever the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """Hinton KD: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batchmean."""
    log_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (T * T)


def rocket_kd_weight(alpha: float, classes: int) -> float:
    """The weight on the batch-mean ``kd_loss`` that equals the Rocket authors' α: their KL is
    averaged over batch × ``classes`` and doubled, so it is ``2·alpha/classes``."""
    return 2 * alpha / classes


def hint_loss(student_logits: Tensor, teacher_logits: Tensor, reduction: str = "sum") -> Tensor:
    """MSE on logits; ``sum`` over classes (mean over the batch) or ``mean`` over everything."""
    s, t = student_logits.float(), teacher_logits.float()
    if reduction == "sum":
        return F.mse_loss(s, t, reduction="sum") / s.shape[0]
    if reduction == "mean":
        return F.mse_loss(s, t, reduction="mean")
    raise ValueError(f"hint reduction '{reduction}' is unknown; use 'sum' or 'mean'")


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, alpha: float = 1.0,
             beta: float = 8.0, T: float = 4.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Decoupled KD: ``α·TCKD + β·NCKD`` and the two parts."""
    s, t = student_logits.float() / T, teacher_logits.float() / T
    gt = F.one_hot(target, s.shape[1]).bool()
    # binary distributions [p(target), p(rest)], as log-probabilities
    tckd = F.kl_div(_log_target_rest(s, gt), _log_target_rest(t, gt), reduction="batchmean",
                    log_target=True) * (T * T)
    # non-target distributions: mask the target logit out before the softmax
    big = 1000.0
    log_ns = F.log_softmax(s - big * gt, dim=1)
    log_nt = F.log_softmax(t - big * gt, dim=1)
    nckd = F.kl_div(log_ns, log_nt, reduction="batchmean", log_target=True) * (T * T)
    return alpha * tckd + beta * nckd, {"tckd": tckd, "nckd": nckd}


def _log_target_rest(z: Tensor, gt: Tensor) -> Tensor:
    """``log [p(target), p(rest)]`` of ``softmax(z)`` per row, without forming ``1 − p``."""
    rest = z.masked_fill(gt, float("-inf")).logsumexp(dim=1)
    return F.log_softmax(torch.stack([z[gt], rest], dim=1), dim=1)


def dkd_warmup(epoch: int, warmup_epochs: int = 20) -> float:
    """Linear warm-up of the DKD weight: ``min(epoch / warmup_epochs, 1)``."""
    return 1.0 if warmup_epochs <= 0 else min(epoch / warmup_epochs, 1.0)
