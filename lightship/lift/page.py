"""lift.md and report.html of a lift folder, from lift.json alone: the leaderboard with
intervals, the race over time, the floors against the teacher, the verdict lines and the time
spent per arm."""

from __future__ import annotations

import html
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightship.fileio import atomic_write_text
from lightship.lift.race import LIGHT, METRIC, TEACHER
from lightship.studies.analysis import md_table

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
td,th{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left}
th{background:#f4f4f4} .win{background:#e7f6e7} .drop{color:#888} img{max-width:100%}
code{background:#f4f4f4;padding:0 0.2em}
"""


def _arm_cells(state: Mapping[str, Any], arm: str) -> list[Mapping[str, Any]]:
    return [c for c in state.get("validation", []) if c.get("arm") == arm]


def _time_per_arm(state: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for info in state.get("cells", {}).values():
        if info.get("wall_s") is not None:
            out[info["arm"]] = out.get(info["arm"], 0.0) + float(info["wall_s"])
    return out


def _status(state: Mapping[str, Any], arm: str) -> str:
    if arm in state.get("not_applicable", {}):
        return f"does not apply: {state['not_applicable'][arm]}"
    if arm in state.get("not_raced", {}):
        return f"not raced: {state['not_raced'][arm]}"
    if arm in state.get("dropped", {}):
        return (f"dropped after {_unit(state, state['dropped'][arm]['after_fold'])} (behind "
                f"{state['dropped'][arm].get('behind', 'the leader')})")
    if arm == LIGHT:
        return "baseline"
    if arm == TEACHER:
        return "teacher (trained on each fold)"
    return "raced to the end"


def unit_name(u: int, folds: int) -> str:
    """Validation unit u = r·K + fold as its cell name s<r>-f<fold> (repetition r of the
    K-fold split)."""
    r, f = divmod(int(u), int(folds))
    return f"s{r}-f{f}"


def _unit(state: Mapping[str, Any], u: int) -> str:
    return unit_name(u, state["options"]["folds"])


def duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _interval(c: Mapping[str, Any] | None) -> str:
    if not c or c.get("estimate") is None:
        return "—"
    iv = c.get("interval")
    return f"{c['estimate']:+.2f}" + (f" [{iv[0]:+.2f}, {iv[1]:+.2f}]" if iv else "")


def leaderboard(state: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per arm: validation top-1, gain over the light net alone with its interval, the
    Holm-adjusted decision, how far it went in the race, the time it took."""
    claims = state.get("claims", {})
    spent = _time_per_arm(state)
    arms = [LIGHT, *claims, *(a for a in (*state.get("not_raced", {}),
                                          *state.get("not_applicable", {})) if a not in claims)]
    if any(c.get("arm") == TEACHER for c in state.get("validation", [])):
        arms.append(TEACHER)
    rows = []
    for arm in dict.fromkeys(arms):
        cells = _arm_cells(state, arm)
        vals = [c[METRIC] for c in cells if c.get(METRIC) is not None]
        c = claims.get(arm)
        rows.append({
            "arm": arm,
            "units": str(len(vals)),
            "val top-1 %": (f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f}"
                            if len(vals) > 1 else (f"{vals[0]:.2f}" if vals else "—")),
            "gain vs light [95 % CI]": _interval(c),
            "Holm p": f"{c['p_adjusted']:.3g}" if c and c.get("p_adjusted") is not None else "—",
            "verdict": (c["outcome"] + (f": {c['reason']}" if c.get("reason") else "")
                        if c else "—"),
            "race": _status(state, arm),
            "train time": f"{spent[arm]:.0f} s" if arm in spent else "—",
        })
    return rows


def summary_lines(state: Mapping[str, Any]) -> list[str]:
    """What the command prints and both pages open with."""
    diag = state.get("diagnosis", {})
    out = [f"case: {diag.get('sentence', '?')}", *diag.get("lines", [])]
    claims = state.get("claims", {})
    w = state.get("winner")
    if w:
        c = claims[w]
        out.append(f"winner: {w} — {_interval(c)} points of validation top-1 over the light net "
                   f"alone (Holm p {c['p_adjusted']:.3g}, {c['n']} validation units)")
    else:
        best = max(claims.values(), key=lambda c: c.get("estimate") or -1e9, default=None)
        extra = (f"; the largest gain, {best['arms'][0]}, {_interval(best)} points "
                 f"({best['outcome']}" + (f": {best['reason']}" if best.get("reason") else "")
                 + ")") if best else ""
        out.append("winner: none — nothing beat the light net alone after the Holm correction"
                   + extra)
    fin = state.get("final", {})
    light = fin.get(f"final/{LIGHT}", {})
    if light.get("test_top1") is not None:
        line = ("test top-1 (one evaluation on the test split): light alone "
                f"{light['test_top1']:.2f} %")
        if w and fin.get(f"final/{w}", {}).get("test_top1") is not None:
            line += f", {w} {fin[f'final/{w}']['test_top1']:.2f} %"
        out.append(line)
    saved = racing_saved(state)
    wall, budget = duration(state.get("wall_s", 0)), duration(state.get("budget_s", 0))
    out.append(f"wall time {wall} of a {budget} "
               f"budget; race: {state.get('stopped', '?')}; {saved}")
    if state.get("exported"):
        out.append("exported: " + ", ".join(state["exported"]))
    return out


def racing_saved(state: Mapping[str, Any]) -> str:
    """Cells the racing rule skipped (dropped arms on the folds raced after their drop) and
    their training time at the arm's own mean cell time."""
    folds_raced = sorted({f for r in state.get("rounds", []) for f in r["folds"]})
    spent = _time_per_arm(state)
    skipped, seconds = 0, 0.0
    for arm, d in state.get("dropped", {}).items():
        n_done = len(_arm_cells(state, arm))
        later = [f for f in folds_raced if f > d["after_fold"]]
        if n_done:
            skipped += len(later)
            seconds += len(later) * spent.get(arm, 0.0) / n_done
    if not state.get("dropped"):
        return "the racing rule dropped no arm"
    return (f"the racing rule dropped {len(state['dropped'])} arm(s) and skipped {skipped} "
            f"cell(s), about {seconds:.0f} s of training")


def to_markdown(state: Mapping[str, Any]) -> str:
    o = state.get("options", {})
    p = state.get("params", {})
    lines = [f"# lift: {o.get('model')} on {o.get('data')}", "",
             f"`{state.get('command', '')}`", "",
             f"- light net: {o.get('model')} ({p.get('light', 0):,} parameters), recipe "
             f"{o.get('recipe')} {' '.join(o.get('overrides') or [])}".rstrip(),
             "- teacher: " + (f"{o.get('teacher') or o.get('teacher_model')} "
                              f"({p.get('teacher', 0):,} parameters)"
                              if p.get("teacher") else "none"),
             f"- validation: up to {o.get('repeats')} repetition(s) of {o.get('folds')} "
             "stratified folds of the training split (unit s<r>-f<k>: repetition r, fold k; the "
             "corrected resampled interval of Nadeau & Bengio); the test split is read once, by "
             "the final runs",
             f"- precision {state.get('precision')} on {state.get('cpu')}; --jobs "
             f"{state.get('jobs')}", "", "## Verdict", ""]
    lines += [f"- {line}" for line in summary_lines(state)]
    lines += ["", "## Leaderboard (validation folds)", "", md_table(leaderboard(state)), "",
              "## The race", ""]
    for i, r in enumerate(state.get("rounds", []), 1):
        lines.append(f"- round {i}: {', '.join(_unit(state, u) for u in r['folds'])}; arms "
                     f"{', '.join(r['arms'])}"
                     + (f"; dropped {', '.join(r['dropped'])}" if r.get("dropped") else ""))
    for arm, d in state.get("dropped", {}).items():
        lines.append(f"- {arm}: {d['line']}")
    lines += ["", "## Decisions", ""]
    lines += [f"- {c['line']}" for c in state.get("claims", {}).values()]
    if state.get("onnx"):
        lines += ["", f"ONNX {state['onnx']}"]
    return "\n".join(lines) + "\n"


def _figures(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    from matplotlib.ticker import AutoLocator

    from lightship.report.html import _figure as _grid
    from lightship.report.html import _png

    def _figure(rows: int, cols: int, height: float):
        fig, axes = _grid(rows, cols, height)
        axes[0][0].xaxis.set_major_locator(AutoLocator())  # not epochs here
        return fig, axes

    figs = []
    claims = state.get("claims", {})
    if claims:
        fig, axes = _figure(1, 1, 0.45 * len(claims) + 1.2)
        ax = axes[0][0]
        for i, c in enumerate(claims.values()):
            if c.get("estimate") is None:
                continue
            iv = c.get("interval") or [c["estimate"], c["estimate"]]
            color = {"agrees": "C2", "contradicts": "C3"}.get(c["outcome"], "0.4")
            ax.errorbar([c["estimate"]], [i], xerr=[[c["estimate"] - iv[0]],
                                                    [iv[1] - c["estimate"]]],
                        fmt="o", capsize=3, color=color)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(claims)), list(claims))
        ax.invert_yaxis()
        ax.set_xlabel("validation top-1 gain over the light net alone, points (95 % CI; green: "
                      "beats it after Holm, red: behind it after Holm)")
        figs.append(("Gains over the light net alone", _png(fig)))
    cells = state.get("cells", {})
    if cells:
        arms = list(dict.fromkeys(v["arm"] for v in cells.values()))
        fig, axes = _figure(1, 1, 0.35 * len(arms) + 1.2)
        ax = axes[0][0]
        for rel, v in cells.items():
            if v.get("wall_s") is None:
                continue
            y = arms.index(v["arm"])
            ax.barh(y, v["wall_s"], left=v["end_s"] - v["wall_s"], height=0.6,
                    color="C1" if rel.startswith("final/") else "C0")
        for arm in state.get("dropped", {}):
            ends = [v["end_s"] for v in cells.values() if v["arm"] == arm]
            if arm in arms and ends:
                ax.plot([max(ends)], [arms.index(arm)], "x", color="C3", ms=9)
        last = max(v["end_s"] for v in cells.values())
        budget = state.get("budget_s", 0)
        if budget <= 1.5 * last:  # else the bars would shrink to a corner
            ax.axvline(budget, color="C3", ls="--", lw=1)
        ax.set_xlim(0, max(last, budget if budget <= 1.5 * last else 0) * 1.03)
        ax.set_yticks(range(len(arms)), arms)
        ax.invert_yaxis()
        ax.set_xlabel(f"wall time, s (bars: each cell's training, orange: final runs; ×: dropped; "
                      f"dashed: the budget, {budget:.0f} s)")
        figs.append(("The race over time", _png(fig)))
    val = [c for c in state.get("validation", []) if c.get("train_ce") is not None]
    if val:
        arms = list(dict.fromkeys(c["arm"] for c in val if c["arm"] != TEACHER))
        fig, axes = _figure(1, 1, 3.2)
        ax = axes[0][0]
        for i, arm in enumerate(arms):
            ys = [c["train_ce"] for c in val if c["arm"] == arm]
            ax.plot([i] * len(ys), ys, "o", color="C0", alpha=0.6)
        t = [c["train_ce"] for c in val if c["arm"] == TEACHER]
        if t:
            ax.axhline(statistics.fmean(t), color="C3", ls="--", lw=1, label="teacher (mean)")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(arms)), arms, rotation=30)
        ax.set_yscale("log")
        ax.set_ylabel("clean train CE of the final weights")
        figs.append(("Floors against the teacher", _png(fig)))
    return figs


