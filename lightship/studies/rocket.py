"""`rocket`: Rocket Launching against KD and AT, with its ablations (Zhou et al. 2018, Tables 1–2).

The paper's claims (CIFAR-10/100, WRN-16-1 light net, WRN-40-1 booster): the light net trained
by Rocket beats the same net trained alone and trained by KD; the gradient block and the layer
sharing each help (Table 2: without either, the light net is worse); Rocket + KD is the best light
net of the table. Arms, each with the authors' own setting (``rocket_interval.py``,
``rocket_bottom.py``, their README's commands; /work/notes issue 11's research, in the docs):

- light alone (wrn-16-1) and booster alone (wrn-40-1), plain CE;
- AT (β 1000, CE 1, the three stage outputs) and KD (their KD column, ``--alpha 0.9``: 0.1·CE
  + 2·0.9/K·T²·KL batch mean for K classes, i.e. 0.18 on 10 classes: their ``distillation``
  averages the KL over batch × classes and doubles it; ``method.kd_scale: rocket``) from the
  *booster alone* cell of the same seed and fold as teacher (the authors'
  ``resnet_40_1_booster``);
- Rocket interval: wrn-16-1 whose every conv is the booster's (stem ↔ stem, block j of a stage ↔
  the booster's block j), λ 0.03 (sum over classes, batch mean), gradient block on;
- Rocket bottom: the light net is the booster's stem and first two stages (wrn-40-1-s2), paired
  with its own light-alone baseline (their ``rocket_bottom.py --depth 16``);
- Rocket + KD: interval plus KD from the booster-alone cell, the light net's CE at weight 1 and
  their α 0.9 on their scale (2·0.9/K on the batch-mean KD: 0.18 on 10 classes, 0.018 on
  CIFAR-100's 100; ``method.kd_scale: rocket``);
- ablations (Table 2): no gradient block; no sharing (``share=none``: the booster trains beside
  the light net with its own weights; the authors' no-sharing path still shared the stem); neither.

A quick or default run trains the seven arms the claims need (light, KD, Rocket interval, Rocket
+ KD, booster, no gradient block, no sharing); AT, Rocket bottom with its light net and the
ablation without either train when named with ``--arms`` (the full budget trains them all).

Schedule, scaled from the authors' 200 CIFAR epochs: SGD momentum 0.9 (no Nesterov), lr 0.1,
weight decay 5e-4, batch 128, lr × 0.2 at 30 / 60 / 80 % of training, crop augmentation (pad 3 at
28², no flip for digits).
"""

from __future__ import annotations

from typing import Any

from lightship.judge import AllOf, Claim, Difference, Unit
from lightship.studies.base import Arm, Budget, Comparison, Study, converged_budget

PAPER = "Zhou et al. 2018 (Rocket Launching, Tables 1–2)"
LIGHT, BOOSTER, BOTTOM = "wrn-16-1", "wrn-40-1", "wrn-40-1-s2"
LAMBDA, T, KD_ALPHA, AT_BETA = 0.03, 4.0, 0.9, 1000.0
KD_SCALE = {"method.alpha": KD_ALPHA, "method.kd_scale": "rocket"}
"""The authors' α 0.9 on their KD scale: 2·0.9/K on the batch-mean KD, K read from the data."""

# Relative seconds per epoch at width ×0.5, one torch thread (light alone = 1: 5.5 s for 1,500
# training and 1,250 test digits), measured on the shared 2-core machine at load 5–6
# (docs/studies.md): they order the cells and weight the ETA.
EPOCH_COST = {"light": 1.0, "booster": 1.7, "bottom-light": 1.6, "at": 1.5, "kd": 1.3,
              "rocket-interval": 2.5, "rocket-bottom": 2.6, "rocket-kd": 3.1, "no-gb": 2.5,
              "no-share": 2.6, "neither": 2.6}


def _teacher() -> dict[str, str]:
    return {"method.teacher.run": "booster"}


