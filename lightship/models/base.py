"""The API every built-in model shares, plus the small building blocks the families reuse."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn

from lightship.errors import UserError
from lightship.models.norm import make_norm

NormLayer = Callable[[int], nn.Module]


def norm_factory(norm: str, gn_groups: int) -> NormLayer:
    """A ``channels -> norm module`` callable, so blocks need not know which norm was chosen."""
    make_norm(norm, 8, gn_groups)  # fail early (bad name, syncbn on CPU, bad groups)
    return partial(make_norm, norm, groups=gn_groups)


def scale_channels(channels: int, width: float) -> int:
    """``channels × width`` rounded, at least 1 (width multipliers may shrink nets to nothing)."""
    return max(1, round(channels * width))


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3×3 convolution with 'same' padding; no bias because a norm follows."""
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution without bias (a norm follows)."""
    return nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)


def conv_norm_act(in_ch: int, out_ch: int, kernel: int, stride: int, norm_layer: NormLayer,
                  act: type[nn.Module] | None = nn.ReLU, groups: int = 1) -> nn.Sequential:
    """conv → norm → activation (``act=None`` leaves the output linear)."""
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
              norm_layer(out_ch)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, zero_gamma: bool = False) -> None:
    """Kaiming-normal convs, unit norms; with ``zero_gamma`` each residual block starts as identity.

    Blocks opt in to zero-γ through a ``zero_init_last()`` method, so plain (shortcut-free)
    blocks and families without a trailing norm are left alone.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_gamma:
        for m in model.modules():
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()


def zero_norm_weight(norm: nn.Module) -> None:
    """Set a norm's γ to 0 when it has one (``norm='none'`` is an Identity without γ)."""
    weight = getattr(norm, "weight", None)
    if weight is not None:
        nn.init.zeros_(weight)


class Classifier(nn.Module):
    """Base of the built-in families: ``forward = forward_head(forward_features(x))``.

    Subclasses build ``stem``, ``layer1..layerN`` and call :meth:`_build_head`; the head is
    ``pool`` (global average + flatten) → ``drop`` → ``fc``.
    """

    stage_names: list[str]
    num_classes: int
    num_features: int

    def _build_head(self, num_features: int, num_classes: int, dropout: float) -> None:
        self.num_features = num_features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → feature map before global pooling."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map → logits (or the pooled features when ``pre_logits``)."""
        x = self.drop(self.pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """Image batch → logits."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Put a fresh ``fc`` for ``num_classes`` in place (0: no classifier, pooled output)."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise UserError(f"num_classes must be an integer >= 0 (got {num_classes!r})")
        old = getattr(self, "fc", None)
        fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if isinstance(old, nn.Linear):  # keep the device and dtype the model was moved to
            fc = fc.to(device=old.weight.device, dtype=old.weight.dtype)
        self.fc = fc
        self.num_classes = num_classes
