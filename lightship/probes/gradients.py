"""Shattered gradients: how correlated the input gradients of nearby inputs stay as depth grows.

Balduzzi et al. 2017, "The shattered gradients problem: If resnets are the answer, then what is
the question?" show that in deep plain (feedforward) nets the gradient with respect to the input
decorrelates quickly between nearby inputs (it looks like white noise), while in ResNets it stays
correlated (brown noise). Here the measurement, exactly:

1. ``x_1..x_N``: N real images (normalised). For each, a random direction ``d_i`` ~ N(0, I)
   rescaled to per-pixel RMS 1 (``‖d_i‖ = √D``, D = C·H·W pixels), so ``t`` is a step in units of
   the dataset's per-pixel standard deviation.
2. K points ``x_i + t_k·d_i`` with ``t_k`` evenly spaced on [−radius, radius]; spacing
   ``h = 2·radius/(K−1)``.
3. ``f(x) = u · logits(x)`` with one fixed random unit vector ``u`` (the same for every model);
   ``g_i(t) = ∂f/∂x`` at ``x_i + t·d_i`` (a D-vector).
4. ``C(Δt)``: mean over images and grid pairs of the cosine between ``g_i(t)`` and ``g_i(t+Δt)``;
   ``C(h)`` is the neighbour correlation. Plain nets lose it with depth; ResNets keep it.
5. Effective rank (Roy & Vetterli 2007) of the K unit-normalised gradients of one image:
   ``exp(entropy(σ / Σσ))`` of their singular values, averaged over images; 1 = one shared
   gradient, K = K unrelated (white-noise) gradients.

BatchNorm is in eval mode, so every point's gradient depends on that point only. At
initialisation the running statistics are first recalibrated on training images (their plain
average over a forward pass in train mode): eval mode then normalises like train mode would,
instead of with the meaningless 0/1 defaults. Trained weights keep their stored statistics.
Everything random (weights, u, d) comes from one seed; the images are the first N of the test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightship.errors import UserError

_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class GradientCorrelation:
    """Result of :func:`gradient_correlation` for one model."""

    name: str
    spacing: float
    """Grid spacing h (per-pixel std units)."""
    autocorr: list[float]
    """C(l·h) for lags l = 1..K−1: mean cosine of gradients l grid steps apart."""
    effective_rank: float
    """Mean effective rank of one image's K unit gradients (1..K)."""
    points: int

    @property
    def neighbour(self) -> float:
        """C(h): mean cosine between gradients at neighbouring grid points."""
        return self.autocorr[0]

    def at_lag(self, lag: int) -> float:
        """C(lag·h)."""
        return self.autocorr[lag - 1]


