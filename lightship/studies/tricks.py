"""`tricks`: the Bag-of-Tricks recipe one trick at a time (He et al. 2019, Tables 4–6 style).

Cumulative rows, each compared with the row above (paired, same seed and fold):

baseline (Nesterov SGD, momentum 0.9, weight decay 1e-4, lr 0.1 × batch / 256 at batch 64,
lr ÷10 at 25/50/75 % of training as the paper's 30/60/90 of 120 epochs, crop augmentation)
→ + batch ×4 with the linear lr scaling and a linear warmup of 5/120 of training
→ + zero-γ → + no bias decay → + cosine decay → + label smoothing ε = 0.1
→ + mixup α = 0.2, trained 200/120 as long (the paper: mixup needs longer training)
→ ResNet-B (bottleneck nets only) → ResNet-C → ResNet-D.

The paper's claim: every row is at least as good as the row above, and the stack beats the
baseline. Its own Table 4 shows two rows that lose a little (no bias decay at batch 1024).
"""

from __future__ import annotations

from typing import Any

from lightship.judge import Claim, Difference, Unit
from lightship.studies.base import Arm, Budget, Comparison, Study, converged_budget

PAPER = "He et al. 2019 (Bag of Tricks)"
MIXUP_LONGER = 200 / 120
NO_ZERO_GAMMA = "stack-no-zero-gamma"


