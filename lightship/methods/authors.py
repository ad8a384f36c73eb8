"""Each transfer method at its authors' setting, as recipe overrides: the one home of these
values for the `transfer` study and `lightship lift`.

- kd: α 0.9 on T²·KL, 0.1 on CE, T 4 (Hinton et al. 2015; RepDistiller / mdistiller);
- hint: logit MSE, weight 0.01, sum over classes (lightship's: 1.0 diverged on MNIST-5k);
- at: β 1000, p 2, CE weight 1, stage outputs (Zagoruyko & Komodakis 2017, their code);
- dkd: α 1, β 2 (mdistiller's resnet56 → resnet20, the closest same-family pair), T 4, CE 1,
  linear warm-up over 20/240 of the schedule (their 20 of 240 epochs);
- dml: one peer of the student's architecture, T 1 (Zhang et al. 2018);
- adversarial: WGAN critics, one per stage, with the GAN-KD training log's numbers (critic lr
  5e-4, clip 0.03, cosine term at weight 1); the adversarial weight 0.1 is lightship's;
- rocket+kd: `interval` sharing, λ 0.03, gradient block, KD added to CE 1 at Zhou et al.
  2018's α 0.9 on their KD scale (2·0.9/K on the batch-mean KD, ``method.kd_scale: rocket``);
  the booster is the caller's (a deeper net of the light net's family);
- kd+hint: kd and hint together, each at its setting above (the terms add).
"""

from __future__ import annotations

from typing import Any

NEEDS_TEACHER = ("kd", "hint", "at", "dkd", "adversarial", "rocket-kd", "kd-hint")
"""Methods (arm names) that read a teacher."""


def authors_settings(epochs: int, booster: str | None = None
                     ) -> list[tuple[str, str, dict[str, Any]]]:
    """(arm name, label, method overrides) of every transfer method at its authors' setting;
    ``epochs`` sizes DKD's warm-up (a share of the schedule); rocket+kd is listed only with a
    ``booster``."""
    warm = max(1, round(epochs * 20 / 240))
    kd = {"method.alpha": 0.9, "method.T": 4.0}
    hint = {"method.hint_weight": 0.01, "method.hint_reduction": "sum"}
    out = [
        ("kd", "kd (α 0.9, T 4)", {"method.name": "kd", **kd}),
        ("hint", "hint (logit MSE 0.01, sum)", {"method.name": "hint", **hint}),
        ("at", "at (β 1000)", {"method.name": "at", "method.at_beta": 1000.0}),
        ("dkd", f"dkd (α 1, β 2, T 4, warm-up {warm} ep)",
         {"method.name": "dkd", "method.dkd_alpha": 1.0, "method.dkd_beta": 2.0,
          "method.T": 4.0, "method.dkd_warmup": warm}),
        ("dml", "dml (1 peer, T 1)", {"method.name": "dml", "method.peers": 1,
                                      "method.dml_T": 1.0}),
        ("adversarial", "adversarial (wgan, a critic per stage)",
         {"method.name": "adversarial", "method.adv_loss": "wgan", "method.adv_pairs": None,
          "method.adv_weight": 0.1, "method.adv_lr": 5e-4,
          "method.adv_clip": 0.03, "method.adv_cos": 1.0}),
    ]
    if booster is not None:
        out.append(("rocket-kd", "rocket+kd (interval, λ 0.03, their α 0.9)",
                    {"method.name": "rocket+kd", "method.booster": booster,
                     "method.share": "interval", "method.rocket_lambda": 0.03,
                     "method.gradient_block": True, "method.alpha": 0.9,
                     "method.kd_scale": "rocket", "method.T": 4.0}))
    return out


def combined_settings() -> list[tuple[str, str, dict[str, Any]]]:
    """Pairs of terms that combine (the terms add), each at its setting above."""
    return [("kd-hint", "kd+hint (α 0.9, T 4; MSE 0.01)",
             {"method.name": "kd+hint", "method.alpha": 0.9, "method.T": 4.0,
              "method.hint_weight": 0.01, "method.hint_reduction": "sum"})]