def render_html(state: Mapping[str, Any]) -> str:
    esc = html.escape
    o = state.get("options", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lift "
             f"{esc(str(o.get('model')))}</title><style>{CSS}</style></head><body>",
             f"<h1>lift: {esc(str(o.get('model')))} on {esc(str(o.get('data')))}</h1>",
             f"<p><code>{esc(state.get('command', ''))}</code></p><ul>"]
    parts += [f"<li>{esc(line)}</li>" for line in summary_lines(state)]
    parts.append("</ul><h2>Leaderboard (validation folds)</h2><table><tr>")
    rows = leaderboard(state)
    if rows:
        parts.append("".join(f"<th>{esc(h)}</th>" for h in rows[0]) + "</tr>")
        for r in rows:
            cls = " class='win'" if r["arm"] == state.get("winner") else (
                " class='drop'" if r["race"].startswith(("dropped", "not raced", "does not"))
                else "")
            parts.append(f"<tr{cls}>" + "".join(f"<td>{esc(v)}</td>" for v in r.values())
                         + "</tr>")
    parts.append("</table>")
    for title, src in _figures(state):
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='{src}'>")
    parts.append("<h2>Decisions</h2><ul>")
    parts += [f"<li>{esc(c['line'])}</li>" for c in state.get("claims", {}).values()]
    for arm, d in state.get("dropped", {}).items():
        parts.append(f"<li>race: {esc(arm)} dropped — {esc(d['line'])}</li>")
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def write_pages(out: Path, state: Mapping[str, Any]) -> list[str]:
    """Write lift.md and report.html; return the summary lines (for printing)."""
    atomic_write_text(out / "lift.md", to_markdown(state))
    atomic_write_text(out / "report.html", render_html(state))
    return [*summary_lines(state), f"wrote {out / 'lift.md'} and {out / 'report.html'}"]
