"""The scoreboard of docs/studies.md: every claim of every study, from the studies' own folders.

Run the six studies at their default budget on a quiet machine, then this script:

    for s in degradation tricks underfit rocket transfer pretrain; do
        lightship study $s --jobs 2
    done
    python benchmarks/studies_scoreboard.py            # reads runs/studies/*/study.json

It prints a markdown table: per claim the judge's verdict, the effect [95 % interval], the unit
and n, converged cells / cells, and per study its wall time (the sum of its sessions), the CPU,
the precision and the command. Nothing is recomputed here: every number is study.json's (run
``lightship report runs/studies/NAME`` first to re-judge a study with today's code).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STUDIES = ("degradation", "tricks", "underfit", "rocket", "transfer", "pretrain")


def _fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "—"
    return f"{x:+.2f}" if metric.endswith("top1") else f"{x:+.4f}"


def effect(claim: dict) -> str:
    """Estimate [95 % interval] of a leaf claim; a trend's or conjunction's parts, joined."""
    if claim.get("parts"):
        return "; ".join(effect(p) for p in claim["parts"])
    metric = (claim.get("metrics") or ["?"])[0]
    out = _fmt(claim.get("estimate"), metric)
    if claim.get("interval"):
        lo, hi = claim["interval"]
        out += f" [{_fmt(lo, metric)}, {_fmt(hi, metric)}]"
    return out


def minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


def rows(result: dict) -> list[str]:
    names = result.get("metric_names", {})
    wall = sum(s["wall_time_s"] for s in result.get("sessions", []))
    out = []
    for c in sorted(result.get("claims", []), key=lambda c: not c["primary"]):
        verdict = f"**{c['outcome']}**" + (f": {c['reason']}" if c.get("reason") else "")
        metric = "/".join(names.get(m, m) for m in c["metrics"])
        label = c["label"] + ("" if c["primary"] else " *(exploratory)*")
        out.append(f"| {result['study']} | {label} | {verdict} | {effect(c)} | {metric} | "
                   f"{c['unit']}, {c['n']} | {c['converged'][0]}/{c['converged'][1]} |")
    out.append(f"| {result['study']} | *{result['cells_done']}/{result['cells_total']} cells, "
               f"{minutes(wall)} wall ({', '.join(str(s['jobs']) for s in result['sessions'])}"
               f" jobs), {_precisions(result)}, {result.get('data')}* | | | | | |")
    return out


def _precisions(result: dict) -> str:
    """What the cells trained in (study.json's trained_in: precision → arms); the plan's pin
    only where an older study.json lacks it."""
    trained = result.get("trained_in")
    if not trained:
        return str(result.get("precision"))
    if len(trained) == 1:
        return next(iter(trained))
    return " / ".join(f"{p} ({len(arms)} arms)" for p, arms in trained.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", help="study folders (default runs/studies/<each study>)")
    args = p.parse_args(argv)
    folders = [Path(f) for f in args.folders] or [Path("runs/studies") / s for s in STUDIES]
    print("| study | claim | verdict | effect [95 % CI] | metric | unit, n | converged cells |")
    print("|---|---|---|---|---|---|---|")
    commands = []
    for folder in folders:
        path = folder / "study.json"
        if not path.exists():
            print(f"{path}: missing (run the study first)", file=sys.stderr)
            continue
        result = json.loads(path.read_text())
        print("\n".join(rows(result)))
        cpu = {s.get("cpu") for s in result.get("sessions", [])}
        commands.append(f"- `{result['command']}` ({', '.join(sorted(c for c in cpu if c))})")
    print()
    print("\n".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
