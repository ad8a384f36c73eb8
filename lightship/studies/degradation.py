"""`degradation`: plain vs residual twins at three depths (He et al. 2016, Fig. 1 and 6, Table 3).

The paper's CIFAR-10 experiment: plain nets of 20/32/44/56 layers train to a *higher* training
error the deeper they are, while their residual twins (same layers plus identity shortcuts) do
not; shortcut options A (zero-padding), B (1×1 projection where the shape changes) and C (a
projection on every shortcut) differ little (Table 3). Shortcut C trains with the full budget, or
when named with ``--arms resnet20-C`` (quick, default: the default budget stays sized). Every
arm uses the paper's CIFAR recipe: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, lr
÷10 at 50 % and 75 % of training, crop augmentation (flip only where the data allows it: never
on digits).
"""

from __future__ import annotations

from typing import Any

from lightship.judge import Claim, Difference, Equivalence, Trend
from lightship.studies.base import Arm, Budget, Comparison, Study, agree

PAPER = "He et al. 2016 (Deep Residual Learning, Fig. 6 / Table 3)"

# Seconds per epoch of 4,000 MNIST-5k digits, one torch thread, batch 128, measured on the 2-core
# machine under load (benchmarks in docs/studies.md): they order the cells and weight the ETA.
EPOCH_COST = {8: 4.8, 14: 7.5, 20: 10.9, 32: 15.8, 56: 24.0, 110: 48.0}


def _cost(depth: int) -> float:
    return EPOCH_COST.get(depth, depth * 0.45)


