"""Adversarial feature distillation (the GAN-KD idea; e.g. Wang et al. 2018, "KDGAN", and Xu et al.
2018, "Training Shallow and Thin Networks for Acceleration via Knowledge Distillation with
Conditional Adversarial Networks"; Wasserstein critic of Arjovsky et al. 2017).

For each chosen (student, teacher) feature pair a small discriminator D learns to tell teacher
features (real) from student features (fake); the student learns to fool it. Student features
pass a 1×1 conv adapter when the channel counts differ (and are average-pooled to the teacher's
spatial size when that differs); the adapters train with the student.

Losses (``method.adv_loss``), with s = adapter(student features), t = teacher features::

    wgan : D minimises mean D(s) − mean D(t), weights clipped to [−c, c] after every update;
           student term −mean D(s)
    hinge: D minimises relu(1 − D(t)) + relu(1 + D(s)); student term −mean D(s)
    bce  : D minimises BCE(D(t), 1) + BCE(D(s), 0); student term BCE(D(s), 1)

Student objective: CE(z, y) + ``adv_weight``·adversarial + ``adv_cos``·(1 − cos(s, t)). The
cosine term (on by default, weight 1) is how we read the "cosine" loss of GAN-KD: its training
log (p517332051/GAN-Knowledge-Distillation-SSD) reports ``cosine_length_loss_metric`` next to
the generator's losses at every line, falling from 0.64 to 0.40, so the student was trained to
align its feature maps' direction with the teacher's; here 1 − cosine similarity per spatial
position over channels, between the adapted student features and the teacher's, averaged over
positions and critics (the "length" half of their name, a magnitude match, is not added). The
discriminators have their own optimizer (RMSprop for wgan as in the WGAN paper, Adam with β1
0.5 otherwise, as the log's ``beta1=0.5``; LR ``adv_lr``, the log's lrD 5e-4; wgan clipping
``adv_clip``, the log's ±0.03); the loop steps it right
after the student's step, on the same batch's detached features (alternating updates):
:meth:`Adversarial.side_step`, which the loop reaches through the objective's ``side_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADAM_BETAS = (0.5, 0.999)
"""The critics' Adam betas: β1 0.5, the GAN-KD log's ``beta1`` (and DCGAN's)."""


def discriminator(channels: int, width: int = 64) -> nn.Module:
    """Conv critic without normalisation (WGAN critics must not use batch statistics)."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, stride=1, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width, 1))


def critic_loss(kind: str, d_real: Tensor, d_fake: Tensor) -> Tensor:
    if kind == "wgan":
        return d_fake.mean() - d_real.mean()
    if kind == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))


def generator_loss(kind: str, d_fake: Tensor) -> Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    return -d_fake.mean()


def cosine_term(s: Tensor, t: Tensor) -> Tensor:
    return (1 - F.cosine_similarity(s, t, dim=1)).mean()


class Adversarial:
    """Discriminators, adapters and their optimizer (composed into the transfer objective)."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int], kind: str,
                 lr: float, clip: float) -> None:
        self.kind, self.clip = kind, clip
        self.adapters = nn.ModuleList(
            nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1, bias=False)
            for cs, ct in zip(student_channels, teacher_channels, strict=True))
        self.critics = nn.ModuleList(discriminator(ct) for ct in teacher_channels)
        params = list(self.critics.parameters())
        self.optimizer = (torch.optim.RMSprop(params, lr=lr) if kind == "wgan"
                          else torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS))
        self._last: list[tuple[Tensor, Tensor]] = []

    def adapt(self, s_feats: list[Tensor], t_feats: list[Tensor]) -> list[Tensor]:
        out = []
        for a, s, t in zip(self.adapters, s_feats, t_feats, strict=True):
            s = a(s)
            if s.shape[-2:] != t.shape[-2:]:
                s = F.adaptive_avg_pool2d(s, t.shape[-2:])
            out.append(s)
        return out

    def terms(self, s_feats: list[Tensor], t_feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(student's adversarial term, cosine term); remembers the features for the D step."""
        s_adapted = self.adapt(s_feats, t_feats)
        self.critics.requires_grad_(False)  # the student's term must not train the critics
        adv = sum(generator_loss(self.kind, d(s).float())
                  for d, s in zip(self.critics, s_adapted, strict=True)) / len(s_adapted)
        self.critics.requires_grad_(True)
        cos = sum(cosine_term(s.float(), t) for s, t in zip(s_adapted, t_feats, strict=True))
        self._last = [(s.detach(), t) for s, t in zip(s_adapted, t_feats, strict=True)]
        return adv, cos / len(s_adapted)

    def side_loss(self) -> Tensor:
        """The critics' loss on the last batch's features (student detached)."""
        return sum(critic_loss(self.kind, d(t).float(), d(s).float())
                   for d, (s, t) in zip(self.critics, self._last, strict=True)) / len(self._last)

    def after_side_step(self) -> None:
        if self.kind == "wgan":
            with torch.no_grad():
                for p in self.critics.parameters():
                    p.clamp_(-self.clip, self.clip)
        self._last = []

    def side_step(self, autocast: Callable[[], Any],
                  average_grads: Callable[[list[Any]], None] | None = None) -> Tensor:
        """One update of the critics on the last batch's features; returns their loss.

        ``average_grads`` averages the critics' gradients over ranks when they are not in a DDP
        wrapper (partner methods under torchrun)."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = self.side_loss()
        loss.backward()
        if average_grads is not None:
            average_grads([p for g in self.optimizer.param_groups for p in g["params"]])
        self.optimizer.step()
        self.after_side_step()
        return loss.detach()
