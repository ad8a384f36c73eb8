"""`pretrain`: fine-tuning a pretrained net vs training from scratch (He, Girshick & Dollár 2019).

"Rethinking ImageNet Pre-training" trains Mask R-CNN on COCO from ImageNet weights and from
random init with the same recipe, and finds: (a) pre-training speeds up convergence early; (b)
with the full target set, training from scratch with a longer schedule catches up; (c) with
little target data (1k COCO images ≈ 1 %) scratch falls clearly behind (it overfits); (d) from
scratch needs normalisation that works with small per-GPU batches (GN or SyncBN; BN on 2 images
per GPU does not train well).

Here the source is a disjoint set of classes of the same images (MNIST-5k digits 0–4, relabelled
0..4 by ``data.classes``), the target the other classes (digits 5–9). A fine-tuned arm starts
from the source arm's cell of the same seed and fold (``Arm.needs`` → ``model.init``); the head
is re-initialised because the classes differ (the start record's ``init.line`` says so). With
``data.folds`` both sides split the same pooled images with the same fold, so neither ever
trains on a target test image; and the source never sees a digit 5–9 at all.

Schedules are counted in optimiser steps at a fixed batch, as the paper counts iterations: ×k is
k × S steps for every data fraction (S = ``budget.epochs`` epochs of the full target set), so the
1 % arm gets as many updates as the 100 % arm and repeats its few images instead. The learning
rate drops ÷10 when 2S/3 and again when 2S/9 steps are left, whatever the schedule's length: the
paper's last 60k and last 20k iterations of its ×1 = 90k (detectron2's
``configs/Misc/scratch_mask_rcnn_R_50_FPN_9x_gn.yaml``: STEPS (187500, 197500) of MAX_ITER
202500 at 4× the batch, "last 60/4==15k and last 20/4==5k"; its 3× configs (210000, 250000) of
270000). Until issue 22 the drops came S/3 and S/9 before the end (the 1× config's 60k and 80k
of 90k, read as a share of S). Warmup as detectron2's default solver: linear from 1/1000 of the
rate over 1000 of the 90k iterations (S/90). The step
counts are planned on the budget's own dataset and fold count (fold 0; folds differ by a few
images); with another ``--data`` or ``--folds`` the arms keep their epochs, and the cells' logs
hold the steps they really took.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from lightship.judge import AllOf, Claim, Difference, Equivalence, Unit
from lightship.studies.base import Arm, Budget, Comparison, Study

PAPER = "He et al. 2019 (Rethinking ImageNet Pre-training)"
SOURCE, TARGET = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
# Seconds per optimiser step at one torch thread, resnet8, measured on the shared 2-core machine
# (load ≈ 5–8; docs/studies.md): they order the cells and weight the ETA.
STEP_COST = {(0.5, 16): 0.045, (0.5, 8): 0.030, (0.25, 8): 0.02, (1.0, 16): 0.10}
#: The paper's low-rate phases as shares of the ×1 schedule S = 90k: its last 60k and last 20k
#: iterations (detectron2's scratch 9x config: the last 15k and 5k of 202.5k at 4× the batch).
LEFT_AT_DROPS = (2 / 3, 2 / 9)
#: detectron2's default solver warmup: 1000 of the ×1's 90k iterations, from 1/1000 of the rate.
WARMUP_SHARE, WARMUP_START = 1000 / 90000, 1e-3


def drop_steps(total: int, s: int) -> list[float]:
    """The steps of a ``total``-step schedule at which the rate drops ÷10: when 2S/3 and when
    2S/9 steps are left (at least step 1)."""
    return [max(total - left * s, 1) for left in LEFT_AT_DROPS]


def _small_batch_x(o: dict[str, Any]) -> int:
    """(d)'s schedule multiple: the longest schedule, unless the budget sets ``small_batch_x``."""
    return o.get("small_batch_x", o["schedules"][-1])


def _pct(f: float) -> str:
    return f"{f * 100:g} %"


def _fname(f: float) -> str:
    return f"p{f * 100:g}".replace(".", "_")


