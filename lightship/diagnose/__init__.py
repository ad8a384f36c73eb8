"""Diagnose a run: is it converged, still improving, diverged, over- or underfitting?

One module per job: :mod:`~lightship.diagnose.floor` (floor fitting), :mod:`.signals` (the
curve's symptoms), :mod:`.decide` (the decision, :func:`verdict`), :mod:`.wording` (reasons and
suggestions), :mod:`.result` (the typed :class:`Verdict` and :class:`Numbers`), :mod:`.judge`
(a run folder's verdict). Names load on first use (PEP 562), so ``import lightship`` does not pay
for numpy.
"""

from lightship.lazy import lazy_getattr

_NAMES = {"LABELS": ".result", "Verdict": ".result", "Numbers": ".result", "fit_floor": ".floor",
          "load_records": ".judge", "verdict": ".decide", "judge_run": ".judge",
          "improved": ".signals", "plateau": ".signals"}
__getattr__ = lazy_getattr(__name__, _NAMES)


__all__ = list(_NAMES)
