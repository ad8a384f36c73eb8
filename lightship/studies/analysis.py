"""Read a study's cells, have the judge decide its claims, write study.json, study.md, figures.

Works on a finished study and on a partial one (``lightship report STUDY_DIR`` while it runs or
after it was killed): statistics use the finished cells, comparisons the cells both arms share,
and the verdicts say how many cells are still missing. Every verdict is a
:func:`lightship.judge.judge` decision on the study's claims; every paired difference in a table
or figure is a :func:`lightship.judge.estimate` on the same unit of analysis.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from lightship.diagnose.twin import twin_tolerance
from lightship.judge import Decision, estimate, judge, unit_for, with_unit
from lightship.runs import parse_records, write_json
from lightship.studies.base import Arm, Comparison
from lightship.studies.cells import cell_converged
from lightship.studies.runner import Cell, Plan, twin_rel
from lightship.studies.stats import MeanStd, Paired, mean_std
from lightship.train.precision import cpu_kind

METRIC_NAMES = {"test_top1": "test top-1 (points)", "train_ce": "train CE",
                "train_top1": "train top-1 (points)",
                "gap_top1": "train − test top-1 (points)"}


@dataclass
class ArmStats:
    arm: Arm
    cells: list[dict]
    planned: int
    failed: list[dict] = field(default_factory=list)

    def stat(self, key: str) -> MeanStd:
        return mean_std([c[key] for c in self.cells if c.get(key) is not None])

    @property
    def pooled_top1(self) -> MeanStd:
        """Test top-1 over all test images of each seed (folds pooled: every digit once), mean ±
        std over seeds; only seeds whose folds all finished."""
        by_seed: dict[int, list[dict]] = {}
        for c in self.cells:
            by_seed.setdefault(c["seed"], []).append(c)
        folds = {c["fold"] for c in self.cells}
        vals = []
        for cells in by_seed.values():
            if None in folds or len(cells) == len(folds):
                hits = sum(c["test_top1"] * c["n_test"] for c in cells)
                vals.append(hits / sum(c["n_test"] for c in cells))
        return mean_std(vals)

    @property
    def n_test_pooled(self) -> int:
        seed0 = min((c["seed"] for c in self.cells), default=None)
        return sum(c["n_test"] for c in self.cells if c["seed"] == seed0)

    @property
    def gap_top1(self) -> MeanStd:
        return mean_std([c["train_top1"] - c["test_top1"] for c in self.cells])

    @property
    def verdicts(self) -> Counter:
        return Counter(c.get("verdict_ref") or c.get("verdict") or "?" for c in self.cells)

    @property
    def params(self) -> int | None:
        return self.cells[0]["params"] if self.cells else None


class Analysis:
    """Per-arm statistics and paired comparisons of a study's finished cells."""

    def __init__(self, plan: Plan, records: dict[str, dict], convergence: bool = True) -> None:
        """``convergence``: recompute each finished cell's ``converged`` flag from its run
        folder (False: keep the records' own, for records made up in tests)."""
        self.plan = plan
        self.study, self.budget = plan.study, plan.budget
        self.arm_list = plan.arms
        self.records = records
        self.arms: dict[str, ArmStats] = {}
        for arm in self.arm_list:
            mine = [c for c in plan.cells if c.arm == arm.name]
            recs = [records[c.rel] for c in mine if c.rel in records]
            self.arms[arm.name] = ArmStats(
                arm, [r for r in recs if r.get("status") == "finished"], len(mine),
                [r for r in recs if r.get("status") != "finished"])
        self.n_done = sum(len(a.cells) + len(a.failed) for a in self.arms.values())
        self.n_total = len(plan.cells)
        self.unit = unit_for(len(plan.seeds), plan.folds)
        for a in self.arms.values():
            for c in a.cells:
                if c.get("train_top1") is not None and c.get("test_top1") is not None:
                    c["gap_top1"] = c["train_top1"] - c["test_top1"]
                if convergence:
                    self._convergence(c)
        plan.study.annotate(self)
        self.comparisons = [(c, self.diff(c.a, c.b, c.metric))
                            for c in plan.study.comparisons(plan.budget)
                            if c.a in self.arms and c.b in self.arms]
        self.decisions, self.not_run = self._decide()

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_total

    def arm(self, name: str) -> ArmStats:
        """The arm's statistics; an arm left out with --arms has no cells."""
        return self.arms.get(name) or ArmStats(Arm(name, name, "", {}), [], 0)

    def mean(self, name: str, key: str) -> float | None:
        return self.arm(name).stat(key).mean

    def _convergence(self, c: dict) -> None:
        """The cell's ``converged`` flag by today's convergence test: its ×2 twin's clean train
        CE when the twin was trained (``--confirm``): not converged when the twin lowered it by
        more than max(0.01, 10 %); else the verdict of its run folder."""
        twin = self.plan.out / twin_rel(c["run"]) / "cell.json"
        rec = json.loads(twin.read_text()) if twin.exists() else {}
        if (rec.get("status") == "finished" and rec.get("train_ce") is not None
                and c.get("train_ce") is not None and c.get("verdict") != "diverged"):
            c["twin_ce"] = rec["train_ce"]
            c["converged"] = c["train_ce"] - rec["train_ce"] <= twin_tolerance(c["train_ce"])
            c["converged_by"] = "×2 twin"
        else:
            c["converged"] = cell_converged(self.plan.out / c["run"])
            c["converged_by"] = "verdict"

    @property
    def cells(self) -> list[dict]:
        """The finished cells of every arm (the judge's input)."""
        return [c for a in self.arms.values() for c in a.cells]

    def diff(self, a: str, b: str, metric: str) -> Paired | None:
        """Paired b − a over the units both arms finished, on the study's unit of analysis
        (:func:`lightship.judge.estimate`; None: no shared cell). Descriptive: the verdicts
        are the judge's decisions, not these intervals."""
        est = estimate(self.cells, b, a, metric, self.unit, self.plan.folds)
        if est is None:
            return None
        lo, hi = est.interval if est.interval is not None else (None, None)
        return Paired(est.estimate, est.sd, est.n, lo, hi)

    def _decide(self) -> tuple[list[Decision], list[Any]]:
        """The judge's decisions on the study's claims whose arms this run planned, and the
        claims it did not plan (extra arms not named with --arms)."""
        planned = {a.name for a in self.arm_list}
        claims = [with_unit(c, self.unit) for c in self.study.claims(self.budget, self.unit)]
        run = [c for c in claims if set(c.arms) <= planned]
        not_run = [c for c in claims if c not in run]
        return judge(run, self.cells, self.plan.folds, not_run), not_run

    def verdict_lines(self) -> list[str]:
        """One line per claim (the judge's), then the claims not run, then the study's notes."""
        pending = self.pending_note()
        lines = [d.text() + pending for d in self.decisions]
        lines += [f"not run — {c.text()}: train "
                  f"{','.join(a for a in c.arms if a not in self.arms)} with --arms"
                  for c in self.not_run]
        return lines + [f"note: {n}" for n in self.study.notes(self)]

    def pending_note(self) -> str:
        if self.complete:
            return ""
        return f" (partial: {self.n_done} of {self.n_total} cells)"


