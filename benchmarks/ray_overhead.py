"""What Ray costs on one machine: the same quick study as the command runs it, with
`--executor local --jobs 2` and with `--executor ray --jobs 2` (a local Ray cluster the command
starts and stops), side by side: wall times, their ratio, and whether the two study.json agree.

    python benchmarks/ray_overhead.py [--studies underfit,transfer] [--budget quick] [--repeats 2]
                                      [--epochs E]   # longer cells: what Ray costs per cell

Each repeat runs both executors into fresh folders, order alternating (load drift hits both).
Wall time is the whole command, Python start to exit, as a user waits for it: for Ray that
includes starting and stopping its cluster. Measure alone (nothing else on the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(study: str, budget: str, executor: str, out: Path, epochs: int | None) -> float:
    cmd = [sys.executable, "-m", "lightship", "study", study, "--budget", budget, "--jobs", "2",
           "--executor", executor, "--out", str(out), "--no-progress"]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True,
                   env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    return time.perf_counter() - t0


def main() -> None:
    from lightship.studies.analysis import without_session
    from lightship.train.precision import choose_device, choose_precision, cpu_kind

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", default="underfit,transfer")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, help="replace the budget's epochs (longer cells)")
    args = ap.parse_args()
    print(f"CPU: {cpu_kind()}, {os.cpu_count()} cores; train.precision auto → "
          f"{choose_precision('auto', 'auto', choose_device('cpu')).name} (the studies' recipes "
          "may set their own)")
    for study in args.studies.split(","):
        walls: dict[str, list[float]] = {"local": [], "ray": []}
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                res = {}
                for ex in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
                    load = os.getloadavg()[0]
                    wall = _run(study, args.budget, ex, Path(tmp) / ex, args.epochs)
                    walls[ex].append(wall)
                    res[ex] = json.loads((Path(tmp) / ex / "study.json").read_text())
                    print(f"{study} repeat {r}: --executor {ex}: {wall:.1f} s (load {load:.2f} "
                          "at start)", flush=True)
                same = without_session(res["local"]) == without_session(res["ray"])
                print(f"{study} repeat {r}: study.json equal (wall times aside): {same}")
        lo, ra = (sum(walls[k]) / len(walls[k]) for k in ("local", "ray"))
        what = f" --epochs {args.epochs}" if args.epochs else ""
        print(f"{study} --budget {args.budget}{what} --jobs 2: local {lo:.1f} s, ray {ra:.1f} s, "
              f"ray − local {ra - lo:+.1f} s, ratio ray/local {ra / lo:.2f}\n", flush=True)


if __name__ == "__main__":
    main()
