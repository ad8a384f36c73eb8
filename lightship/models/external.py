"""``timm:NAME`` and ``torchvision:NAME`` models behind lightship's model API (never pretrained)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightship.errors import UserError, closest


class ExternalModel(nn.Module):
    """Wraps a timm or torchvision model; its modules live under ``model.`` (state-dict prefix).

    ``stage_names`` are the wrapped model's top-level children. ``forward_features`` and
    ``forward_head`` come from timm, and for torchvision exist for the ResNet, RegNet,
    MobileNet v2/v3 and EfficientNet families (a UserError elsewhere).
    """

    def __init__(self, model: nn.Module, source: str, name: str, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.source = source
        self.name = name
        self.num_classes = num_classes
        self.stage_names = [f"model.{n}" for n, _ in model.named_children()]

    def forward(self, x: Tensor) -> Tensor:
        """Image batch → logits."""
        return self.model(x)

    def _torchvision_parts(self) -> tuple[list[nn.Module], nn.Module]:
        """(modules that map images to the pre-pool feature map, classifier after pooling)."""
        import torchvision.models as tvm

        m = self.model
        if isinstance(m, (tvm.ResNet, tvm.RegNet)):  # their children run in order
            body = [c for n, c in m.named_children() if n not in ("avgpool", "fc")]
            return body, m.fc
        if isinstance(m, (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet)):
            return [m.features], m.classifier
        raise UserError(f"forward_features/forward_head are not available for torchvision:"
                        f"{self.name}; call the model itself, or use Taps on its stage_names")

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → feature map before global pooling."""
        if self.source == "timm":
            return self.model.forward_features(x)
        for module in self._torchvision_parts()[0]:
            x = module(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map → logits (pooled features when ``pre_logits``)."""
        if self.source == "timm":
            return self.model.forward_head(x, pre_logits=pre_logits)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self._torchvision_parts()[1](x)

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh classifier for ``num_classes`` (torchvision: the last Linear layer is replaced)."""
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes must be an integer >= 1 (got {num_classes!r})")
        if self.source == "timm":
            self.model.reset_classifier(num_classes)
        else:
            path, old = [(n, m) for n, m in self.model.named_modules()
                         if isinstance(m, nn.Linear)][-1]
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
            self.model.set_submodule(path, new.to(old.weight.device, old.weight.dtype))
        self.num_classes = num_classes


def _replace_first_conv(model: nn.Module, in_chans: int) -> None:
    """torchvision models take 3 channels; give their first conv ``in_chans`` inputs instead."""
    path, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_chans:
        return
    # groups=1: no torchvision classifier starts with a grouped conv
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    model.set_submodule(path, new)


def create_timm(name: str, num_classes: int, in_chans: int, dropout: float) -> ExternalModel:
    """A randomly initialised timm model (``pretrained=False``: lightship never downloads)."""
    try:
        import timm
    except ImportError:
        raise UserError(f"timm:{name} needs timm; install the timm extra: "
                        "pip install 'lightship[timm]'") from None
    if not timm.is_model(name):
        raise UserError(f"unknown timm model '{name}'{closest(name, timm.list_models())}; "
                        "timm.list_models() lists them")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                              in_chans=in_chans, drop_rate=dropout)
    return ExternalModel(model, "timm", name, num_classes)


def create_torchvision(name: str, num_classes: int, in_chans: int) -> ExternalModel:
    """A randomly initialised torchvision model (``weights=None``), first conv fit to in_chans."""
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)  # classification models only
    if name not in names:
        raise UserError(f"unknown torchvision model '{name}'{closest(name, names)}; "
                        "torchvision.models.list_models() lists them")
    model = tvm.get_model(name, weights=None, num_classes=num_classes)
    if in_chans != 3:
        _replace_first_conv(model, in_chans)
    return ExternalModel(model, "torchvision", name, num_classes)
