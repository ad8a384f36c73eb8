"""`lightship study NAME`: each seed paper's claim as one command, with paired statistics.

See :mod:`lightship.studies.runner` (the grid, resume, parallel cells), :mod:`.analysis`
(study.json, study.md, figures) and :mod:`.stats` (paired 95 % t-intervals).
"""

from lightship.errors import UserError, closest
from lightship.studies.base import BUDGETS, Study
from lightship.studies.degradation import Degradation
from lightship.studies.tricks import Tricks
from lightship.studies.underfit import Underfit

STUDIES: dict[str, type[Study]] = {"degradation": Degradation, "tricks": Tricks,
                                   "underfit": Underfit}


def get_study(name: str) -> Study:
    """The study called ``name``, or a one-line UserError listing the studies."""
    if name not in STUDIES:
        raise UserError(f"unknown study '{name}'{closest(name, STUDIES)}; studies: "
                        f"{', '.join(STUDIES)} (lightship study list)")
    return STUDIES[name]()


__all__ = ["BUDGETS", "STUDIES", "Study", "get_study"]
