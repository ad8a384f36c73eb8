"""Score the convergence verdict against the ×2-twin ground truth (convergence_truth.py).

Reads the committed grid (convergence_truth.json.gz), replays today's verdict on every run's
records, and prints for each half (tuning: digits; held out: mnist5k) the confusion matrix of
verdict labels against the truth, the agreement, and the coverage of the reported intervals.
The verdict before the projection rule is stored in each run as "old" (--annotate-old) and is
scored beside today's.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Any

TRUTHS = ("not converged", "converged")
# What each label claims about a longer schedule: "still improving" and "overfitting" (its rule
# needs the train loss to have fallen) say it would lower the train loss; "converged" and
# "underfitting" (a flat curve at a high level) say it would not; the rest decide nothing.
CLAIM = {"still improving": "not converged", "overfitting": "not converged",
         "converged": "converged", "underfitting": "converged"}
ROWS = ("converged", "still improving", "underfitting", "overfitting", "cannot tell",
        "too short to judge", "diverged")


def records_of(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's metrics records rebuilt from the grid's compact form."""
    st = run["steps"]
    steps = [{"kind": "step", "step": i + 1, "epoch": e, "loss": loss, "lr": lr,
              "grad_norm": g} for i, (e, loss, lr, g) in enumerate(zip(
                  st["epoch"], st["loss"], st["lr"], st["grad_norm"], strict=True))]
    evals = [{"kind": "eval", **r} for r in run["evals"]]
    # the grid measured the final clean fit after training (measure_fit, the same evaluation
    # the loop now logs with a finished run's last evaluation)
    evals[-1].update(train_ce_clean=run["fit"]["train_ce"],
                     train_top1_clean=run["fit"]["train_top1"])
    start = {"kind": "start", "step": 0, "epoch": 0, "num_classes": 10, **run["start"]}
    return [start, *steps, *evals]


def pairs(runs: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(run, its ×2 twin): factors 1→2 and 2→4 of the same config."""
    by = {(r["config"], r["factor"]): r for r in runs}
    out = []
    for (config, k), r in sorted(by.items()):
        twin = by.get((config, 2 * k))
        if twin is not None:
            out.append((r, twin))
    return out


def truth(run: dict, twin: dict, atol: float, rtol: float) -> tuple[str, float]:
    ce, ce2 = run["fit"]["train_ce"], twin["fit"]["train_ce"]
    drop = ce - ce2
    return ("not converged" if drop > max(atol, rtol * ce) else "converged"), drop


def judge(run: dict[str, Any], new: bool = True):
    """Today's verdict of the run, as judge_run would give it from its folder (``new=False``:
    the call the code before the headroom rule takes)."""
    from lightship.diagnose import verdict
    from lightship.recipe import Recipe

    r = Recipe.model_validate(run["recipe"])
    mixing = r.augment.mixup_alpha or r.augment.cutmix_alpha
    return verdict(records_of(run), schedule=r.schedule.name,
                   warmup_epochs=r.schedule.warmup_epochs, total_epochs=r.train.epochs,
                   mix_off_epochs=r.augment.mix_off_epochs if mixing else 0,
                   **({"label_smoothing": r.train.label_smoothing} if new else {}))


_FLOOR = re.compile(r"floor ≈ ([-\d.e]+) \[([-\d.e]+|unbounded), ([-\d.e]+|unbounded)\]")


def annotate_old(data: dict[str, Any]) -> None:
    """Store the verdict of the importable lightship as each run's "old" verdict."""
    import lightship

    for run in data["runs"]:
        v = judge(run, new=False)
        run["old"] = {"label": v.label, "line": v.one_line(), "code": lightship.__file__}


def old_floor(run: dict[str, Any]) -> tuple[float, float] | None:
    """The floor interval the old verdict printed (parsed from its verdict line)."""
    m = _FLOOR.search(run["old"]["line"]) if "old" in run else None
    if not m:
        return None
    lo = -math.inf if m.group(2) == "unbounded" else float(m.group(2))
    hi = math.inf if m.group(3) == "unbounded" else float(m.group(3))
    return lo, hi


