"""A self-contained HTML report of run folders: curves, loss terms, LR, verdicts, comparison.

Everything is read from the run folders (``recipe.yaml`` and the raw ``metrics.jsonl``), so a
report works on finished, stopped and resumed runs of any method. Plots are drawn with
matplotlib's Agg canvas (no pyplot, no global backend change) and embedded as base64 PNG data
URIs: the file has no external assets and can be mailed or attached as it is.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from lightship.errors import UserError
from lightship.methods.terms import report_order
from lightship.runs import RunRecords

LABEL_COLORS = {"converged": "#1a7f37", "still improving": "#0969da", "diverged": "#cf222e",
                "underfitting": "#bc4c00", "overfitting": "#8250df", "cannot tell": "#9a6700",
                "too short to judge": "#6e7781"}


@dataclass
class RunData:
    """One run folder as the report needs it."""

    name: str
    root: Path
    recipe: Any
    records: list[dict]
    start: dict
    evals: list[dict]                 # one per epoch, the last record wins (resume)
    steps: list[dict]                 # one per step, the last record wins
    verdict: Any
    summary: dict | None
    resumes: int = 0
    eval_epochs: set[int] = field(default_factory=set)  # epochs with a real test pass

    @property
    def planned_epochs(self) -> int:
        return int(self.recipe.train.epochs)

    @property
    def last_epoch(self) -> int:
        return int(self.evals[-1]["epoch"]) if self.evals else 0

    @property
    def steps_per_epoch(self) -> int | None:
        spe = self.start.get("steps_per_epoch")
        return int(spe) if isinstance(spe, (int, float)) and spe > 0 else None

    def series(self, key: str, test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of an eval key; NaN where missing. Test keys only on epochs that
        had a test pass (the loop repeats the last test numbers on the epochs in between)."""
        x = np.array([r["epoch"] for r in self.evals], dtype=float)
        y = np.array([_num(r.get(key)) if not test or int(r["epoch"]) in self.eval_epochs
                      else math.nan for r in self.evals], dtype=float)
        return x, y

    def step_x(self) -> np.ndarray:
        """Steps in epochs (step / steps per epoch), so runs of different batch sizes align."""
        s = np.array([r["step"] for r in self.steps], dtype=float)
        spe = self.steps_per_epoch
        return s / spe if spe else s

    def terms(self) -> list[str]:
        return in_report_order(RunRecords(self.steps).terms())


def in_report_order(names: Any) -> list[str]:
    """Term names in the order of the term table (CE first), unknown names after, by name."""
    order = report_order()
    return sorted(names, key=lambda k: (order.index(k) if k in order else len(order), k))


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def load_run(run_dir: str | Path, reference: list[dict] | None = None) -> RunData:
    """Read a run folder; a clear :class:`UserError` when it is not one or has no evaluation."""
    from lightship.diagnose import judge_run
    from lightship.recipe import load_saved_recipe
    from lightship.runs import RunPaths, read_records

    paths = RunPaths(Path(run_dir))
    parsed = read_records(paths.root)  # not a folder / not a run / missing or empty metrics
    records, evals, starts = parsed.records, parsed.evals, parsed.starts
    if not evals:
        raise UserError(f"{paths.metrics} has no evaluation record yet (empty or truncated: the "
                        "run has not finished an epoch); report it after its first epoch")
    recipe = load_saved_recipe(paths.recipe)
    every, total = int(recipe.train.eval_every), int(recipe.train.epochs)
    eval_epochs = {int(r["epoch"]) for r in evals
                   if (int(r["epoch"]) % every == 0 or int(r["epoch"]) >= total)
                   and "test_loss" in r}
    summary = None
    if paths.summary.exists():
        try:
            summary = json.loads(paths.summary.read_text())
        except (json.JSONDecodeError, OSError):
            summary = None  # the report needs only the metrics; a torn summary is not fatal
    return RunData(name=paths.root.name, root=paths.root, recipe=recipe, records=records,
                   start=starts[0] if starts else {}, evals=evals,
                   steps=parsed.steps,
                   verdict=judge_run(paths.root, recipe, parsed, reference), summary=summary,
                   resumes=sum(1 for s in starts if s.get("resumed")), eval_epochs=eval_epochs)


