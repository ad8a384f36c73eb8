"""Builders: recipe → model, augmentation, objective (with its teacher and partners).

The training loop, the probes and the benchmarks build their pieces here, so a recipe means the
same thing everywhere. Data comes from :func:`lightship.data.load_data` (the recipe's ``data``
section).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from lightship.data import Augment, DatasetInfo
from lightship.errors import UserError
from lightship.evaluate import evaluate
from lightship.methods.objective import Objective, TermObjective
from lightship.methods.supervised import Supervised
from lightship.methods.terms import TERMS
from lightship.models import create_model
from lightship.recipe import Recipe

if TYPE_CHECKING:
    from lightship.train.precision import Precision


def build_augment(recipe: Recipe, info: DatasetInfo) -> Augment:
    """The batched augmentation of a recipe on this data (``auto`` values resolved)."""
    cfg = recipe.augment
    pad = max(1, info.input_size // 8) if cfg.crop_padding == "auto" else int(cfg.crop_padding)
    hflip = info.hflip_ok if cfg.hflip == "auto" else bool(cfg.hflip)
    return Augment(crop_padding=pad, hflip=hflip, cutout=cfg.cutout, rotate=cfg.rotate)


def build_model(recipe: Recipe, num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    """The recipe's student (its ``model`` section) for data of this shape."""
    m = recipe.model
    return create_model(m.name, num_classes, in_chans, input_size, norm=m.norm,
                        gn_groups=m.gn_groups, zero_gamma=m.zero_gamma, shortcut=m.shortcut,
                        variant=m.variant, plain=m.plain, width=m.width, dropout=m.dropout)


def partner_builder(recipe: Recipe, info: Any, prec: Precision) -> Callable[[str], nn.Module]:
    """Builds a registry net by name with the student's model options for data of ``info``'s
    shape, on the precision's device and memory format, in train mode (rocket's booster, dml's
    peers)."""

    def partner(name: str) -> nn.Module:
        cfg = recipe.model.model_copy(update={"name": name})
        net = build_model(recipe.model_copy(update={"model": cfg}), info.num_classes,
                          info.in_chans, info.input_size)
        return net.to(prec.device, memory_format=prec.memory_format).train()

    return partner


def build_objective(recipe: Recipe, model: nn.Module, data: Any, prec: Precision,
                    augment: Augment, quiet: bool = False) -> tuple[Objective, dict[str, float]]:
    """The method's objective for this recipe, and the teacher's measured test numbers (if any).

    Loads and checks the teacher, refuses a teacher cache that would be wrong, and builds the
    partners a term asks for with the student's model options, device and memory format.
    """
    method, info = recipe.method, data.info
    teacher = None
    if method.needs_teacher:
        from lightship.methods.teacher import load_teacher

        teacher = load_teacher(method, info.num_classes, info.in_chans, info.input_size)
    elif method.teacher.run or method.teacher.weights:
        raise UserError(f"method {method.name} uses no teacher; drop --teacher, or add a teacher "
                        f"term (e.g. {method.name}+kd)")
    if method.teacher.cache:
        check_teacher_cache(recipe, augment, quiet)
    if method.name == "supervised":
        return Supervised(label_smoothing=recipe.train.label_smoothing), {}

    partner = partner_builder(recipe, info, prec)
    measured: dict[str, float] = {}
    if teacher is not None:
        teacher = teacher.to(prec.device, memory_format=prec.memory_format)
        measured = evaluate(teacher, data, prec)
        teacher.train(method.teacher.train_bn)
    objective = TermObjective(method, model, teacher, recipe.train.label_smoothing,
                              (info.in_chans, info.input_size), recipe.model.name, partner)
    return objective, {f"teacher_{k}": v for k, v in measured.items()}


def check_teacher_cache(recipe: Recipe, augment: Augment, quiet: bool) -> None:
    """Cached teacher logits are right only when every epoch shows the same images."""
    a, method = recipe.augment, recipe.method
    on = [name for name, value in [("crop", augment.crop_padding), ("hflip", augment.hflip),
                                   ("cutout", augment.cutout), ("rotate", augment.rotate),
                                   ("mixup", a.mixup_alpha), ("cutmix", a.cutmix_alpha)] if value]
    if on:
        raise UserError(f"method.teacher.cache needs augmentation off, but {', '.join(on)} is on: "
                        "each augmented view needs its own teacher output; set "
                        "augment.crop_padding=0, augment.hflip=false, augment.cutout=0, "
                        "augment.rotate=0, no mixup/cutmix, or drop the cache")
    other = [term for term in method.terms if TERMS[term].needs_teacher_features]
    if other or method.teacher.train_bn:
        why = f"{'/'.join(other)} needs teacher features" if other else "train-mode BatchNorm " \
            "makes the teacher's output depend on the batch"
        raise UserError(f"method.teacher.cache holds logits only and {why}; drop the cache")
    if not quiet:
        print("note: teacher logits are cached and augmentation is off; students usually learn "
              "more from a teacher that sees every augmented view (Beyer et al. 2022)",
              file=sys.stderr)
