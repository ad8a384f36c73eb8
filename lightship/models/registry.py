"""Model names → constructors, plus parameter and MAC counts for ``lightship models``.

Name grammar (built-in names are case-insensitive):

- ``resnet{D}`` / ``resnet{D}x{K}``: D = 6n+2 is a CIFAR ResNet (``x{K}`` multiplies channels,
  ``resnet32x4`` = 64/128/256); D in 10/18/34/50/101/152 is ImageNet-style (no ``x`` suffix).
- ``plain{D}`` / ``plain{D}x{K}``: the same net without shortcuts (same as ``plain=True``).
- ``wrn-{D}-{K}``: Wide ResNet, D = 6n+4, K = widening factor; ``wrn-{D}-{K}-s{S}`` keeps only
  its first S stages (``wrn-40-1-s2``: the light net of Rocket Launching's ``bottom`` layout).
- ``mobilenet_v1`` / ``mobilenet_v2``, optionally ``_x{width}`` (``mobilenet_v2_x0.5``).
- ``cnn`` / ``cnn{W}``: the small CNN with first-conv width W (``cnn`` = 16).
- ``fastcnn`` / ``fastcnn{W}`` / ``fastcnn{W}-{N}``: the pool-then-normalise CNN built for time
  to accuracy, first-conv width W (default 16) and N convolutions (default 3).
- ``timm:NAME`` / ``torchvision:NAME``: randomly initialised external models.

Options a family cannot honour raise UserError when set away from their default, except
``zero_gamma`` (a no-op without residual blocks that end in a norm, so one recipe can turn
it on for any model) and ``gn_groups`` (read only with ``norm='gn'``). ``width`` multiplies
whatever width the name sets.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightship.errors import UserError, closest
from lightship.models.external import create_timm, create_torchvision
from lightship.models.fast import FastCNN
from lightship.models.mobilenet import MobileNetV1, MobileNetV2
from lightship.models.norm import check_norm
from lightship.models.resnet import (
    IMAGENET_DEPTHS,
    SHORTCUTS,
    VARIANTS,
    CifarResNet,
    ResNet,
    check_choice,
)
from lightship.models.small import SmallCNN
from lightship.models.wrn import WideResNet

SMALL_INPUT_MAX = 64  # at or below this size, ImageNet-style nets drop their early downsampling

_MODELS = [
    *(f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)), "resnet8x4", "resnet32x4",
    *(f"plain{d}" for d in (20, 32, 44, 56, 110)),
    *(f"resnet{d}" for d in (10, 18, 34, 50, 101)), "plain18", "plain34",
    "wrn-16-1", "wrn-16-2", "wrn-16-4", "wrn-28-10", "wrn-40-1", "wrn-40-2",
    "wrn-40-1-s2",
    "mobilenet_v1", "mobilenet_v1_x0.5", "mobilenet_v2", "mobilenet_v2_x0.5",
    "cnn", "cnn4", "cnn8", "cnn32", "fastcnn", "fastcnn16-4", "fastcnn24-4",
]


@dataclass
class _Spec:
    """A parsed name: which family, its constructor and the arguments the name fixes."""

    family: str
    build: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    width: float = 1.0


def list_models() -> list[str]:
    """Registry names, as ``lightship models`` shows them (the grammar accepts more)."""
    return list(_MODELS)


def _parse(name: str) -> _Spec | None:
    if m := re.fullmatch(r"(resnet|plain)(\d+)(?:x(\d+))?", name):
        depth, plain, k = int(m[2]), m[1] == "plain", int(m[3] or 1)
        if depth in IMAGENET_DEPTHS and m[3] is None:
            return _Spec("resnet", ResNet, {"depth": depth, "plain": plain})
        if depth >= 8 and (depth - 2) % 6 == 0 and depth not in IMAGENET_DEPTHS and k >= 1:
            return _Spec("cifar_resnet", CifarResNet, {"depth": depth, "plain": plain}, k)
        return None
    if m := re.fullmatch(r"wrn-(\d+)-(\d+)(?:-s([123]))?", name):
        depth, widen = int(m[1]), int(m[2])
        if depth >= 10 and (depth - 4) % 6 == 0 and widen >= 1:
            return _Spec("wrn", WideResNet, {"depth": depth, "widen": widen,
                                             "stages": int(m[3] or 3)})
        return None
    if m := re.fullmatch(r"mobilenet_v([12])(?:_x(\d+(?:\.\d+)?))?", name):
        width = float(m[2] or 1.0)
        if width <= 0:
            return None
        return _Spec(f"mobilenet_v{m[1]}", MobileNetV1 if m[1] == "1" else MobileNetV2, {}, width)
    if m := re.fullmatch(r"cnn(\d+)?", name):
        base = int(m[1] or 16)
        return _Spec("cnn", SmallCNN, {"base_width": base}) if base >= 1 else None
    if m := re.fullmatch(r"fastcnn(\d+)?(?:-(\d+))?", name):
        base, convs = int(m[1] or 16), int(m[2] or 3)
        return _Spec("fastcnn", FastCNN, {"base_width": base, "convs": convs}) if (
            base >= 1 and convs >= 3) else None
    return None


def _check_int(option: str, value: Any, minimum: int) -> int:
    """``value`` as a plain int (NumPy integers welcome), or a UserError."""
    if not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum:
        return int(value)
    raise UserError(f"{option} must be an integer >= {minimum} (got {value!r})")


def _reject(option: str, value: Any, name: str, why: str) -> None:
    raise UserError(f"{option}={value!r} does not apply to model '{name}' ({why}); "
                    f"leave {option} at its default")


def create_model(name: str, num_classes: int, in_chans: int = 3, input_size: int = 32, *,
                 norm: str = "bn", gn_groups: int = 8, zero_gamma: bool = False,
                 shortcut: str = "A", variant: str = "v1", plain: bool = False,
                 width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """Build a randomly initialised classifier by name (see the module docstring's grammar).

    Args:
        name: registry name, ``timm:NAME`` or ``torchvision:NAME``.
        num_classes, in_chans, input_size: the data; input_size <= 64 switches ImageNet-style
            ResNets and MobileNets to their small-input stem.
        norm: 'bn', 'gn' (with ``gn_groups``), 'syncbn' (CUDA + torchrun only) or 'none'.
        zero_gamma: γ=0 on the last norm of each residual block.
        shortcut: CIFAR ResNets: 'A' (zero padding), 'B' (1×1 projection on shape change) or 'C'
            (a projection on every shortcut).
        variant: ImageNet ResNets: 'v1', 'B', 'C' or 'D' (Bag of Tricks).
        plain: ResNets without shortcuts.
        width: channel multiplier on top of the name's width.
        dropout: before the classifier (Wide ResNet: inside blocks, as in the paper).

    Raises:
        UserError: unknown name, bad option value, or an option the family cannot honour.
    """
    num_classes = _check_int("num_classes", num_classes, 1)
    in_chans = _check_int("in_chans", in_chans, 1)
    input_size = _check_int("input_size", input_size, 1)
    gn_groups = _check_int("gn_groups", gn_groups, 1)
    check_norm(norm)
    check_choice("shortcut", shortcut, SHORTCUTS)
    check_choice("variant", variant, VARIANTS)
    if not width > 0:
        raise UserError(f"width must be > 0 (got {width!r}); 1.0 keeps the named width")
    if not 0 <= dropout < 1:
        raise UserError(f"dropout must be in [0, 1) (got {dropout!r})")
    source, sep, ext_name = name.partition(":")
    if sep and source in ("timm", "torchvision"):
        return _create_external(name, source, ext_name, num_classes, in_chans, norm=norm,
                                shortcut=shortcut, variant=variant, plain=plain, width=width,
                                dropout=dropout)
    spec = _parse(name.strip().lower())
    if spec is None:
        raise UserError(f"unknown model '{name}'{closest(name.strip().lower(), _MODELS)}; "
                        "`lightship models` lists them")
    if shortcut != "A" and spec.family != "cifar_resnet":
        _reject("shortcut", shortcut, name, "only CIFAR ResNets choose a shortcut; "
                "ImageNet ResNets pick theirs with variant")
    if variant != "v1" and spec.family != "resnet":
        _reject("variant", variant, name, "only ImageNet-style ResNets have variants")
    if plain and spec.family not in ("resnet", "cifar_resnet"):
        _reject("plain", plain, name, "only ResNets have a plain twin")
    kwargs: dict[str, Any] = dict(spec.kwargs, num_classes=num_classes, in_chans=in_chans,
                                  width=spec.width * width, norm=norm, gn_groups=gn_groups,
                                  dropout=dropout)
    if "plain" in kwargs:  # plain20 and resnet20 + plain=True are the same net
        kwargs["plain"] = kwargs["plain"] or plain
    if spec.family in ("cifar_resnet", "resnet", "mobilenet_v2"):
        kwargs["zero_gamma"] = zero_gamma
    if spec.family == "cifar_resnet":
        kwargs["shortcut"] = shortcut
    if spec.family == "resnet":
        kwargs["variant"] = variant
    if spec.family in ("resnet", "mobilenet_v1", "mobilenet_v2"):
        kwargs["small_input"] = input_size <= SMALL_INPUT_MAX
    return spec.build(**kwargs)


def _create_external(name: str, source: str, ext_name: str, num_classes: int, in_chans: int,
                     **options: Any) -> nn.Module:
    defaults = {"norm": "bn", "shortcut": "A", "variant": "v1", "plain": False, "width": 1.0}
    if source == "torchvision":
        defaults["dropout"] = 0.0
    for option, default in defaults.items():
        if options[option] != default:
            _reject(option, options[option], name, f"{source} models keep their own design")
    if source == "timm":
        return create_timm(ext_name, num_classes, in_chans, options["dropout"])
    return create_torchvision(ext_name, num_classes, in_chans)


def model_stats(model: nn.Module, in_chans: int, input_size: int) -> dict[str, int]:
    """Parameter count and multiply-accumulates of one ``in_chans×input_size²`` image.

    MACs come from ``FlopCounterMode`` (FLOPs / 2) on an eval-mode forward under no_grad;
    each submodule's train/eval mode is restored afterwards.
    """
    params = sum(p.numel() for p in model.parameters())
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros(1, in_chans, input_size, input_size, device=device, dtype=dtype)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for m, training in modes.items():
            m.training = training
    return {"params": params, "macs": counter.get_total_flops() // 2}