# ---------------------------------------------------------------- curves


def eval_curves(root: Path) -> dict[str, list[float]]:
    """Per-epoch eval records of a run folder (the last record of an epoch wins)."""
    by_epoch: dict[int, dict] = {}
    try:
        records = parse_records(root / "metrics.jsonl")
    except OSError:
        records = []
    for r in records:
        if r.get("kind") == "eval":
            by_epoch[int(r["epoch"])] = r
    epochs = sorted(by_epoch)
    keys = ("train_loss", "test_top1", "test_loss")
    out: dict[str, list[float]] = {"epoch": [float(e) for e in epochs]}
    for k in keys:
        out[k] = [float(by_epoch[e].get(k, math.nan)) for e in epochs]
    return out


def mean_curve(curves: list[dict[str, list[float]]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and the mean of ``key`` over the curves that reach each epoch."""
    n = max((len(c["epoch"]) for c in curves), default=0)
    if n == 0:
        return np.array([]), np.array([])
    ys = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        ys[i, :len(c[key])] = c[key]
    with warnings.catch_warnings():  # epochs without a test pass are all-NaN columns
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.arange(1, n + 1, dtype=float), np.nanmean(ys, axis=0)


def arm_curves(res: Analysis, name: str) -> list[dict[str, list[float]]]:
    return [eval_curves(res.plan.out / c["run"]) for c in res.arm(name).cells]


def plot_arm(res: Analysis, name: str):
    """Learning curves of one arm: train loss and test top-1 per epoch, thin per cell, bold
    mean."""
    from lightship.report.html import _figure

    fig, axes = _figure(1, 2, 3.2)
    loss_ax, acc_ax = axes[0]
    curves = arm_curves(res, name)
    for c in curves:
        loss_ax.plot(c["epoch"], c["train_loss"], color="0.7", lw=0.8)
        acc_ax.plot(c["epoch"], c["test_top1"], color="0.7", lw=0.8)
    for ax, key in ((loss_ax, "train_loss"), (acc_ax, "test_top1")):
        x, y = mean_curve(curves, key)
        ax.plot(x, y, color="C0", lw=2, marker="o", ms=3, label=f"mean of {len(curves)} cells")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    loss_ax.set_ylabel("train loss (logged objective)")
    loss_ax.set_yscale("log")
    acc_ax.set_ylabel("test top-1 (%)")
    fig.suptitle(f"{res.study.name}: {res.arm(name).arm.label}")
    return fig


# ---------------------------------------------------------------- outputs


def _fmt_int(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _verdict_text(counts: Counter) -> str:
    return ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in counts.most_common()) or "—"


def _converged_text(cells: list[dict]) -> str:
    """Converged cells of an arm by the convergence test (and how many a ×2 twin decided)."""
    n = sum(c.get("converged") is True for c in cells)
    twins = sum(c.get("converged_by") == "×2 twin" for c in cells)
    return f"{n}/{len(cells)}" + (f" ({twins} decided by ×2 twin)" if twins else "")


def arm_rows(res: Analysis) -> list[dict[str, str]]:
    rows = []
    for a in res.arms.values():
        rows.append({
            "arm": a.arm.label,
            "params": _fmt_int(a.params),
            "test top-1 (%)": a.stat("test_top1").text(),
            "pooled top-1 (%)": a.pooled_top1.text(),
            "train CE": a.stat("train_ce").text(".4f"),
            "train top-1 (%)": a.stat("train_top1").text(),
            "final train loss": a.stat("train_loss").text(".4f"),
            "verdict": _verdict_text(a.verdicts),
            "converged": _converged_text(a.cells),
            "cells": f"{len(a.cells)}/{a.planned}" + (f" ({len(a.failed)} failed)"
                                                      if a.failed else ""),
            "s/cell": a.stat("wall_time_s").text(".0f").split(" ")[0],
        })
    return rows


def _fmt_for(metric: str) -> str:
    return "+.2f" if metric.endswith("top1") else "+.4f"


def comparison_rows(res: Analysis) -> list[dict[str, str]]:
    rows = []
    names = {**METRIC_NAMES, **res.study.metric_names}
    for comp, d in res.comparisons:
        fmt = _fmt_for(comp.metric)
        rows.append({
            "comparison": comp.label, "metric": names.get(comp.metric, comp.metric),
            "Δ (b − a)": "—" if d is None else f"{d.mean:{fmt}}",
            "95 % CI": "—" if d is None or d.lo is None else f"[{d.lo:{fmt}}, {d.hi:{fmt}}]",
            f"n ({res.unit}s)": "0" if d is None else str(d.n),
        })
    return rows


def _effect(d: Decision) -> str:
    """Estimate [95 % interval] of a leaf; of a trend or conjunction, its parts' joined."""
    if d.parts:
        return "; ".join(_effect(p) for p in d.parts)
    if d.estimate is None:
        return "—"
    fmt = _fmt_for(d.claim.metrics[0])
    out = f"{d.estimate:{fmt}}"
    if d.interval is not None:
        out += f" [{d.interval[0]:{fmt}}, {d.interval[1]:{fmt}}]"
    return out


def scoreboard_rows(res: Analysis) -> list[dict[str, str]]:
    """One row per judged claim: the judge's outcome and numbers."""
    names = {**METRIC_NAMES, **res.study.metric_names}
    rows = []
    for d in sorted(res.decisions, key=lambda d: d.exploratory):
        c = d.claim
        metric = "/".join(names.get(m, m) for m in c.metrics)
        effect = _effect(d)
        rows.append({
            "claim": c.text() + (" *(exploratory)*" if d.exploratory else ""),
            "verdict": f"**{d.outcome}**" + (f": {d.reason}" if d.reason else ""),
            "effect [95 % CI]": effect, "metric": metric,
            "unit, n": f"{c.unit}, {d.n}",
            "converged cells": f"{d.converged[0]}/{d.converged[1]}",
            "p (Holm)": "—" if d.p_adjusted is None else f"{d.p_adjusted:.3g}",
        })
    return rows


def md_table(rows: list[dict[str, str]]) -> str:
    """A markdown table of rows (dicts with the same keys); a '|' inside a value is escaped."""
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]).replace("|", "\\|") for h in head) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def to_json(res: Analysis, verdicts: list[str], wall: dict[str, Any]) -> dict[str, Any]:
    plan = res.plan
    arms = {}
    for name, a in res.arms.items():
        arms[name] = {"label": a.arm.label, "preset": a.arm.preset,
                      "overrides": a.arm.overrides, "params": a.params,
                      "cells": len(a.cells), "planned": a.planned, "failed": len(a.failed),
                      **{k: vars(a.stat(k)) for k in ("test_top1", "test_loss", "train_ce",
                                                       "train_top1", "train_loss",
                                                       "wall_time_s")},
                      "pooled_top1": vars(a.pooled_top1), "n_test_pooled": a.n_test_pooled,
                      "gap_top1": vars(a.gap_top1), "verdicts": dict(a.verdicts)}
    comps = [{"a": c.a, "b": c.b, "metric": c.metric, "label": c.label, "unit": res.unit,
              **(d.to_dict() if d is not None else {"n": 0})} for c, d in res.comparisons]
    cells = [res.records[c.rel] for c in plan.cells if c.rel in res.records]
    return {"format": "lightship-study-result-1", "study": res.study.name,
            "title": res.study.title, "paper": res.study.paper, "budget": res.budget.name,
            "budget_note": res.budget.note, "data": plan.data, "folds": plan.folds,
            "seeds": plan.seeds, "epochs": max((c.recipe.train.epochs for c in plan.cells),
                                               default=None),
            "precision": plan.precision, "plan_cpu": plan.cpu, "trained_in": plan.trained_in(),
            "command": plan.command, "complete": res.complete, "cells_done": res.n_done,
            "cells_total": res.n_total, "unit": res.unit,
            "claims": [d.to_dict() for d in res.decisions],
            "not_run": [c.text() for c in res.not_run],
            "metric_names": {**METRIC_NAMES, **res.study.metric_names},
            "arms": arms, "comparisons": comps, "verdicts": verdicts, "cells": cells, **wall}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _wall_line(wall: dict[str, Any]) -> str:
    sessions = wall.get("sessions") or []
    if not sessions:
        return "- wall time: no session of `lightship study` has finished yet"
    parts = [f"{_duration(s['wall_time_s'])} (--jobs {s['jobs']}, load average "
             f"{s['load']['start']} → {s['load']['end']}"
             + (f", {s['cpu']}" if s.get("cpu") else "") + ")" for s in sessions]
    total = sum(s["wall_time_s"] for s in sessions)
    return (f"- wall time {_duration(total)} on {wall.get('cores', '?')} cores, in "
            f"{len(sessions)} session(s): " + "; ".join(parts))


