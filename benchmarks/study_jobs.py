"""`lightship study --jobs 2` (two processes, one torch thread each) vs `--jobs 1` (one process
using every core): the same study run both ways, side by side, wall times and their ratio.

    python benchmarks/study_jobs.py [--study underfit] [--budget quick] [--repeats 1]

Each repeat runs both settings into fresh folders (order alternating, so load drifts hit both).
The cells' numbers are printed too: with other thread counts they may differ in the last digits.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from lightship.studies.cli import run_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="underfit")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    walls: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.repeats):
        for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
            with tempfile.TemporaryDirectory() as tmp:
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                run_study(args.study, budget=args.budget, jobs=jobs, out=Path(tmp) / "s",
                          progress=False, quiet=True)
                wall = time.perf_counter() - t0
                res = json.loads((Path(tmp) / "s" / "study.json").read_text())
                top1 = {k: round(v["test_top1"]["mean"], 2) for k, v in res["arms"].items()}
            walls[jobs].append(wall)
            print(f"repeat {r}: --jobs {jobs}: {wall:.1f} s (load {load:.2f} at start); "
                  f"test top-1 per arm {top1}", flush=True)
    w1, w2 = sum(walls[1]) / len(walls[1]), sum(walls[2]) / len(walls[2])
    print(f"\n{args.study} --budget {args.budget}, {os.cpu_count()} cores: --jobs 1 {w1:.1f} s, "
          f"--jobs 2 {w2:.1f} s, ratio jobs2/jobs1 = {w2 / w1:.2f}")


if __name__ == "__main__":
    main()
