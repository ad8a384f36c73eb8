"""The study page (lightship/studies/page.py) from a hand-built study.json: the claims'
scoreboard, the forest plot with its margin bands, the curves, self-containment, and the page
in headless Chromium. The same page from a real study is checked in
tests/test_study.py::test_report_accepts_a_study_folder."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_report import assert_renders

from lightship.judge import AllOf, Difference, Equivalence, Trend, judge
from lightship.studies.page import (
    NO_CLAIMS,
    forest_figure,
    forest_rows,
    metric_names,
    render_study_html,
    scoreboard_rows,
)

ARMS = {  # arm: (test top-1 offset from plain, its noise sd, train CE offset, converged)
    "plain": (0.0, 0.0, 0.0, True),
    "better": (2.0, 0.3, -0.1, True),
    "worse": (-2.0, 0.3, -0.2, True),
    "same": (0.0, 1.0, -0.3, True),
    "twin": (0.02, 0.05, 0.0, True),
    "shifted": (1.0, 0.0, 0.0, True),   # exactly +1 on every seed: degenerate
    "short": (1.0, 0.3, 0.0, False),    # not converged
}
CLAIMS = [
    Difference("better", "plain", "test_top1", ">", label="better beats plain"),
    Difference("worse", "plain", "test_top1", ">", label="worse beats plain"),
    Difference("same", "plain", "test_top1", ">", label="same beats plain"),
    Difference("better", "plain", "train_ce", "<", primary=False, label="better fits harder"),
    Equivalence("twin", "plain", "test_top1", margin=0.5, label="twin matches plain"),
    Equivalence("same", "plain", "test_top1", margin=0.2, label="same matches plain"),
    Difference("shifted", "plain", "test_top1", ">", label="shifted beats plain"),
    Difference("short", "plain", "test_top1", ">", needs_converged=True,
               label="short beats plain"),
    Trend(("plain", "better", "worse", "same"), "train_ce", "decreasing",
          label="CE falls along the stack"),
    AllOf((Difference("better", "plain", "test_top1", ">"),
           Difference("better", "plain", "train_ce", "<")), label="better on both"),
]
VERDICTS = {"better beats plain": "agrees", "worse beats plain": "contradicts",
            "same beats plain": "not settled: interval", "better fits harder": "agrees",
            "twin matches plain": "agrees", "same matches plain": "not settled: margin",
            "shifted beats plain": "not settled: degenerate",
            "short beats plain": "not settled: under-trained (5 of 10 cells)",
            "CE falls along the stack": "agrees", "better on both": "agrees"}


def _cells() -> list[dict]:
    rng = np.random.default_rng(0)
    top1, ce = 90 + rng.normal(0, 1, 5), 0.5 + rng.normal(0, 0.01, 5)
    cells = []
    for arm, (off, sd, dce, conv) in ARMS.items():
        for s in range(5):
            cells.append({"arm": arm, "seed": s, "fold": None, "converged": conv, "run":
                          f"cells/{arm}/s{s}", "status": "finished",
                          "test_top1": top1[s] + off + (rng.normal(0, sd) if sd else 0.0),
                          "train_ce": ce[s] + dce + rng.normal(0, 0.005)})
    return cells


@pytest.fixture(scope="module")
def study_json() -> dict:
    """study.json as analysis.to_json writes it, with the judge's decisions under "claims"
    (the cells' run folders do not exist: the page renders without them)."""
    decisions = judge(CLAIMS, _cells())
    return {"format": "lightship-study-result-1", "study": "underfit", "title": "toy claims",
            "paper": "Doe 2024", "budget": "quick", "data": "synthetic", "folds": 0,
            "seeds": list(range(5)), "cells_done": 35, "cells_total": 35, "complete": True,
            "precision": "fp32", "command": "lightship study underfit --budget quick",
            "arms": {a: {"label": f"arm {a}", "cells": 5, "planned": 5, "failed": 0,
                         "params": 1234, "test_top1": {"mean": 90.0, "std": 1.0, "n": 5}}
                     for a in ARMS},
            "verdicts": ["agrees with Doe 2024: a hand-written line"],
            "claims": [d.to_dict() for d in decisions], "cells": []}


@pytest.fixture(scope="module")
def page(study_json, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("study")
    (folder / "curves").mkdir()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2))
    FigureCanvasAgg(fig)
    fig.subplots().plot([1, 2, 3], [3, 1, 2], color="C1")
    fig.savefig(folder / "curves" / "better.png")
    return render_study_html(study_json, folder)


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)).strip()