def _precision_line(plan: Plan) -> str:
    if plan.precision is None:
        return "not pinned (the plan predates it): train.precision auto as each machine chose"
    parts = []
    for prec, arms in plan.trained_in().items():
        auto = [a for a in arms if a in plan.auto_arms]
        why = ("their recipes' own" if not auto else
               f"train.precision auto, pinned in plan.json: what auto became on {plan.cpu}")
        parts.append(f"**{prec}** ({', '.join(arms)}: {why})")
    return "; ".join(parts)


def to_markdown(res: Analysis, verdicts: list[str], wall: dict[str, Any],
                figures: list[str]) -> str:
    plan, study = res.plan, res.study
    split = (f"stratified {plan.folds}-fold over all images of {plan.data} (every image tested "
             "once per seed)" if plan.folds else f"{plan.data}'s own test split")
    lines = [f"# Study `{study.name}`: {study.title}", "",
             f"Paper: {study.paper}. Claim: {study.claim}", "",
             "```", plan.command, "```", "",
             f"- budget **{res.budget.name}**: {res.budget.note}",
             f"- data: {split}; seeds {', '.join(map(str, plan.seeds))}; "
             f"{res.n_done}/{res.n_total} cells done",
             f"- precision: {_precision_line(plan)}",
             _wall_line(wall), ""]
    if res.budget.name == "quick":
        lines += ["**Quick budget: this checks the machinery, the numbers do not test the "
                  "claim.**", ""]
    unit = ("seeds: each seed's folds averaged first, Student's paired t over seeds"
            if res.unit == "seed" else
            "folds: the corrected resampled t of Nadeau & Bengio (2003) over seed × fold "
            "differences, because K-fold training sets overlap")
    lines += ["## Scoreboard", "",
              f"Every verdict is the judge's (lightship.judge): unit of analysis {unit}; "
              "Holm over the primary claims; an equivalence needs its TOST at the margin fixed "
              "in the claim; a claim on trained nets needs converged cells (the convergence "
              "test: the ×2 schedule would not lower the clean train CE by more than "
              "max(0.01, 10 %); `--confirm` trains the ×2-schedule twin where the verdict cannot "
              "say). Exploratory claims (extra arms, measurements the paper does not claim) "
              "never count as a verdict.", "",
              md_table(scoreboard_rows(res))]
    lines += ["## Verdicts", ""] + [f"- {v}" for v in verdicts] + [""]
    lines += ["## Arms", "", "Mean ± std over cells (seed × fold). *Pooled top-1*: all test "
              "images of a seed at once (folds pooled), mean ± std over seeds. *Train CE* / "
              "*train top-1*: the final weights on the cell's own training images, eval mode, "
              "no augmentation. *Final train loss*: the logged objective of the last epoch "
              "(augmented; includes label smoothing and mixup where on).", "",
              md_table(arm_rows(res)),
              "## Paired comparisons (descriptive)", "",
              "b − a paired by seed and fold (same data order and test images), on the "
              f"study's unit ({res.unit}s), with the plain 95 % interval; descriptive only, "
              "not corrected for multiplicity: the verdicts are the scoreboard's.", "",
              md_table(comparison_rows(res)), "## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def differences_figure(rows: dict[str, list[tuple[str, Paired | None]]], xlabel: str,
                       title: str, fontsize: int = 8) -> Any:
    """Paired differences with their 95 % intervals, one panel for test top-1 and one for train
    CE: ``rows`` maps each metric to (label, difference) rows; rows without a difference are
    left out."""
    from matplotlib.ticker import AutoLocator

    from lightship.report.html import _figure

    fig, axes = _figure(1, 2, 3.8)
    for ax, metric, unit in ((axes[0][0], "test_top1", "Δ test top-1 (points)"),
                             (axes[0][1], "train_ce", "Δ train CE")):
        shown = [(label, d) for label, d in rows.get(metric, []) if d is not None]
        y = list(range(len(shown)))
        ax.errorbar([d.mean for _, d in shown], y, fmt="o", capsize=3,
                    xerr=[0.0 if d.lo is None else d.mean - d.lo for _, d in shown])
        ax.axvline(0, color="0.5", lw=1)
        ax.set_yticks(y, [label for label, _ in shown], fontsize=fontsize)
        ax.invert_yaxis()
        ax.set_xlabel(f"{unit} {xlabel}, 95 % CI")
        ax.xaxis.set_major_locator(AutoLocator())
    fig.suptitle(title)
    return fig


