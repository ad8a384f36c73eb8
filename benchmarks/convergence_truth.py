"""Ground truth for the convergence verdict: does a ×2 schedule of the same recipe end lower?

For every run of a grid (MNIST-5k and sklearn digits; nets from cnn4 and resnet8×0.25 to
resnet20 and wrn-16-1; constant, step, cosine, linear-to-0 and one-cycle schedules; budgets
from far too short to long; label smoothing, mixup, KD students) the same recipe, seed and data
are also trained with the schedule ×2 and, where affordable, ×4 (lightship.diagnose.twin_recipe).
Each run's final clean train CE (eval mode, no augmentation, hard labels: measure_fit) is
compared with its twin's:

    truth = "not converged"  when  CE(run) − CE(×2 twin) > max(0.01, 0.10 · CE(run)),
            "converged"      otherwise

(TWIN_ATOL, TWIN_RTOL in lightship/diagnose/twin.py, fixed before any verdict was looked at).
A ×2 run and its ×4 twin form a second (run, twin) pair. The grid's records (eval records,
per-step loss/lr/grad-norm, the clean fits) are kept in convergence_truth.json.gz so the
analysis re-runs in seconds:

    python benchmarks/convergence_truth.py --run [--jobs 2]   # train the grid (~1 h on 2 cores)
    python benchmarks/convergence_truth.py --analyse          # confusion matrices, coverage

The verdict before this rule ("old") is replayed once on every run's records by the code of
commit 6e33f0f and stored in the JSON (`git worktree add /tmp/old 6e33f0f; PYTHONPATH=/tmp/old
python benchmarks/convergence_truth.py --annotate-old`); --analyse scores it beside today's.

Halves: the verdict's rule was tuned on `digits` (the tuning half) and is reported on
`mnist5k` (the held-out half, not looked at while tuning).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "convergence_truth.json.gz"
WORK = Path(os.environ.get("LIGHTSHIP_TRUTH_DIR", "/tmp/lightship-convergence-truth"))

TUNE, HELD_OUT = "digits", "mnist5k"

# (family, model overrides, epochs on mnist5k, epochs on digits, twins); digits has 1,437
# training images (23 steps of 64) against mnist5k's 4,000 (63 steps), so it gets ~2.5× the
# epochs for the same number of steps.
BASE = {"train.precision": "fp32", "train.tta": False, "train.eval_every": 1,
        "train.checkpoint_every": 1000}
TINY = {"model.name": "resnet8", "model.width": 0.25}


def families() -> list[dict[str, Any]]:
    fam: list[dict[str, Any]] = []

    def add(name: str, preset: str, over: dict[str, Any], em: int | None, ed: int | None,
            factors=(2, 4), seeds=(0,), teacher: bool = False, group: str = "planned") -> None:
        fam.append({"family": name, "preset": preset, "over": over, "epochs": {
            "mnist5k": em, "digits": ed}, "factors": list(factors), "seeds": list(seeds),
            "teacher": teacher, "group": group})

    cnn4 = {"model.name": "cnn4"}
    sched = {"constant": {"schedule.name": "constant"}, "cosine": {"schedule.name": "cosine"},
             "step": {"schedule.name": "multistep"}, "linear": {"schedule.name": "linear"}}
    add("cnn4-constant", "baseline", {**cnn4, **sched["constant"], "optim.lr": 0.05}, 3, 8)
    add("cnn4-constant", "baseline", {**cnn4, **sched["constant"], "optim.lr": 0.05}, 20, 50)
    add("cnn4-cosine", "baseline", {**cnn4, **sched["cosine"]}, 3, 8)
    add("cnn4-cosine", "baseline", {**cnn4, **sched["cosine"]}, 10, 25, seeds=(0, 1, 2))
    add("cnn4-cosine", "baseline", {**cnn4, **sched["cosine"]}, 30, 75)
    add("cnn4-step", "baseline", {**cnn4, **sched["step"]}, 15, 40)
    add("cnn4-linear", "baseline", {**cnn4, **sched["linear"]}, 8, 20)
    add("cnn4-onecycle", "baseline", {**cnn4, **sched["linear"], "schedule.warmup_epochs": "30%"},
        8, 20)
    add("cnn4-adamw-constant", "baseline", {**cnn4, **sched["constant"], "optim.name": "adamw",
                                            "optim.lr": 1e-3, "optim.weight_decay": 0.05}, 6, 15)
    add("r8x0.25-cosine", "baseline", {**TINY, **sched["cosine"]}, 4, 10)
    add("r8x0.25-cosine", "baseline", {**TINY, **sched["cosine"]}, 15, 40, seeds=(0, 1, 2))
    add("r8x0.25-onecycle", "baseline", {**TINY, **sched["linear"],
                                         "schedule.warmup_epochs": "30%"}, 12, 30)
    add("r8x0.25-constant", "baseline", {**TINY, **sched["constant"]}, 10, 25)
    add("r8x0.25-step", "baseline", {**TINY, **sched["step"]}, 20, 50, factors=(2,))
    add("r8x0.25-cosine-ls", "baseline", {**TINY, **sched["cosine"],
                                          "train.label_smoothing": 0.1}, 10, 25)
    add("r8x0.25-cosine-mixup", "baseline", {**TINY, **sched["cosine"],
                                             "augment.mixup_alpha": 0.2}, 10, 25)
    add("r8x0.25-tricks", "tricks", {**TINY}, 10, 25)
    add("r8x0.25-kd", "baseline", {**TINY, **sched["cosine"], "method.name": "kd"}, 4, 10,
        teacher=True)
    add("r8x0.25-kd", "baseline", {**TINY, **sched["cosine"], "method.name": "kd"}, 12, 30,
        teacher=True)
    add("fast", "fast", {"train.eval_every": 1, "train.checkpoint_every": 1000}, 6, 16)
    add("default", "default", {}, 16, 40, factors=(2,))
    add("resnet8-step", "baseline", {"model.name": "resnet8"}, 10, 25, factors=(2,))
    add("resnet8-cosine-ls", "baseline", {"model.name": "resnet8", **sched["cosine"],
                                          "train.label_smoothing": 0.1}, 6, 16, factors=(2,))
    add("resnet20-cosine", "baseline", {"model.name": "resnet20", **sched["cosine"]}, 5, 12,
        factors=(2,))
    add("resnet20-step", "baseline", {"model.name": "resnet20"}, 12, 30, factors=(2,))
    add("wrn-16-1-cosine", "baseline", {"model.name": "wrn-16-1", **sched["cosine"]}, 8, 20,
        factors=(2,))
    # Added after the first held-out score, which had only 3 converged (run, twin) pairs among
    # its 53: long MNIST-5k budgets of nets that can fit it, to test the converged side of the
    # rule (frozen before; labelled "supplement" in the analysis, never mixed into the halves).
    sup = {"factors": (2,), "group": "supplement"}
    add("resnet8-cosine", "baseline", {"model.name": "resnet8", **sched["cosine"]}, 30, None,
        **sup)
    add("resnet8-step", "baseline", {"model.name": "resnet8"}, 30, None, **sup)
    add("resnet8-cosine-ls", "baseline", {"model.name": "resnet8", **sched["cosine"],
                                          "train.label_smoothing": 0.1}, 20, None, **sup)
    add("resnet20-cosine", "baseline", {"model.name": "resnet20", **sched["cosine"]}, 12, None,
        **sup)
    add("r8x0.25-cosine", "baseline", {**TINY, **sched["cosine"]}, 60, None, **sup)
    add("fast", "fast", {"train.eval_every": 1, "train.checkpoint_every": 1000}, 12, None, **sup)
    add("default", "default", {}, 32, None, **sup)
    add("cnn4-cosine", "baseline", {**cnn4, **sched["cosine"]}, 100, None, **sup)
    return fam


TEACHER = {"model.name": "resnet8", "schedule.name": "cosine"}
TEACHER_EPOCHS = {"mnist5k": 15, "digits": 40}


def jobs() -> list[dict[str, Any]]:
    """Every run of the grid: (dataset, family, epochs, seed) × factors 1, 2 (and 4)."""
    out = []
    for data in ("digits", "mnist5k"):
        for f in families():
            epochs = f["epochs"][data]
            if epochs is None:
                continue
            for seed in f["seeds"]:
                config = f"{data}/{f['family']}-e{epochs}-s{seed}"
                for k in (1, *f["factors"]):
                    out.append({"id": f"{config}/x{k}", "config": config, "data": data,
                                "family": f["family"], "preset": f["preset"],
                                "over": f["over"], "epochs": epochs, "seed": seed, "factor": k,
                                "teacher": f["teacher"], "group": f["group"]})
    return out


def recipe_of(job: dict[str, Any]):
    from lightship import make_recipe
    from lightship.diagnose.twin import twin_recipe

    over = {**BASE, **{k: v for k, v in job["over"].items() if k != "schedule.warmup_epochs"},
            "data.name": job["data"], "train.epochs": job["epochs"], "train.seed": job["seed"],
            "run.dir": str(WORK / "runs"), "run.name": job["id"].replace("/", "_")}
    warm = job["over"].get("schedule.warmup_epochs")
    if warm == "30%":  # one-cycle: linear warmup over 30 % of training, then linear decay to 0
        over["schedule.warmup_epochs"] = round(0.3 * job["epochs"], 3)
    if job["teacher"]:
        over["method.teacher.run"] = str(WORK / "runs" / f"teacher_{job['data']}")
    base = make_recipe(job["preset"], over)
    if job["factor"] == 1:
        return base
    return twin_recipe(base, job["factor"], name=over["run.name"])


def _compact_steps(steps: list[dict]) -> dict[str, list]:
    def r(x: Any) -> Any:
        return float(f"{x:.5g}") if isinstance(x, float) else x
    return {"epoch": [s["epoch"] for s in steps], "loss": [r(s["loss"]) for s in steps],
            "lr": [r(s["lr"]) for s in steps], "grad_norm": [r(s.get("grad_norm")) for s in steps]}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from lightship.evaluate import measure_fit
    from lightship.runs import read_records
    from lightship.train.loop import train

    torch.set_num_threads(1)
    out = WORK / "results" / (job["id"].replace("/", "_") + ".json")
    if out.exists():
        return json.loads(out.read_text())
    recipe = recipe_of(job)
    t0 = time.time()
    res = train(recipe, overwrite=True, progress=False, quiet=True)
    wall = time.time() - t0
    recs = read_records(res.run_dir)
    keep = ("epoch", "step", "train_loss", "train_ce", "train_top1", "test_loss", "test_top1",
            "lr")
    evals = [{k: r[k] for k in keep if k in r} for r in recs.evals]
    start = recs.starts[0]
    record = {**{k: job[k] for k in ("id", "config", "data", "family", "epochs", "seed",
                                     "factor", "group")},
              "recipe": recipe.to_dict(), "evals": evals, "steps": _compact_steps(recs.steps),
              "start": {k: start.get(k) for k in ("params", "macs", "steps_per_epoch",
                                                  "lr_peak", "precision")},
              "fit": measure_fit(res.run_dir), "summary": {k: res.summary.get(k) for k in (
                  "test_top1", "test_loss", "train_loss", "verdict", "verdict_line",
                  "wall_time_s")}, "wall_s": round(wall, 2)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(out)
    return record


def _teacher(data: str) -> None:
    from lightship import make_recipe
    from lightship.train.loop import train

    folder = WORK / "runs" / f"teacher_{data}"
    if (folder / "weights.safetensors").exists():
        return
    recipe = make_recipe("baseline", {**BASE, **TEACHER, "data.name": data,
                                      "train.epochs": TEACHER_EPOCHS[data],
                                      "run.dir": str(WORK / "runs"),
                                      "run.name": f"teacher_{data}"})
    train(recipe, overwrite=True, progress=False, quiet=True)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_grid(n_jobs: int, only: str | None, first: str | None = None) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # one thread per worker: no spinning across workers
    import torch

    torch.set_num_threads(1)
    todo = [j for j in jobs() if only is None or only in j["id"]]
    from lightship.train.precision import cpu_kind

    print(f"{len(todo)} runs on {cpu_kind()}, {n_jobs} workers "
          "× 1 thread, fp32", flush=True)
    with ProcessPoolExecutor(n_jobs, initializer=_init_worker) as pool:
        list(pool.map(_teacher, ["digits", "mnist5k"]))
        # the costliest first, so the two workers end together (`--first DATA`: that data's
        # runs before the others)
        todo.sort(key=lambda j: (first is not None and j["data"] != first,
                                 -j["epochs"] * j["factor"] * _cost(j)))
        futures = {pool.submit(run_job, j): j for j in todo}
        t0 = time.time()
        for i, fut in enumerate(as_completed(futures), 1):
            j = futures[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # report and go on: one broken run must not stop the grid
                print(f"[{i}/{len(todo)}] {j['id']}: FAILED {type(exc).__name__}: {exc}",
                      flush=True)
                continue
            print(f"[{i}/{len(todo)} {time.time() - t0:.0f}s] {j['id']}: clean CE "
                  f"{rec['fit']['train_ce']:.4f}, {rec['wall_s']:.0f}s", flush=True)
    collect()


def _cost(job: dict[str, Any]) -> float:
    """Seconds per epoch on one thread, measured roughly (mnist5k; digits ≈ 1/8)."""
    m = job["over"].get("model.name", {"fast": "fastcnn16-4", "default": "fastcnn24-4"}.get(
        job["family"], ""))
    per = {"cnn4": 0.5, "resnet8": 2.5, "resnet20": 6.3, "wrn-16-1": 4.5}.get(m, 1.0)
    if job["over"].get("model.width") == 0.25:
        per = 1.0
    return per * (1.0 if job["data"] == "mnist5k" else 0.15)


def collect() -> None:
    recs = []
    for j in jobs():
        out = WORK / "results" / (j["id"].replace("/", "_") + ".json")
        if out.exists():
            recs.append(json.loads(out.read_text()))
    import torch

    # the ground truth's tolerance lives with the twin, fixed there before any verdict was
    # scored against it
    from lightship.diagnose.twin import TWIN_ATOL, TWIN_RTOL
    from lightship.train.precision import cpu_kind

    meta = {"cpu": cpu_kind(), "torch": torch.__version__, "atol": TWIN_ATOL, "rtol": TWIN_RTOL,
            "tune": TUNE, "held_out": HELD_OUT, "threads": 1}
    with gzip.open(RESULTS, "wt") as f:
        json.dump({"meta": meta, "runs": recs}, f, separators=(",", ":"))
    print(f"wrote {RESULTS} ({len(recs)} runs)")


def load() -> dict[str, Any]:
    with gzip.open(RESULTS, "rt") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="store_true", help="train the grid (skips finished runs)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", help="train only runs whose id contains this")
    ap.add_argument("--first", help="train this dataset's runs before the others")
    ap.add_argument("--plan", action="store_true", help="list the runs and their rough cost")
    ap.add_argument("--collect", action="store_true", help="gather finished runs into the JSON")
    ap.add_argument("--annotate-old", action="store_true",
                    help="store the verdict of the lightship on PYTHONPATH as each run's 'old' "
                    "verdict (run with the code before the new rule: see the docstring)")
    ap.add_argument("--analyse", action="store_true", help="score the verdicts (default)")
    ap.add_argument("--detail", action="store_true", help="with --analyse: one line per pair")
    args = ap.parse_args(argv)
    if args.plan:
        js = jobs()
        cost = sum(j["epochs"] * j["factor"] * _cost(j) for j in js)
        print(f"{len(js)} runs, {len({j['config'] for j in js})} configs, ≈ {cost / 60:.0f} "
              "min on one thread")
        return 0
    if args.run:
        run_grid(args.jobs, args.only, args.first)
        return 0
    if args.collect:
        collect()
        return 0
    from convergence_analysis import analyse, annotate_old  # benchmarks/ is on sys.path

    if args.annotate_old:
        data = load()
        annotate_old(data)
        with gzip.open(RESULTS, "wt") as f:
            json.dump(data, f, separators=(",", ":"))
        print(f"stored the old verdict of {len(data['runs'])} runs in {RESULTS}")
        return 0
    return analyse(load(), detail=args.detail)


if __name__ == "__main__":
    sys.exit(main())
