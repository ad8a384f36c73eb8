"""The objective interface the loop talks to, and the objective made of the term table.

The loop calls only what :class:`Objective` declares: ``loss`` per step, ``side_step`` after the
student's update, ``set_epoch`` per epoch, and asks which partners to step (``trainable``), keep
in checkpoints (``partners``) and evaluate (``evaluated``). It never names a method.

:class:`TermObjective` is the student's label-smoothed CE plus the recipe's terms from
:data:`lightship.methods.terms.TERMS`, summed in table order. The frozen teacher sees the *same
augmented batch* as the student (consistent views; Beyer et al. 2022, "Knowledge distillation: a
good teacher is patient and consistent"), runs in inference mode, and never receives gradients;
features come from forward hooks (:class:`lightship.models.Taps`), so any registry, timm or
torchvision model can teach without being edited. Objective (terms joined by '+')::

    loss = w_ce·CE(s, y) + Σ_terms addends

with ``w_ce = 1 − α`` when `kd` is on without `rocket` (Hinton's α on KD), else 1: the authors'
Rocket+KD adds the KD term to the light net's full CE (their α 0.9 on a KL averaged over
batch × classes and doubled: ``method.kd_scale: rocket``, ``kd.rocket_kd_weight``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from lightship.errors import UserError
from lightship.methods.supervised import smoothed_ce
from lightship.methods.terms import TERMS, Term, TermBatch, TermContext
from lightship.recipe import MethodCfg


@runtime_checkable
class Objective(Protocol):
    """What the loop needs from a method."""

    name: str
    term_names: tuple[str, ...]  # the named values ``loss`` logs, CE first

    def loss(self, model: nn.Module, x: Tensor, target: Tensor
             ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(total loss, named detached terms, student logits) of one batch."""

    def trainable(self) -> dict[str, nn.Module]:
        """Partners stepped with the student's optimizer and schedule."""

    def partners(self) -> dict[str, nn.Module]:
        """Every module a checkpoint keeps besides the student."""

    def evaluated(self) -> dict[str, nn.Module]:
        """Partners whose test top-1 is logged at each evaluation."""

    @property
    def side_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer of partners with their own (checkpointed); None if there are none."""

    def side_step(self, autocast: Callable[[], Any],
                  average_grads: Callable[[list[Any]], None] | None) -> Tensor | None:
        """Update partners with their own optimizer after the student's step; their loss."""

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based)."""


def _merged(parts: list[dict[str, nn.Module]]) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    for part in parts:
        out.update(part)
    return out


class TermObjective:
    """CE on the student plus the method's terms (and their partners), one class for every
    method name other than ``supervised``."""

    def __init__(self, cfg: MethodCfg, student: nn.Module, teacher: nn.Module | None,
                 label_smoothing: float = 0.0, input_shape: tuple[int, int] = (3, 32),
                 student_name: str = "student",
                 build_partner: Callable[[str], nn.Module] | None = None) -> None:
        if cfg.needs_teacher and teacher is None:
            raise UserError(f"method {cfg.name} learns from a teacher: give --teacher RUN_DIR "
                            "(or method.teacher.run / method.teacher.weights)")
        self.cfg, self.name, self.teacher = cfg, cfg.name, teacher
        self.label_smoothing = label_smoothing
        self.epoch = 0
        self.cache: dict[bytes, Tensor] | None = {} if cfg.teacher.cache else None
        self.teacher_images = 0  # images the teacher has run on (the cache's saving shows here)
        ctx = TermContext(student, teacher, label_smoothing, input_shape, student_name,
                          build_partner)
        # Built and summed in table order (partners' initial weights draw from the RNG here).
        self.terms: list[Term] = [cls(cfg, ctx) for name, cls in TERMS.items()
                                  if name in cfg.terms]
        weights = [w for w in (t.ce_weight() for t in self.terms) if w is not None]
        full = any(t.keeps_full_ce for t in self.terms)
        self.ce_weight = weights[0] if weights and not full else None
        self.term_names = ("ce", *(log for t in self.terms for log in t.logs))
        self._side = [t for t in self.terms if t.side_optimizer is not None]

    def term(self, name: str) -> Term:
        """The built term of this name (to inspect its partners, pairs or taps)."""
        return next(t for t in self.terms if t.name == name)

    def trainable(self) -> dict[str, nn.Module]:
        return _merged([t.trainable() for t in self.terms])

    def partners(self) -> dict[str, nn.Module]:
        return _merged([t.checkpointed() for t in self.terms])

    def evaluated(self) -> dict[str, nn.Module]:
        return _merged([t.evaluated() for t in self.terms])

    @property
    def side_optimizer(self) -> torch.optim.Optimizer | None:
        return self._side[0].side_optimizer if self._side else None

    def side_step(self, autocast: Callable[[], Any],
                  average_grads: Callable[[list[Any]], None] | None) -> Tensor | None:
        losses = [t.side_step(autocast, average_grads) for t in self._side]
        return losses[0] if len(losses) == 1 else (sum(losses) if losses else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _forward_teacher(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            out = self.teacher(x)
        self.teacher_images += x.shape[0]
        # inference-mode tensors cannot join autograd; clone into ordinary (constant) tensors.
        return out.float().clone()

    def _teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits of this batch; with ``teacher.cache``, looked up by the exact
        bytes of each image and computed only for images not seen before."""
        if self.cache is None:
            return self._forward_teacher(x)
        rows = x.detach().cpu().numpy()
        keys = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            fresh = self._forward_teacher(x if len(missing) == len(keys) else x[missing])
            for j, i in enumerate(missing):
                self.cache[keys[i]] = fresh[j]
        return torch.stack([self.cache[k] for k in keys])

    def loss(self, model: nn.Module, x: Tensor, target: Tensor
             ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        t_logits = self._teacher_logits(x) if self.teacher is not None else None
        s_logits = model(x)
        ce = smoothed_ce(s_logits, target, self.label_smoothing)
        total = self.ce_weight * ce if self.ce_weight is not None else ce
        logged: dict[str, Tensor] = {"ce": ce.detach()}
        batch = TermBatch(x, target, target if target.ndim == 1 else target.argmax(1), s_logits,
                          t_logits, self.epoch)
        for term in self.terms:
            addends, values = term(batch)
            for addend in addends:
                total = total + addend
            logged.update(values)
        return total, logged, s_logits
