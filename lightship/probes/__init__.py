"""Probes: measurements of a model and its data that explain training behaviour.

- :mod:`lightship.probes.gradients`: shattered gradients (Balduzzi et al. 2017), how correlated
  the input gradients of nearby inputs stay in a ResNet and its plain twin as depth grows.
- :mod:`lightship.probes.noise_scale`: the simple gradient noise scale B_simple = tr(Σ)/|G|²
  (McCandlish et al. 2018), which suggests a batch size.

``lightship probe gradients|noise-scale`` (:mod:`lightship.probes.cli`) runs them.
"""

from lightship.probes.gradients import (
    GradientCorrelation,
    calibrate_bn,
    effective_rank,
    gradient_correlation,
    probe_models,
)
from lightship.probes.noise_scale import (
    NoiseScale,
    measure_noise_scale,
    probe_noise_scale,
    unbiased_estimates,
)

__all__ = ["GradientCorrelation", "NoiseScale", "calibrate_bn", "effective_rank",
           "gradient_correlation", "measure_noise_scale", "probe_models", "probe_noise_scale",
           "unbiased_estimates"]
