"""A deliberately small CNN: a tiny student that underfits, for distillation experiments."""

from __future__ import annotations

from torch import Tensor, nn

from lightship.models.base import (
    Classifier,
    conv_norm_act,
    init_weights,
    norm_factory,
    scale_channels,
)


class SmallCNN(Classifier):
    """conv(w) → pool → conv(2w) → pool → conv(4w) → global pool → linear (3×3 convs).

    Args:
        base_width: channels of the first conv (``cnn4`` = 4, ``cnn32`` = 32, ``cnn`` = 16).
        width: multiplier on ``base_width``.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, base_width: int = 16,
                 width: float = 1.0, norm: str = "bn", gn_groups: int = 8,
                 dropout: float = 0.0) -> None:
        super().__init__()
        norm_layer = norm_factory(norm, gn_groups)
        w = scale_channels(base_width, width)
        self.stem = conv_norm_act(in_chans, w, 3, 1, norm_layer)
        # ceil_mode keeps 1×1 maps valid, so even 4×4 inputs pass through both pools
        self.layer1 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True),
                                    conv_norm_act(w, 2 * w, 3, 1, norm_layer))
        self.layer2 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True),
                                    conv_norm_act(2 * w, 4 * w, 3, 1, norm_layer))
        self._build_head(4 * w, num_classes, dropout)
        self.stage_names = ["stem", "layer1", "layer2", "pool", "fc"]
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch → last conv's feature map."""
        return self.layer2(self.layer1(self.stem(x)))
