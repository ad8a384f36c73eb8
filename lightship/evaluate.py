"""Evaluation: a model on a dataset's test split, and a run folder or weights file on a dataset.

:func:`evaluate` is what the training loop calls after an epoch and what measures a teacher;
:func:`evaluate_target` is ``lightship eval`` (and :func:`lightship.evaluate`); :func:`measure_fit`
the clean training CE of a run's final weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from lightship.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from lightship.train.precision import Precision


def clean_fit(model: nn.Module, data: Any, prec: Precision) -> dict[str, float]:
    """Clean train CE and top-1 of ``model`` on the training images (eval mode, no augmentation,
    hard labels): what the convergence verdict judges. Empty for data that streams from disk
    (ImageFolder), whose training split is not held to be re-read."""
    if not hasattr(data, "train_eval_batches"):
        return {}
    res = evaluate(model, SimpleNamespace(test_batches=data.train_eval_batches), prec)
    return {"train_ce_clean": res["test_loss"], "train_top1_clean": res["test_top1"]}


def train_fit(model: nn.Module, data: Any, prec: Precision) -> dict[str, float]:
    """:func:`clean_fit` of any dataset: an ImageFolder's training images are streamed once
    more, in order (what a study cell or a lift's teacher is measured on)."""
    if hasattr(data, "train_eval_batches"):
        return clean_fit(model, data, prec)
    res = evaluate(model, SimpleNamespace(test_batches=data.train_in_order), prec)
    return {"train_ce_clean": res["test_loss"], "train_top1_clean": res["test_top1"]}


def evaluate(model: nn.Module, data: Any, prec: Precision, batch_size: int = 512,
             tta: bool = False) -> dict[str, float]:
    """Top-1, top-5 and mean CE loss on the test split (model put in eval mode, then restored).

    ``tta``: predict with the mean softmax over each image and its four 1-pixel translations
    (``train.tta``); top-k and the loss then read the log of that mean probability."""
    import torch
    import torch.nn.functional as F

    from lightship.data.augment import translations

    was_training = model.training
    model.eval()
    n, loss_sum, top1, top5 = 0, 0.0, 0, 0
    with torch.inference_mode():
        for x, y in data.test_batches(batch_size, channels_last=prec.channels_last):
            with prec.autocast():
                logits = model(x).float()
                if tta:
                    views = translations(x)
                    probs = sum(model(v).float().softmax(1) for v in views)
                    logits = ((probs + logits.softmax(1)) / (len(views) + 1)).log()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            k = min(5, logits.shape[1])
            hit = logits.topk(k, dim=1).indices == y[:, None]
            top1 += hit[:, 0].sum().item()
            top5 += hit.any(dim=1).sum().item()
            n += y.numel()
    model.train(was_training)
    if n == 0:
        raise UserError("the test split is empty; give a dataset with test images")
    return {"test_loss": loss_sum / n, "test_top1": 100.0 * top1 / n, "test_top5": 100.0 * top5 / n}


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate_target` measured."""

    model: str
    data: str
    n_test: int
    weights: Path
    test_top1: float
    test_top5: float
    test_loss: float
    tta: bool
    """Whether test-time augmentation was used."""
    precision: str
    """fp32, bf16 or fp16 (what ``precision`` resolved to)."""
    setup: str
    """Precision, device and CPU in one phrase (:meth:`Precision.describe`)."""


def evaluate_target(target: Path | str, data: str | None = None, batch_size: int = 512,
                    device: str = "auto", image_size: int | None = None,
                    tta: bool | None = None, precision: str = "auto") -> EvalResult:
    """Evaluate ``target`` (run folder or .safetensors) on ``data`` (default: its own dataset).

    Its own dataset is prepared as in training (a run folder's subset: fraction, max_per_class,
    seed, classes; the trained image size; a weights file's class subset); other data is loaded
    as it is and refused when its shape differs, unless ``image_size`` asks to resize it.
    ``tta`` None: as the run's last evaluation (recorded in the weights' metadata, so a run
    folder and its weights file score alike; weights that predate the record: the run folder's
    recipe, else off). ``precision`` (auto, fp32, bf16, fp16) as ``train.precision``. A run
    folder and its weights file follow the same rules.
    """
    from lightship.data import load_data, load_dataset
    from lightship.train.precision import choose_device, choose_precision
    from lightship.weights import check_fits, resolve_source

    dev = choose_device(device, "--device")  # before any data is read
    src = resolve_source(target)
    if src.recipe is not None:  # its own data subset as in training (fraction, seed, size)
        own, trained_size = src.recipe.data.name, src.recipe.data.image_size
    else:
        own, trained_size = src.meta["data"], src.meta.get("input_size")
    data = data or own
    size = image_size or (trained_size if data == own else None)
    if src.recipe is not None:
        dataset = load_data(src.recipe.data.model_copy(update={"name": data, "image_size": size}))
    else:
        classes = (src.meta.get("data_options") or {}).get("classes")
        dataset = load_dataset(data, classes=classes,
                               **({"image_size": size} if size is not None else {}))
    info = dataset.info
    check_fits(src.meta, info, "eval", who=src.weights, data=data)
    model = src.build(info.num_classes, info.in_chans, info.input_size)
    prec = choose_precision(precision, "auto", dev)
    model = model.to(dev, memory_format=prec.memory_format)
    dataset.to(dev)
    if tta is None:  # as the run's last evaluation
        cfg = src.recipe.train if src.recipe is not None else None
        tta = bool(src.meta.get("tta", cfg.tta_at(cfg.epochs) if cfg is not None else False))
    res = evaluate(model, dataset, prec, batch_size, tta=tta)
    return EvalResult(model=src.name, data=info.name, n_test=info.n_test, weights=src.weights,
                      **res, tta=tta, precision=prec.name, setup=prec.describe())


def measure_fit(run_dir: Path | str) -> dict[str, Any]:
    """Clean training CE and top-1 of a finished run's final weights on its training images
    (eval mode, no augmentation, hard labels), plus the size of its training and test parts.

    This is the quantity convergence is judged on (the ×2-twin test, studies' loss floors): the
    loss the loop logs is the objective on augmented, smoothed or mixed batches in train mode."""
    from lightship.data import load_data
    from lightship.train.precision import choose_device, choose_precision
    from lightship.weights import resolve_source

    src = resolve_source(run_dir)
    r = src.recipe
    assert r is not None
    d = r.data
    data = load_data(d)
    info = data.info
    device = choose_device(r.train.device)
    prec = choose_precision(r.train.precision, r.train.channels_last, device)
    model = src.build(info.num_classes, info.in_chans, info.input_size)
    model = model.to(device, memory_format=prec.memory_format)
    data.to(device)
    fit = train_fit(model, data, prec)
    return {"train_ce": fit["train_ce_clean"], "train_top1": fit["train_top1_clean"],
            "n_train": info.n_train, "n_test": info.n_test}
