"""ResNets: CIFAR-style (He et al. 2016, §4.2) and ImageNet-style with Bag-of-Tricks variants.

``plain=True`` builds the degradation-experiment twin: the same layers, no shortcut addition.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightship.errors import UserError
from lightship.models.base import (
    Classifier,
    NormLayer,
    conv1x1,
    conv3x3,
    init_weights,
    norm_factory,
    scale_channels,
    zero_norm_weight,
)

SHORTCUTS = ("A", "B", "C")
"""CIFAR ResNet shortcuts, He et al. 2016 Table 3: A = identity, zero-padded where the shape
changes (no parameters); B = a 1×1 projection only where the shape changes; C = a projection on
every shortcut (Table 3's 'all shortcuts are projections')."""
VARIANTS = ("v1", "B", "C", "D")
# depth -> (block, blocks per stage); every other 6n+2 depth is a CIFAR ResNet
IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def check_choice(option: str, value: str, allowed: tuple[str, ...]) -> str:
    """Raise a one-line UserError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise UserError(f"{option} must be one of {listed} (got {value!r})")
    return value


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by striding and append zero channels; no parameters."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        """Identity with stride-``s`` subsampling and zero channel padding."""
        # [::s] keeps ceil(H/s) rows, the same size a stride-s 3×3 conv with padding 1 gives
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, norm_layer: NormLayer,
                  plain: bool) -> nn.Module | None:
    """Shortcut of one block: None (plain), Identity, 'A' pad, 'B' 1×1 projection, 'C' or 'D'.

    'C' projects every shortcut, the shape-keeping ones too (He et al. 2016, Table 3). 'D' (Bag
    of Tricks) average-pools 2×2 before a stride-1 projection so no input is skipped.
    """
    if plain:
        return None
    if kind == "C":
        return nn.Sequential(conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(stride, out_ch - in_ch)
    if kind == "D" and stride > 1:
        # ceil_mode matches the conv path's output size on odd inputs (7×7 → 4×4)
        pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
        return nn.Sequential(pool, conv1x1(in_ch, out_ch), norm_layer(out_ch))
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))


class BasicBlock(nn.Module):
    """Two 3×3 convs; the stride is on the first. ``shortcut=None`` makes it a plain block."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, norm_layer: NormLayer,
                 shortcut: nn.Module | None, stride_on_3x3: bool = True) -> None:
        # stride_on_3x3 only keeps the signature of Bottleneck: both convs here are 3×3
        super().__init__()
        self.conv1 = conv3x3(in_ch, width, stride)
        self.norm1 = norm_layer(width)
        self.act1 = nn.ReLU()
        self.conv2 = conv3x3(width, width)
        self.norm2 = norm_layer(width)
        self.act2 = nn.ReLU()
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        """conv-norm-relu-conv-norm (+ shortcut) → relu."""
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)

    def zero_init_last(self) -> None:
        """γ=0 on the last norm so the block starts as its shortcut (residual blocks only)."""
        if self.shortcut is not None:
            zero_norm_weight(self.norm2)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 → 1×1 expand (×4). ResNet v1 strides the first 1×1, ResNet-B the 3×3."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, norm_layer: NormLayer,
                 shortcut: nn.Module | None, stride_on_3x3: bool = True) -> None:
        super().__init__()
        s1, s3 = (1, stride) if stride_on_3x3 else (stride, 1)
        out_ch = width * self.expansion
        self.conv1 = conv1x1(in_ch, width, s1)
        self.norm1 = norm_layer(width)
        self.act1 = nn.ReLU()
        self.conv2 = conv3x3(width, width, s3)
        self.norm2 = norm_layer(width)
        self.act2 = nn.ReLU()
        self.conv3 = conv1x1(width, out_ch)
        self.norm3 = norm_layer(out_ch)
        self.act3 = nn.ReLU()
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        """Bottleneck path (+ shortcut) → relu."""
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act3(out)

    def zero_init_last(self) -> None:
        """γ=0 on the last norm so the block starts as its shortcut (residual blocks only)."""
        if self.shortcut is not None:
            zero_norm_weight(self.norm3)


