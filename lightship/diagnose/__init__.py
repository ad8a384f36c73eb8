"""Diagnose a run: is it converged, still improving, diverged, over- or underfitting?"""

from lightship.diagnose.curves import LABELS, Verdict, fit_floor, load_records, verdict

__all__ = ["LABELS", "Verdict", "fit_floor", "load_records", "verdict"]
