"""The model zoo: ``create_model(name, ...)`` and one API on every model.

Every model has ``stage_names``, ``forward_features(x)`` (pre-pool feature map),
``forward_head(feats)`` (pool + classifier → logits), ``num_classes`` and
``reset_classifier(num_classes)``; ``forward(x) == forward_head(forward_features(x))``.
"""

from lightship.models.external import ExternalModel
from lightship.models.fast import FastCNN
from lightship.models.mobilenet import MobileNetV1, MobileNetV2
from lightship.models.norm import NORMS, check_norm, make_norm
from lightship.models.registry import create_model, list_models, model_stats
from lightship.models.resnet import SHORTCUTS, VARIANTS, CifarResNet, ResNet
from lightship.models.small import SmallCNN
from lightship.models.taps import Taps
from lightship.models.wrn import WideResNet

__all__ = [
    "NORMS", "SHORTCUTS", "VARIANTS", "CifarResNet", "ExternalModel", "FastCNN", "MobileNetV1",
    "MobileNetV2", "ResNet", "SmallCNN", "Taps", "WideResNet", "check_norm", "create_model",
    "list_models", "make_norm", "model_stats",
]
