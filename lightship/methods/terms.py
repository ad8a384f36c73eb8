"""The table of loss terms a method is made of: one small class per term, one signature.

A method name is ``supervised`` or terms joined by '+' (``kd+at``, ``rocket+kd``). Every term is a
:class:`Term` subclass registered with :func:`register`; the registry :data:`TERMS` is the one
table from which the recipe's allowed method names, which terms need a teacher, the report's
term order and ``lightship distill --method`` help are derived. Adding a term is one class (and
its test); the loop and the objective never name a term.

The signature every term shares::

    term(batch: TermBatch) -> (addends, logged)

``addends`` are the weighted tensors the term adds to the student's loss (in order; a term whose
partners train by the same backward pass adds their losses too), ``logged`` the named, detached
values that go to metrics.jsonl. Terms that own trainable partners (a booster, peers, adapters)
return them from :meth:`Term.trainable`; a term with its own optimizer (discriminators) steps it
in :meth:`Term.side_step`.

This module imports no torch at import time, so the CLI can print the table quickly; a term
loads what it computes with when it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import Tensor, nn

MethodSection = Any
"""The recipe's `method` section (``lightship.recipe.MethodCfg``). The recipe checks method
names against this table, so the table names no recipe class: one direction only."""

TERMS: dict[str, type[Term]] = {}
"""name → term class, in the order the objective sums them (and the report lists them)."""


def register(cls: type[Term]) -> type[Term]:
    """Class decorator: add a term to :data:`TERMS` under ``cls.name``."""
    if not cls.name or cls.name in TERMS or cls.name == "supervised" or "+" in cls.name:
        raise ValueError(f"term name {cls.name!r} is empty, taken or not a plain word")
    TERMS[cls.name] = cls
    return cls


@dataclass
class TermBatch:
    """What every term sees at a step."""

    x: Tensor                       # the (augmented, mixed) input batch
    target: Tensor                  # class indices, or probability vectors after mixup/cutmix
    hard: Tensor                    # class indices (argmax of a mixed target)
    student_logits: Tensor
    teacher_logits: Tensor | None   # None when no term needs a teacher
    epoch: int                      # 0-based epoch of this step


@dataclass
class TermContext:
    """What a term may use when it is built."""

    student: nn.Module
    teacher: nn.Module | None
    label_smoothing: float = 0.0
    input_shape: tuple[int, int] = (3, 32)          # (channels, size) of the data
    student_name: str = "student"
    build_partner: Callable[[str], nn.Module] | None = None
    """Builds a registry model by name with the student's options, on its device and format."""

    def partner(self, name: str) -> nn.Module:
        if self.build_partner is None:
            raise ValueError("this objective was built without a partner builder")
        return self.build_partner(name)


