"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018) with a width multiplier.

Small inputs (<= 64 px) drop the first two stride-2s (stem and first downsampling block), so a
32×32 image ends at 4×4 instead of 1×1.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightship.models.base import (
    Classifier,
    NormLayer,
    conv_norm_act,
    init_weights,
    norm_factory,
    zero_norm_weight,
)

# v1: (out channels, stride) per depthwise-separable block, grouped by output stride
V1_STAGES: list[list[tuple[int, int]]] = [
    [(64, 1)],
    [(128, 2), (128, 1)],
    [(256, 2), (256, 1)],
    [(512, 2)] + [(512, 1)] * 5,
    [(1024, 2), (1024, 1)],
]
# v2: (expansion t, out channels c, repeats n, first stride s), grouped by output stride
V2_STAGES: list[list[tuple[int, int, int, int]]] = [
    [(1, 16, 1, 1)],
    [(6, 24, 2, 2)],
    [(6, 32, 3, 2)],
    [(6, 64, 4, 2), (6, 96, 3, 1)],
    [(6, 160, 3, 2), (6, 320, 1, 1)],
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` (hardware-friendly), losing at most 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _first_strides(small_input: bool) -> tuple[int, int]:
    """Strides of the stem and of the first downsampling block."""
    return (1, 1) if small_input else (2, 2)


class MobileNetV1(Classifier):
    """MobileNet v1: 3×3 stem then 13 depthwise-separable blocks, ``width`` multiplies channels."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                 small_input: bool = False, norm: str = "bn", gn_groups: int = 8,
                 dropout: float = 0.0) -> None:
        super().__init__()
        norm_layer = norm_factory(norm, gn_groups)
        stem_stride, first_down = _first_strides(small_input)
        in_ch = make_divisible(32 * width)
        self.stem = conv_norm_act(in_chans, in_ch, 3, stem_stride, norm_layer)
        for i, stage in enumerate(V1_STAGES, start=1):
            blocks = []
            for j, (ch, stride) in enumerate(stage):
                out_ch = make_divisible(ch * width)
                s = first_down if i == 2 and j == 0 else stride
                blocks.append(nn.Sequential(
                    conv_norm_act(in_ch, in_ch, 3, s, norm_layer, groups=in_ch),
                    conv_norm_act(in_ch, out_ch, 1, 1, norm_layer)))
                in_ch = out_ch
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self._build_head(in_ch, num_classes, dropout)
        self.stage_names = ["stem", *(f"layer{i}" for i in range(1, 6)), "pool", "fc"]
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → last stage's feature map."""
        x = self.layer2(self.layer1(self.stem(x)))
        return self.layer5(self.layer4(self.layer3(x)))


class InvertedResidual(nn.Module):
    """1×1 expand → 3×3 depthwise → 1×1 linear projection; residual when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int,
                 norm_layer: NormLayer) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_norm_act(in_ch, hidden, 1, 1, norm_layer, nn.ReLU6))
        layers += [conv_norm_act(hidden, hidden, 3, stride, norm_layer, nn.ReLU6, groups=hidden),
                   conv_norm_act(hidden, out_ch, 1, 1, norm_layer, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        """Inverted-residual branch, plus x when input and output shapes match."""
        out = self.conv(x)
        return out + x if self.use_residual else out

    def zero_init_last(self) -> None:
        """γ=0 on the projection norm of residual blocks (zero_gamma)."""
        if self.use_residual:
            zero_norm_weight(self.conv[-1][1])


class MobileNetV2(Classifier):
    """MobileNet v2: inverted residuals, 1×1 conv to 1280 (× width when width > 1) at the end.

    ``zero_gamma`` zeroes the projection norm of the blocks that have a residual connection.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                 small_input: bool = False, norm: str = "bn", gn_groups: int = 8,
                 zero_gamma: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        norm_layer = norm_factory(norm, gn_groups)
        stem_stride, first_down = _first_strides(small_input)
        in_ch = make_divisible(32 * width)
        self.stem = conv_norm_act(in_chans, in_ch, 3, stem_stride, norm_layer, nn.ReLU6)
        for i, stage in enumerate(V2_STAGES, start=1):
            blocks: list[nn.Module] = []
            for k, (t, c, n, s) in enumerate(stage):
                out_ch = make_divisible(c * width)
                for j in range(n):
                    stride = (first_down if i == 2 and k == 0 else s) if j == 0 else 1
                    blocks.append(InvertedResidual(in_ch, out_ch, stride, t, norm_layer))
                    in_ch = out_ch
            if i == len(V2_STAGES):  # the 1×1 head conv ends the last stage
                head_ch = make_divisible(1280 * max(1.0, width))
                blocks.append(conv_norm_act(in_ch, head_ch, 1, 1, norm_layer, nn.ReLU6))
                in_ch = head_ch
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self._build_head(in_ch, num_classes, dropout)
        self.stage_names = ["stem", *(f"layer{i}" for i in range(1, 6)), "pool", "fc"]
        init_weights(self, zero_gamma)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → 1280-channel (× width) feature map."""
        x = self.layer2(self.layer1(self.stem(x)))
        return self.layer5(self.layer4(self.layer3(x)))