class Degradation(Study):
    name = "degradation"
    title = "plain vs residual nets: does the deeper plain net train to a higher loss?"
    paper = PAPER
    claim = ("the plain net's final training loss rises with depth, the residual net's does "
             "not; shortcuts A, B and C differ little.")
    budgets = {
        "quick": Budget("quick", epochs=1, seeds=1, folds=2, note=(
            "depths 8/14/20 at width ×0.25, 1 epoch on 10 % of each fold's training digits: "
            "checks the machinery only"), options={"depths": (8, 14, 20), "width": 0.25,
                                                   "fraction": 0.1}, final_eval_only=True),
        "default": Budget("default", epochs=10, seeds=2, folds=2, note=(
            "the paper's depths 20/32/56 and recipe, scaled down: width ×0.25 (4/8/16 "
            "channels instead of 16/32/64), MNIST-5k instead of CIFAR-10, 10 epochs of 2,500 "
            "digits (200 steps) instead of 64k steps; shortcut B at depth 20"),
            options={"depths": (20, 32, 56), "width": 0.25, "fraction": 1.0}),
        "full": Budget("full", epochs=164, seeds=3, folds=None, note=(
            "the paper's CIFAR-10 setting: depths 20/32/56/110 at full width, 164 epochs "
            "(64k steps of 128 on 50k images; the paper held out 5k for validation), lr ÷10 at "
            "82 and 123; give --data PATH/cifar-10-batches-py and a GPU"),
            options={"depths": (20, 32, 56, 110), "width": 1.0, "fraction": 1.0}),
    }

    def _base(self, budget: Budget) -> dict[str, Any]:
        o = budget.options
        return {"train.epochs": budget.epochs, "train.batch_size": 128, "model.width": o["width"],
                "data.fraction": o["fraction"], "optim.lr": 0.1, "optim.weight_decay": 1e-4,
                "optim.momentum": 0.9, "optim.nesterov": False, "schedule.name": "multistep",
                "schedule.gamma": 0.1, "train.precision": "auto",
                # channels_last crashes this torch's CPU backward (oneDNN, torch 2.14.1) on the
                # 1×1 stride-2 projection of shortcut B with < 8 input channels (width ×0.25);
                # NCHW for every arm keeps the arms alike and costs little at these widths.
                "train.channels_last": False}

    def arms(self, budget: Budget) -> list[Arm]:
        base, depths = self._base(budget), budget.options["depths"]
        arms = []
        for plain in (True, False):
            for d in depths:
                kind = "plain" if plain else "resnet"
                arms.append(Arm(f"{kind}{d}", f"{'plain' if plain else 'residual'}-{d}",
                                "baseline", {**base, "model.name": f"resnet{d}",
                                             "model.plain": plain}, _cost(d)))
        arms.append(self._shortcut(budget, "B"))
        if budget.name == "full":
            arms.append(self._shortcut(budget, "C"))
        return arms

    def _shortcut(self, budget: Budget, kind: str) -> Arm:
        """The residual net at the first depth with shortcut B or C (He et al. 2016, Table 3)."""
        d0 = budget.options["depths"][0]
        return Arm(f"resnet{d0}-{kind}", f"residual-{d0}, shortcut {kind}", "baseline",
                   {**self._base(budget), "model.name": f"resnet{d0}", "model.shortcut": kind},
                   _cost(d0) * (1.1 if kind == "B" else 1.3))

    def extra_arms(self, budget: Budget) -> list[Arm]:
        """Shortcut C (a projection on every shortcut), trained when named with ``--arms``
        below the full budget."""
        return [] if budget.name == "full" else [self._shortcut(budget, "C")]

    def comparisons(self, budget: Budget) -> list[Comparison]:
        ds = budget.options["depths"]
        out = []
        for kind, what in (("plain", "plain"), ("resnet", "residual")):
            for a, b in zip(ds, ds[1:], strict=False):
                out.append(Comparison(f"{kind}{a}", f"{kind}{b}", "train_ce",
                                      f"{what}-{b} vs {what}-{a}"))
            if len(ds) > 2:
                out.append(Comparison(f"{kind}{ds[0]}", f"{kind}{ds[-1]}", "train_ce",
                                      f"{what}-{ds[-1]} vs {what}-{ds[0]}"))
        for d in ds:
            out.append(Comparison(f"resnet{d}", f"plain{d}", "train_ce",
                                  f"plain-{d} vs residual-{d}"))
            out.append(Comparison(f"resnet{d}", f"plain{d}", "test_top1",
                                  f"plain-{d} vs residual-{d}"))
        for a, b in (("", "-B"), ("", "-C"), ("-B", "-C")):
            label = f"shortcut {b[1:]} vs {a[1:] or 'A'} at depth {ds[0]}"
            for metric in ("test_top1", "train_ce"):
                out.append(Comparison(f"resnet{ds[0]}{a}", f"resnet{ds[0]}{b}", metric, label))
        return out

    def verdicts(self, res) -> list[str]:
        ds = res.budget.options["depths"]
        lo, hi = ds[0], ds[-1]
        ce = {f"{k}{d}": res.mean(f"{k}{d}", "train_ce") for k in ("plain", "resnet")
              for d in ds}

        def series(kind: str) -> str:
            return " → ".join("—" if ce[f"{kind}{d}"] is None else f"{ce[f'{kind}{d}']:.4f}"
                              for d in ds)

        lines = []
        p = res.diff(f"plain{lo}", f"plain{hi}", "train_ce")
        if p is None:
            lines.append(f"not settled: plain-{lo} and plain-{hi} share no finished cell")
        else:
            vals = [ce[f"plain{d}"] for d in ds]
            rising = None not in vals and all(a < b for a, b in zip(vals, vals[1:],
                                                                   strict=False))
            text = (f"plain nets' final train CE over depths {'/'.join(map(str, ds))}: "
                    f"{series('plain')} ({'rises at every step' if rising else 'not monotone'}"
                    f"); plain-{hi} − plain-{lo} = {p.text('+.4f')}")
            lines.append(agree(PAPER, p.sign > 0, text + (
                "" if p.sign > 0 else " — the interval does not lie above 0")))
        r = res.diff(f"resnet{lo}", f"resnet{hi}", "train_ce")
        if r is None:
            lines.append(f"not settled: residual-{lo} and residual-{hi} share no finished cell")
        else:
            ok = r.sign <= 0
            text = (f"residual nets' final train CE: {series('resnet')}; residual-{hi} − "
                    f"residual-{lo} = {r.text('+.4f')}")
            lines.append(agree(PAPER, ok, text + (" (does not rise)" if ok else
                                                  " — rises with depth, significantly")))
        g = res.diff(f"resnet{hi}", f"plain{hi}", "train_ce")
        if g is None:
            lines.append(f"not settled: plain-{hi} and residual-{hi} share no finished cell")
        else:
            lines.append(agree(PAPER, g.sign > 0, f"at depth {hi} the shortcuts lower the train "
                                                  f"CE: plain − residual = {g.text('+.4f')}"))
        lines.append(self._small(res, lo, "B"))
        if res.arm(f"resnet{lo}-C").cells:
            lines.append(self._small(res, lo, "C"))
        return lines

    @staticmethod
    def _small(res, lo: int, kind: str) -> str:
        """Table 3's claim: shortcut ``kind`` − A is a small difference (within ±1 point)."""
        b = res.diff(f"resnet{lo}", f"resnet{lo}-{kind}", "test_top1")
        if b is None:
            return f"not settled: shortcut A and {kind} at depth {lo} share no finished cell"
        small = b.lo is not None and b.hi is not None and -1.0 <= b.lo and b.hi <= 1.0
        large = b.lo is not None and b.hi is not None and (b.lo > 1.0 or b.hi < -1.0)
        text = (f"shortcut {kind} − A at depth {lo}: test top-1 {b.text()} points over {b.n} "
                "paired cells, " + ("a small difference (interval within ±1 point)" if small
                                    else "a large difference (interval beyond ±1 point)" if large
                                    else "not shown small: the interval reaches beyond ±1 point "
                                    "(too few cells or too much spread to tell)"))
        return agree("He et al. 2016 (Table 3)", small, text)

    def plots(self, res) -> dict[str, Any]:
        from lightship.report.html import _figure
        from lightship.studies.analysis import arm_curves, mean_curve

        ds = res.budget.options["depths"]
        fig, axes = _figure(1, 2, 3.6)
        curve_ax, floor_ax = axes[0]
        for i, d in enumerate(ds):
            for kind, lw, label in (("plain", 1.0, "plain"), ("resnet", 2.6, "ResNet")):
                curves = arm_curves(res, f"{kind}{d}")
                if curves:
                    x, y = mean_curve(curves, "train_loss")
                    curve_ax.plot(x, y, color=f"C{i}", lw=lw, marker="o", ms=2.5,
                                  label=f"{label}-{d}")
        curve_ax.set_yscale("log")
        curve_ax.set_xlabel("epoch")
        curve_ax.set_ylabel("train loss (mean over cells)")
        curve_ax.set_title("thin: plain, bold: residual (He et al. 2016 Fig. 6)", fontsize=9)
        curve_ax.legend(fontsize=7, ncol=2)
        for kind, lw, label in (("plain", 1.0, "plain"), ("resnet", 2.6, "residual")):
            pts = [(d, res.arm(f"{kind}{d}").stat("train_ce")) for d in ds]
            pts = [(d, s) for d, s in pts if s.mean is not None]
            if pts:
                floor_ax.errorbar([d for d, _ in pts], [s.mean for _, s in pts],
                                  yerr=[s.std or 0.0 for _, s in pts], lw=lw, marker="o",
                                  capsize=3, label=label)
        floor_ax.set_yscale("log")
        floor_ax.set_xlabel("depth (layers)")
        floor_ax.set_ylabel("final train CE (clean, mean ± std)")
        floor_ax.legend(fontsize=8)
        return {"degradation.png": fig}