class Term:
    """One loss term. Subclasses set the class attributes and implement ``__call__``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""           # one line for `--method` help
    needs_teacher: ClassVar[bool] = False
    needs_teacher_features: ClassVar[bool] = False  # reads teacher features (no logit cache)
    logs: ClassVar[tuple[str, ...]] = ()  # names of the logged values, in order
    keeps_full_ce: ClassVar[bool] = False  # with this term on, no term reweights the CE

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        self.cfg = cfg

    @classmethod
    def check(cls, cfg: MethodSection) -> str | None:
        """A recipe problem with this term on (the message), or None."""
        return None

    def ce_weight(self) -> float | None:
        """The weight this term puts on the student's CE (None: leaves it alone)."""
        return None

    def __call__(self, batch: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        raise NotImplementedError

    def trainable(self) -> dict[str, nn.Module]:
        """Partners stepped by the student's optimizer."""
        return {}

    def checkpointed(self) -> dict[str, nn.Module]:
        """Every module a checkpoint keeps for this term."""
        return self.trainable()

    def evaluated(self) -> dict[str, nn.Module]:
        """Partners whose test top-1 is logged at each evaluation."""
        return {}

    @property
    def side_optimizer(self) -> Any:
        """The optimizer of partners with their own (None: no side step)."""
        return None

    def side_step(self, autocast: Callable[[], Any],
                  average_grads: Callable[[list[Any]], None] | None) -> Tensor | None:
        """Step partners with their own optimizer after the student's step; their loss."""
        return None


def parse_method(name: str) -> list[str]:
    """The term names of a method name; a ValueError names an unknown term and the choices."""
    from lightship.errors import closest

    if name == "supervised":
        return []
    terms = name.split("+")
    for term in terms:
        if term not in TERMS:
            raise ValueError(f"method '{term}' is unknown{closest(term, list(TERMS))}; "
                             f"use supervised or a '+'-joined set of {', '.join(TERMS)}")
    return terms


def teacher_terms() -> list[str]:
    return [name for name, cls in TERMS.items() if cls.needs_teacher]


def report_order() -> list[str]:
    """Logged names in the order reports show them: CE, then each term's, then the side loss."""
    return ["ce", *(log for cls in TERMS.values() for log in cls.logs), "side"]


def method_help() -> str:
    """`--method` help, from the table."""
    parts = [f"{name} ({cls.summary})" for name, cls in TERMS.items()]
    return ("terms joined by '+', e.g. rocket+kd (default kd): " + "; ".join(parts))


# ----------------------------------------------------------------- the built-in terms


@register
class KD(Term):
    """Hinton KD: loss = (1 − α)·CE + α·KD(s, t) at temperature T (CE at weight 1 with
    `rocket`, whose authors add α·KD to the light net's full CE; see ``method.alpha``). With
    ``method.kd_scale: rocket`` the KD weight is ``rocket_kd_weight(α, classes)`` = 2·α/K, the
    Rocket authors' scale; CE keeps 1 − α (their ``distillation``)."""

    name, summary, needs_teacher, logs = "kd", "Hinton KD, teacher", True, ("kd",)

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        from lightship.methods.kd import kd_loss, rocket_kd_weight

        super().__init__(cfg, ctx)
        self.fn, self.weight = kd_loss, rocket_kd_weight

    def ce_weight(self) -> float:
        return 1 - self.cfg.alpha

    def __call__(self, b: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        kd = self.fn(b.student_logits, b.teacher_logits, self.cfg.T)
        alpha = self.cfg.alpha
        if self.cfg.kd_scale == "rocket":
            alpha = self.weight(alpha, b.student_logits.shape[1])
        return [alpha * kd], {"kd": kd.detach()}


@register
class Hint(Term):
    """Logit MSE to the teacher (hint_weight·‖s − t‖²)."""

    name, summary, needs_teacher, logs = "hint", "logit MSE, teacher", True, ("hint",)

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        from lightship.methods.kd import hint_loss

        super().__init__(cfg, ctx)
        self.fn = hint_loss

    def __call__(self, b: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        hint = self.fn(b.student_logits, b.teacher_logits, self.cfg.hint_reduction)
        return [self.cfg.hint_weight * hint], {"hint": hint.detach()}


@register
class AT(Term):
    """Attention transfer on (student, teacher) feature pairs, weight at_beta."""

    name, summary, logs = "at", "attention transfer, teacher", ("at",)
    needs_teacher = needs_teacher_features = True

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        from lightship.methods.attention import at_loss
        from lightship.models.taps import Taps, default_pairs

        super().__init__(cfg, ctx)
        self.fn = at_loss
        self.pairs = cfg.at_pairs or default_pairs(ctx.student, ctx.teacher)
        self.student_taps = Taps(ctx.student, [s for s, _ in self.pairs])
        self.teacher_taps = Taps(ctx.teacher, [t for _, t in self.pairs])

    def __call__(self, b: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        s_feats = [self.student_taps.features[s] for s, _ in self.pairs]
        t_feats = [self.teacher_taps.features[t].float().clone() for _, t in self.pairs]
        at = self.fn(s_feats, t_feats)
        return [self.cfg.at_beta * at], {"at": at.detach()}


@register
class DKD(Term):
    """Decoupled KD, its weight ramped up over dkd_warmup epochs."""

    name, summary, needs_teacher, logs = "dkd", "decoupled KD, teacher", True, ("dkd",)

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        from lightship.methods.kd import dkd_loss, dkd_warmup

        super().__init__(cfg, ctx)
        self.fn, self.warmup = dkd_loss, dkd_warmup

    def __call__(self, b: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        cfg = self.cfg
        dkd, _ = self.fn(b.student_logits, b.teacher_logits, b.hard, cfg.dkd_alpha, cfg.dkd_beta,
                         cfg.T)
        ramp = self.warmup(b.epoch + 1, cfg.dkd_warmup) if cfg.dkd_warmup else 1.0
        return [ramp * dkd], {"dkd": dkd.detach()}


@register
class RocketTerm(Term):
    """Rocket Launching: a booster sharing layers with the student (lightship.methods.rocket)."""

    name, summary, logs = "rocket", "booster with shared layers", ("booster_ce", "rocket")
    keeps_full_ce = True  # the authors' Rocket+KD adds KD to the light net's full CE

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        from lightship.methods.rocket import Rocket

        super().__init__(cfg, ctx)
        self.rocket = Rocket(ctx.student, ctx.partner(cfg.booster), cfg.share, cfg.share_bn,
                             cfg.rocket_lambda, cfg.gradient_block, ctx.label_smoothing,
                             ctx.student_name, cfg.booster)

    @classmethod
    def check(cls, cfg: MethodSection) -> str | None:
        if not cfg.booster:
            return ("method rocket needs a booster net of the student's family: set "
                    "method.booster (e.g. resnet56 for a resnet20 student)")
        return None

    def __call__(self, b: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        extra, logged = self.rocket.terms(b.student_logits, b.x, b.target)
        return [extra], logged

    def trainable(self) -> dict[str, nn.Module]:
        return {"booster": self.rocket.booster}

    def evaluated(self) -> dict[str, nn.Module]:
        return {"booster": self.rocket.booster}


@register
class MutualTerm(Term):
    """Deep mutual learning with trainable peers (lightship.methods.mutual)."""

    name, summary, logs = "dml", "mutual learning peers", ("dml", "peer_ce")

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        from lightship.methods.mutual import Mutual

        super().__init__(cfg, ctx)
        peers = [ctx.partner(cfg.peer_model or ctx.student_name) for _ in range(cfg.peers)]
        self.mutual = Mutual(peers, cfg.dml_T, ctx.label_smoothing)

    def __call__(self, b: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        kl, peers_total, logged = self.mutual.terms(b.student_logits, b.x, b.target)
        return [kl, peers_total], logged

    def trainable(self) -> dict[str, nn.Module]:
        return {"peers": self.mutual.peers}

    def evaluated(self) -> dict[str, nn.Module]:
        return {"peer": self.mutual.peers[0]}


@register
class AdversarialTerm(Term):
    """Adversarial feature distillation with discriminators (lightship.methods.adversarial): one
    critic per stage the two nets name alike unless ``method.adv_pairs``."""

    name, summary, logs = "adversarial", "feature discriminators, teacher", ("adversarial", "cos")
    needs_teacher = needs_teacher_features = True

    def __init__(self, cfg: MethodSection, ctx: TermContext) -> None:
        from lightship.methods.adversarial import Adversarial
        from lightship.models.taps import Taps, default_pairs, feature_channels

        super().__init__(cfg, ctx)
        self.pairs = cfg.adv_pairs or default_pairs(ctx.student, ctx.teacher, self.name)
        self.student_taps = Taps(ctx.student, [s for s, _ in self.pairs])
        self.teacher_taps = Taps(ctx.teacher, [t for _, t in self.pairs])
        device = next(ctx.student.parameters()).device
        cs = feature_channels(ctx.student, [s for s, _ in self.pairs], *ctx.input_shape, device)
        ct = feature_channels(ctx.teacher, [t for _, t in self.pairs], *ctx.input_shape, device)
        self.adversarial = Adversarial(cs, ct, cfg.adv_loss, cfg.adv_lr, cfg.adv_clip)
        self.adversarial.adapters.to(device)
        self.adversarial.critics.to(device)

    def __call__(self, b: TermBatch) -> tuple[list[Tensor], dict[str, Tensor]]:
        s_feats = [self.student_taps.features[s] for s, _ in self.pairs]
        t_feats = [self.teacher_taps.features[t].float().clone() for _, t in self.pairs]
        adv, cos = self.adversarial.terms(s_feats, t_feats)
        addends, logged = [self.cfg.adv_weight * adv], {"adversarial": adv.detach()}
        if self.cfg.adv_cos:
            addends.append(self.cfg.adv_cos * cos)
            logged["cos"] = cos.detach()
        return addends, logged

    def trainable(self) -> dict[str, nn.Module]:
        return {"adapters": self.adversarial.adapters}

    def checkpointed(self) -> dict[str, nn.Module]:
        return {"adapters": self.adversarial.adapters, "critics": self.adversarial.critics}

    @property
    def side_optimizer(self) -> Any:
        return self.adversarial.optimizer

    def side_step(self, autocast: Callable[[], Any],
                  average_grads: Callable[[list[Any]], None] | None) -> Tensor:
        return self.adversarial.side_step(autocast, average_grads)