def test_scoreboard_rows_say_each_verdict_primary_first(study_json):
    rows = scoreboard_rows(study_json["claims"], metric_names(study_json))
    assert {r["claim"]: r["verdict"] for r in rows} == VERDICTS
    assert [r["family"] for r in rows] == ["primary"] * 9 + ["exploratory"]
    assert rows[-1]["claim"] == "better fits harder"
    by = {r["claim"]: r for r in rows}
    est = by["better beats plain"]["estimate [95 % CI]"]
    assert re.fullmatch(r"\+\d\.\d{3} \[\+\d\.\d{3}, \+\d\.\d{3}\]", est), est  # 4 digits
    assert by["better beats plain"]["metric"] == "test top-1 (points)"
    assert by["twin matches plain"]["metric"] == "test top-1 (points) (margin ±0.5)"
    assert by["better beats plain"]["unit, n"] == "seed, n=5"
    assert by["short beats plain"]["converged"] == "5/10"
    # under-trained: the numbers are shown, the claim is not decided on them
    assert re.fullmatch(r"\+\d\.\d{3} \[\+[\d.]+, \+[\d.]+\]",
                        by["short beats plain"]["estimate [95 % CI]"])
    assert by["short beats plain"]["p_adj"] == "—"
    assert by["shifted beats plain"]["estimate [95 % CI]"] == "+1 (no interval)"
    assert by["CE falls along the stack"]["estimate [95 % CI]"] == "— (see parts)"
    assert float(by["worse beats plain"]["p_adj"]) < 0.05


def test_page_leads_with_the_scoreboard_then_forest_then_curves(page):
    order = [page.index(h) for h in ("id='scoreboard'", "id='forest'", "id='curves'",
                                     "id='arms'")]
    assert order == sorted(order)
    table = page[page.index("<table class='scoreboard'>"):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr class='(primary|exploratory)'>(.*?)</tr>", table)
    assert [_text(r).split(" ")[0] for _, r in rows][:2] == ["better", "worse"]
    assert [cls for cls, _ in rows] == ["primary"] * 9 + ["exploratory"]
    assert "exploratory" in _text(rows[-1][1])
    for _, row in rows:
        label = next(k for k in VERDICTS if _text(row).startswith(k))
        assert VERDICTS[label] in _text(row), row
    badges = dict(re.findall(r"background:(#[0-9a-f]{6})'[^>]*>([^<]+)</span>", table))
    assert badges["#1a7f37"] == "agrees" and badges["#cf222e"] == "contradicts"
    assert badges["#6e7781"].startswith("not settled")
    parts = re.findall(r"<tr class='part primary'>(.*?)</tr>", table)
    assert len(parts) == 3 + 2  # the trend's three steps, the conjunction's two claims
    assert "arm better" in page and "no finished cell yet" in page  # curves: plain has none


def test_forest_plot_panels_per_metric_with_margin_bands(study_json):
    names = metric_names(study_json)
    panels = forest_rows(study_json["claims"])
    assert list(panels) == ["test_top1", "train_ce"]
    labels = [label for label, _ in panels["train_ce"]]
    assert labels[0] == "CE falls along the stack" and labels[1].startswith("↳ ")
    assert labels[-1] == "better fits harder (exploratory)"  # exploratory after the primary
    assert "better on both" in labels and "better on both" in [
        label for label, _ in panels["test_top1"]]  # a conjunction heads its parts in each
    fig = forest_figure(study_json["claims"], names)
    top1, ce = fig.axes[:2]
    assert top1.get_title(loc="left") == "test top-1 (points)"
    bands = sorted((p.get_x(), p.get_width()) for p in top1.patches if p.get_gid() == "margin")
    assert bands == [(-0.5, 1.0), (-0.2, 0.4)]
    assert not [p for p in ce.patches if p.get_gid() == "margin"]
    assert any(line.get_xdata()[0] == 0 for line in top1.get_lines())  # the line at 0
    points = {line.get_color() for line in top1.get_lines() if line.get_marker() == "o"}
    assert {"#1a7f37", "#cf222e", "#6e7781"} <= points  # coloured by outcome


def test_an_old_study_without_claims_still_renders(study_json, tmp_path):
    old = {k: v for k, v in study_json.items() if k != "claims"}
    page = render_study_html(old, tmp_path)
    assert NO_CLAIMS in page and "a hand-written line" in page
    assert "id='curves'" in page and "</html>" in page


def test_the_page_is_self_contained(page):
    assert "http://" not in page and "https://" not in page and "file:" not in page
    sources = re.findall(r"\ssrc='([^']*)'", page)
    assert len(sources) >= 2  # the forest plot and one arm's curves
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page


def test_the_page_looks_right_in_a_browser(page, tmp_path):
    """Headless Chromium: the top of the page (the scoreboard and the forest plot) shows text,
    the coloured badges and the plot, not a blank page."""
    path = tmp_path / "report.html"
    path.write_text(page)
    shot = assert_renders(path, tmp_path)  # text, badges, the forest plot in the lower half
    assert shot.stat().st_size > 20_000
