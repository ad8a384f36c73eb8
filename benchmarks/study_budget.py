"""Budget arithmetic of a study: measured seconds per epoch of every arm → the study's time.

For each arm of ``--budget`` it builds the cell's model and batch exactly as the recipe says
(model options, batch size, memory format), times training steps and a test pass on one torch
thread, and prints

    s/epoch = n_train / train img/s + n_test / eval img/s      (once per evaluated epoch)
    cell    = epochs × s/epoch
    study   = Σ cells / jobs                                   (one thread per job)

The machine's load average is printed with the numbers: on a shared machine they are upper
bounds of the quiet-machine time.

    python benchmarks/study_budget.py [--study degradation tricks underfit] [--budget default]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lightship.data import load_data
from lightship.models import create_model
from lightship.studies import get_study
from lightship.studies.runner import make_plan


def _ips(model, batch: int, channels_last: bool, train: bool, seconds: float,
         size: int = 28, chans: int = 1) -> float:
    x = torch.randn(batch, chans, size, size)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        if train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with torch.inference_mode():
                model.eval()(x)

    step()
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", nargs="+", default=["degradation", "tricks", "underfit"])
    ap.add_argument("--budget", default="default")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.study:
        study = get_study(name)
        plan = make_plan(study, args.budget, seeds=None, folds=None, data=None,
                         out=Path("/nonexistent/study"), command="")  # the budget's own data
        info = load_data(plan.cells[0].recipe.data).info
        k = plan.folds or 1
        n_all = info.n_train + info.n_test
        n_test = info.n_test
        print(f"\n{name} --budget {args.budget} on {plan.data}: {len(plan.cells)} cells "
              f"({len(plan.seeds)} seeds × {k} folds), load {os.getloadavg()[0]:.2f}")
        print("| arm | batch | train img/s | eval img/s | s/epoch | epochs | s/cell |")
        print("|---|---|---|---|---|---|---|")
        total = 0.0
        for arm in study.arms(plan.budget):
            cell = next(c for c in plan.cells if c.arm == arm.name)
            r = cell.recipe
            m = r.model
            model = create_model(m.name, info.num_classes, info.in_chans, info.input_size,
                                 norm=m.norm, zero_gamma=m.zero_gamma,
                                 shortcut=m.shortcut, variant=m.variant, plain=m.plain,
                                 width=m.width)
            cl = r.train.channels_last is not False
            n_train = round((n_all - n_test) * r.data.fraction)
            shape = (info.input_size, info.in_chans)
            tr = _ips(model, r.train.batch_size, cl, True, args.seconds, *shape)
            ev = _ips(model, 512, cl, False, args.seconds / 2, *shape)
            evals = min(r.train.epochs, r.train.epochs // r.train.eval_every + 1)
            cell_s = r.train.epochs * n_train / tr + evals * n_test / ev
            per_epoch = cell_s / r.train.epochs
            n_cells = sum(1 for c in plan.cells if c.arm == arm.name)
            total += cell_s * n_cells
            print(f"| {arm.label} | {r.train.batch_size} | {tr:.0f} | {ev:.0f} | "
                  f"{per_epoch:.1f} | {r.train.epochs} | {cell_s:.0f} |", flush=True)
        print(f"Σ cells = {total:.0f} s on one thread; with --jobs {args.jobs}: "
              f"{total / args.jobs / 60:.1f} min (load {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()
