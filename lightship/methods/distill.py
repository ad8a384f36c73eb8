"""Knowledge transfer from a frozen teacher: the `kd`, `hint`, `at`, `dkd` terms, combinable.

The teacher sees the *same augmented batch* as the student (consistent views; Beyer et al. 2022,
"Knowledge distillation: a good teacher is patient and consistent"), runs in inference mode with
eval-mode BatchNorm (option ``train_bn``), and never receives gradients. Intermediate features come
from forward hooks (:class:`lightship.models.Taps`), so any registry, timm or torchvision model can
teach without being edited.

Trainable partners come from their own files: :mod:`lightship.methods.rocket` (booster),
:mod:`lightship.methods.mutual` (peers), :mod:`lightship.methods.adversarial` (discriminators).

Objective (terms joined by '+' in ``method.name``)::

    loss = w_ce·CE(s, y) + α·KD(s, t) [kd] + hint_weight·HINT(s, t) [hint]
           + at_beta·AT(feats_s, feats_t) [at] + warmup(epoch)·DKD(s, t, y) [dkd]
           + CE(booster) + λ·‖s − sg(booster)‖² [rocket] + Σ peers' and student's mutual KL [dml]
           + adv_weight·ADV(D(adapter(feats_s))) + adv_cos·(1 − cos) [adversarial]

with ``w_ce = 1 − α`` when `kd` is on without `rocket` (Hinton's α on KD), else 1: the authors'
Rocket+KD adds the KD term to the light net's full CE (their α 0.9 on a KL averaged over
batch × classes and doubled is α = 2·0.9/C on this batch-mean KD; see ``method.alpha``).
Adversarial: one critic per stage the two nets name alike unless ``method.adv_pairs``. Formulas
and defaults of each term are in :mod:`lightship.methods.kd` and
:mod:`lightship.methods.attention`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightship.errors import UserError
from lightship.methods.attention import at_loss
from lightship.methods.kd import dkd_loss, dkd_warmup, hint_loss, kd_loss
from lightship.models import Taps
from lightship.recipe import MethodCfg


def load_teacher(cfg: MethodCfg, num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    """Build the frozen teacher from a run folder or a lightship weights file; check it fits."""
    t = cfg.teacher
    if (t.run is None) == (t.weights is None):
        raise UserError(f"method {cfg.name} needs exactly one teacher: give --teacher RUN_DIR "
                        "(or set method.teacher.run=RUN_DIR or "
                        "method.teacher.weights=FILE.safetensors)")
    from lightship.evaluate import ModelSource, resolve_source

    if t.model is not None:  # a plain state_dict: the architecture comes from the recipe
        if t.weights is None:
            raise UserError("method.teacher.model names the architecture of a plain weights file; "
                            "use it with --teacher FILE.safetensors (a run folder knows its own)")
        src = ModelSource({"name": t.model}, Path(t.weights), {}, None)
    else:
        src = resolve_source(Path(t.run if t.run is not None else t.weights), role="teacher")
    meta = src.meta
    if meta.get("num_classes") not in (None, num_classes):
        raise UserError(f"teacher predicts {meta['num_classes']} classes but the data has "
                        f"{num_classes}; use a teacher trained on this dataset")
    if meta.get("in_chans") not in (None, in_chans) or meta.get("input_size") not in (
            None, input_size):
        raise UserError(f"teacher expects {meta.get('in_chans')}×{meta.get('input_size')}² inputs "
                        f"but the data gives {in_chans}×{input_size}²; use a teacher trained at "
                        "this input shape")
    teacher = src.build(num_classes, in_chans, input_size)
    teacher.requires_grad_(False)
    teacher.train(t.train_bn)
    return teacher


def _default_pairs(student: nn.Module, teacher: nn.Module, term: str = "at"
                   ) -> list[tuple[str, str]]:
    names = [n for n in getattr(student, "stage_names", []) if n.startswith("layer")]
    shared = [n for n in names if n in getattr(teacher, "stage_names", [])]
    if not shared:
        option = "adv_pairs" if term == "adversarial" else "at_pairs"
        raise UserError(f"method `{term}` found no stages named alike in student and teacher; set "
                        f"method.{option}=[[student_module, teacher_module], ...]")
    return [(n, n) for n in shared]


def _feature_channels(net: nn.Module, names: list[str], in_chans: int, size: int,
                      device: torch.device) -> list[int]:
    """Channel counts of the named modules' outputs, from one dry forward of a blank batch."""
    was_training = net.training
    net.eval()
    with Taps(net, names) as taps, torch.no_grad():
        net(torch.zeros(2, in_chans, size, size, device=device))
        channels = [taps.features[n].shape[1] for n in names]
    net.train(was_training)
    return channels


