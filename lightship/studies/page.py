"""A study's HTML page (``STUDY_DIR/report.html``): the claims first, then the arms and cells.

Built from study.json alone (plus the PNGs and cell folders beside it), so it is testable from a
dict without training. It leads with the scoreboard (one row per judged claim: verdict,
estimate and interval, unit and n, converged cells, primary or exploratory, Holm-adjusted p),
then a forest plot of the paired differences (one panel per metric, an equivalence's margin as
a band), then each arm's learning curves; the arms table and one run report per arm follow.
Self-contained like the run report: every image is an inline base64 PNG.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

OUTCOME_COLORS = {"agrees": "#1a7f37", "contradicts": "#cf222e", "not settled": "#6e7781"}
MARGIN_COLOR = "#0969da"
REASONS = {
    "interval": "the 95 % interval (Holm-adjusted decision) does not lie on one side of 0",
    "margin": "the equivalence test neither passed at the margin nor put the difference "
              "beyond it",
    "n": "fewer than 3 paired units",
    "degenerate": "the paired differences have no spread: collapsed nets, not certainty",
    "under-trained": "the claim needs converged cells and some are not",
}
NO_CLAIMS = "no claims judged (study made before claims were data)"

CSS = """
.scoreboard td:first-child{min-width:16em}
.scoreboard td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
.scoreboard tr.exploratory td{background:#f6f8fa;color:#57606a;font-style:italic}
.tag{border:1px solid #8c959f;border-radius:10px;padding:0 7px;font-size:.8em;
font-style:normal;white-space:nowrap}
.scoreboard tr.part td{font-size:.85em;color:#57606a;border-top-style:dashed}
.scoreboard tr.part .badge{opacity:.8}
.arm-curve h3{margin:14px 0 0}
"""


# ---------------------------------------------------------------- reading study.json


def metric_names(study_json: Mapping[str, Any]) -> dict[str, str]:
    """Display names of metrics: the shared ones, the study's own, then study.json's."""
    from lightship.errors import UserError
    from lightship.studies import get_study
    from lightship.studies.analysis import METRIC_NAMES

    names = dict(METRIC_NAMES)
    try:
        names.update(get_study(str(study_json.get("study", ""))).metric_names)
    except UserError:  # a study this version does not know: its study.json still renders
        pass
    names.update(study_json.get("metric_names") or {})
    return names


def ordered(claims: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Primary claims first, then exploratory ones, each in the study's order."""
    return sorted(claims, key=lambda c: not c.get("primary", True))


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) \
        and math.isfinite(x) else None


def _g4(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:+.4g}"


def estimate_text(claim: Mapping[str, Any]) -> str:
    """``+1.234 [+0.5678, +1.9]``: the estimate and its 95 % interval, 4 significant digits."""
    est, ci = claim.get("estimate"), claim.get("interval")
    if _num(est) is None:
        return "— (see parts)" if claim.get("parts") else "—"
    if not ci:
        return f"{_g4(est)} (no interval)"
    return f"{_g4(est)} [{_g4(ci[0])}, {_g4(ci[1])}]"


def verdict_text(claim: Mapping[str, Any]) -> str:
    reason = claim.get("reason")
    return claim["outcome"] + (f": {reason}" if reason else "")


def _metrics_text(claim: Mapping[str, Any], names: Mapping[str, str]) -> str:
    text = ", ".join(names.get(m, m) for m in claim.get("metrics", []))
    if _num(claim.get("margin")) is not None:
        text += f" (margin ±{claim['margin']:.4g})"
    return text


def scoreboard_rows(claims: Sequence[Mapping[str, Any]],
                    names: Mapping[str, str]) -> list[dict[str, str]]:
    """One row per claim, primary first: the scoreboard's cells as plain text."""
    rows = []
    for c in ordered(claims):
        k, n = (list(c.get("converged") or [0, 0]) + [0, 0])[:2]
        p_adj = _num(c.get("p_adjusted"))
        rows.append({"claim": c["label"], "verdict": verdict_text(c),
                     "estimate [95 % CI]": estimate_text(c),
                     "metric": _metrics_text(c, names),
                     "unit, n": f"{c.get('unit', '?')}, n={c.get('n', 0)}",
                     "converged": f"{k}/{n}",
                     "family": "primary" if c.get("primary", True) else "exploratory",
                     "p_adj": "—" if p_adj is None else f"{p_adj:.3g}"})
    return rows


# ---------------------------------------------------------------- the scoreboard


def _badge(claim: Mapping[str, Any]) -> str:
    color = OUTCOME_COLORS.get(claim["outcome"], "#57606a")
    reason = str(claim.get("reason") or "")
    why = REASONS.get(reason.split(" (")[0], "")
    title = f" title='{html.escape(why, quote=True)}'" if why else ""
    return (f"<span class='badge' style='background:{color}'{title}>"
            f"{html.escape(verdict_text(claim))}</span>")


def _row(c: Mapping[str, Any], names: Mapping[str, str], depth: int = 0) -> str:
    """A claim's row, then its parts' rows (a trend's steps, a conjunction's claims) indented
    under it."""
    r = scoreboard_rows([c], names)[0]
    explo = not c.get("primary", True)
    label = html.escape(r["claim"])
    if depth:
        label = f"<span style='padding-left:{depth - 1}em'>↳ {label}</span>"
    family = "" if depth else ("<span class='tag'>exploratory</span>" if explo else "primary")
    cells = [(label, ""), (_badge(c), ""), (html.escape(r["estimate [95 % CI]"]), "num"),
             (html.escape(r["metric"]), ""), (html.escape(r["unit, n"]), "num"),
             (html.escape(r["converged"]), "num"), (family, ""), (html.escape(r["p_adj"]), "num")]
    tds = "".join(f"<td class='{k}'>{v}</td>" if k else f"<td>{v}</td>" for v, k in cells)
    cls = ("part " if depth else "") + ("exploratory" if explo else "primary")
    return f"<tr class='{cls}'>{tds}</tr>" + "".join(_row(p, names, depth + 1)
                                                   for p in c.get("parts") or [])


def scoreboard(claims: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """The scoreboard table: one row per claim, primary first, exploratory rows marked; a
    trend's or conjunction's parts in smaller rows under it."""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in scoreboard_rows(claims, names)[0])
    body = "".join(_row(c, names) for c in ordered(claims))
    return (f"<table class='scoreboard'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _reasons_note() -> str:
    items = "; ".join(f"<i>{html.escape(k)}</i>: {html.escape(v)}" for k, v in REASONS.items())
    return ("<p class='meta'>Estimate: mean paired difference A − B over the unit (seed: a "
            "seed's folds averaged first; fold: the corrected resampled t), with its plain 95 % "
            "interval. Decisions use Holm-adjusted p over the primary claims at 0.05; "
            "exploratory claims are judged alone. Not settled because — " + items + ".</p>")


# ---------------------------------------------------------------- the forest plot


def forest_rows(claims: Sequence[Mapping[str, Any]]
                ) -> dict[str, list[tuple[str, Mapping[str, Any] | None]]]:
    """Per metric, the forest plot's rows top to bottom: (label, leaf decision) for each
    difference or equivalence; a trend's or conjunction's parts come indented under a header
    row (label, None) of their parent, repeated in every panel that holds one of its parts."""
    panels: dict[str, list[tuple[str, Mapping[str, Any] | None]]] = {}
    shown: dict[str, set[int]] = {}

    def add(c: Mapping[str, Any], parents: list[Mapping[str, Any]]) -> None:
        if c.get("parts"):
            for p in c["parts"]:
                add(p, [*parents, c])
            return
        if c["kind"] not in ("difference", "equivalence") or not c.get("metrics"):
            return
        metric = c["metrics"][0]
        rows, seen = panels.setdefault(metric, []), shown.setdefault(metric, set())
        for depth, parent in enumerate(parents):
            if id(parent) not in seen:
                seen.add(id(parent))
                rows.append((_row_label(parent, depth), None))
        rows.append((_row_label(c, len(parents)), c))

    for c in ordered(claims):
        add(c, [])
    return panels


def _row_label(c: Mapping[str, Any], depth: int, width: int = 70) -> str:
    label = c["label"] if len(c["label"]) <= width else c["label"][:width - 1] + "…"
    if depth == 0 and not c.get("primary", True):
        label += " (exploratory)"
    return ("· " * (depth - 1) + "↳ " if depth else "") + label


def forest_figure(claims: Sequence[Mapping[str, Any]], names: Mapping[str, str]):
    """Paired differences A − B with their 95 % intervals, one panel per metric, a line at 0,
    each equivalence's ±margin a shaded band on its row (a Rectangle patch, gid ``margin``),
    points coloured by outcome. None when no claim has a leaf to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    panels = forest_rows(claims)
    if not panels:
        return None
    sizes = [len(rows) for rows in panels.values()]
    fig = Figure(figsize=(11, sum(0.3 * n + 1.1 for n in sizes)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": sizes})
    for ax, (metric, rows) in zip(axes[:, 0], panels.items(), strict=True):
        _forest_panel(ax, rows, Rectangle)
        ax.set_title(names.get(metric, metric), fontsize=10, loc="left")
        ax.set_xlabel(f"A − B on {names.get(metric, metric)} (paired), 95 % interval",
                      fontsize=9)
    handles = [Line2D([], [], color=c, marker="o", ls="", label=k)
               for k, c in OUTCOME_COLORS.items()]
    if any(c and c["kind"] == "equivalence" for rows in panels.values() for _, c in rows):
        handles.append(Patch(color=MARGIN_COLOR, alpha=0.15, label="equivalence margin"))
    fig.legend(handles=handles, fontsize=8, loc="outside upper right", ncols=len(handles))
    return fig


def _forest_panel(ax, rows: list[tuple[str, Mapping[str, Any] | None]], rectangle) -> None:
    ax.grid(True, axis="x", alpha=0.3)
    ax.axvline(0, color="0.3", lw=1)
    for y, (_, c) in enumerate(rows):
        if c is None:
            continue
        margin = _num(c.get("margin"))
        if c["kind"] == "equivalence" and margin is not None:
            ax.add_patch(rectangle((-margin, y - 0.4), 2 * margin, 0.8, color=MARGIN_COLOR,
                                   alpha=0.15, lw=0, gid="margin"))
        color = OUTCOME_COLORS.get(c["outcome"], "#57606a")
        est, ci = _num(c.get("estimate")), c.get("interval")
        if est is not None and ci:
            ax.errorbar([est], [y], xerr=[[est - ci[0]], [ci[1] - est]], fmt="o",
                        color=color, capsize=3, ms=5)
        elif est is not None:  # degenerate: a point without an interval, drawn hollow
            ax.plot([est], [y], "o", mfc="white", color=color, ms=6)
        else:
            ax.annotate(f"no estimate: {c.get('reason') or '?'}", (0, y), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=8, color=color)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    for tick, (_, c) in zip(ax.get_yticklabels(), rows, strict=True):
        if c is None:
            tick.set_fontweight("bold")
        elif not c.get("primary", True):
            tick.set_fontstyle("italic")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top


# ---------------------------------------------------------------- the page


def _png_file(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _header(study_json: Mapping[str, Any]) -> list[str]:
    s = study_json
    title = f"Study {s.get('study', '?')}: {s.get('title', '')}".rstrip(": ")
    split = f"{s['folds']}-fold" if s.get("folds") else "own test split"
    seeds = s.get("seeds") or []
    meta = " · ".join(html.escape(x) for x in (
        str(s.get("paper") or ""), f"budget {s.get('budget', '?')}",
        f"data {s.get('data', '?')} ({split})", f"{len(seeds)} seed(s)",
        f"{s.get('cells_done', '?')}/{s.get('cells_total', '?')} cells",
        f"precision {s.get('precision') or 'not pinned'}",
        f"generated {datetime.now():%Y-%m-%d %H:%M}") if x)
    out = [f"<h1>{html.escape(title)}</h1>", f"<p class='meta'>{meta}</p>"]
    if s.get("command"):
        out.append(f"<p class='meta'><code>{html.escape(str(s['command']))}</code></p>")
    if s.get("budget") == "quick":
        out.append("<p class='suggest'><b>Quick budget: this checks the machinery, the "
                   "numbers do not test the claim.</b></p>")
    return out


def _claims_sections(study_json: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    claims = study_json.get("claims")
    out = ["<h2 id='scoreboard'>Scoreboard</h2>"]
    if claims is None:
        lines = "".join(f"<li>{html.escape(str(v))}</li>"
                        for v in study_json.get("verdicts") or [])
        return [*out, f"<p>{NO_CLAIMS}.</p>",
                f"<p class='meta'>The study's own verdict lines:</p><ul>{lines}</ul>"
                if lines else ""]
    not_run = study_json.get("not_run") or []
    skipped = ("<p class='meta'>Not run (their arms were not trained in this run; name them "
               "with --arms): " + "; ".join(html.escape(str(c)) for c in not_run) + "</p>"
               if not_run else "")
    if not claims:
        return [*out, "<p>no claim of the study could be judged on the arms this run trained."
                "</p>", skipped]
    out += [scoreboard(claims, names), skipped, _reasons_note(),
            "<h2 id='forest'>Forest plot</h2>"]
    from lightship.report.html import _png

    fig = forest_figure(claims, names)
    if fig is None:
        return [*out, "<p>no difference or equivalence to draw.</p>"]
    return [*out, "<p class='meta'>One row per difference or equivalence (a trend's or a "
            "conjunction's parts indented under it), one panel per metric; point: the mean "
            "paired difference, bar: its 95 % interval, hollow: no interval (degenerate), "
            "shaded: an equivalence's ±margin; colour: the outcome.</p>",
            f"<img alt='forest plot of the claims' src='{_png(fig)}'>"]


def _curves_sections(study_json: Mapping[str, Any], study_dir: Path) -> list[str]:
    out = ["<h2 id='curves'>Learning curves per arm</h2>",
           "<p class='meta'>train loss and test top-1 per epoch: thin per cell, bold mean.</p>"]
    for name, arm in (study_json.get("arms") or {}).items():
        label = html.escape(str(arm.get("label", name)))
        png = study_dir / "curves" / f"{name}.png"
        body = (f"<img alt='learning curves of {label}' src='{_png_file(png)}'>"
                if png.is_file() else "<p class='meta'>no finished cell yet.</p>")
        out.append(f"<div class='arm-curve'><h3>{label}</h3>{body}</div>")
    figures = sorted(p for p in study_dir.glob("*.png") if p.is_file())
    if figures:
        out.append("<h2>The study's figures</h2>")
        out += [f"<img alt='{html.escape(p.name, quote=True)}' src='{_png_file(p)}'>"
                for p in figures]
    return out


def _arms_table(study_json: Mapping[str, Any]) -> list[str]:
    from lightship.report.html import _table
    from lightship.studies.stats import MeanStd

    def stat(a: Mapping[str, Any], key: str, fmt: str = ".2f") -> str:
        d = a.get(key)
        return MeanStd(**d).text(fmt) if isinstance(d, dict) else "—"

    rows = []
    for name, a in (study_json.get("arms") or {}).items():
        failed = f" ({a['failed']} failed)" if a.get("failed") else ""
        verdicts = ", ".join(f"{k} ×{v}" if v > 1 else k
                             for k, v in (a.get("verdicts") or {}).items()) or "—"
        rows.append({"arm": str(a.get("label", name)),
                     "params": "—" if a.get("params") is None else f"{a['params']:,}",
                     "test top-1 (%)": stat(a, "test_top1"),
                     "train CE": stat(a, "train_ce", ".4f"),
                     "train top-1 (%)": stat(a, "train_top1"),
                     "cells": f"{a.get('cells', 0)}/{a.get('planned', '?')}{failed}",
                     "verdicts": verdicts})
    if not rows:
        return []
    return ["<h2 id='arms'>Arms</h2>", _table(rows, "arms"),
            "<p class='meta'>mean ± std over finished cells (seed × fold).</p>"]


def _cell_sections(study_json: Mapping[str, Any], study_dir: Path) -> list[str]:
    """One finished cell per arm, all at the first (seed, fold) that has one, as run reports."""
    from lightship.errors import UserError
    from lightship.report.html import distinct_names, load_run, run_sections

    first: dict[str, str] = {}
    cells = [c for c in study_json.get("cells") or [] if c.get("status") == "finished"]
    for c in sorted(cells, key=lambda c: (c.get("seed") or 0, c.get("fold") or 0)):
        first.setdefault(c["arm"], c["run"])
    if not first:
        return []
    key = Path(next(iter(first.values()))).name
    runs = []
    for rel in first.values():
        if Path(rel).name == key:
            try:
                runs.append(load_run(study_dir / rel))
            except UserError:  # a cell folder moved or torn: the page still renders
                continue
    if not runs:
        return []
    distinct_names(runs)
    return [f"<h2 id='cells'>One cell per arm (cell {html.escape(key)})</h2>",
            *run_sections(runs, level=3)]


def render_study_html(study_json: dict, study_dir: Path) -> str:
    """The study's page as one self-contained HTML string: scoreboard, forest plot, learning
    curves per arm, the study's figures, the arms table, one run report per arm."""
    from lightship.report.html import CSS as BASE_CSS

    study_dir = Path(study_dir)
    names = metric_names(study_json)
    title = f"lightship study: {study_json.get('study', study_dir.name)}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{BASE_CSS}{CSS}</style></head><body>",
             *_header(study_json), *_claims_sections(study_json, names),
             *_curves_sections(study_json, study_dir), *_arms_table(study_json),
             *_cell_sections(study_json, study_dir), "</body></html>\n"]
    return "\n".join(p for p in parts if p)


def write_study_page(study_dir: Path, output: Path | None = None) -> Path:
    """Render ``study_dir``'s study.json into ``output`` (default STUDY_DIR/report.html)."""
    from lightship.errors import UserError
    from lightship.fileio import atomic_write_text
    from lightship.report.html import _check_output

    output = Path(output) if output is not None else Path(study_dir) / "report.html"
    _check_output(output)
    study_json = json.loads((Path(study_dir) / "study.json").read_text())
    try:
        atomic_write_text(output, render_study_html(study_json, Path(study_dir)))
    except OSError as exc:
        raise UserError(f"cannot write {output} ({exc.strerror}); choose another -o") from None
    return output
