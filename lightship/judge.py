"""The judge: claims as data, one rule that decides them all.

A claim is a frozen value — which arms, which metric, the expected direction or an equivalence
margin, the unit of analysis, whether it needs converged cells, primary or exploratory. The judge
knows no study: it reads cell records (dicts with ``arm``, ``seed``, ``fold``, the metric values
and optionally ``converged``) and returns one :class:`Decision` per claim, with one of three
outcomes — **agrees**, **contradicts**, **not settled** — and, when not settled, why.

The rules (docs/studies.md, "How claims are judged"):

- Differences are A − B, paired by unit. Unit ``"seed"``: a seed's folds are averaged first (over
  the folds both arms finished), then Student's paired t over the seeds (``scipy.stats``).
  Unit ``"fold"``: the corrected resampled t of Nadeau & Bengio (2003) in the r × K form of
  Bouckaert & Frank (2004): var(d) · (1/n + n_test/n_train) with n_test/n_train = 1/(K − 1),
  because K-fold training sets overlap (each pair shares (K − 2)/(K − 1) of its images), so the
  n = r·K differences are positively correlated and the plain 1/n variance is too small.
- Fewer than 3 units: not settled (``n``). Paired differences with (near-)zero spread
  (sd ≤ 1e-12 · scale): not settled (``degenerate``) — a zero-width interval means two collapsed
  nets, never certainty. A claim that needs converged cells, some of which are not: not settled
  (``under-trained (k of n cells)``).
- :class:`Difference`: agrees only when the test rejects "no difference" on the claimed side,
  contradicts only on the other side; otherwise not settled (``interval``).
  :class:`Equivalence`: agrees when the paired TOST passes at the claim's own margin
  (``statsmodels``' ``ttost_paired``); contradicts when the interval lies wholly outside ±margin;
  otherwise not settled (``margin``). :class:`Trend` is the conjunction of its consecutive
  directed differences; :class:`AllOf` agrees when every part agrees, contradicts when any part
  contradicts, else is not settled for the first unsettled part's reason.
- Multiplicity: Holm over the family of the tests of the primary claims (a conjunction
  contributes each of its parts); decisions use the Holm-adjusted p at level 0.05. A primary
  claim whose arms a run did not train stays in the family at p = 1. Exploratory claims are
  judged alone (adjusted p = p) and never enter the family.
- The reported interval is the plain 95 % interval of the mean difference (per unit's t). A
  decision is never more liberal than it: adjusted p ≥ p, so a 95 % interval that includes 0 is
  never "agrees" or "contradicts" for a difference.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

ALPHA = 0.05
"""The family-wise level of every decision."""
MIN_UNITS = 3
"""Fewer paired units than this settle nothing."""
DEGENERATE_SD = 1e-12
"""sd(d) ≤ this × scale (the largest |metric| of the paired units) is a collapse, not a result."""

Unit = Literal["seed", "fold"]
Outcome = Literal["agrees", "contradicts", "not settled"]
AGREES: Outcome = "agrees"
CONTRADICTS: Outcome = "contradicts"
NOT_SETTLED: Outcome = "not settled"


# ---------------------------------------------------------------- claims


@dataclass(frozen=True)
class _Pair:
    """What the two pairwise claims share: arm ``a`` against arm ``b`` on ``metric``."""

    a: str
    b: str
    metric: str

    @property
    def arms(self) -> tuple[str, ...]:
        return (self.a, self.b)

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)


@dataclass(frozen=True)
class Difference(_Pair):
    """Arm ``a`` minus arm ``b`` on ``metric`` has the expected sign: ``">"`` claims A − B > 0,
    ``"<"`` claims A − B < 0."""

    expect: Literal[">", "<"] = ">"
    unit: Unit = "seed"
    needs_converged: bool = False
    primary: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        _check_common(self)
        if self.expect not in (">", "<"):
            raise ValueError(f"expect must be '>' or '<', not {self.expect!r}")

    def text(self) -> str:
        return self.label or f"{self.a} {self.expect} {self.b} on {self.metric}"


@dataclass(frozen=True)
class Equivalence(_Pair):
    """Arms ``a`` and ``b`` are equivalent on ``metric``: |A − B| < ``margin``, the margin fixed
    in the claim (in the metric's own units) before the cells are read."""

    margin: float = math.nan  # required: a missing margin is refused below
    unit: Unit = "seed"
    needs_converged: bool = False
    primary: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        _check_common(self)
        if not (self.margin > 0 and math.isfinite(self.margin)):
            raise ValueError(f"an equivalence margin must be a positive number, not {self.margin}")

    def text(self) -> str:
        return self.label or f"|{self.a} − {self.b}| < {self.margin:g} on {self.metric}"


@dataclass(frozen=True)
class Trend:
    """``metric`` moves monotonically along the ordered ``arms``: ``"increasing"`` claims every
    arms[i+1] − arms[i] > 0. Judged as the conjunction of those consecutive directed differences
    (not a slope: a trend that rises and then falls must not pass on its average)."""

    arms: tuple[str, ...]
    metric: str
    direction: Literal["increasing", "decreasing"] = "increasing"
    unit: Unit = "seed"
    needs_converged: bool = False
    primary: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "arms", tuple(self.arms))
        if len(self.arms) < 2:
            raise ValueError("a trend needs at least two ordered arms")
        if self.direction not in ("increasing", "decreasing"):
            raise ValueError(f"direction must be increasing or decreasing, not {self.direction!r}")

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    @property
    def parts(self) -> tuple[Difference, ...]:
        sign = ">" if self.direction == "increasing" else "<"
        return tuple(Difference(hi, lo, self.metric, sign, self.unit, self.needs_converged,
                                self.primary)
                     for lo, hi in zip(self.arms, self.arms[1:], strict=False))

    def text(self) -> str:
        return self.label or f"{self.metric} {self.direction} along {' → '.join(self.arms)}"