# ---------------------------------------------------------------- the claims as judge values
# Not used by the study yet: its verdict lines above still decide. These are the same claims as
# lightship.judge values, for the step that moves every study onto the one judge (issue 22).


def _as_claim(c: Comparison, expect: str | None = None, margin: float | None = None,
              **kw: Any) -> Claim:
    """A Comparison (Δ = b − a) as a judge claim on b − a: directed (``expect``) or an
    equivalence within ``margin``."""
    if margin is not None:
        return Equivalence(c.b, c.a, c.metric, margin, label=c.label, **kw)
    return Difference(c.b, c.a, c.metric, expect, label=c.label, **kw)


def degradation_claims(budget: Budget, unit: str = "seed", shortcut_c: bool | None = None
                       ) -> list[Claim]:
    """The degradation study's claims, built from its own Comparison objects:

    - primary: the deepest plain net trains to a higher train CE than the shallowest
      (needs converged cells: an unfinished deep net would fake it); at the deepest depth the
      shortcuts lower the train CE; shortcut B (and C) − A on test top-1 within ±1 point
      (Table 3's "differ little").
    - exploratory: the plain train CE rises at every depth step (the verdict's "rises at every
      step" wording); the deepest residual net trains to a lower train CE than the shallowest
      (He et al. Fig. 6; the study's verdict asks only "does not rise", which is not a claim a
      test can confirm).

    ``shortcut_c``: include shortcut C's claim (default: only in the full budget, where C is
    an arm)."""
    ds = budget.options["depths"]
    lo, hi = ds[0], ds[-1]
    found = {(c.a, c.b, c.metric): c for c in Degradation().comparisons(budget)}
    conv = {"unit": unit, "needs_converged": True}
    claims: list[Claim] = [
        _as_claim(found[(f"plain{lo}", f"plain{hi}", "train_ce")], ">", **conv),
        _as_claim(found[(f"resnet{hi}", f"plain{hi}", "train_ce")], ">", **conv),
    ]
    kinds = ("B", "C") if (budget.name == "full" if shortcut_c is None else shortcut_c) \
        else ("B",)
    claims += [_as_claim(found[(f"resnet{lo}", f"resnet{lo}-{k}", "test_top1")], margin=1.0,
                         unit=unit) for k in kinds]
    claims.append(Trend(tuple(f"plain{d}" for d in ds), "train_ce", "increasing", unit,
                        needs_converged=True, primary=False,
                        label=f"plain train CE rises at every depth step {'/'.join(map(str, ds))}"))
    claims.append(_as_claim(found[(f"resnet{lo}", f"resnet{hi}", "train_ce")], "<", **conv,
                            primary=False))
    return claims
