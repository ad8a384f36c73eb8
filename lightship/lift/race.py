"""The rules of a lift, on cell records alone (no training here): the racing rule, the
diagnosis and the recommendation. Every decision is a :mod:`lightship.judge` call on validation
folds of the training split (unit ``fold``: the corrected resampled interval with the lift's K,
one seed), so a lift and a study infer the same way.

- **Racing** (:func:`behind`): after each fold (from the third on), every candidate is paired
  with the current leader (the highest mean validation top-1, the light net alone included) on
  the folds both finished; a candidate is dropped only when that paired difference's 95 %
  interval lies wholly below 0. The light net alone is never dropped. Each such test stands
  alone (no correction: dropping is the cheap error, a wrong winner the expensive one, and the
  recommendation below is corrected).
- **Recommendation** (:func:`recommend`): one primary claim per raced candidate, "beats the
  light net alone on validation top-1", judged together with Holm over all of them; the winner
  is the agreeing candidate with the largest gain, else nothing.
- **Diagnosis** (:func:`diagnose`): converged when the ×2-schedule twin (the ``longer``
  candidate) lowers the clean train CE by at most max(0.01, 10 %) on most folds
  (:func:`lightship.diagnose.twin.twin_tolerance`); the floor against the teacher is the paired
  difference of clean train CE, light − teacher.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lightship.diagnose.twin import twin_tolerance
from lightship.judge import AGREES, Decision, Difference, judge

METRIC = "test_top1"
"""What arms race on: a lift cell's evaluated split is its validation fold, so its
``test_top1`` is validation top-1 (the test split is read only by the final runs)."""
LIGHT, TEACHER, LONGER = "light", "teacher", "longer"


def _finished(cells: Sequence[Mapping], arm: str, metric: str = METRIC) -> list[Mapping]:
    return [c for c in cells if c.get("arm") == arm and c.get(metric) is not None]


def mean_of(cells: Sequence[Mapping], arm: str, metric: str = METRIC) -> float | None:
    got = _finished(cells, arm, metric)
    return statistics.fmean(c[metric] for c in got) if got else None


def leader(cells: Sequence[Mapping], arms: Sequence[str]) -> str:
    """The arm with the highest mean validation top-1 (ties: the earlier arm)."""
    means = [(mean_of(cells, a), -i, a) for i, a in enumerate(arms)]
    return max((m, i, a) for m, i, a in means if m is not None)[2]


def behind(cells: Sequence[Mapping], alive: Sequence[str], folds: int) -> dict[str, Decision]:
    """The candidates the racing rule drops now, with the decision that drops each: those whose
    paired difference to the leader has its 95 % interval wholly below 0."""
    if LIGHT not in alive:
        raise ValueError("the light net alone is every race's baseline")
    lead = leader(cells, alive)
    rivals = [a for a in alive if a not in (lead, LIGHT)]
    claims = [Difference(a, lead, METRIC, "<", unit="fold", primary=False,
                         label=f"{a} behind the leader {lead}") for a in rivals]
    return {d.claim.a: d for d in judge(claims, cells, folds) if d.outcome == AGREES}


@dataclass(frozen=True)
class Recommendation:
    winner: str | None
    decisions: dict[str, Decision]
    """Per raced candidate: "beats the light net alone", Holm over all of them."""


def recommend(cells: Sequence[Mapping], raced: Sequence[str], folds: int) -> Recommendation:
    """Judge "candidate beats the light net alone on validation top-1" for every raced
    candidate as one Holm family; the winner is the agreeing one with the largest gain."""
    claims = [Difference(a, LIGHT, METRIC, ">", unit="fold",
                         label=f"{a} beats the light net alone") for a in raced]
    decisions = {d.claim.a: d for d in judge(claims, cells, folds)}
    agree = [d for d in decisions.values() if d.outcome == AGREES]
    best = max(agree, key=lambda d: d.estimate or 0.0) if agree else None
    return Recommendation(best.claim.a if best else None, decisions)


@dataclass(frozen=True)
class Diagnosis:
    case: str
    """not converged | underfits | at the floor | converged (no teacher)."""
    converged_folds: tuple[int, int]
    """(units (repetition, fold) where the ×2 twin did not lower the clean train CE beyond
    tolerance, units)."""
    light_ce: float | None
    longer_ce: float | None
    floor: Decision | None
    """light − teacher on clean train CE (None without a teacher)."""

    def lines(self) -> list[str]:
        k, n = self.converged_folds
        out = []
        if n:
            out.append(f"convergence: the ×2 schedule lowers the light net's clean train CE "
                       f"beyond max(0.01, 10 %) on {n - k} of {n} units (mean "
                       f"{self.light_ce:.4f} → {self.longer_ce:.4f})")
        if self.floor is not None:
            f = self.floor
            nums = "" if f.estimate is None else f" {f.estimate:+.4f}" + (
                "" if f.interval is None else f" [{f.interval[0]:+.4f}, {f.interval[1]:+.4f}]")
            out.append(f"floor: light − teacher clean train CE{nums} (n={f.n} units): "
                       + ("the light net's floor lies above the teacher's" if f.outcome == AGREES
                          else f"not shown above the teacher's ({f.outcome}"
                               + (f": {f.reason}" if f.reason else "") + ")"))
        return out

    def sentence(self) -> str:
        return {
            "not converged": "the light net has not converged: train it longer first (the "
                             "cheapest lift)",
            "underfits": "the light net has converged and underfits against the teacher: its "
                         "training-loss floor lies above the teacher's",
            "at the floor": "the light net has converged and reaches the teacher's floor: "
                            "there is little for a teacher to transfer",
            "converged": "the light net has converged (no teacher to compare floors with)",
        }[self.case]


def diagnose(cells: Sequence[Mapping], folds: int) -> Diagnosis:
    """The light net's case from its cells, its ×2 twin's (arm ``longer``) and the teacher's."""
    light = {(c.get("seed"), c.get("fold")): c for c in _finished(cells, LIGHT, "train_ce")}
    longer = {(c.get("seed"), c.get("fold")): c for c in _finished(cells, LONGER, "train_ce")}
    both = sorted(light.keys() & longer.keys())
    ok = [light[f]["train_ce"] - longer[f]["train_ce"] <= twin_tolerance(light[f]["train_ce"])
          for f in both]
    floor = None
    if _finished(cells, TEACHER, "train_ce"):
        floor = judge([Difference(LIGHT, TEACHER, "train_ce", ">", unit="fold", primary=False,
                                  label="the light net's floor lies above the teacher's")],
                      cells, folds)[0]
    if both and sum(ok) * 2 <= len(both):
        case = "not converged"
    elif floor is None:
        case = "converged"
    else:
        case = "underfits" if floor.outcome == AGREES else "at the floor"
    def mean(d: dict) -> float | None:
        return statistics.fmean(d[f]["train_ce"] for f in both) if both else None

    return Diagnosis(case, (sum(ok), len(both)), mean(light), mean(longer), floor)
