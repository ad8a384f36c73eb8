"""lightship: train light image classifiers to convergence and lift them toward heavy ones.

The Python API (docs/api.md)::

    import lightship
    result = lightship.train("baseline", data__name="digits", train__epochs=2)
    verdict = lightship.diagnose(result.run_dir)

``train``, ``distill``, ``evaluate``, ``diagnose``, ``confirm``, ``lift`` and ``load_run`` are
functions here; the modules of the same name stay importable as
``from lightship.train.loop import ...``, ``from lightship.evaluate import ...``,
``from lightship.diagnose import ...`` and ``from lightship.lift.core import ...``.
"""

# The subpackages named like API functions are imported first, so that the functions bound
# below are not replaced by the submodule attribute an import system sets on first import.
import lightship.diagnose
import lightship.evaluate
import lightship.lift
import lightship.train  # noqa: F401  (see above)
from lightship.api import (
    Run,
    confirm,
    diagnose,
    distill,
    evaluate,
    lift,
    load_run,
    make_recipe,
    train,
)
from lightship.errors import UserError
from lightship.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {"Recipe": "lightship.recipe", "create_model": "lightship.models",
         "load_dataset": "lightship.data", "RunResult": "lightship.train.loop",
         "EvalResult": "lightship.evaluate", "Verdict": "lightship.diagnose.result"}


__getattr__ = lazy_getattr("lightship", _LAZY)  # torch-heavy names load on first use


__all__ = ["EvalResult", "Recipe", "Run", "RunResult", "UserError", "Verdict", "__version__",
           "confirm", "create_model", "diagnose", "distill", "evaluate", "lift", "load_dataset",
           "load_run",
           "make_recipe", "train"]