def reference_verdicts(res: Analysis) -> None:
    """Where the study names a reference arm, judge every other cell against the reference's
    cell of the same seed and fold, as `lightship diagnose --reference` does."""
    ref = res.study.reference_arm(res.budget)
    if ref is None:
        return
    from lightship.diagnose.judge import judge_run
    from lightship.runs import read_records

    refs = {(c["seed"], c["fold"]): c for c in res.arm(ref).cells}
    for name, a in res.arms.items():
        for c in a.cells:
            r = refs.get((c["seed"], c["fold"]))
            if name == ref or r is None:
                continue
            v = judge_run(res.plan.out / c["run"],
                          reference=read_records(res.plan.out / r["run"]))
            c["verdict_ref"] = v.label
            c["verdict_ref_line"] = v.one_line()


def write_outputs(plan: Plan, records: dict[str, dict], wall: dict[str, Any]) -> Analysis:
    """Analyse the cells and write study.json, study.md and the figures into the study folder;
    return the analysis."""
    res = Analysis(plan, records)
    reference_verdicts(res)
    verdicts = res.verdict_lines()
    figures = []
    curves_dir = plan.out / "curves"
    curves_dir.mkdir(exist_ok=True)
    for name, a in res.arms.items():
        if a.cells:
            fig = plot_arm(res, name)
            fig.savefig(curves_dir / f"{name}.png")
            figures.append(f"curves/{name}.png")
    for fname, fig in res.study.plots(res).items():
        fig.savefig(plan.out / fname)
        figures.insert(0, fname)
    write_json(plan.out / "study.json", to_json(res, verdicts, wall))
    from lightship.fileio import atomic_write_text

    atomic_write_text(plan.out / "study.md", to_markdown(res, verdicts, wall, figures))
    return res