class Tricks(Study):
    name = "tricks"
    title = "Bag of Tricks, one trick at a time"
    paper = PAPER
    claim = ("each trick raises test top-1 over the row above it (the paper's tables report a "
             "gain for almost every row), and the stack beats the baseline.")
    budgets = {
        "quick": Budget("quick", epochs=2, seeds=1, folds=2, note=(
            "resnet10 ×0.125, 2 epochs (mixup rows 3) on 10 % of each fold's training digits: "
            "checks the machinery only"),
            options={"model": "resnet10", "width": 0.125, "batch": 16, "fraction": 0.1},
            final_eval_only=True),
        # A first design with batch 64 → 256 and 5 folds gave the large-batch rows 15 steps per
        # epoch, 150 in all: no row converged and zero-γ never left chance (docs/studies.md).
        # Batch 16 → 64 gives 4× the steps for about the same time; 4 folds pay for it.
        # Sized in session 2026-12-02 on digits (fold 0, 30 and 60 epochs): every row at 92–99 %
        # test top-1 (zero-γ no longer stuck at chance); at 60 epochs only cosine passed the
        # verdict's headroom rule and the smoothed rows sat at 0.12–0.17 against their floor
        # 0.094, so twins decide.
        "default": Budget("default", epochs=100, seeds=3, folds=2, data="digits", note=(
            "the paper's values on a small net: ImageNet-style resnet10 at width ×0.125 "
            "(basic blocks, so the ResNet-B row, which only moves a bottleneck's stride, is the "
            "same net and is not run; the small-input stem: 3×3, stride 1, no max-pool), batch "
            "16 → 64 instead of 256 → 1024, sklearn digits (8×8, 2-fold, ≈ 900 training "
            "images) instead of ImageNet, 100 epochs (mixup rows 167) instead of 120 (200), "
            "warmup 5/120 of training, no FP16 on the CPU; 3 seeds; cells the verdict does not "
            "call converged are confirmed by their ×2-schedule twins"),
            options={"model": "resnet10", "width": 0.125, "batch": 16, "fraction": 1.0},
            confirm=True,
            measured=(
                "18 min 27 s (54 cells + 28 twins), 42/54 cells converged: zero-γ and no-bias-"
                "decay rows not (2026-12-02, AMD EPYC, bf16); 47 min 54 s in fp32 on an AVX2-"
                "only EPYC (54 + 29 twins), the same rows under-trained")),
        "full": Budget("full", epochs=120, seeds=3, folds=None, data=None, note=(
            "the paper's setting on CIFAR-10 instead of ImageNet: ResNet-50 (bottleneck, "
            "small-input stem), batch 256 → 1024, 120 epochs (mixup rows 200), 5 warmup "
            "epochs; give --data PATH/cifar-10-batches-py and a GPU"),
            options={"model": "resnet50", "width": 1.0, "batch": 256, "fraction": 1.0}),
    }
    budgets["converged"] = converged_budget(
        budgets["default"], 200,
        "the zero-γ and no-bias-decay rows were still falling at 100 under the step schedule "
        "(clean train CE 0.016–0.034; their 200-epoch twins reached 0.003–0.006), and the rows "
        "are compared with the row above, so every row trains 200 epochs (mixup rows 333, "
        "warmup and drops scaled with them)",
        measured=("41 min 31 s (54 cells + 18 twins), 54/54 cells converged (2026-12-03, AMD "
                  "EPYC with native bf16, bf16)"))

    def _rows(self, budget: Budget) -> list[tuple[str, str, dict[str, Any], float]]:
        o, e = budget.options, budget.epochs
        e_mix = round(e * MIXUP_LONGER)
        warm = round(5 * e / 120, 3)
        base = {"model.name": o["model"], "model.width": o["width"], "data.fraction":
                o["fraction"], "train.epochs": e, "train.batch_size": o["batch"],
                "optim.lr": 0.1, "optim.lr_scaling": True, "optim.reference_batch": 256,
                "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 1e-4,
                "schedule.name": "multistep", "schedule.milestones": [e / 4, e / 2, 3 * e / 4],
                "schedule.gamma": 0.1, "train.precision": "auto"}
        steps: list[tuple[str, str, dict[str, Any], float]] = [
            ("baseline", f"baseline (batch {o['batch']}, lr {0.1 * o['batch'] / 256:g})",
             base, 1.0),
            ("large-batch", f"+ batch {4 * o['batch']}, lr {0.4 * o['batch'] / 256:g}, "
             f"warmup {warm:g} ep", {"train.batch_size": 4 * o["batch"],
                                     "schedule.warmup_epochs": warm}, 0.95),
            ("zero-gamma", "+ zero-γ", {"model.zero_gamma": True}, 0.95),
            ("no-bias-decay", "+ no bias decay", {"optim.no_bias_decay": True}, 0.95),
            ("cosine", "+ cosine", {"schedule.name": "cosine", "schedule.milestones": None},
             0.95),
            ("label-smoothing", "+ label smoothing 0.1", {"train.label_smoothing": 0.1}, 0.95),
            ("mixup", f"+ mixup 0.2, {e_mix} epochs", {"augment.mixup_alpha": 0.2,
                                                       "train.epochs": e_mix}, 0.95),
        ]
        if o["model"] in ("resnet50", "resnet101", "resnet152"):
            steps.append(("resnet-b", "+ ResNet-B", {"model.variant": "B"}, 1.0))
        steps += [("resnet-c", "+ ResNet-C", {"model.variant": "C"}, 1.1),
                  ("resnet-d", "+ ResNet-D", {"model.variant": "D"}, 1.8)]
        return steps

    def arms(self, budget: Budget) -> list[Arm]:
        over: dict[str, Any] = {}
        arms = []
        for name, label, change, cost in self._rows(budget):
            over = {**over, **change}  # cumulative: each row adds its trick to the one above
            ratio = over["train.epochs"] / budget.epochs
            arms.append(Arm(name, label, "baseline", dict(over), cost * ratio))
        return arms

    def extra_arms(self, budget: Budget) -> list[Arm]:
        """The targeted extra arm (``--arms stack-no-zero-gamma``): the whole stack with zero-γ
        left out, to tell whether zero-γ alone, which leaves the net near chance at the default
        step budget, is why the stack does not beat the baseline."""
        last = self.arms(budget)[-1]
        return [Arm(NO_ZERO_GAMMA, "the whole stack without zero-γ", "baseline",
                    {**last.overrides, "model.zero_gamma": False}, last.cost)]

    def comparisons(self, budget: Budget) -> list[Comparison]:
        arms = self.arms(budget)
        out = []
        for metric in ("test_top1", "train_ce"):
            for a, b in zip(arms, arms[1:], strict=False):
                out.append(Comparison(a.name, b.name, metric, f"{b.label} vs {a.label}"))
            out.append(Comparison(arms[0].name, arms[-1].name, metric,
                                  f"the whole stack ({arms[-1].label}) vs baseline"))
            out.append(Comparison(arms[0].name, NO_ZERO_GAMMA, metric,
                                  "the whole stack without zero-γ vs baseline"))
            out.append(Comparison(arms[-1].name, NO_ZERO_GAMMA, metric,
                                  "the whole stack without zero-γ vs with it"))
        return out

    def claims(self, budget: Budget, unit: Unit) -> list[Claim]:
        """On converged cells (the paper's nets are trained to the end of 120 epochs):
        primary, each row raises test top-1 over the row above (the paper's Tables 4–6 report
        a gain for almost every row; its Table 4 shows two small losses) and the whole stack
        beats the baseline; exploratory, the stack without zero-γ (the targeted extra arm)
        against the baseline and against the stack."""
        arms = self.arms(budget)
        conv = {"unit": unit, "needs_converged": True}
        out: list[Claim] = [Difference(b.name, a.name, "test_top1", ">", **conv,
                                       label=f"{b.label} raises test top-1 over the row above")
                            for a, b in zip(arms, arms[1:], strict=False)]
        out.append(Difference(arms[-1].name, arms[0].name, "test_top1", ">", **conv,
                              label="the whole stack beats the baseline on test top-1"))
        out += [Difference(NO_ZERO_GAMMA, arms[0].name, "test_top1", ">", **conv, primary=False,
                           label="the whole stack without zero-γ beats the baseline"),
                Difference(NO_ZERO_GAMMA, arms[-1].name, "test_top1", ">", **conv,
                           primary=False, label="the whole stack without zero-γ beats it with "
                                                "zero-γ")]
        return out

    def plots(self, res) -> dict[str, Any]:
        from lightship.studies.analysis import differences_figure

        arms = self.arms(res.budget)
        rows = {m: [(b.label.split(",")[0], res.diff(a.name, b.name, m))
                    for a, b in zip(arms, arms[1:], strict=False)]
                for m in ("test_top1", "train_ce")}
        return {"tricks.png": differences_figure(rows, "vs the row above",
                                                 "each trick against the row above (paired)")}
