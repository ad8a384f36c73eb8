"""Probes: measurements of a model and its data that explain training behaviour.

- :mod:`lightship.probes.gradients`: shattered gradients (Balduzzi et al. 2017), how correlated
  the input gradients of nearby inputs stay in a ResNet and its plain twin as depth grows.
- :mod:`lightship.probes.noise_scale`: the simple gradient noise scale B_simple = tr(Σ)/|G|²
  (McCandlish et al. 2018), which suggests a batch size.

``lightship probe gradients|noise-scale`` (:mod:`lightship.probes.cli`) runs them.
"""

from lightship.lazy import lazy_getattr

# Imported on first use (PEP 562): the CLI parser imports lightship.probes.cli on every command.
_HOME = {name: ".gradients" for name in ("GradientCorrelation", "calibrate_bn", "effective_rank",
                                         "gradient_correlation", "probe_models")}
_HOME.update({name: ".noise_scale" for name in ("NoiseScale", "measure_noise_scale",
                                                "probe_noise_scale", "unbiased_estimates")})
__all__ = sorted(_HOME)
__getattr__ = lazy_getattr(__name__, _HOME)