@dataclass(frozen=True)
class AllOf:
    """Every one of ``claims`` holds. Its ``primary`` decides family membership of all its
    parts (their own flags are overridden)."""

    claims: tuple[Claim, ...]
    primary: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", tuple(self.claims))
        if not self.claims:
            raise ValueError("AllOf needs at least one claim")

    @property
    def parts(self) -> tuple[Claim, ...]:
        return tuple(replace(c, primary=self.primary) for c in self.claims)

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for c in self.claims for a in c.arms))

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for c in self.claims for m in c.metrics))

    @property
    def unit(self) -> str:
        units = {c.unit for c in self.claims}
        return units.pop() if len(units) == 1 else "mixed"

    @property
    def needs_converged(self) -> bool:
        return any(c.needs_converged for c in self.claims)

    def text(self) -> str:
        return self.label or " and ".join(f"({c.text()})" for c in self.claims)


Claim = Difference | Equivalence | Trend | AllOf


def _check_common(claim: Difference | Equivalence | Trend) -> None:
    if claim.unit not in ("seed", "fold"):
        raise ValueError(f"unit must be 'seed' or 'fold', not {claim.unit!r}")


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """What the judge says of one claim.

    ``estimate`` is the mean A − B over units and ``interval`` its plain 95 % interval (None for
    a conjunction or when no test ran). ``p`` is the test's own p-value (two-sided for a
    difference; the TOST p for an equivalence whose estimate lies inside the margin, else the
    two-sided p of lying beyond it), ``p_adjusted`` its Holm-adjusted value (= p when
    exploratory). ``converged`` is (converged cells, cells) over the cells the claim read."""

    claim: Claim
    outcome: Outcome
    reason: str | None = None
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    p: float | None = None
    p_adjusted: float | None = None
    n: int = 0
    converged: tuple[int, int] = (0, 0)
    parts: tuple[Decision, ...] = field(default=(), repr=False)

    @property
    def exploratory(self) -> bool:
        return not self.claim.primary

    def text(self) -> str:
        """One line: outcome (+ reason), the claim, the numbers."""
        head = self.outcome + (f": {self.reason}" if self.reason else "")
        if self.exploratory:
            head += " (exploratory)"
        nums = []
        if self.estimate is not None:
            nums.append(f"{self.estimate:+.3g}")
        if self.interval is not None:
            nums.append(f"[{self.interval[0]:+.3g}, {self.interval[1]:+.3g}]")
        if self.p_adjusted is not None:
            nums.append(f"p_adj={self.p_adjusted:.3g}")
        nums.append(f"n={self.n}")
        return f"{head} — {self.claim.text()}: {' '.join(nums)}"

    def to_dict(self) -> dict:
        """The decision as plain JSON values (study.json's ``claims``): the claim's own fields
        (kind, arms, metric(s), expect or margin, unit, primary, label), the outcome and
        reason, the numbers, the one-line text, and the parts of a trend or conjunction."""
        c = self.claim
        kind = {Difference: "difference", Equivalence: "equivalence", Trend: "trend",
                AllOf: "all"}[type(c)]
        out = {"kind": kind, "label": c.text(), "arms": list(c.arms),
               "metrics": list(c.metrics), "unit": c.unit, "primary": c.primary,
               "needs_converged": c.needs_converged,
               "expect": getattr(c, "expect", None) if kind == "difference" else None,
               "direction": getattr(c, "direction", None),
               "margin": getattr(c, "margin", None), "outcome": self.outcome,
               "reason": self.reason, "estimate": self.estimate,
               "interval": list(self.interval) if self.interval is not None else None,
               "p": self.p, "p_adjusted": self.p_adjusted, "n": self.n,
               "converged": list(self.converged), "line": self.text(),
               "parts": [p.to_dict() for p in self.parts]}
        return out