def score(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Confusion matrix (label × truth), agreement over all pairs and over decided ones."""
    m: dict[str, Counter] = defaultdict(Counter)
    agree = decided = 0
    for row in rows:
        label = row[key]
        m[label][row["truth"]] += 1
        claim = CLAIM.get(label)
        if claim is not None:
            decided += 1
            agree += claim == row["truth"]
    n = len(rows)
    per = {t: (sum(CLAIM.get(r[key]) == t for r in rows if r["truth"] == t),
               sum(r["truth"] == t for r in rows)) for t in TRUTHS}
    return {"matrix": m, "n": n, "agree": agree, "decided": decided,
            "agreement": agree / n if n else math.nan, "per_truth": per}


def table(result: dict[str, Any], title: str) -> str:
    m = result["matrix"]
    lines = [f"{title}: agreement {result['agree']}/{result['n']} = "
             f"{100 * result['agreement']:.0f} % (decided {result['decided']}; "
             f"{result['agree']}/{result['decided']} of those); right on "
             + ", ".join(f"{a}/{b} {t}" for t, (a, b) in result["per_truth"].items()),
             f"  {'verdict':<20} {'truth: not conv.':>17} {'converged':>10}"]
    for label in ROWS:
        if label in m:
            lines.append(f"  {label:<20} {m[label]['not converged']:>17} "
                         f"{m[label]['converged']:>10}")
    return "\n".join(lines)


def rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    meta = data["meta"]
    out = []
    for run, twin in pairs(data["runs"]):
        t, drop = truth(run, twin, meta["atol"], meta["rtol"])
        v = judge(run)
        nums = v.numbers
        floor = old_floor(run)
        twin_final = twin["evals"][-1]["train_loss"]
        out.append({
            "id": run["id"], "data": run["data"], "family": run["family"],
            "group": run.get("group", "planned"),
            "factor": run["factor"], "truth": t, "ce": run["fit"]["train_ce"],
            "ce_twin": twin["fit"]["train_ce"], "drop": drop,
            "old": run["old"]["label"] if "old" in run else "(not annotated)",
            "new": v.label, "new_line": v.one_line(),
            "old_floor_covers": (floor[0] <= twin_final <= floor[1]) if floor else None,
            "old_line": run["old"]["line"] if "old" in run else None,
            "twin_drop": nums.twin_drop, "twin_drop_range": nums.twin_drop_range,
            "range_covers": (nums.twin_drop_range[0] <= drop <= nums.twin_drop_range[1])
            if nums.twin_drop_range else None})
    return out


def coverage(rows: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in rows if r[key] is not None]
    if not vals:
        return "n/a"
    return f"{sum(vals)}/{len(vals)} = {100 * sum(vals) / len(vals):.0f} %"


def analyse(data: dict[str, Any], detail: bool = False) -> int:
    meta = data["meta"]
    rows = rows_of(data)
    print(f"grid: {len(data['runs'])} runs, {len(rows)} (run, ×2 twin) pairs; trained on "
          f"{meta['cpu']}, torch {meta['torch']}, fp32, {meta['threads']} thread per run")
    print(f"truth: not converged when CE(run) − CE(×2) > max({meta['atol']}, "
          f"{meta['rtol']}·CE(run)), clean train CE")
    halves = [(f"tuning half ({meta['tune']})", lambda r: r["data"] == meta["tune"]
               and r["group"] == "planned"),
              (f"held-out half ({meta['held_out']})", lambda r: r["data"] == meta["held_out"]
               and r["group"] == "planned"),
              (f"held-out supplement ({meta['held_out']}, long budgets added after the first "
               "held-out score; the rule was not changed)", lambda r: r["group"] == "supplement")]
    for name, keep in halves:
        part = [r for r in rows if keep(r)]
        if not part:
            continue
        print(f"\n== {name}: {len(part)} pairs, "
              f"{sum(r['truth'] == 'not converged' for r in part)} not converged ==")
        print(table(score(part, "old"), "old verdict (the rule before, replayed by 6e33f0f)"))
        print(table(score(part, "new"), "new verdict"))
        print(f"  old floor interval holds the ×2 twin's final train loss: "
              f"{coverage(part, 'old_floor_covers')} (nominal 95 %)")
        print(f"  new expected-drop range holds the ×2 twin's clean-CE drop: "
              f"{coverage(part, 'range_covers')} (nominal 90 %)")
        if detail:
            for r in part:
                rng = r["twin_drop_range"]
                d = (f"expected drop {r['twin_drop']:.4f} [{rng[0]:.4f}, {rng[1]:.4f}]"
                     if rng else "no clean CE")
                print(f"    {r['id']:<42} truth {r['truth']:<13} ΔCE {r['drop']:+.4f} "
                      f"(CE {r['ce']:.4f})  old {r['old']:<16} new {r['new']:<16} {d}")
    return 0
