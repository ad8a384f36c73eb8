"""FastCNN: a net shaped for time to accuracy on small images (28×28 digits) on a CPU.

Measured on the 2-core development CPU (docs/results.md, "Time to accuracy"): a small net's step
time is spent less in its convolutions' multiply-adds than in the memory-bound layers
(BatchNorm, ReLU, pooling and their backward passes) at full resolution. So, as in airbench
(Keller Jordan, 2024), each stage pools right after its convolution and normalises the 4× smaller
map: conv → max-pool → norm → ReLU. The head takes the global *max* over positions, which on
MNIST-5k reached a higher validation accuracy than the global average at the same budget.

    stem    conv3×3(w)   @ H    → max-pool 2 → norm → ReLU
    layer1  conv3×3(2w)  @ H/2  → max-pool 2 → norm → ReLU
    layer2  conv3×3(4w)  @ H/4  → norm → ReLU, then (convs − 3) more conv3×3(4w) → norm → ReLU
    head    global max pool → dropout → linear

``fastcnn`` (w = 16, 3 convs) costs 1.9 M multiply-adds at 28×28, a fifth of resnet8's 9.2 M.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightship.errors import UserError
from lightship.models.base import Classifier, conv3x3, init_weights, norm_factory, scale_channels


class FastCNN(Classifier):
    """Pool-then-normalise CNN with a global max-pool head (module docstring).

    Args:
        base_width: channels of the first conv (doubled by each of the two pooling stages).
        convs: convolutions in all, at least 3; those past 3 run at the last resolution.
        width: multiplier on ``base_width``.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, base_width: int = 16,
                 convs: int = 3, width: float = 1.0, norm: str = "bn", gn_groups: int = 8,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if convs < 3:
            raise UserError(f"fastcnn needs at least 3 convolutions (got {convs})")
        norm_layer = norm_factory(norm, gn_groups)
        w = scale_channels(base_width, width)

        def pooled(cin: int, cout: int) -> nn.Sequential:
            # ceil_mode keeps odd sizes (and 1×1 maps of tiny inputs) valid
            return nn.Sequential(conv3x3(cin, cout), nn.MaxPool2d(2, ceil_mode=True),
                                 norm_layer(cout), nn.ReLU(inplace=True))

        def plain(cin: int, cout: int) -> list[nn.Module]:
            return [conv3x3(cin, cout), norm_layer(cout), nn.ReLU(inplace=True)]

        self.stem = pooled(in_chans, w)
        self.layer1 = pooled(w, 2 * w)
        self.layer2 = nn.Sequential(*plain(2 * w, 4 * w),
                                    *(m for _ in range(convs - 3) for m in plain(4 * w, 4 * w)))
        self._build_head(4 * w, num_classes, dropout)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(1))
        self.stage_names = ["stem", "layer1", "layer2", "pool", "fc"]
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → last conv's feature map."""
        return self.layer2(self.layer1(self.stem(x)))
