"""Training beside other work: img/s of `lightship train --recipe fast --data mnist5k` (fp32) alone,
beside 1 and 2 busy loops and beside a second lightship run, with the fixed thread count (torch's
own, the behaviour before lightship.train.threads) and the adaptive one, side by side in one run.

Each measurement is a fresh ``python -m lightship train --recipe fast --data mnist5k --set
train.precision=fp32`` process (OMP_NUM_THREADS/MKL_NUM_THREADS removed from its environment, or
nothing would adapt; ``LIGHTSHIP_THREADS=fixed`` for the old policy). Its steady-state img/s is
read from metrics.jsonl: the step records' ``ips`` after the first ``--skip`` steps of the first
epoch (start-up, first allocations), as images over time (harmonic mean). Neighbours: busy loops
are ``python -c 'while True: pass'`` processes; the second lightship run is the same command with
the same policy and 1,000 epochs, started first and training before the measured run starts.
All neighbours are killed afterwards. Scenarios run in order, and within a scenario the policies
alternate (first fixed, then adaptive; reversed on odd repeats) so that drift hits both.

Printed: the CPU model and precision (from the runs' start records), a table of img/s with the
ratio to the quiet run (the fixed policy alone: the speed the machine gives a lone run) and to a
fair share of it, quiet × cores / (cores + busy processes) (a lightship neighbour counts as
`cores` busy processes: it wants every core, so the fair share is half), and the threads each
epoch used. Then the two targets: adaptive alone ≥ 0.95× fixed alone; adaptive beside two busy
loops ≥ 0.4× quiet.

    python benchmarks/contention.py                       # both policies, 1 repeat (~5-10 min)
    python benchmarks/contention.py --policy adaptive --repeats 3
    python benchmarks/contention.py --epochs 1            # smoke run: checks the script only

Only a quiet machine gives meaningful numbers: every other process is a neighbour too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightship.runs import read_records

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("alone", "1 busy loop", "2 busy loops", "a second lightship run")
BUSY = {"alone": 0, "1 busy loop": 1, "2 busy loops": 2}


def _env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "LIGHTSHIP_THREADS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if policy == "fixed":
        env["LIGHTSHIP_THREADS"] = "fixed"
    return env


def _train_cmd(out: Path, name: str, epochs: int | None) -> list[str]:
    return [sys.executable, "-m", "lightship", "train", "--recipe", "fast", "--data", "mnist5k",
            "--set", "train.precision=fp32", "--out", str(out), "--name", name, "--no-progress",
            "--overwrite", *(["--epochs", str(epochs)] if epochs is not None else [])]


def steady_ips(run: Path, skip: int) -> float:
    """Images per second over the step records after the first ``skip`` steps."""
    ips = [r["ips"] for r in read_records(run).steps[skip:] if r["ips"] > 0]
    if not ips:
        sys.exit(f"{run}: no step records after the first {skip}; lower --skip")
    return statistics.harmonic_mean(ips)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def _wait_training(run: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Until the neighbour run has logged a step (it is past start-up and training)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the neighbour run ended early (exit {proc.returncode})")
        try:
            if '"kind": "step"' in (run / "metrics.jsonl").read_text():
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("the neighbour run logged no step within 300 s")


def measure(scenario: str, policy: str, out: Path, epochs: int | None, skip: int) -> dict:
    env = _env(policy)
    neighbours: list[subprocess.Popen] = []
    name = f"{policy}-{scenario.replace(' ', '-')}"
    try:
        if scenario == "a second lightship run":
            neighbour = subprocess.Popen(_train_cmd(out, f"{name}-neighbour", 1000), env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            neighbours.append(neighbour)
            _wait_training(out / f"{name}-neighbour", neighbour)
        else:
            neighbours += [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                           for _ in range(BUSY[scenario])]
            time.sleep(0.5 if neighbours else 0.0)
        load = os.getloadavg()[0]
        proc = subprocess.run(_train_cmd(out, name, epochs), env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(_train_cmd(out, name, epochs))} failed:\n{proc.stderr}")
        outlived = all(p.poll() is None for p in neighbours)
    finally:
        _stop(neighbours)
    records = read_records(out / name)
    start = records.starts[0]
    return {"scenario": scenario, "policy": policy, "ips": steady_ips(out / name, skip),
            "threads": [e.get("threads") for e in records.evals], "load": load,
            "precision": start["precision"], "cpu": start.get("cpu", "?"), "outlived": outlived}


def fair_share(scenario: str, cores: int) -> float:
    busy = cores if scenario == "a second lightship run" else BUSY[scenario]
    return cores / (cores + busy)


def report(results: list[dict], policies: list[str], cores: int) -> list[str]:
    def ips(scenario: str, policy: str) -> float | None:
        got = [r["ips"] for r in results if r["scenario"] == scenario and r["policy"] == policy]
        return statistics.median(got) if got else None

    ref_policy = "fixed" if "fixed" in policies else policies[0]
    quiet = ips("alone", ref_policy)
    lines = [f"quiet reference: {ref_policy} alone, {quiet:.0f} img/s", "",
             "| neighbours | policy | img/s | × quiet | × fair share (fair share) | threads per "
             "epoch | load |", "|---|---|---|---|---|---|---|"]
    for scenario in SCENARIOS:
        fair = fair_share(scenario, cores)
        for policy in policies:
            mine = [r for r in results if r["scenario"] == scenario and r["policy"] == policy]
            if not mine:
                continue
            v = ips(scenario, policy)
            assert v is not None and quiet
            threads = "; ".join(",".join(str(t) for t in r["threads"]) for r in mine)
            flag = "" if all(r["outlived"] for r in mine) else " (a neighbour ended first!)"
            lines.append(f"| {scenario} | {policy} | {v:.0f} | {v / quiet:.2f} | "
                         f"{v / (quiet * fair):.2f} ({fair:.2f}) | {threads} | "
                         f"{statistics.mean(r['load'] for r in mine):.2f}{flag} |")
    lines.append("")
    alone, busy2 = ips("alone", "adaptive"), ips("2 busy loops", "adaptive")
    fixed_alone = ips("alone", "fixed")
    if alone is not None and fixed_alone is not None:
        lines.append(f"target alone: adaptive / fixed = {alone / fixed_alone:.3f} (≥ 0.95)")
    if busy2 is not None and quiet:
        lines.append(f"target beside two busy loops: adaptive = {busy2 / quiet:.2f}× quiet "
                     "(≥ 0.4)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", choices=["fixed", "adaptive", "both"], default="both",
                    help="fixed: torch's own thread count (LIGHTSHIP_THREADS=fixed, the "
                    "behaviour before); adaptive: lightship.train.threads; both: side by side")
    ap.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                    metavar="SCENARIO", help=f"default: all of {', '.join(SCENARIOS)}")
    ap.add_argument("--epochs", type=int, default=None, help="default: the fast recipe's")
    ap.add_argument("--skip", type=int, default=10, help="steps skipped at the start (default 10)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    policies = ["fixed", "adaptive"] if args.policy == "both" else [args.policy]
    cores = len(os.sched_getaffinity(0))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if key in os.environ:
            print(f"note: {key}={os.environ[key]} is removed from the runs' environment")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for scenario in args.scenarios:
                for policy in (policies if rep % 2 == 0 else policies[::-1]):
                    r = measure(scenario, policy, Path(tmp), args.epochs, args.skip)
                    results.append(r)
                    print(f"repeat {rep}, {scenario}, {policy}: {r['ips']:.0f} img/s, threads "
                          f"{r['threads']}, load {r['load']:.2f}", flush=True)
    if "alone" not in args.scenarios:
        sys.exit("no quiet run to compare with: include the 'alone' scenario")
    first = results[0]
    print(f"\n{cores} CPUs: {first['cpu']}; precision {first['precision']}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    for line in report(results, policies, cores):
        print(line)


if __name__ == "__main__":
    main()