def calibrate_bn(model: nn.Module, images: Tensor, chunk: int = 128) -> None:
    """Reset BatchNorm running statistics to their plain average over ``images`` (train mode).

    Leaves the model in eval mode. A no-op for models without BatchNorm.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        model.eval()
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the chunks
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            model(images[i:i + chunk])
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.eval()


def effective_rank(rows: Tensor) -> float:
    """Roy & Vetterli effective rank ``exp(H(σ/Σσ))`` of a matrix's singular values."""
    s = torch.linalg.svdvals(rows.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def probe_inputs(images: Tensor, num_classes: int, points: int, radius: float,
                 seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(grid points N·K×C×H×W, t values, projection u) for :func:`gradient_correlation`.

    ``d`` and ``u`` come from a generator seeded with ``seed``, so every model sees the same
    points and the same projection.
    """
    if points < 3:
        raise UserError(f"points {points} must be >= 3 (the grid needs neighbours at two lags)")
    if not radius > 0:
        raise UserError(f"radius {radius} must be > 0 (the half-width of the grid in std units)")
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    dim = images[0].numel()
    d = torch.randn(n, dim, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True) * math.sqrt(dim)
    u = torch.randn(num_classes, generator=g, dtype=torch.float64)
    u = u / u.norm()
    t = torch.linspace(-radius, radius, points, dtype=torch.float64)
    base = images.detach().double().reshape(n, 1, dim)
    grid = base + t.reshape(1, points, 1) * d.reshape(n, 1, dim)
    shape = (n * points, *images.shape[1:])
    return grid.reshape(shape).to(images.dtype), t, u.to(images.dtype)


def input_gradients(model: nn.Module, x: Tensor, u: Tensor, chunk: int = 64) -> Tensor:
    """∂(u · logits)/∂x for every row of ``x`` (model in eval mode: rows are independent)."""
    out = torch.empty_like(x)
    u = u.to(x.device)
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk].detach().clone().requires_grad_(True)
        logits = model(xi)
        (logits @ u.to(logits.dtype)).sum().backward()
        out[i:i + chunk] = xi.grad
    return out


def gradient_correlation(model: nn.Module, images: Tensor, *, name: str = "model",
                         points: int = 33, radius: float = 0.25, seed: int = 0,
                         chunk: int = 64) -> GradientCorrelation:
    """Measure gradient correlation along random lines through ``images`` (module docstring).

    ``model`` is used as it is, in eval mode (call :func:`calibrate_bn` first at
    initialisation); its parameters' ``.grad`` are left as they were.
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        num_classes = model(images[:1]).shape[1]
    grid, t, u = probe_inputs(images.cpu(), num_classes, points, radius, seed)
    grid = grid.to(images.device)
    saved = [(p, p.grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)  # only the input's gradient is needed
    try:
        grads = input_gradients(model, grid, u, chunk)
    finally:
        for p, grad in saved:
            p.requires_grad_(True)
            p.grad = grad
        model.train(was_training)
    n = len(images)
    g = grads.reshape(n, points, -1).double().cpu()
    unit = g / g.norm(dim=2, keepdim=True).clamp_min(1e-300)
    cos = unit @ unit.transpose(1, 2)  # n × K × K
    autocorr = [float(torch.diagonal(cos, offset=lag, dim1=1, dim2=2).mean())
                for lag in range(1, points)]
    erank = sum(effective_rank(unit[i]) for i in range(n)) / n
    return GradientCorrelation(name=name, spacing=float(t[1] - t[0]), autocorr=autocorr,
                               effective_rank=erank, points=points)


DEFAULT_MODELS = ("resnet20", "plain20", "resnet56", "plain56", "resnet110", "plain110")


def probe_models(data_spec: str, models: Sequence[str] = DEFAULT_MODELS, *, images: int = 8,
                 points: int = 33, radius: float = 0.25, calib: int = 512, seed: int = 0,
                 weights: Sequence[str] = (), device: str = "cpu",
                 log=None) -> list[GradientCorrelation]:
    """Run :func:`gradient_correlation` for named models at initialisation and trained weights.

    Each named model is built with ``torch.manual_seed(seed)`` just before (so its weights do not
    depend on the order of the list) and its BatchNorm recalibrated on ``calib`` training images.
    ``weights`` are lightship .safetensors files or run folders, measured with their stored
    BatchNorm statistics. All models see the same N test images, directions and projection.
    """
    from lightship.data import Augment, load_dataset
    from lightship.models import create_model
    from lightship.train.precision import choose_device

    if images < 1:
        raise UserError(f"images {images} must be >= 1")
    if calib < 1:
        raise UserError(f"calib {calib} must be >= 1 (training images for BatchNorm statistics)")
    if not models and not weights:
        raise UserError("nothing to probe; give --models NAME... or --weights FILE")
    dev = choose_device(device, "--device")
    data = load_dataset(data_spec)
    info = data.info
    if images > info.n_test:
        raise UserError(f"--images {images} is more than the {info.n_test} test images of "
                        f"{data_spec}; lower --images")
    if calib > info.n_train:
        raise UserError(f"--calib {calib} is more than the {info.n_train} training images of "
                        f"{data_spec}; lower --calib")
    x = next(iter(data.test_batches(images)))[0].to(dev)
    x_calib = next(iter(data.train_batches(calib, 0, seed, Augment())))[0].to(dev)
    results = []
    for name in models:
        torch.manual_seed(seed)
        model = create_model(name, info.num_classes, info.in_chans, info.input_size).to(dev)
        calibrate_bn(model, x_calib)
        results.append(gradient_correlation(model, x, name=name, points=points, radius=radius,
                                            seed=seed))
        if log:
            log(name)
    for target in weights:
        model, label = _trained(target, info)
        results.append(gradient_correlation(model.to(dev), x, name=label, points=points,
                                            radius=radius, seed=seed))
        if log:
            log(label)
    return results


def _trained(target: str, info) -> tuple[nn.Module, str]:
    from pathlib import Path

    from lightship.weights import check_fits, resolve_source

    src = resolve_source(Path(target), role="--weights")
    check_fits(src.meta, info, "probe", who=target)
    model = src.build(info.num_classes, info.in_chans, info.input_size)
    return model, f"{src.name} ({Path(target).name})"


def depth_of(name: str) -> str:
    """The depth in a model name (``plain56`` → '56'), or '-'."""
    import re

    m = re.search(r"(\d+)", name)
    return m[1] if m else "-"


def format_table(results: Sequence[GradientCorrelation]) -> str:
    """A plain-text table: neighbour correlation, two longer lags and the effective rank."""
    if not results:
        return ""
    k = results[0].points
    h = results[0].spacing
    lags = sorted({1, max(1, (k - 1) // 4), k - 1})
    heads = ["model", "depth", "shortcuts"] + [f"C({lag * h:.3g})" for lag in lags] + [
        f"eff. rank (of {k})"]
    rows = []
    for r in results:
        shortcuts = "no" if r.name.startswith("plain") else "yes"
        rows.append([r.name, depth_of(r.name), shortcuts]
                    + [f"{r.at_lag(lag):.3f}" for lag in lags] + [f"{r.effective_rank:.2f}"])
    widths = [max(len(str(row[i])) for row in [heads, *rows]) for i in range(len(heads))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(heads), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def plot(results: Sequence[GradientCorrelation], path: str, title: str = "") -> None:
    """Save the correlation-vs-distance curves and one gradient coordinate along the line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths = sorted({depth_of(r.name) for r in results}, key=lambda s: (len(s), s))
    for r in results:
        color = colors[depths.index(depth_of(r.name)) % len(colors)]
        style = "--" if r.name.startswith("plain") else "-"
        dt = [r.spacing * lag for lag in range(1, r.points)]
        ax1.plot(dt, r.autocorr, style, color=color, label=r.name)
    ax1.set_xlabel("distance Δt along the line (per-pixel std units)")
    ax1.set_ylabel("mean cosine of input gradients")
    ax1.set_ylim(min(0.0, *(min(r.autocorr) for r in results)), 1.02)
    ax1.axhline(0, color="0.7", lw=0.8)
    ax1.legend(fontsize=8)
    ax1.set_title("gradient correlation vs distance")
    for plain, style in ((False, "o-"), (True, "s--")):
        rows = [r for r in results if r.name.startswith("plain") == plain
                and depth_of(r.name).isdigit()]
        if rows:
            rows.sort(key=lambda r: int(depth_of(r.name)))
            ax2.plot([int(depth_of(r.name)) for r in rows], [r.neighbour for r in rows], style,
                     color="k", label="plain (no shortcuts)" if plain else "ResNet")
    ax2.set_xlabel("depth")
    ax2.set_ylabel(f"C(h), h = {results[0].spacing:.3g}")
    ax2.set_ylim(min(0.0, *(r.neighbour for r in results)) - 0.02, 1.02)
    ax2.axhline(0, color="0.7", lw=0.8)
    ax2.legend(fontsize=8)
    ax2.set_title("neighbour correlation vs depth")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