# ---------------------------------------------------------------- plots


def _figure(rows: int = 1, cols: int = 2, height: float = 3.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, height * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # the x axis is always epochs
    return fig, axes


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _finite_plot(ax, x, y, **kw) -> bool:
    ok = np.isfinite(y)
    if not ok.any():
        return False
    marker = "o" if ok.sum() <= 30 else None
    ax.plot(np.asarray(x)[ok], np.asarray(y)[ok], marker=marker, markersize=3, **kw)
    return True


def plot_curves(runs: Sequence[RunData]) -> str:
    """Train/test loss and top-1 per epoch: solid = train, dashed = test, one color per run."""
    fig, axes = _figure()
    loss_ax, acc_ax = axes[0]
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        _finite_plot(loss_ax, *run.series("train_loss"), color=color, label=f"{run.name} train")
        if any("train_ce" in r for r in run.evals):
            _finite_plot(loss_ax, *run.series("train_ce"), color=color, linestyle=":",
                         label=f"{run.name} train CE")
        _finite_plot(loss_ax, *run.series("test_loss", test=True), color=color, linestyle="--",
                     label=f"{run.name} test")
        _finite_plot(acc_ax, *run.series("train_top1"), color=color, label=f"{run.name} train")
        _finite_plot(acc_ax, *run.series("test_top1", test=True), color=color, linestyle="--",
                     label=f"{run.name} test")
    loss_ax.set(title="loss per epoch", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="top-1 accuracy per epoch", xlabel="epoch", ylabel="top-1 (%)")
    for ax in (loss_ax, acc_ax):
        ax.legend(fontsize=8)
    return _png(fig)


def term_names(runs: Sequence[RunData]) -> list[str]:
    """``loss`` (the total objective) then every named term any run logged, in method order."""
    return ["loss"] + in_report_order({t for r in runs for t in r.terms()})


def plot_terms(runs: Sequence[RunData]) -> str:
    """The total loss and each named term (CE, KD, hint, …) in its own panel, per step (raw,
    faint) with the per-epoch mean on top."""
    names = term_names(runs)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = _figure(rows, cols, height=3.0)
    colors = _colors(len(runs))
    for ax, name in zip(axes.flat, names, strict=False):
        for run, color in zip(runs, colors, strict=True):
            y = np.array([_num(r.get(name)) for r in run.steps])
            if not np.isfinite(y).any():
                continue
            x = run.step_x()
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            ep = np.array([r.get("epoch", 0) for r in run.steps], dtype=float)
            mid = 0.5 if run.steps_per_epoch else 0.0  # the mean sits mid-epoch, by its steps
            means = [(e - mid, np.mean(y[(ep == e) & np.isfinite(y)])) for e in np.unique(ep)
                     if np.isfinite(y[ep == e]).any()]
            if means:
                ax.plot([e for e, _ in means], [m for _, m in means], color=color, marker="o",
                        markersize=3, label=f"{run.name} (epoch mean)")
        title = "total loss (objective)" if name == "loss" else f"term: {name}"
        ax.set(title=title, xlabel="epoch", ylabel=name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return _png(fig)


def plot_schedule(runs: Sequence[RunData]) -> str:
    """LR per step and the gradient norm per step (log scale)."""
    fig, axes = _figure()
    lr_ax, gn_ax = axes[0]
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        x = run.step_x()
        lr = np.array([_num(r.get("lr")) for r in run.steps])
        gn = np.array([_num(r.get("grad_norm")) for r in run.steps])
        if np.isfinite(lr).any():
            lr_ax.plot(x, lr, color=color, label=run.name)
        ok = np.isfinite(gn) & (gn > 0)
        if ok.any():
            gn_ax.plot(x[ok], gn[ok], color=color, alpha=0.6, linewidth=0.8, label=run.name)
    lr_ax.set(title="learning rate per step", xlabel="epoch", ylabel="lr")
    gn_ax.set(title="gradient norm per step", xlabel="epoch", ylabel="‖g‖")
    if gn_ax.get_lines():
        from matplotlib.ticker import FormatStrFormatter, LogLocator

        gn_ax.set_yscale("log")
        gn_ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 0.2 0.5 1 2 5: readable
        gn_ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        gn_ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    for ax in (lr_ax, gn_ax):
        if ax.get_lines():
            ax.legend(fontsize=8)
    return _png(fig)


def plot_floors(runs: Sequence[RunData], ref: RunData) -> str:
    """Train loss (CE part for knowledge-transfer runs) of each run and the reference, with
    the extrapolated floors (line) and their 95 % intervals (band)."""
    fig, axes = _figure(1, 1, height=4.0)
    ax = axes[0, 0]
    colors = _colors(len(runs) + 1)  # the same color per run as in the other plots
    same = [i for i, r in enumerate(runs) if r.root.resolve() == ref.root.resolve()]
    pairs = [(r, colors[i]) for i, r in enumerate(runs) if i not in same]
    for run, color in [*pairs, (ref, colors[same[0]] if same else colors[len(runs)])]:
        is_ref = run is ref
        label = f"{run.name} (reference)" if is_ref else run.name
        _finite_plot(ax, *run.series(_train_key(run)), color=color, label=f"{label} train",
                     linestyle="-." if is_ref else "-")
        floor, ci = run.verdict.numbers.floor, run.verdict.numbers.floor_ci
        if floor is not None and math.isfinite(floor):
            ax.axhline(floor, color=color, linestyle="--", linewidth=1,
                       label=f"{label} floor {floor:.3g}")
            if ci is not None and all(math.isfinite(c) for c in ci):
                ax.axhspan(ci[0], ci[1], color=color, alpha=0.12)
    ax.set(title="train loss and extrapolated floors (band: 95 % interval)", xlabel="epoch",
           ylabel="train loss")
    ax.legend(fontsize=8)
    return _png(fig)


def _train_key(run: RunData) -> str:
    """The quantity the verdict judges: train_ce for knowledge-transfer runs."""
    return "train_ce" if run.evals and all("train_ce" in r for r in run.evals) else "train_loss"


# ---------------------------------------------------------------- tables


def _fmt(x: Any, spec: str = ".4g", unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:{spec}}{unit}"


def _floor_text(v) -> str:
    n = v.numbers
    if n.floor is not None:
        lo, hi = n.floor_ci or (math.nan, math.nan)
        return f"{_fmt(n.floor)} [{_fmt(lo)}, {_fmt(hi)}]"
    if n.fits is not None:
        return "— (not bent yet)"
    return "— (< 5 evals)"


def _wall(run: RunData) -> float | None:
    times = [_num(r.get("epoch_time")) for r in run.evals]
    times = [t for t in times if math.isfinite(t)]
    if times:
        return sum(times)
    return (run.summary or {}).get("wall_time_s")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _final_train(run: RunData) -> str:
    last = run.evals[-1]
    text = _fmt(_num(last.get("train_loss")))
    if "train_ce" in last:  # knowledge transfer: the objective mixes in KD/hint terms
        text += f" (CE {_fmt(_num(last['train_ce']))})"
    return text


def _params(run: RunData) -> str:
    p = run.start.get("params") or (run.summary or {}).get("params")
    if not isinstance(p, (int, float)):
        return "—"
    return f"{p / 1e6:.2f} M" if p >= 1e5 else f"{int(p):,}"


def comparison_rows(runs: Sequence[RunData]) -> list[dict[str, str]]:
    """One row per run: the numbers of the comparison table, formatted."""
    rows = []
    for run in runs:
        x, top1 = run.series("test_top1", test=True)
        ok = np.isfinite(top1)
        best = f"{top1[ok].max():.2f} (ep {int(x[ok][np.argmax(top1[ok])])})" if ok.any() else "—"
        last = f"{top1[ok][-1]:.2f}" if ok.any() else "—"
        status = ("finished" if run.last_epoch >= run.planned_epochs
                  else f"stopped at {run.last_epoch}/{run.planned_epochs}")
        if run.resumes:
            status += f", resumed {run.resumes}x"
        rows.append({
            "run": run.name, "model": str(run.recipe.model.name),
            "method": str(run.recipe.method.name), "status": status,
            "best top-1 (%)": best, "last top-1 (%)": last,
            "final train loss": _final_train(run),
            "floor [95 % CI]": _floor_text(run.verdict),
            "train time": _duration(_wall(run)), "parameters": _params(run),
            "verdict": run.verdict.label,
        })
    return rows


def _table(rows: Sequence[dict[str, str]], cls: str = "") -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_cell(k, v)}</td>" for k, v in r.items()) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(key: str, value: str) -> str:
    if key == "verdict":
        return _badge(value)
    return html.escape(value)


def _badge(label: str) -> str:
    color = LABEL_COLORS.get(label, "#57606a")
    return f'<span class="badge" style="background:{color}">{html.escape(label)}</span>'


def floor_rows(runs: Sequence[RunData], ref: RunData) -> list[dict[str, str]]:
    """Student-vs-reference floors: levels the capacity test compares, and the ratio."""
    ref_train = ref.series(_train_key(ref))[1]
    ref_best = float(np.nanmin(ref_train)) if np.isfinite(ref_train).any() else math.nan
    rows = [{"run": f"{ref.name} (reference)", "model": str(ref.recipe.model.name),
             "best train loss": _fmt(ref_best), "floor [95 % CI]": _floor_text(ref.verdict),
             "level / reference": "1", "verdict": ref.verdict.label}]
    for run in runs:
        n = run.verdict.numbers
        train = run.series(_train_key(run))[1]
        best = float(np.nanmin(train)) if np.isfinite(train).any() else math.nan
        level = n.light_level if n.light_level is not None else best
        ratio = level / ref_best if ref_best and math.isfinite(ref_best) and ref_best > 0 else None
        rows.append({"run": run.name, "model": str(run.recipe.model.name),
                     "best train loss": _fmt(best), "floor [95 % CI]": _floor_text(run.verdict),
                     "level / reference": _fmt(ratio, ".3g", "x"),
                     "verdict": run.verdict.label})
    return rows


# ---------------------------------------------------------------- the page


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1140px;color:#1f2328;padding:0 16px;line-height:1.45}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;
margin-top:32px}.meta{color:#57606a;font-size:.9em}
table{border-collapse:collapse;font-size:.9em;margin:8px 0;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}tbody tr:nth-child(even){background:#fafbfc}
.badge{color:#fff;border-radius:10px;padding:1px 9px;font-size:.85em;white-space:nowrap}
.verdict{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;margin:10px 0}
.verdict h3,.verdict h4{margin:4px 0}.suggest{background:#fff8c5;padding:4px 8px;border-radius:4px}
img{max-width:100%;display:block;margin:8px 0}
"""


def run_sections(runs: Sequence[RunData], reference: RunData | None = None,
                 level: int = 2) -> list[str]:
    """The report's sections of ``runs`` as HTML fragments: comparison table, verdicts, floors
    against ``reference``, curves, loss terms, LR. ``level`` is their heading level (the study
    page nests them under its own)."""
    h, sub = f"h{level}", f"h{level + 1}"
    parts = [f"<{h}>Comparison</{h}>" + _table(comparison_rows(runs), "compare"),
             "<p class='meta'>top-1 on the test split; final train loss is the last "
             "epoch's mean objective, with its CE part for knowledge-transfer runs (the "
             "verdict and the floor use that CE part); train time sums the epochs' "
             "training time (evaluation excluded).</p>", f"<{h}>Verdicts</{h}>"]
    for run in runs:
        v = run.verdict
        items = "".join(f"<li>{html.escape(r)}</li>" for r in v.reasons)
        suggestion = (f"<p class='suggest'><b>suggestion:</b> {html.escape(v.suggestion)}</p>"
                      if v.suggestion else "")
        parts.append(f"<div class='verdict'><{sub}>{html.escape(run.name)} {_badge(v.label)}"
                     f"</{sub}><ul>{items}</ul>{suggestion}</div>")
    if reference is not None:
        parts.append(f"<{h}>Floors: student vs reference</{h}>"
                     + _table(floor_rows(runs, reference), "floors")
                     + "<p class='meta'>level = the lowest train loss, or the floor when the "
                     "curve fits agree (what the underfitting test compares with the "
                     "reference's best train loss).</p>"
                     + f"<img alt='floors' src='{plot_floors(runs, reference)}'>")
    parts.append(f"<{h}>Loss and accuracy</{h}>"
                 f"<img alt='loss and accuracy curves' src='{plot_curves(runs)}'>")
    parts.append(f"<{h}>Loss terms</{h}>"
                 f"<p class='meta'>panels: {html.escape(', '.join(term_names(runs)))}. Raw "
                 "per-step values (faint) and their per-epoch mean; a run with one objective "
                 "(supervised CE) logs only the total.</p>"
                 f"<img alt='loss terms' src='{plot_terms(runs)}'>")
    parts.append(f"<{h}>Learning rate and gradient norm</{h}>"
                 f"<img alt='learning rate schedule' src='{plot_schedule(runs)}'>")
    return parts


def render_html(runs: Sequence[RunData], reference: RunData | None = None,
                title: str | None = None) -> str:
    """The report page as one string (all plots inline)."""
    names = ", ".join(r.name for r in runs)
    title = title or f"lightship report: {names}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>generated {datetime.now():%Y-%m-%d %H:%M} from "
             + ", ".join(f"<code>{html.escape(str(r.root))}</code>" for r in runs)
             + (f"; reference <code>{html.escape(str(reference.root))}</code>"
                if reference else "") + "</p>"]
    parts += run_sections(runs, reference)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def distinct_names(runs: Sequence[RunData]) -> None:
    """Two folders named alike (runs/a/t, runs/b/t, a study's cells/ARM/s0-f0): show their
    parents too."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    for run in runs:
        if counts[run.name] > 1:
            run.name = f"{run.root.parent.name}/{run.root.name}"


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise UserError(f"-o {output} is a folder; give a file name such as {output}/report.html")
    if not output.parent.is_dir():
        raise UserError(f"-o {output}: folder {output.parent} does not exist; create it "
                        f"(mkdir -p {output.parent}) or choose another path")


def write_report(run_dirs: Sequence[str | Path], output: str | Path,
                 reference: str | Path | None = None) -> Path:
    """Render the report of ``run_dirs`` (optionally against a heavier ``reference`` run) into
    the HTML file ``output`` and return its path."""
    from lightship.fileio import atomic_write_text

    if not run_dirs:
        raise UserError("give at least one run folder to report on")
    ref = load_run(reference) if reference is not None else None
    runs = [load_run(d, reference=ref.records if ref else None) for d in run_dirs]
    output = Path(output)
    _check_output(output)  # before the (slower) plotting
    distinct_names(runs)
    page = render_html(runs, ref)
    try:
        atomic_write_text(output, page)
    except OSError as exc:
        raise UserError(f"cannot write {output} ({exc.strerror}); choose another -o") from None
    return output
