"""The simple gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018).

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training": with G the
true (full-data) gradient and Σ the per-example gradient covariance, a batch of B examples has
``E|G_B|² = |G|² + tr(Σ)/B``. Measuring the mean squared gradient norm at two batch sizes gives
the unbiased estimators of their appendix A:

    |G|²  ≈ (B_big·|G_Bbig|² − B_small·|G_Bsmall|²) / (B_big − B_small)
    tr(Σ) ≈ (|G_Bsmall|² − |G_Bbig|²) / (1/B_small − 1/B_big)

with each ``|G_B|²`` averaged over several batches before the ratio is taken. B_simple estimates
the critical batch size: below it, doubling the batch nearly halves the steps needed; far above
it, extra examples per step are mostly wasted. It grows as training proceeds (the gradient
shrinks faster than its noise), so a value measured at initialisation is a lower bound.

Gradients are of the training loss (cross-entropy with the recipe's label smoothing, mean over
the batch), on the recipe's augmented training batches, without weight decay (a deterministic
term, not gradient noise) and without mixup/cutmix. BatchNorm is in eval mode by default, with
statistics recalibrated on training images at initialisation, so a batch gradient is exactly the
mean of per-example gradients as the estimator assumes; ``bn='train'`` uses batch statistics
as training does (examples then interact through the batch mean and variance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightship.errors import UserError

Batches = Callable[[int, int], Iterable[tuple[Tensor, Tensor]]]
"""``batches(batch_size, n)`` yields n batches (x, y) of that size."""
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class NoiseScale:
    """The two batch sizes, their mean squared gradient norms and the estimates."""

    b_small: int
    b_big: int
    n_batches: int
    sq_small: float
    """Mean |G_Bsmall|² over the batches."""
    sq_big: float
    """Mean |G_Bbig|² over the batches."""
    grad_sq: float
    """Estimate of |G|², the squared norm of the true gradient."""
    trace: float
    """Estimate of tr(Σ), the summed per-example gradient variance."""
    halves: tuple[float, float]
    """B_simple from the first and second half of the batches (a rough spread)."""

    @property
    def b_simple(self) -> float:
        """tr(Σ)/|G|²; nan when either estimate is not positive (too few batches)."""
        return _ratio(self.trace, self.grad_sq)

    @property
    def ok(self) -> bool:
        """Whether both estimates came out positive."""
        return self.grad_sq > 0 and self.trace > 0


def _ratio(trace: float, grad_sq: float) -> float:
    return trace / grad_sq if trace > 0 and grad_sq > 0 else math.nan


def unbiased_estimates(b_small: int, b_big: int, sq_small: float,
                       sq_big: float) -> tuple[float, float]:
    """(|G|², tr(Σ)) from mean squared batch-gradient norms at two batch sizes (appendix A)."""
    grad_sq = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    trace = (sq_small - sq_big) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq, trace


def check_batch_sizes(b_small: int, b_big: int, n_batches: int, n_train: int | None = None) -> None:
    """One-line UserErrors for batch sizes the estimator cannot use."""
    for flag, value in (("--small-batch", b_small), ("--big-batch", b_big)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{flag} {value!r} must be a whole number >= 1")
    if b_small >= b_big:
        raise UserError(f"--small-batch {b_small} must be smaller than --big-batch {b_big}; "
                        "e.g. --small-batch 8 --big-batch 256")
    if n_train is not None and b_big > n_train:
        raise UserError(f"--big-batch {b_big} is larger than the {n_train} training images; "
                        f"lower --big-batch to at most {n_train}")
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 2:
        raise UserError(f"--batches {n_batches!r} must be a whole number >= 2 (averaged per "
                        "batch size; two halves give the spread)")


def grad_sq_norm(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> float:
    """|∇L|² of one batch's mean loss over the model's trainable parameters (float64 sum)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return float(sum(g.double().pow(2).sum() for g in grads))


def measure_noise_scale(model: nn.Module, batches: Batches, loss_fn: LossFn, b_small: int,
                        b_big: int, n_batches: int) -> NoiseScale:
    """Estimate B_simple from ``n_batches`` batches of each size (model used in its mode)."""
    check_batch_sizes(b_small, b_big, n_batches)
    sq: dict[int, list[float]] = {}
    for b in (b_small, b_big):
        sq[b] = [grad_sq_norm(model, loss_fn, x, y) for x, y in batches(b, n_batches)]
        if len(sq[b]) != n_batches:
            raise UserError(f"got {len(sq[b])} batches of {b} instead of {n_batches}")

    def mean(v: list[float]) -> float:
        return sum(v) / len(v)

    grad_sq, trace = unbiased_estimates(b_small, b_big, mean(sq[b_small]), mean(sq[b_big]))
    half = n_batches // 2
    halves = tuple(_ratio(*reversed(unbiased_estimates(
        b_small, b_big, mean(sq[b_small][sl]), mean(sq[b_big][sl]))))
        for sl in (slice(0, half), slice(half, None)))
    return NoiseScale(b_small, b_big, n_batches, mean(sq[b_small]), mean(sq[b_big]), grad_sq,
                      trace, (halves[0], halves[1]))