class CifarResNet(Classifier):
    """CIFAR ResNet of depth 6n+2: 3×3 stem, three stages of n BasicBlocks (16/32/64 × width).

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, ...).
        shortcut: 'A' (parameter-free zero padding), 'B' (1×1 projection on shape change) or
            'C' (1×1 projection on every shortcut); He et al. 2016, Table 3.
        width: channel multiplier (``resnet32x4`` = 4: 64/128/256 channels, stem included).
        plain: drop every shortcut (the degradation twin; same parameters as shortcut 'A').
        zero_gamma: γ=0 on the last norm of each residual block.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3,
                 width: float = 1.0, shortcut: str = "A", plain: bool = False, norm: str = "bn",
                 gn_groups: int = 8, zero_gamma: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise UserError(f"CIFAR ResNet depth must be 6n+2 >= 8 (got {depth}); e.g. 20 or 56")
        check_choice("shortcut", shortcut, SHORTCUTS)
        n = (depth - 2) // 6
        norm_layer = norm_factory(norm, gn_groups)
        chans = [scale_channels(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(conv3x3(in_chans, chans[0]), norm_layer(chans[0]), nn.ReLU())
        in_ch = chans[0]
        for i, (ch, stride) in enumerate(zip(chans, (1, 2, 2), strict=True), start=1):
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                sc = make_shortcut(shortcut, in_ch, ch, s, norm_layer, plain)
                blocks.append(BasicBlock(in_ch, ch, s, norm_layer, sc))
                in_ch = ch
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self._build_head(in_ch, num_classes, dropout)
        self.stage_names = ["stem", "layer1", "layer2", "layer3", "pool", "fc"]
        init_weights(self, zero_gamma)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → last stage's feature map."""
        return self.layer3(self.layer2(self.layer1(self.stem(x))))


class ResNet(Classifier):
    """ImageNet-style ResNet (10/18/34 basic, 50/101/152 bottleneck) with Bag-of-Tricks variants.

    Args:
        variant: 'v1' (bottleneck stride on the first 1×1, as in He et al. 2016), 'B' (stride on
            the 3×3, torchvision's "v1.5"), 'C' (B + stem of three 3×3 convs 32/32/64), 'D'
            (C + 2×2 average pool then stride-1 1×1 conv in downsampling shortcuts).
        small_input: 3×3 stride-1 stem without max-pool, for 28×28/32×32 images; variants C/D
            keep their three-conv stem, at stride 1.
        width: multiplies every channel count (64/128/256/512 base widths).
        plain: no shortcut addition at all, projection shortcuts included.
    """

    def __init__(self, depth: int = 50, num_classes: int = 1000, in_chans: int = 3,
                 variant: str = "v1", small_input: bool = False, width: float = 1.0,
                 plain: bool = False, norm: str = "bn", gn_groups: int = 8,
                 zero_gamma: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if depth not in IMAGENET_DEPTHS:
            depths = ", ".join(map(str, IMAGENET_DEPTHS))
            raise UserError(f"ImageNet ResNet depth must be one of {depths} (got {depth})")
        check_choice("variant", variant, VARIANTS)
        kind, counts = IMAGENET_DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        norm_layer = norm_factory(norm, gn_groups)
        base = scale_channels(64, width)
        self.stem = self._make_stem(in_chans, base, variant in ("C", "D"), small_input, norm_layer)
        shortcut_kind = "D" if variant == "D" else "B"
        in_ch = base
        for i, n in enumerate(counts, start=1):
            ch = base * 2 ** (i - 1)
            blocks = []
            for j in range(n):
                s = 2 if i > 1 and j == 0 else 1
                out_ch = ch * block.expansion
                sc = make_shortcut(shortcut_kind, in_ch, out_ch, s, norm_layer, plain)
                blocks.append(block(in_ch, ch, s, norm_layer, sc, stride_on_3x3=variant != "v1"))
                in_ch = out_ch
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self._build_head(in_ch, num_classes, dropout)
        self.stage_names = ["stem", "layer1", "layer2", "layer3", "layer4", "pool", "fc"]
        init_weights(self, zero_gamma)

    @staticmethod
    def _make_stem(in_chans: int, out_ch: int, deep: bool, small_input: bool,
                   norm_layer: NormLayer) -> nn.Sequential:
        stride = 1 if small_input else 2
        if deep:
            mid = max(1, out_ch // 2)
            layers: list[nn.Module] = [
                conv3x3(in_chans, mid, stride), norm_layer(mid), nn.ReLU(),
                conv3x3(mid, mid), norm_layer(mid), nn.ReLU(),
                conv3x3(mid, out_ch), norm_layer(out_ch), nn.ReLU(),
            ]
        elif small_input:
            layers = [conv3x3(in_chans, out_ch), norm_layer(out_ch), nn.ReLU()]
        else:
            layers = [nn.Conv2d(in_chans, out_ch, 7, 2, 3, bias=False), norm_layer(out_ch),
                      nn.ReLU()]
        if not small_input:
            layers.append(nn.MaxPool2d(3, 2, 1))
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → last stage's feature map."""
        x = self.layer2(self.layer1(self.stem(x)))
        return self.layer4(self.layer3(x))