@functools.lru_cache(maxsize=64)
def _n_train(data: str, classes: tuple[int, ...], fraction: float, folds: int | None) -> int:
    """Training images of fold 0 for these classes and fraction (the folds differ by a few)."""
    from lightship.data import load_dataset

    return load_dataset(data, classes=list(classes), fraction=fraction, folds=folds,
                        fold=0).info.n_train


class Pretrain(Study):
    name = "pretrain"
    title = "fine-tuned vs from scratch: does pre-training help, and when?"
    paper = PAPER
    claim = ("(a) fine-tuning converges faster early; (b) with the full target set, scratch with "
             "a longer schedule catches up; (c) with ~1 % of the target data scratch falls "
             "clearly behind; (d) GN lets scratch train where BN's small-batch statistics hurt.")
    metric_names = {"early_top1": "early test top-1 (points)"}
    budgets = {
        "quick": Budget("quick", epochs=1, seeds=1, folds=2, note=(
            "resnet8 ×0.25, batch 8 (small batch 4), source 10 % of each fold's digits 0–4, "
            "target fractions 10 % and 1 % of its digits 5–9, schedules ×1 and ×2 of 1 epoch of "
            "the 10 % set: checks the machinery only"),
            options={"width": 0.25, "gn_groups": 4, "batch": 8, "small_batch": 4,
                     "fractions": (0.1, 0.01), "schedules": (1, 2), "source_x": 2,
                     "source_fraction": 0.1, "data": "mnist5k"}),
        # Sized in session 2026-12-02: at ×1 = 2 epochs (the earlier default) the 100 cells took
        # 2 min 52 s on 2 quiet cores but only the 10 % and 1 % arms at ×2/×3 converged, so
        # (b)–(d) were under-trained; ×1 = 8 epochs (4× the steps) with twins. At 8 epochs only
        # (d)'s batch-8 arms stayed unconverged at ×3 (2026-12-02: 0/8 cells; their ×6 twins
        # still fell by more than the tolerance); at ×12 all 8 converged (a converged budget of
        # (d) alone, 5 min 25 s, 2026-12-03), so the default trains them at ×12 and converges.
        "default": Budget("default", epochs=8, seeds=1, folds=4, note=(
            "MNIST-5k digits 0–4 as the source instead of ImageNet, digits 5–9 as the target "
            "instead of COCO; resnet8 ×0.5 (8/16/32 channels; GN with 4 groups, 2 channels per "
            "group at the first stage as the default 8 groups have at ×1) instead of a Mask "
            "R-CNN ResNet-50; batch 16 (the paper's total batch), lr 0.1 × 16/64; ×1 = 8 epochs "
            "of the full target, 936 steps, instead of 90k iterations; source 1,872 steps; "
            "(d) at batch 8 (instead of the paper's 2 images per GPU) for ×12 = 11,232 steps "
            "(at ×3 its cells did not converge); one "
            "seed × 4 folds (the corrected fold interval); cells the verdict does not call "
            "converged are confirmed by their ×2-schedule twins"), confirm=True, converges=True,
            measured=("28 min 21 s (100 cells + 1 twin), 86/100 cells converged: all 40 that "
                      "the claims on trained nets read ((b)–(d)); not: ×1 at 100 %, the GN "
                      "source, one extra-arm cell (2026-12-03, AMD EPYC with native bf16, fp32: "
                      "the baseline recipe's own)"),
            options={"width": 0.5, "gn_groups": 4, "batch": 16, "small_batch": 8,
                     "fractions": (1.0, 0.1, 0.01), "schedules": (1, 2, 3), "source_x": 2,
                     "data": "mnist5k", "small_batch_x": 12,
                     # added after the first run, where (d) did not reproduce: is GN behind BN
                     # at batch 16 too (GN slower here) or only at 8 (BN's statistics)?
                     "gn_at_batch": True}),
        "full": Budget("full", epochs=12, seeds=3, folds=None, data=None, note=(
            "CIFAR-10 classes 0–4 (airplane … deer) as the source, 5–9 (dog … truck) as the "
            "target, resnet8 ×1, batch 16, ×1 = 12 epochs of the 25,000 target images "
            "(≈ 18.7k steps, the paper's ×1 is ≈ 12 COCO epochs), schedules ×1/×2/×3, (d) at "
            "batch 2 per step as the paper's 2 images per GPU; give --data "
            "PATH/cifar-10-batches-py and a GPU"),
            options={"width": 1.0, "gn_groups": 8, "batch": 16, "small_batch": 2,
                     "fractions": (1.0, 0.1, 0.01), "schedules": (1, 2, 3), "source_x": 2,
                     "n_train": {1.0: 25000, 0.1: 2500, 0.01: 250}}),
    }

    # ------------------------------------------------------------------ the grid

    def _n(self, budget: Budget, classes: tuple[int, ...], fraction: float) -> int:
        known = budget.options.get("n_train")
        if known is not None:
            return known[fraction]
        return _n_train(budget.options["data"], classes, fraction, budget.folds)

    def steps_x1(self, budget: Budget) -> int:
        """S: the ×1 schedule in steps (budget.epochs epochs of the largest target fraction)."""
        o = budget.options
        return budget.epochs * (self._n(budget, TARGET, o["fractions"][0]) // o["batch"])

    def _schedule(self, budget: Budget, n: int, batch: int, steps: int) -> dict[str, Any]:
        """Recipe keys for ``steps`` optimiser steps on ``n`` images: epochs, the two ÷10
        milestones when 2S/3 and 2S/9 steps are left (:func:`drop_steps`), the linear warmup
        over S/90 steps from 1/1000 of the rate, and an eval (and checkpoint) about every S/8
        steps (at least once per epoch)."""
        spe = n // batch
        if spe < 1:
            raise ValueError(f"{n} training images cannot fill a batch of {batch}")
        epochs = max(1, round(steps / spe))
        total, s = epochs * spe, self.steps_x1(budget)
        marks = [m / spe for m in drop_steps(total, s)]
        every = max(1, round(s / 8 / spe))
        return {"train.epochs": epochs, "train.batch_size": batch,
                "schedule.milestones": [round(m, 4) for m in marks],
                "schedule.warmup_epochs": round(s * WARMUP_SHARE / spe, 4),
                "schedule.warmup_start": WARMUP_START,
                "train.eval_every": every, "train.checkpoint_every": every}

    def _base(self, budget: Budget, norm: str) -> dict[str, Any]:
        o = budget.options
        return {"model.name": "resnet8", "model.width": o["width"], "model.norm": norm,
                "model.gn_groups": o["gn_groups"], "optim.lr": 0.1, "optim.lr_scaling": True,
                "optim.reference_batch": 64, "optim.momentum": 0.9, "optim.weight_decay": 1e-4,
                "schedule.name": "multistep", "schedule.gamma": 0.1}

    def _cost(self, budget: Budget, batch: int, steps: int, epochs: int) -> float:
        """Expected seconds per epoch (the runner multiplies by the epochs)."""
        per_step = STEP_COST.get((budget.options["width"], batch), 0.004 * batch)
        return per_step * steps / epochs + 0.05

    def _arm(self, budget: Budget, name: str, label: str, norm: str, classes: tuple[int, ...],
             fraction: float, batch: int, steps: int, needs: str | None = None) -> Arm:
        n = self._n(budget, classes, fraction)
        sched = self._schedule(budget, n, batch, steps)
        over = {**self._base(budget, norm), **sched, "data.classes": list(classes),
                "data.fraction": fraction}
        real = sched["train.epochs"] * (n // batch)
        return Arm(name, f"{label} ({real} steps)", "baseline", over,
                   self._cost(budget, batch, real, sched["train.epochs"]),
                   {"model.init": needs} if needs else {})

    def arms(self, budget: Budget) -> list[Arm]:
        o, s = budget.options, self.steps_x1(budget)
        full, b, sb = o["fractions"][0], o["batch"], o["small_batch"]
        out = [self._arm(budget, f"src-{norm}", f"source 0–4, {norm.upper()}", norm, SOURCE,
                         o.get("source_fraction", 1.0), b, o["source_x"] * s)
               for norm in ("bn", "gn")]
        for f in o["fractions"]:
            for k in o["schedules"]:
                for init, what in (("ft", "fine-tuned"), ("sc", "scratch")):
                    out.append(self._arm(budget, f"{init}-{_fname(f)}-x{k}",
                                         f"{what}, {_pct(f)}, ×{k}", "bn", TARGET, f, b, k * s,
                                         "src-bn" if init == "ft" else None))
        kn = o["schedules"][-1]  # scratch is judged at its longest schedule, as in the paper
        kd = _small_batch_x(o)
        for norm in ("bn", "gn"):
            for init, what in (("ft", "fine-tuned"), ("sc", "scratch")):
                out.append(self._arm(budget, f"{init}-{norm}-b{sb}",
                                     f"{what}, {norm.upper()}, batch {sb}, {_pct(full)}, ×{kd}",
                                     norm, TARGET, full, sb, kd * s,
                                     f"src-{norm}" if init == "ft" else None))
        if o.get("gn_at_batch"):  # the targeted extra arm for (d): GN at the main batch
            out.append(self._arm(budget, f"sc-gn-b{b}", f"scratch, GN, batch {b}, {_pct(full)}, "
                                 f"×{kn} (extra)", "gn", TARGET, full, b, kn * s))
        return out

    def comparisons(self, budget: Budget) -> list[Comparison]:
        """Δ = fine-tuned − scratch (positive: pre-training helps); GN − BN for (d)."""
        o, out = budget.options, []
        for metric in ("test_top1", "train_ce"):
            for f in o["fractions"]:
                for k in o["schedules"]:
                    out.append(Comparison(f"sc-{_fname(f)}-x{k}", f"ft-{_fname(f)}-x{k}", metric,
                                          f"fine-tuned − scratch, {_pct(f)}, ×{k}"))
        for f in o["fractions"]:
            k = o["schedules"][0]
            out.append(Comparison(f"sc-{_fname(f)}-x{k}", f"ft-{_fname(f)}-x{k}", "early_top1",
                                  f"fine-tuned − scratch, {_pct(f)}, ×{k}, first half"))
        f0, k0, kn = _fname(o["fractions"][0]), o["schedules"][0], o["schedules"][-1]
        out.append(Comparison(f"ft-{f0}-x{k0}", f"sc-{f0}-x{kn}", "test_top1",
                              f"scratch ×{kn} − fine-tuned ×{k0}, {_pct(o['fractions'][0])}"))
        sb = o["small_batch"]
        out += [Comparison(f"sc-bn-b{sb}", f"sc-gn-b{sb}", "test_top1",
                           f"scratch GN − scratch BN, batch {sb}"),
                Comparison(f"sc-bn-b{sb}", f"sc-gn-b{sb}", "train_ce",
                           f"scratch GN − scratch BN, batch {sb}"),
                Comparison(f"sc-bn-b{sb}", f"ft-bn-b{sb}", "test_top1",
                           f"fine-tuned − scratch, BN, batch {sb}"),
                Comparison(f"sc-gn-b{sb}", f"ft-gn-b{sb}", "test_top1",
                           f"fine-tuned − scratch, GN, batch {sb}")]
        same = _small_batch_x(o) == kn  # batch against batch only at the same steps
        if same:
            out.append(Comparison(f"sc-{f0}-x{kn}", f"sc-bn-b{sb}", "test_top1",
                                  f"scratch BN batch {sb} − batch {o['batch']}, ×{kn} "
                                  "(same steps)"))
        if o.get("gn_at_batch"):
            b = o["batch"]
            out += [Comparison(f"sc-{f0}-x{kn}", f"sc-gn-b{b}", metric,
                               f"scratch GN − scratch BN, batch {b}, ×{kn} (extra)")
                    for metric in ("test_top1", "train_ce")]
            if same:
                out.append(Comparison(f"sc-gn-b{b}", f"sc-gn-b{sb}", "test_top1",
                                      f"scratch GN batch {sb} − batch {b}, ×{kn} (same steps)"))
        return out

    # ------------------------------------------------------------------ per-cell extras

    @staticmethod
    def test_evals(res, record: dict) -> list[tuple[int, float]]:
        """(step, test top-1) of the cell's real test passes (every ``train.eval_every`` epochs
        and the last; the eval records between them repeat the last test numbers)."""
        from lightship.runs import parse_records

        cell = next((c for c in res.plan.cells if c.rel == record["run"]), None)
        try:
            recs = parse_records(res.plan.out / record["run"] / "metrics.jsonl")
        except OSError:
            return []
        every = cell.recipe.train.eval_every if cell is not None else 1
        last = cell.recipe.train.epochs if cell is not None else None
        by_epoch = {r["epoch"]: r for r in recs if r.get("kind") == "eval" and "test_top1" in r}
        return [(r["step"], r["test_top1"]) for e, r in sorted(by_epoch.items())
                if e % every == 0 or e == last]

    def annotate(self, res) -> None:
        """Each target cell's ``early_top1``: the mean test top-1 of its test passes in the
        first half of the ×1 schedule (the early part of the paper's Fig. 1 curves), or of its
        first test pass when none falls there; ``early_steps`` says up to which step."""
        half = self.steps_x1(res.budget) / 2
        for a in res.arms.values():
            for c in a.cells:
                evals = dict(self.test_evals(res, c))
                early = [st for st in evals if st <= half * 1.05] or sorted(evals)[:1]
                if early:  # no test pass in the first half: the first one
                    c["early_top1"] = sum(evals[st] for st in early) / len(early)
                    c["early_steps"] = max(early)
                c["steps"] = max(evals, default=None)

    # ------------------------------------------------------------------ verdicts

    #: (b)'s margin: "caught up" = fine-tuned − scratch within ±0.5 points of test top-1 at the
    #: longest schedule on the full target set (the paper: scratch reaches 50.9 vs 51.3 AP /
    #: within ~0.5 AP); fixed here, before any cell runs.
    CATCH_UP_MARGIN = 0.5

    def claims(self, budget: Budget, unit: Unit) -> list[Claim]:
        """He et al. 2019's four claims (Δ = A − B):

        - (a) fine-tuned ahead of scratch early (``early_top1``, the first half of ×1) at every
          fraction — about early training, so not restricted to converged cells;
        - (b) full target set, longest schedule: fine-tuned and scratch equivalent within
          :data:`CATCH_UP_MARGIN` points (TOST), on converged cells;
        - (c) ~1 % of the target: fine-tuned ahead at every schedule, on converged cells;
        - (d) from scratch at the small batch, GN beats BN, on converged cells;
        - exploratory (the arm added after the first run): GN vs BN from scratch at the main
          batch."""
        o = budget.options
        fr, ks = o["fractions"], o["schedules"]
        k0, kn, sb, b = ks[0], ks[-1], o["small_batch"], o["batch"]
        f0, fl = _fname(fr[0]), _fname(fr[-1])
        conv = {"unit": unit, "needs_converged": True}
        out: list[Claim] = [
            AllOf(tuple(Difference(f"ft-{_fname(f)}-x{k0}", f"sc-{_fname(f)}-x{k0}",
                                   "early_top1", ">", unit=unit) for f in fr),
                  label=f"(a) fine-tuned ahead of scratch early (first half of ×{k0}) at every "
                        "fraction"),
            Equivalence(f"ft-{f0}-x{kn}", f"sc-{f0}-x{kn}", "test_top1", self.CATCH_UP_MARGIN,
                        **conv, label=f"(b) {_pct(fr[0])} of the target, ×{kn}: scratch caught "
                                      f"up (within ±{self.CATCH_UP_MARGIN:g} points)"),
            AllOf(tuple(Difference(f"ft-{fl}-x{k}", f"sc-{fl}-x{k}", "test_top1", ">", **conv)
                        for k in ks),
                  label=f"(c) {_pct(fr[-1])} of the target: fine-tuned ahead at every schedule"),
            Difference(f"sc-gn-b{sb}", f"sc-bn-b{sb}", "test_top1", ">", **conv,
                       label=f"(d) from scratch at batch {sb}, GN beats BN"),
        ]
        if o.get("gn_at_batch"):
            out.append(Difference(f"sc-gn-b{b}", f"sc-{f0}-x{kn}", "test_top1", ">", **conv,
                                  primary=False, label=f"from scratch at batch {b}, GN beats "
                                                       "BN (extra arm)"))
        return out

    def notes(self, res) -> list[str]:
        return [self._head_line(res)]

    def _head_line(self, res) -> str:
        """What the fine-tuned cells' start records say about the init (head re-initialised)."""
        import json

        seen: dict[str, int] = {}
        for a in res.arms.values():
            if not a.arm.needs:
                continue
            for c in a.cells:
                try:
                    with open(Path(res.plan.out) / c["run"] / "metrics.jsonl") as fh:
                        start = json.loads(fh.readline())
                except (OSError, ValueError):
                    continue
                line = (start.get("init") or {}).get("line", "no init record")
                seen[line] = seen.get(line, 0) + 1
        if not seen:
            return "init: no fine-tuned cell finished yet"
        return "init of the fine-tuned cells (start records): " + "; ".join(
            f"{line} ×{n}" for line, n in sorted(seen.items(), key=lambda t: -t[1]))

    # ------------------------------------------------------------------ figure

    def plots(self, res) -> dict[str, Any]:
        from matplotlib.ticker import MaxNLocator

        from lightship.report.html import _figure

        o = res.budget.options
        fr, ks = o["fractions"], o["schedules"]

        def curve(name: str) -> tuple[list[float], list[float]]:
            runs = [self.test_evals(res, c) for c in res.arm(name).cells]
            runs = [r for r in runs if r]
            n = min((len(r) for r in runs), default=0)
            xs = [sum(r[i][0] for r in runs) / len(runs) for i in range(n)]
            ys = [sum(r[i][1] for r in runs) / len(runs) for i in range(n)]
            return xs, ys

        fig, axes = _figure(1, len(fr) + 1, 3.4)
        for ax, f in zip(axes[0], fr, strict=False):
            for i, k in enumerate(ks):
                for init, ls, what in (("ft", "-", "fine-tuned"), ("sc", "--", "scratch")):
                    x, y = curve(f"{init}-{_fname(f)}-x{k}")
                    if x:
                        ax.plot(x, y, ls=ls, color=f"C{i}", lw=1.8 if init == "ft" else 1.2,
                                marker="o", ms=2.5, label=f"{what} ×{k}")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.set_title(f"target {_pct(f)}", fontsize=9)
            ax.set_xlabel("optimiser steps")
            ax.set_ylabel("test top-1 (%, mean over cells)")
            lo = min((line.get_ydata().min() for line in ax.get_lines()), default=0)
            ax.set_ylim(max(lo - 2, 0), 100)
            ax.legend(fontsize=6.5)
        ax = axes[0][len(fr)]
        sb = o["small_batch"]
        b, kn = o["batch"], ks[-1]
        names = [(f"sc-bn-b{sb}", f"scratch BN b{sb}", "C3"),
                 (f"sc-gn-b{sb}", f"scratch GN b{sb}", "C2"),
                 (f"ft-bn-b{sb}", f"fine-tuned BN b{sb}", "C3"),
                 (f"ft-gn-b{sb}", f"fine-tuned GN b{sb}", "C2"),
                 (f"sc-{_fname(fr[0])}-x{kn}", f"scratch BN b{b}", "C1"),
                 (f"sc-gn-b{b}", f"scratch GN b{b}", "C9")]
        vals = [(label, res.arm(n).stat("test_top1"), col) for n, label, col in names]
        vals = [(label, s, col) for label, s, col in vals if s.mean is not None]
        if vals:
            ax.bar(range(len(vals)), [s.mean for _, s, _ in vals],
                   yerr=[s.std or 0.0 for _, s, _ in vals], capsize=3,
                   color=[col for _, _, col in vals])
            ax.set_xticks(range(len(vals)), [label for label, _, _ in vals], rotation=30,
                          fontsize=6.5, ha="right")
            lo = min(s.mean - (s.std or 0.0) for _, s, _ in vals)
            ax.set_ylim(max(math.floor(lo) - 2, 0), 100)
        kd = _small_batch_x(o)
        ax.set_title(f"BN vs GN, {_pct(fr[0])}, ×{kn}" + (f" (b{sb}: ×{kd})" if kd != kn else ""),
                     fontsize=9)
        ax.set_ylabel("final test top-1 (%)")
        fig.suptitle("pretrained on digits 0–4 vs from scratch, target digits 5–9 "
                     "(He et al. 2019 Fig. 1 style: solid fine-tuned, dashed scratch)", fontsize=10)
        return {"pretrain.png": fig}
