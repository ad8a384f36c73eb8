"""lightship: train light image classifiers to convergence and lift them toward heavy ones."""

from lightship.errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