@dataclass
class Suggestion:
    """A batch size near B_simple and the learning rate the linear scaling rule gives it."""

    batch_size: int
    lr: float
    flags: str
    """The command-line options that apply it."""


def suggest(noise: NoiseScale, recipe, n_train: int) -> Suggestion | None:
    """The power of two nearest B_simple (within [1, n_train]) and its linear-scaled LR.

    With ``optim.lr_scaling`` on, the recipe's LR is already the base LR of the rule
    (``scaled_lr``), so only the batch size changes. With it off, the recipe's LR belongs to its
    own batch size, which becomes the reference batch of the rule.
    """
    from lightship.train.optim import scaled_lr

    if not noise.ok:
        return None
    b = 2 ** round(math.log2(noise.b_simple))
    b = max(1, min(b, 2 ** int(math.log2(n_train))))
    cfg = recipe.optim
    if cfg.lr_scaling:
        return Suggestion(b, scaled_lr(cfg, b), f"--batch-size {b}")
    ref = cfg.model_copy(update={"lr_scaling": True, "reference_batch": recipe.train.batch_size})
    lr = scaled_lr(ref, b)
    return Suggestion(b, lr, f"--batch-size {b} --lr {lr:.4g}")


def data_batches(data, seed: int, augment) -> Batches:
    """``batches(b, n)``: the first n training batches of size b, epoch after epoch."""

    def batches(batch_size: int, n: int) -> Iterator[tuple[Tensor, Tensor]]:
        steps = data.steps_per_epoch(batch_size)
        for epoch in range(math.ceil(n / steps)):
            for i, batch in enumerate(data.train_batches(batch_size, epoch, seed, augment)):
                if epoch * steps + i >= n:
                    return
                yield batch

    return batches


def probe_noise_scale(recipe, *, b_small: int = 8, b_big: int = 256, n_batches: int = 32,
                      weights: str | None = None, bn: str = "eval", calib: int = 512,
                      device: str = "cpu") -> tuple[NoiseScale, Suggestion | None, dict]:
    """B_simple of a recipe's model on its data, at initialisation or at ``weights``.

    Seeds: ``recipe.train.seed`` sets the initial weights and the batch order/augmentation.
    Returns (estimates, suggestion or None, context for printing).
    """
    from lightship.build import build_augment, build_model
    from lightship.data import Augment, load_data
    from lightship.methods.supervised import smoothed_ce
    from lightship.probes.gradients import calibrate_bn
    from lightship.train.precision import choose_device

    if bn not in ("eval", "train"):
        raise UserError(f"--bn {bn!r} must be eval or train")
    check_batch_sizes(b_small, b_big, n_batches)
    dev = choose_device(device, "--device")
    d = recipe.data
    data = load_data(d)
    info = data.info
    check_batch_sizes(b_small, b_big, n_batches, info.n_train)
    data.to(dev)
    seed = recipe.train.seed
    torch.manual_seed(seed)
    model = build_model(recipe, info.num_classes, info.in_chans, info.input_size).to(dev)
    where = "initialisation"
    if weights:
        from pathlib import Path

        from lightship.weights import load_weights, resolve_source

        load_weights(model, resolve_source(Path(weights), role="--weights").weights)
        where = f"weights {weights}"
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn == "eval":
        if not weights:
            n = min(calib, info.n_train)
            calibrate_bn(model, next(iter(data.train_batches(n, 0, seed, Augment())))[0])
        model.eval()
    else:
        model.train()
        for m in bns:
            m.momentum = 0.0  # batch statistics in the forward pass, running stats untouched
    augment = build_augment(recipe, info)
    smoothing = recipe.train.label_smoothing

    def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
        return smoothed_ce(logits, y, smoothing)

    noise = measure_noise_scale(model, data_batches(data, seed, augment), loss_fn, b_small,
                                b_big, n_batches)
    context = {"model": recipe.model.name, "data": d.name, "where": where, "bn": bn,
               "n_train": info.n_train, "batch_size": recipe.train.batch_size,
               "lr": recipe.optim.lr, "lr_scaling": recipe.optim.lr_scaling}
    return noise, suggest(noise, recipe, info.n_train), context