SESSION_KEYS = frozenset({"wall_time_s", "load", "cores", "jobs", "executor", "created",
                          "sessions", "command"})
"""study.json keys that say how and when it was run, not what it found."""


def without_session(obj: Any) -> Any:
    """study.json (or any part of it) without :data:`SESSION_KEYS` at any depth: what two runs
    of one study on one machine must agree on, whatever their --jobs or --executor."""
    if isinstance(obj, dict):
        return {k: without_session(v) for k, v in obj.items() if k not in SESSION_KEYS}
    if isinstance(obj, list):
        return [without_session(v) for v in obj]
    return obj


def session_facts(t0: float, load_start: float, jobs: int,
                  executor: str = "local") -> dict[str, Any]:
    """Wall time and machine load of this session (excluded from any equality check)."""
    return {"wall_time_s": round(time.perf_counter() - t0, 1),
            "load": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
            "cores": os.cpu_count(), "cpu": cpu_kind(), "jobs": jobs, "executor": executor,
            "created": datetime.now().isoformat(timespec="seconds")}


def load_records(plan: Plan) -> dict[str, dict]:
    """cell.json of every planned cell that is done."""
    out = {}
    for c in plan.cells:
        path = plan.out / c.rel / "cell.json"
        if path.exists():
            out[c.rel] = json.loads(path.read_text())
    return out


__all__ = ["Analysis", "ArmStats", "Cell", "Comparison", "write_outputs"]