# ---------------------------------------------------------------- units


@dataclass(frozen=True)
class _Test:
    """A paired test of A − B: per-unit differences reduced to estimate, se and df."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    estimate: float
    se: float
    df: int


def _finite(v: object) -> bool:
    """A usable metric value: a real number (numpy's too), not a flag, not NaN or ±inf."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _paired_cells(cells: Sequence[Mapping], a: str, b: str, metric: str
                  ) -> dict[tuple, tuple[float, float]]:
    """(seed, fold) → (A, B) over the cells both arms have with a finite metric."""
    ca = {(c.get("seed"), c.get("fold")): c[metric] for c in cells
          if c.get("arm") == a and _finite(c.get(metric))}
    cb = {(c.get("seed"), c.get("fold")): c[metric] for c in cells
          if c.get("arm") == b and _finite(c.get(metric))}
    return {k: (float(ca[k]), float(cb[k])) for k in ca.keys() & cb.keys()}


def seed_units(pairs: Mapping[tuple, tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Per seed, the mean of A and of B over the folds both arms finished (seed order)."""
    by_seed: dict = {}
    for (seed, _fold), ab in pairs.items():
        by_seed.setdefault(seed, []).append(ab)
    seeds = sorted(by_seed, key=lambda s: (s is None, s))
    a = [statistics.fmean(x for x, _ in by_seed[s]) for s in seeds]
    b = [statistics.fmean(y for _, y in by_seed[s]) for s in seeds]
    return a, b


def corrected_se(d: Sequence[float], k: int) -> float:
    """Standard error of mean(d) over r × K cross-validation differences, corrected for the
    overlap of the training sets (Nadeau & Bengio 2003; Bouckaert & Frank 2004):
    sqrt(var(d) · (1/n + n_test/n_train)), n_test/n_train = 1/(K − 1) for K-fold."""
    if k < 2:
        raise ValueError("the corrected resampled t needs K ≥ 2 folds")
    return math.sqrt(statistics.variance(d) * (1 / len(d) + 1 / (k - 1)))


def _k(pairs: Mapping[tuple, tuple[float, float]], folds: int | None) -> int:
    """K of the K-fold split: the plan's when known (a partial study has not paired every
    fold yet), else the number of folds the pairs cover."""
    return folds if folds is not None else len({f for _, f in pairs})


def _test(claim: Difference | Equivalence, pairs: Mapping[tuple, tuple[float, float]],
          folds: int | None = None) -> _Test:
    if claim.unit == "seed":
        a, b = seed_units(pairs)
        d = [x - y for x, y in zip(a, b, strict=True)]
        return _Test(tuple(a), tuple(b), statistics.fmean(d),
                     statistics.stdev(d) / math.sqrt(len(d)), len(d) - 1)
    keys = sorted(pairs, key=lambda k: (k[0] is None, k[0], k[1]))
    if any(f is None for _, f in keys):
        raise ValueError(f"{claim.text()}: unit 'fold' needs K-fold cells (fold is None)")
    d = [pairs[k][0] - pairs[k][1] for k in keys]
    return _Test(tuple(pairs[k][0] for k in keys), tuple(pairs[k][1] for k in keys),
                 statistics.fmean(d), corrected_se(d, _k(pairs, folds)), len(d) - 1)


def _interval(t: _Test, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import t as student

    half = float(student.ppf(0.5 + level / 2, t.df)) * t.se
    return (t.estimate - half, t.estimate + half)


def _p_two_sided(t: _Test, shift: float = 0.0) -> float:
    """Two-sided p of H0: mean(d) = shift."""
    from scipy.stats import t as student

    return float(2 * student.sf(abs(t.estimate - shift) / t.se, t.df))


def _p_tost(claim: Equivalence, t: _Test) -> float:
    """p of the two one-sided tests of |mean(d)| < margin (the larger of the two p's)."""
    if claim.unit == "seed":
        from statsmodels.stats.weightstats import ttost_paired

        return float(ttost_paired(np.asarray(t.a), np.asarray(t.b), -claim.margin,
                                  claim.margin)[0])
    from scipy.stats import t as student  # the same test on the corrected se

    lower = student.sf((t.estimate + claim.margin) / t.se, t.df)
    upper = student.cdf((t.estimate - claim.margin) / t.se, t.df)
    return float(max(lower, upper))


@dataclass(frozen=True)
class Estimate:
    """A descriptive paired difference A − B on the judge's units (no claim, no decision):
    the tables and figures of a study show these, so they agree with its verdicts."""

    estimate: float
    sd: float | None
    n: int
    interval: tuple[float, float] | None
    """The plain 95 % interval; None with fewer than 2 units."""


def estimate(cells: Sequence[Mapping], a: str, b: str, metric: str, unit: Unit = "seed",
             folds: int | None = None) -> Estimate | None:
    """A − B on ``metric`` over the units both arms finished, as a claim on that unit would
    compute it (seed means, or the corrected fold interval with K = ``folds``, default the
    folds the pairs cover); None when no unit is shared."""
    pairs = _paired_cells(cells, a, b, metric)
    if not pairs:
        return None
    if unit == "fold" and (any(f is None for _, f in pairs) or _k(pairs, folds) < 2):
        unit = "seed"  # no K-fold split to correct for: every seed is one unit
    probe = Difference(a, b, metric, unit=unit)
    n = len({s for s, _ in pairs}) if unit == "seed" else len(pairs)
    if n < 2:  # one unit: its mean difference (a seed's folds averaged), no interval
        return Estimate(statistics.fmean(x - y for x, y in pairs.values()), None, n, None)
    t = _test(probe, pairs, folds)
    d = [x - y for x, y in zip(t.a, t.b, strict=True)]
    return Estimate(t.estimate, statistics.stdev(d), n, _interval(t))


def unit_for(seeds: int, folds: int | None) -> Unit:
    """The unit of analysis of a study with ``seeds`` seeds and K = ``folds`` (None: a fixed
    split): seeds when there are at least :data:`MIN_UNITS` of them (each seed's folds averaged
    first: seeds are independent replicates); else, with K-fold, the folds with the corrected
    resampled interval (Nadeau & Bengio 2003); else seeds (and too few of them settle
    nothing)."""
    if seeds >= MIN_UNITS or not folds:
        return "seed"
    return "fold"


def with_unit(claim: Claim, unit: Unit) -> Claim:
    """The claim judged on ``unit`` (a conjunction's parts too)."""
    if isinstance(claim, AllOf):
        return replace(claim, claims=tuple(with_unit(c, unit) for c in claim.claims))
    return replace(claim, unit=unit)


# ---------------------------------------------------------------- the judge


def _converged(cells: Sequence[Mapping], arms: Iterable[str], metrics: Iterable[str]
               ) -> tuple[int, int]:
    arms, metrics = set(arms), tuple(metrics)
    used = [c for c in cells if c.get("arm") in arms and any(_finite(c.get(m)) for m in metrics)]
    return sum(c.get("converged") is True for c in used), len(used)


def _leaf(claim: Difference | Equivalence, cells: Sequence[Mapping],
          folds: int | None = None) -> Decision:
    """A leaf's decision before Holm: outcome from the raw p (revised once the family is
    known), or not settled for a reason that no p-value changes."""
    conv = _converged(cells, claim.arms, claim.metrics)
    pairs = _paired_cells(cells, claim.a, claim.b, claim.metric)
    if claim.unit == "fold" and any(f is None for _, f in pairs):
        raise ValueError(f"{claim.text()}: unit 'fold' needs K-fold cells (fold is None)")
    n = len({s for s, _ in pairs}) if claim.unit == "seed" else len(pairs)
    early = None
    if claim.needs_converged and conv[0] < conv[1]:
        early = f"under-trained ({conv[1] - conv[0]} of {conv[1]} cells)"
    elif n < MIN_UNITS or (claim.unit == "fold" and _k(pairs, folds) < 2):
        early = "n"
    if early is not None:  # not tested; the numbers are shown, never decided on
        est = (estimate(cells, claim.a, claim.b, claim.metric, claim.unit, folds)
               if pairs else None)
        return Decision(claim, NOT_SETTLED, early, n=n, converged=conv,
                        estimate=None if est is None else est.estimate,
                        interval=None if est is None else est.interval)
    t = _test(claim, pairs, folds)
    d = [x - y for x, y in zip(t.a, t.b, strict=True)]
    scale = max(max(abs(v) for v in t.a + t.b), 1e-300)
    if statistics.stdev(d) <= DEGENERATE_SD * scale:
        return Decision(claim, NOT_SETTLED, "degenerate", estimate=t.estimate, n=n,
                        converged=conv)
    if isinstance(claim, Equivalence) and abs(t.estimate) >= claim.margin:
        p = _p_two_sided(t, math.copysign(claim.margin, t.estimate))
    elif isinstance(claim, Equivalence):
        p = _p_tost(claim, t)
    else:
        p = _p_two_sided(t)
    return _settle(Decision(claim, NOT_SETTLED, None, t.estimate, _interval(t), p, p, n, conv))


def _settle(dec: Decision) -> Decision:
    """Outcome of a leaf from its (adjusted) p."""
    claim, est, p = dec.claim, dec.estimate, dec.p_adjusted
    assert est is not None and p is not None
    if isinstance(claim, Equivalence):
        if p < ALPHA:
            return replace(dec, outcome=AGREES if abs(est) < claim.margin else CONTRADICTS,
                           reason=None)
        return replace(dec, outcome=NOT_SETTLED, reason="margin")
    if p < ALPHA and est != 0:
        claimed = (est > 0) == (claim.expect == ">")
        return replace(dec, outcome=AGREES if claimed else CONTRADICTS, reason=None)
    return replace(dec, outcome=NOT_SETTLED, reason="interval")


def leaves(claim: Claim) -> list[Difference | Equivalence]:
    """The tests a claim is judged by: itself, or its conjunction's parts, flattened."""
    if isinstance(claim, (Difference, Equivalence)):
        return [claim]
    return [leaf for part in claim.parts for leaf in leaves(part)]


def _combine(claim: Claim, decided: dict[int, Decision], counter: list[int],
             cells: Sequence[Mapping]) -> Decision:
    """Rebuild the claim's decision from its leaves' decisions (taken in leaves() order)."""
    if isinstance(claim, (Difference, Equivalence)):
        dec = decided[counter[0]]
        counter[0] += 1
        return replace(dec, claim=claim)
    parts = tuple(_combine(p, decided, counter, cells) for p in claim.parts)
    conv = _converged(cells, claim.arms, claim.metrics)
    ps = [p.p for p in parts]
    pas = [p.p_adjusted for p in parts]
    common = dict(p=max(ps) if None not in ps else None,
                  p_adjusted=max(pas) if None not in pas else None,
                  n=min(p.n for p in parts), converged=conv, parts=parts)
    if any(p.outcome == CONTRADICTS for p in parts):
        return Decision(claim, CONTRADICTS, **common)
    if all(p.outcome == AGREES for p in parts):
        return Decision(claim, AGREES, **common)
    first = next(p for p in parts if p.outcome == NOT_SETTLED)
    return Decision(claim, NOT_SETTLED, first.reason, **common)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (statsmodels' ``multipletests``, method "holm")."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(pvalues), alpha=ALPHA, method="holm")[1]]


def judge(claims: Sequence[Claim], cells: Sequence[Mapping], folds: int | None = None,
          not_run: Sequence[Claim] = ()) -> list[Decision]:
    """Decide every claim on the cell records, one :class:`Decision` per claim, in order.

    Cells are dicts with ``arm``, ``seed``, ``fold`` (None without K-fold), metric values, and
    optionally ``converged`` (only ``True`` counts as converged). ``folds``: K of the K-fold
    split, for the corrected fold interval (default: the folds the paired cells cover). The
    tests of the primary claims form one Holm family; exploratory claims are judged alone.
    ``not_run``: the study's claims whose arms this run did not train (not decided); their
    primary tests stay in the family at p = 1, so training fewer arms never loosens Holm."""
    flat = [(i, leaf) for i, claim in enumerate(claims) for leaf in leaves(claim)]
    raw = [_leaf(leaf, cells, folds) for _, leaf in flat]
    family = [j for j, d in enumerate(raw) if d.claim.primary and d.p is not None]
    absent = [1.0 for c in not_run for leaf in leaves(c) if leaf.primary]
    adjusted = holm([raw[j].p for j in family] + absent)[:len(family)]
    for j, pa in zip(family, adjusted, strict=True):
        raw[j] = _settle(replace(raw[j], p_adjusted=pa))
    out = []
    for i, claim in enumerate(claims):
        mine = {k: raw[j] for k, j in enumerate(j for j, (ci, _) in enumerate(flat) if ci == i)}
        out.append(_combine(claim, mine, [0], cells))
    return out
