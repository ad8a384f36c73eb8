"""Rocket Launching (Zhou et al. 2018, "Rocket Launching: A Universal and Efficient Framework for
Training Well-performing Light Net", AAAI): a light net and a deeper *booster* of the same family
train together and share their lower layers.

Objective (term ``rocket``; the authors' ``h(sample)`` in ``rocket_interval.py``)::

    loss = CE(z_light, y) + CE(z_booster, y) + λ·‖z_light − sg(z_booster)‖²

with the hint summed over classes and averaged over the batch (the authors divide by the
configured batch size, so only a short last batch differs), λ = ``method.rocket_lambda``
(default 0.03, the authors' ``--gamma`` in every Rocket command). **Gradient block**
(``method.gradient_block``, the paper's default): ``sg`` stops the hint's gradient at the booster
logits, so the hint never moves the booster's own layers; the shared layers still receive it
through the light path. ``gradient_block: false`` (``none``) lets the hint pull both nets.

Sharing (``method.share``). The authors' rule: the light net's stem is the booster's stem, and
its block j of stage s is the booster's block j of stage s, for every block the light net has;
its norm layers and head are its own. Conv weights are shared module objects (one tensor, two
users); norms too with ``method.share_bn``.

- ``interval`` (``rocket_interval.py``): the light net has the booster's stages with fewer
  blocks each (wrn-16-1 with wrn-40-1: every one of its 15 conv tensors is the booster's).
- ``bottom`` (``rocket_bottom.py``): the light net is the booster's stem and first stages, block
  for block (``wrn-40-1-s2`` with ``wrn-40-1``: 26 conv tensors shared).
- ``stem+stage1`` (lightship's own, not the authors'): only the stem and the light net's first
  stage; a bottom-like layout for a light net that has all the booster's stages.
- ``none``: nothing tied (the paper's "without sharing" ablation: the booster trains beside the
  light net with its own weights).

The light net stays an ordinary registry model: its saved weights load into a plain
``create_model`` of its name and give the same outputs, with no booster.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightship.errors import UserError
from lightship.methods.kd import hint_loss
from lightship.methods.supervised import smoothed_ce

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_EXAMPLES = "e.g. resnet20 with resnet56, wrn-16-1 with wrn-40-1, resnet8 with resnet32"


def _stages(net: nn.Module) -> list[str]:
    return [n for n in getattr(net, "stage_names", []) if n.startswith("layer")]


SHARES = ("interval", "bottom", "stem+stage1", "none")


def check_family(light: nn.Module, booster: nn.Module, light_name: str, booster_name: str) -> None:
    """Same family, and the light net's stages are the booster's first stages (all or fewer)."""
    ls, bs = _stages(light), _stages(booster)
    if type(light) is not type(booster) or not ls or ls != bs[:len(ls)] or not hasattr(
            light, "stem"):
        raise UserError(f"rocket needs a booster of the light net's family that has the light "
                        f"net's stages; {booster_name} does not fit {light_name} ({_EXAMPLES})")


def _blocks(net: nn.Module, stage: str) -> int:
    return len(getattr(net, stage))


def share_plan(light: nn.Module, booster: nn.Module, share: str) -> list[tuple[str, str]]:
    """(light module path, booster module path) pairs whose layers are tied."""
    stages = _stages(light)
    if share == "none":
        return []
    if share == "stem+stage1":
        n = _blocks(light, stages[0])
        if n > _blocks(booster, stages[0]):
            raise UserError(f"share=stem+stage1 ties the light net's {n} first-stage blocks to "
                            f"the booster's first {n}, but the booster has fewer; pick a deeper "
                            f"booster ({_EXAMPLES})")
        return [("stem", "stem")] + [(f"{stages[0]}.{i}", f"{stages[0]}.{i}") for i in range(n)]
    if share == "interval":
        if stages != _stages(booster):
            raise UserError("share=interval needs a light net with all the booster's stages; a "
                            "light net made of the booster's first stages (e.g. wrn-40-1-s2 with "
                            "wrn-40-1) shares with share=bottom")
        short = [s for s in stages if _blocks(light, s) > _blocks(booster, s)]
        if short:
            raise UserError(f"share=interval ties each light block to the booster's block at the "
                            f"same place, but the booster's {short[0]} has fewer blocks; pick a "
                            f"deeper booster ({_EXAMPLES})")
    elif share == "bottom":
        full = stages == _stages(booster)
        differ = [s for s in stages if _blocks(light, s) != _blocks(booster, s)]
        if full or differ:
            raise UserError("share=bottom needs a light net that is the booster's stem and first "
                            "stages, block for block (Rocket's bottom layout: model wrn-40-1-s2 "
                            "with booster wrn-40-1); a shallower net with all the booster's "
                            "stages shares with share=interval (or share=stem+stage1)")
    else:
        raise UserError(f"share={share!r} is unknown; use one of {', '.join(SHARES)}")
    # the authors' rule: stem ↔ stem, light block j of stage s ↔ booster block j of stage s
    return [("stem", "stem")] + [(f"{s}.{j}", f"{s}.{j}") for s in stages
                                 for j in range(_blocks(light, s))]


def _leaves(module: nn.Module, share_bn: bool) -> list[tuple[str, nn.Module]]:
    kinds = (nn.Conv2d, *_NORMS) if share_bn else (nn.Conv2d,)
    return [(n, m) for n, m in module.named_modules() if isinstance(m, kinds)]


def tie_layers(light: nn.Module, booster: nn.Module, share: str, share_bn: bool,
               light_name: str = "light", booster_name: str = "booster") -> list[str]:
    """Make the light net use the booster's layer objects where the plan says; return their paths.

    Every tied pair must have the same structure and shapes, else a message names the first
    mismatch and what would fit.
    """
    tied = []
    for lpath, bpath in share_plan(light, booster, share):
        lpart, bpart = light.get_submodule(lpath), booster.get_submodule(bpath)
        lleaves, bleaves = _leaves(lpart, share_bn), _leaves(bpart, share_bn)
        if [n for n, _ in lleaves] != [n for n, _ in bleaves]:
            raise UserError(f"share={share}: light {lpath} and booster {bpath} are built "
                            f"differently; rocket shares layers of nets of one family and width "
                            f"({_EXAMPLES})")
        for (name, lm), (_, bm) in zip(lleaves, bleaves, strict=True):
            shapes = [tuple(p.shape) for p in lm.parameters()]
            if shapes != [tuple(p.shape) for p in bm.parameters()]:
                where = f"{lpath}.{name}".rstrip(".")
                raise UserError(f"share={share}: {where} is {shapes[0]} in {light_name} but "
                                f"{tuple(next(bm.parameters()).shape)} in {booster_name}; shared "
                                f"layers need equal widths: use a deeper booster of the same "
                                f"width ({_EXAMPLES})")
            light.set_submodule(f"{lpath}.{name}".rstrip("."), bm)
            tied.append(f"{lpath}.{name}".rstrip("."))
    return tied


class Rocket:
    """The booster partner and its loss terms (composed into the transfer objective)."""

    def __init__(self, light: nn.Module, booster: nn.Module, share: str, share_bn: bool,
                 lam: float, gradient_block: bool, label_smoothing: float = 0.0,
                 light_name: str = "light", booster_name: str = "booster") -> None:
        check_family(light, booster, light_name, booster_name)
        self.booster = booster
        self.tied = tie_layers(light, booster, share, share_bn, light_name, booster_name)
        self.lam, self.gradient_block = lam, gradient_block
        self.label_smoothing = label_smoothing

    def hint(self, z_light: Tensor, z_boost: Tensor) -> Tensor:
        """‖z_light − z_booster‖² summed over classes, batch mean; booster side blocked or not."""
        ref = z_boost.detach() if self.gradient_block else z_boost
        return hint_loss(z_light.float(), ref.float(), "sum")

    def terms(self, z_light: Tensor, x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z_boost = self.booster(x).float()
        ce_b = smoothed_ce(z_boost, target, self.label_smoothing)
        hint = self.hint(z_light, z_boost)
        return ce_b + self.lam * hint, {"booster_ce": ce_b.detach(), "rocket": hint.detach()}