class Distill:
    """The knowledge-transfer objective plug-in (same call as :class:`Supervised`).

    Composes the frozen-teacher terms with the trainable partners: a booster (`rocket`), peers
    (`dml`) and discriminators (`adversarial`). The loop steps ``trainable()`` with the student's
    optimizer and ``side_optimizer`` (the discriminators') right after it.
    """

    def __init__(self, cfg: MethodCfg, student: nn.Module, teacher: nn.Module | None,
                 label_smoothing: float = 0.0, booster: nn.Module | None = None,
                 peers: list[nn.Module] | None = None, input_shape: tuple[int, int] = (3, 32),
                 student_name: str = "student") -> None:
        self.cfg, self.teacher = cfg, teacher
        self.terms = cfg.terms
        self.name = cfg.name
        self.label_smoothing = label_smoothing
        self.epoch = 0
        self.student_taps = self.teacher_taps = None
        self.rocket = self.mutual = self.adversarial = None
        self.side_optimizer = None
        self.cache: dict[bytes, Tensor] | None = {} if cfg.teacher.cache else None
        self.teacher_images = 0  # images the teacher has run on (the cache's saving shows here)
        if cfg.needs_teacher and teacher is None:
            raise UserError(f"method {cfg.name} learns from a teacher: give --teacher RUN_DIR "
                            "(or method.teacher.run / method.teacher.weights)")
        if "at" in self.terms:
            pairs = cfg.at_pairs or _default_pairs(student, teacher)
            self.student_taps = Taps(student, [s for s, _ in pairs])
            self.teacher_taps = Taps(teacher, [t for _, t in pairs])
            self.pairs = pairs
        if "rocket" in self.terms:
            from lightship.methods.rocket import Rocket

            self.rocket = Rocket(student, booster, cfg.share, cfg.share_bn, cfg.rocket_lambda,
                                 cfg.gradient_block, label_smoothing, student_name, cfg.booster)
        if "dml" in self.terms:
            from lightship.methods.mutual import Mutual

            self.mutual = Mutual(peers or [], cfg.dml_T, label_smoothing)
        if "adversarial" in self.terms:
            from lightship.methods.adversarial import Adversarial

            pairs = cfg.adv_pairs or _default_pairs(student, teacher, "adversarial")
            self.adv_pairs = pairs
            self.adv_student_taps = Taps(student, [s for s, _ in pairs])
            self.adv_teacher_taps = Taps(teacher, [t for _, t in pairs])
            device = next(student.parameters()).device
            cs = _feature_channels(student, [s for s, _ in pairs], *input_shape, device)
            ct = _feature_channels(teacher, [t for _, t in pairs], *input_shape, device)
            self.adversarial = Adversarial(cs, ct, cfg.adv_loss, cfg.adv_lr, cfg.adv_clip)
            self.adversarial.adapters.to(device)
            self.adversarial.critics.to(device)
            self.side_optimizer = self.adversarial.optimizer

    def trainable(self) -> dict[str, nn.Module]:
        """Partners stepped by the student's optimizer (booster, peers, feature adapters)."""
        out: dict[str, nn.Module] = {}
        if self.rocket is not None:
            out["booster"] = self.rocket.booster
        if self.mutual is not None:
            out["peers"] = self.mutual.peers
        if self.adversarial is not None:
            out["adapters"] = self.adversarial.adapters
        return out

    def partners(self) -> dict[str, nn.Module]:
        """Every module whose weights a checkpoint must keep besides the student."""
        out = self.trainable()
        if self.adversarial is not None:
            out["critics"] = self.adversarial.critics
        return out

    def evaluated(self) -> dict[str, nn.Module]:
        """Partners whose test accuracy is logged at every evaluation."""
        out = {}
        if self.rocket is not None:
            out["booster"] = self.rocket.booster
        if self.mutual is not None:
            out["peer"] = self.mutual.peers[0]
        return out

    def side_loss(self) -> Tensor:
        return self.adversarial.side_loss()

    def after_side_step(self) -> None:
        self.adversarial.after_side_step()

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
        cfg = self.cfg
        t_logits = None
        if self.teacher is not None:
            t_logits = self._teacher_logits(x)
        s_logits = model(x)
        hard = target if target.ndim == 1 else target.argmax(1)
        ce = F.cross_entropy(s_logits.float(), target, label_smoothing=self.label_smoothing)
        terms: dict[str, Tensor] = {}
        total = (1 - cfg.alpha) * ce if "kd" in self.terms and self.rocket is None else ce
        terms["ce"] = ce.detach()
        if "kd" in self.terms:
            kd = kd_loss(s_logits, t_logits, cfg.T)
            total = total + cfg.alpha * kd
            terms["kd"] = kd.detach()
        if "hint" in self.terms:
            hint = hint_loss(s_logits, t_logits, cfg.hint_reduction)
            total = total + cfg.hint_weight * hint
            terms["hint"] = hint.detach()
        if "at" in self.terms:
            s_feats = [self.student_taps.features[s] for s, _ in self.pairs]
            t_feats = [self.teacher_taps.features[t].float().clone() for _, t in self.pairs]
            at = at_loss(s_feats, t_feats)
            total = total + cfg.at_beta * at
            terms["at"] = at.detach()
        if "dkd" in self.terms:
            dkd, _ = dkd_loss(s_logits, t_logits, hard, cfg.dkd_alpha, cfg.dkd_beta, cfg.T)
            ramp = dkd_warmup(self.epoch + 1, cfg.dkd_warmup) if cfg.dkd_warmup else 1.0
            total = total + ramp * dkd
            terms["dkd"] = dkd.detach()
        if self.rocket is not None:
            extra, logged = self.rocket.terms(s_logits, x, target)
            total = total + extra
            terms.update(logged)
        if self.mutual is not None:
            kl, peers_total, logged = self.mutual.terms(s_logits, x, target)
            total = total + kl + peers_total
            terms.update(logged)
        if self.adversarial is not None:
            s_feats = [self.adv_student_taps.features[s] for s, _ in self.adv_pairs]
            t_feats = [self.adv_teacher_taps.features[t].float().clone()
                       for _, t in self.adv_pairs]
            adv, cos = self.adversarial.terms(s_feats, t_feats)
            total = total + cfg.adv_weight * adv
            terms["adversarial"] = adv.detach()
            if cfg.adv_cos:
                total = total + cfg.adv_cos * cos
                terms["cos"] = cos.detach()
        return total, terms, s_logits