class RocketStudy(Study):
    name = "rocket"
    title = "Rocket Launching vs KD and AT, with its ablations"
    paper = PAPER
    claim = ("the light net trained by Rocket beats it trained alone and by KD; the gradient block "
             "and the sharing each help; Rocket + KD is the best light net.")
    budgets = {
        "quick": Budget("quick", epochs=1, seeds=1, folds=2, note=(
            "wrn-16-1 / wrn-40-1 at width ×0.25, 1 epoch on 10 % of each fold's training "
            "digits: checks the machinery only"), options={"width": 0.25, "fraction": 0.1},
            final_eval_only=True),
        # Sizing history. First ×0.5 and 8 epochs, 11 arms (≈ 44 min of one-thread CPU time per
        # worker pair, quiet): over budget. Then ×0.25 and 6 epochs, 11 arms: no net trained
        # (light alone 68.7 %, 47 steps at lr 0.1), so no claim could be tested. Now ×0.25 and
        # 12 epochs (light alone ≈ 94.5 %) with the seven arms the claims need; the other arms
        # of the paper's tables train when named with --arms.
        # Sized in session 2026-12-02 on digits (1 seed, 2 of 3 folds, 60 epochs): light
        # alone at a clean train CE of 0.021, the Rocket arms at 0.02–0.03, still falling. The
        # first 100-epoch run left them at 0.015–0.017, just above what the verdict's headroom
        # rule calls converged (≈ 0.016): twins decide.
        "default": Budget("default", epochs=100, seeds=3, folds=2, data="digits", note=(
            "the paper's pair wrn-16-1 / wrn-40-1 (depth ratio 2.5) and the authors' values "
            "(λ 0.03, T 4, KD and Rocket+KD α 0.9 on their scale, SGD 0.1, wd 5e-4, batch "
            "128, lr × 0.2 at 30/60/80 %), scaled down: width ×0.25 for every net (4/8/16 "
            "channels instead of 16/32/64), sklearn digits (8×8) instead of CIFAR-10, 100 "
            "epochs of ≈ 900 digits (2-fold; ≈ 700 steps of 128) instead of 200 epochs of 50k "
            "images (78k steps); 3 seeds; the seven arms the claims need (AT, Rocket bottom "
            "and its light net, and the ablation without either train with --arms); cells the "
            "verdict does not call converged are confirmed by their ×2-schedule twins"),
            options={"width": 0.25, "fraction": 1.0}, confirm=True,
            measured=("11 min 12 s (42 cells, then 13 twins in a second session), 29/42 cells "
                      "converged: KD, Rocket interval and both ablations not (2026-12-02, AMD "
                      "EPYC, fp32: the baseline recipe's own)")),
    }
    budgets["converged"] = converged_budget(
        budgets["default"], 200,
        "the default's KD, Rocket interval and ablation cells were still falling at 100 "
        "(their 200-epoch twins took 0.012–0.018 off the clean train CE); 200 is also the "
        "paper's epoch count", measured=(
            "49 min 47 s (42 cells, no twin: every cell converged by the verdict), 42/42 cells "
            "converged (2026-12-02, AMD EPYC without native bf16 (AVX2 only), fp32; a CPU "
            "about 3× slower per cell than the one the default was measured on)"))
    budgets |= {
        "full": Budget("full", epochs=200, seeds=3, folds=None, data=None, note=(
            "the paper's CIFAR setting: wrn-16-1 / wrn-40-1 at full width, 200 epochs, lr × 0.2 "
            "at 60/120/160; give --data PATH/cifar-10-batches-py (or cifar-100) and a GPU"),
            options={"width": 1.0, "fraction": 1.0}),
    }

    def _base(self, budget: Budget, width: float | None = None) -> dict[str, Any]:
        e, w = budget.epochs, width or budget.options["width"]
        # channels_last crashes this torch's CPU backward (oneDNN, torch 2.14.1) on a 1×1
        # stride-2 conv with < 8 input channels: layer2.0's shortcut below width ×0.5 (see the
        # degradation study); NCHW there.
        return {"model.name": LIGHT, "model.width": w,
                "train.channels_last": "auto" if w >= 0.5 else False,
                "data.fraction": budget.options["fraction"], "train.epochs": e,
                "train.batch_size": 128, "optim.lr": 0.1, "optim.momentum": 0.9,
                "optim.nesterov": False, "optim.weight_decay": 5e-4,
                "schedule.name": "multistep", "schedule.gamma": 0.2,
                "schedule.milestones": [round(0.3 * e, 3), round(0.6 * e, 3), round(0.8 * e, 3)],
                "method.T": T}

    def _arms(self, budget: Budget) -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
        rocket = {"method.name": "rocket", "method.booster": BOOSTER, "method.share": "interval",
                  "method.rocket_lambda": LAMBDA, "method.gradient_block": True}
        return [
            ("light", f"light alone ({LIGHT})", {}, {}),
            ("at", f"AT (β {AT_BETA:g})", {"method.name": "at", "method.at_beta": AT_BETA},
             _teacher()),
            ("kd", f"KD (their α {KD_ALPHA:g}, T {T:g})", {"method.name": "kd", **KD_SCALE},
             _teacher()),
            ("rocket-interval", f"Rocket interval (λ {LAMBDA:g})", rocket, {}),
            ("bottom-light", f"bottom light alone ({BOTTOM})", {"model.name": BOTTOM}, {}),
            ("rocket-bottom", f"Rocket bottom ({BOTTOM}, λ {LAMBDA:g})",
             {**rocket, "model.name": BOTTOM, "method.share": "bottom"}, {}),
            ("rocket-kd", f"Rocket + KD (their α {KD_ALPHA:g})",
             {**rocket, "method.name": "rocket+kd", **KD_SCALE}, _teacher()),
            ("booster", f"booster alone ({BOOSTER})", {"model.name": BOOSTER}, {}),
            ("no-gb", "Rocket, no gradient block", {**rocket, "method.gradient_block": False},
             {}),
            ("no-share", "Rocket, no sharing", {**rocket, "method.share": "none"}, {}),
            ("neither", "Rocket, neither", {**rocket, "method.share": "none",
                                            "method.gradient_block": False}, {}),
        ]

    #: The arms of a quick or default run: what the claims need (light, KD, Rocket interval,
    #: Rocket + KD, the booster as teacher and reference, the two ablations of Table 2). The
    #: full budget trains every arm of the paper's tables.
    CORE = ("light", "kd", "rocket-interval", "rocket-kd", "booster", "no-gb", "no-share")

    def _core(self, budget: Budget, name: str) -> bool:
        return budget.name == "full" or name in self.CORE

    def _built(self, budget: Budget, keep: Any, factor: float = 1.0,
               suffix: str = "") -> list[Arm]:
        """The arms whose name ``keep`` accepts, at ``factor`` × the budget's width (a scaled
        arm is named ``<arm>-<suffix>`` and labelled with its width)."""
        w = budget.options["width"] * factor
        base = self._base(budget, w)
        return [Arm(f"{name}-{suffix}" if suffix else name,
                    f"{label}, width ×{w:g}" if suffix else label, "baseline",
                    {**base, **over}, EPOCH_COST[name] * factor, needs)
                for name, label, over, needs in self._arms(budget) if keep(name)]

    def arms(self, budget: Budget) -> list[Arm]:
        return self._built(budget, lambda name: self._core(budget, name))

    def extra_arms(self, budget: Budget) -> list[Arm]:
        """Arms that train only when named with ``--arms``: the rest of the paper's tables (AT,
        Rocket bottom with its own light net, the ablation without either) and the targeted
        extra arms: light alone and Rocket interval with both nets at half the budget's width
        (``-narrow``: the light net fits its training set less well), and light alone, booster
        alone and Rocket interval at twice the width (``-wide``: does a booster clearly above
        its light net make Rocket pay?)."""
        return (self._built(budget, lambda name: not self._core(budget, name))
                + self._built(budget, lambda name: name in ("light", "rocket-interval"), 0.5,
                              "narrow")
                + self._built(budget, lambda name: name in ("light", "booster",
                                                            "rocket-interval"), 2.0, "wide"))

    def comparisons(self, budget: Budget) -> list[Comparison]:
        pairs = [("light", "rocket-interval", "Rocket interval vs light alone"),
                 ("bottom-light", "rocket-bottom", "Rocket bottom vs its light alone"),
                 ("light", "kd", "KD vs light alone"), ("light", "at", "AT vs light alone"),
                 ("kd", "rocket-interval", "Rocket interval vs KD"),
                 ("no-gb", "rocket-interval", "gradient block: Rocket vs no gradient block"),
                 ("no-share", "rocket-interval", "sharing: Rocket vs no sharing"),
                 ("neither", "rocket-interval", "both: Rocket vs neither"),
                 ("rocket-interval", "rocket-kd", "Rocket + KD vs Rocket interval"),
                 ("kd", "rocket-kd", "Rocket + KD vs KD"),
                 ("light", "rocket-kd", "Rocket + KD vs light alone"),
                 ("light", "booster", "booster alone vs light alone"),
                 ("light-narrow", "rocket-interval-narrow",
                  "narrow nets: Rocket interval vs light alone"),
                 ("light-wide", "rocket-interval-wide",
                  "wide nets: Rocket interval vs light alone"),
                 ("light-wide", "booster-wide", "wide nets: booster alone vs light alone")]
        return [Comparison(a, b, metric, label) for metric in ("test_top1", "train_ce")
                for a, b, label in pairs]

    def claims(self, budget: Budget, unit: Unit) -> list[Claim]:
        """Zhou et al.'s claims on test top-1, on converged cells (their nets train 200
        epochs): primary, Rocket interval beats the light net alone and KD; the gradient block
        and the sharing each help (Table 2); Rocket + KD beats both Rocket interval and KD.
        Claims about arms a budget trains only with ``--arms`` are exploratory there (the
        full budget trains them all): Rocket bottom vs its light net, AT vs light alone, and
        Rocket vs light alone at half and twice the width."""
        conv = {"unit": unit, "needs_converged": True}
        full = budget.name == "full"

        def beats(b: str, a: str, what: str, primary: bool = True) -> Difference:
            return Difference(b, a, "test_top1", ">", **conv, primary=primary, label=what)

        return [
            beats("rocket-interval", "light", "Rocket interval beats the light net alone"),
            beats("rocket-interval", "kd", "Rocket interval beats KD"),
            beats("rocket-interval", "no-gb", "the gradient block helps"),
            beats("rocket-interval", "no-share", "sharing helps"),
            AllOf((beats("rocket-kd", "rocket-interval", ""), beats("rocket-kd", "kd", "")),
                  label="Rocket + KD beats Rocket interval and KD"),
            beats("rocket-bottom", "bottom-light", "Rocket bottom beats its light net alone",
                  full),
            beats("at", "light", "AT beats the light net alone", full),
            beats("rocket-interval", "neither", "Rocket beats the ablation without gradient "
                  "block and sharing", full),
            beats("rocket-interval-narrow", "light-narrow", "at half the width, Rocket "
                  "interval beats the light net alone", False),
            beats("rocket-interval-wide", "light-wide", "at twice the width, Rocket interval "
                  "beats the light net alone", False),
        ]

    def plots(self, res) -> dict[str, Any]:
        from lightship.studies.analysis import differences_figure

        rows = {m: [(c.label, d) for c, d in res.comparisons if c.metric == m]
                for m in ("test_top1", "train_ce")}
        fig = differences_figure(rows, "(b − a)", "Rocket Launching: paired differences "
                                 "(Zhou et al. 2018, Tables 1–2)", fontsize=7)
        fig.axes[1].tick_params(labelleft=False)  # the same comparisons, in the same rows
        return {"rocket.png": fig}
