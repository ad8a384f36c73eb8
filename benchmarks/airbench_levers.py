"""airbench's levers, applied from outside the library so `fast_search.py` can judge them.

airbench (Keller Jordan, 2024) trains CIFAR-10 to 94 % in seconds with, among other things, a
first convolution initialised by patch whitening, BatchNorm without a learned scale, a higher LR
for biases, lookahead on the weights, GELU and a fast BatchNorm momentum. None of these is in
lightship's recipes: each is measured here first, on validation folds, and only a lever that
wins there earns a recipe key. Each lever is a context manager that patches the training loop's
module for the length of one run (the study runs arms one after another in one process):

- ``whiten``: the first conv's filters become the whitening of the training images' 3×3 patches
  (the top eigenvectors of the patch covariance over 2,000 images, scaled by 1/sqrt(λ + 0.01),
  each with its negative), then train as usual; ``whiten-frozen`` keeps them fixed.
- ``bn-no-scale``: every BatchNorm's γ stays 1 (not trained).
- ``bias-lr-4`` / ``bias-lr-16``: biases (BatchNorm β, the classifier's bias) at 4× / 16× the LR.
- ``lookahead``: every 5 steps the weights (and BatchNorm statistics) are pulled to their
  running average, which they then replace; the average's decay rises as 0.95⁵ · (t / T)³
  (airbench94's schedule) and the last step copies the average in.
- ``gelu``: GELU instead of ReLU.
- ``bn-momentum-0.4``: BatchNorm running statistics with momentum 0.4 (torch's convention).
- ``tta-9``: test-time augmentation over the image and its eight 1-pixel neighbours
  (diagonals too) instead of the four.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightship.data import load_data

LOOP = importlib.import_module("lightship.train.loop")  # `import a.b.c as x` meets lightship.train
AUGMENT = importlib.import_module("lightship.data.augment")
_TRANSLATIONS = AUGMENT.translations  # the unpatched one (``tta-9`` patches the module's name)


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _after_build(change: Callable[[nn.Module, Any], None]) -> contextlib.AbstractContextManager:
    """Apply ``change(model, recipe)`` to every model the loop builds."""
    build = LOOP.build_model

    def patched(recipe: Any, *args: Any, **kwargs: Any) -> nn.Module:
        model = build(recipe, *args, **kwargs)
        change(model, recipe)
        return model
    return _patched(LOOP, "build_model", patched)


def _whiten(frozen: bool) -> Callable[[nn.Module, Any], None]:
    def change(model: nn.Module, recipe: Any) -> None:
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        x = next(load_data(recipe.data).train_eval_batches(2000))[0]  # normalised, in order
        k = conv.kernel_size[0]
        patches = F.unfold(x, k).transpose(1, 2).reshape(-1, x.shape[1] * k * k)
        patches = patches.double()
        eigval, eigvec = torch.linalg.eigh(patches.T @ patches / len(patches))
        n = min(conv.out_channels // 2, len(eigval))
        top = eigvec.flip(1)[:, :n] / (eigval.flip(0)[:n] + 1e-2).sqrt()
        filters = top.T.reshape(n, x.shape[1], k, k).float()
        with torch.no_grad():
            conv.weight[:2 * n] = torch.cat([filters, -filters])
        conv.weight.requires_grad_(not frozen)
    return change


def _each_bn(change: Callable[[nn.BatchNorm2d], None]) -> Callable[[nn.Module, Any], None]:
    def apply(model: nn.Module, recipe: Any) -> None:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                change(m)
    return apply


def _gelu(model: nn.Module, recipe: Any) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.GELU())


def _bias_lr(mult: float) -> contextlib.AbstractContextManager:
    def multipliers(model: nn.Module, finetune: Any) -> dict[int, float]:
        return {id(p): mult for name, p in model.named_parameters() if name.endswith("bias")}
    return _patched(LOOP, "lr_multipliers", multipliers)


@contextlib.contextmanager
def _lookahead(every: int = 5) -> Iterator[None]:
    step_fn = LOOP.train_step
    average: dict[str, torch.Tensor] = {}

    def patched(loop: Any, *args: Any) -> Any:
        out = step_fn(loop, *args)
        step = loop.state.step  # updates done so far
        total = loop.steps_per_epoch * loop.recipe.train.epochs
        update = step % every == 0 or step == total
        if average and not update:
            return out
        weights = loop.state.model.state_dict()
        if not average:
            average.update({k: v.detach().clone() for k, v in weights.items()})
        if update:
            decay = 1.0 if step == total else 0.95 ** every * (step / total) ** 3
            with torch.no_grad():
                for key, value in weights.items():
                    if value.is_floating_point():
                        average[key].lerp_(value, 1 - decay)
                        value.copy_(average[key])
        return out
    with _patched(LOOP, "train_step", patched):
        yield


def _nine_views(x: torch.Tensor) -> list[torch.Tensor]:
    # the library's four 1-pixel shifts, then each vertical shift shifted sideways (replicate
    # padding is separable, so these are the diagonal shifts)
    four = _TRANSLATIONS(x)
    return four + [d for v in four[:2] for d in _TRANSLATIONS(v)[2:]]


def _momentum(m: nn.BatchNorm2d) -> None:
    m.momentum = 0.4


LEVERS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "whiten": lambda: _after_build(_whiten(frozen=False)),
    "whiten-frozen": lambda: _after_build(_whiten(frozen=True)),
    "bn-no-scale": lambda: _after_build(_each_bn(lambda m: m.weight.requires_grad_(False))),
    "bias-lr-4": lambda: _bias_lr(4.0),
    "bias-lr-16": lambda: _bias_lr(16.0),
    "lookahead": _lookahead,
    "gelu": lambda: _after_build(_gelu),
    "bn-momentum-0.4": lambda: _after_build(_each_bn(_momentum)),
    "tta-9": lambda: _patched(AUGMENT, "translations", _nine_views),
}


@contextlib.contextmanager
def levers(names: list[str]) -> Iterator[None]:
    """All the named levers at once (an arm's ``+name`` entries)."""
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(LEVERS[name]())
        yield
