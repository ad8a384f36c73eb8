"""Diagnose a run: is it converged, still improving, diverged, over- or underfitting?

One module per job: :mod:`~lightship.diagnose.floor` (floor fitting), :mod:`.signals` (the
curve's symptoms), :mod:`.decide` (the decision, :func:`verdict`), :mod:`.wording` (reasons and
suggestions), :mod:`.result` (the typed :class:`Verdict` and :class:`Numbers`), :mod:`.judge`
(a run folder's verdict). Names load on first use (PEP 562), so ``import lightship`` does not pay
for numpy.
"""

_NAMES = {"LABELS": "result", "Verdict": "result", "Numbers": "result", "fit_floor": "floor",
          "load_records": "judge", "verdict": "decide", "judge_run": "judge",
          "improved": "signals", "plateau": "signals"}


def __getattr__(name: str):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"lightship.diagnose.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'lightship.diagnose' has no attribute {name!r}")


__all__ = list(_NAMES)
