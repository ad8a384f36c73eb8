"""Wide ResNet ``wrn-D-K`` (Zagoruyko & Komodakis 2016): pre-activation blocks, widened stages."""

from __future__ import annotations

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
)


class PreActBlock(nn.Module):
    """norm-relu-conv3×3 → norm-relu-dropout-conv3×3, plus identity or 1×1 projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm_layer: NormLayer,
                 dropout: float) -> None:
        super().__init__()
        self.norm1 = norm_layer(in_ch)
        self.act1 = nn.ReLU()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.norm2 = norm_layer(out_ch)
        self.act2 = nn.ReLU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(out_ch, out_ch)
        projects = stride != 1 or in_ch != out_ch
        self.shortcut = conv1x1(in_ch, out_ch, stride) if projects else nn.Identity()
        self.projects = projects

    def forward(self, x: Tensor) -> Tensor:
        """Pre-activated residual branch + shortcut (no activation after the sum)."""
        pre = self.act1(self.norm1(x))
        # The projection reads the pre-activated input, as in the authors' code; identity reads x
        short = self.shortcut(pre) if self.projects else x
        out = self.conv2(self.drop(self.act2(self.norm2(self.conv1(pre)))))
        return out + short


class WideResNet(Classifier):
    """WRN-D-K: 3×3 stem (16), three stages of (D-4)/6 blocks at 16K/32K/64K, final norm-relu.

    ``zero_gamma`` does not apply (pre-activation blocks end in a conv, not a norm); ``width``
    multiplies every channel count on top of K. ``stages`` < 3 keeps only the first stages (same
    blocks, then norm-relu and the head on the last kept stage): the light net of Rocket
    Launching's ``bottom`` layout, which is its booster's stem and first two groups
    (registry name ``wrn-D-K-sS``, e.g. ``wrn-40-1-s2``).
    """

    def __init__(self, depth: int = 16, widen: int = 1, num_classes: int = 10, in_chans: int = 3,
                 width: float = 1.0, norm: str = "bn", gn_groups: int = 8,
                 dropout: float = 0.0, stages: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or widen < 1:
            raise UserError(f"Wide ResNet needs depth 6n+4 >= 10 and widen >= 1 (got wrn-{depth}-"
                            f"{widen}); e.g. wrn-16-2 or wrn-40-2")
        if stages not in (1, 2, 3):
            raise UserError(f"Wide ResNet has 3 stages; stages={stages!r} must be 1, 2 or 3 "
                            f"(e.g. wrn-{depth}-{widen}-s2 keeps the first two)")
        n = (depth - 4) // 6
        norm_layer = norm_factory(norm, gn_groups)
        chans = [scale_channels(c, width) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
        self.stem = conv3x3(in_chans, chans[0])
        in_ch = chans[0]
        plan = list(zip(chans[1:], (1, 2, 2), strict=True))[:stages]
        for i, (ch, stride) in enumerate(plan, start=1):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(in_ch, ch, stride if j == 0 else 1, norm_layer, dropout))
                in_ch = ch
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        # pre-activation nets leave the last stage un-normalised; this norm-relu finishes it
        self.final = nn.Sequential(norm_layer(in_ch), nn.ReLU())
        # the paper's dropout lives inside the blocks, so the head gets none
        self._build_head(in_ch, num_classes, 0.0)
        layers = [f"layer{i}" for i in range(1, stages + 1)]
        self.stage_names = ["stem", *layers, "final", "pool", "fc"]
        self._layers = layers
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → normalised, activated last-stage feature map."""
        x = self.stem(x)
        for name in self._layers:
            x = getattr(self, name)(x)
        return self.final(x)
