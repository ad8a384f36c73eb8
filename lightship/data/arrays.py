"""In-memory datasets as numpy arrays, and the checks, splits and statistics they share.

Every reader (built-ins, CIFAR, MNIST IDX, .npz) returns :class:`Arrays` with uint8 images in
N×C×H×W and int64 labels; :func:`check_arrays` then enforces everything the rest of lightship
relies on, so a problem surfaces as one clear :class:`UserError` at load time, never mid-training.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from lightship.errors import UserError


@dataclass
class Arrays:
    """A dataset held in memory: uint8 images N×C×H×W and int64 labels in [0, len(classes))."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    hflip_ok: bool
    name: str
    source: str


def as_labels(y: np.ndarray, what: str, where: str) -> np.ndarray:
    """Labels as int64, refusing non-integer, negative or non-finite values."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise UserError(f"{what} in {where} has shape {y.shape}; labels must be one integer "
                        "class index per image (a 1-D array)")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer)
                                   or np.issubdtype(y.dtype, np.floating)):
        raise UserError(f"{what} in {where} has dtype {y.dtype}; labels must be integer class "
                        "indices 0..K-1")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise UserError(f"{what} in {where} contains NaN or infinite labels; labels must be "
                            "integer class indices 0..K-1")
        if (y != np.round(y)).any():
            bad = y[y != np.round(y)][0]
            raise UserError(f"{what} in {where} has a non-integer label {bad}; labels must be "
                            "integer class indices 0..K-1")
    if y.size and y.min() < 0:
        raise UserError(f"{what} in {where} has a negative label {int(y.min())}; labels must be "
                        "integer class indices 0..K-1")
    return y.astype(np.int64)


def check_arrays(a: Arrays) -> Arrays:
    """Validate shapes, dtypes, label ranges and class coverage; return ``a`` unchanged."""
    where = a.source
    for split in ("train", "test"):
        x, y = getattr(a, f"x_{split}"), getattr(a, f"y_{split}")
        if x.dtype != np.uint8 or x.ndim != 4:
            raise UserError(f"x_{split} in {where} is {x.dtype} {x.shape} after loading; expected "
                            "uint8 images N×C×H×W (an internal conversion failed; report this)")
        if len(x) != len(y):
            raise UserError(f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels in "
                            f"{where}; give one label per image")
        if len(x) == 0:
            raise UserError(f"the {split} split of {where} is empty; give at least one image per "
                            "class for training and some test images")
        if x.shape[1] not in (1, 3):
            raise UserError(f"x_{split} in {where} has {x.shape[1]} channels; lightship takes "
                            "1 (grayscale) or 3 (RGB)")
        if x.shape[2] != x.shape[3]:
            raise UserError(f"images in {where} are {x.shape[2]}×{x.shape[3]}; lightship needs "
                            "square images: crop or pad them to a square first")
    if a.x_train.shape[1:] != a.x_test.shape[1:]:
        raise UserError(f"train images are {a.x_train.shape[1:]} but test images are "
                        f"{a.x_test.shape[1:]} (C×H×W) in {where}; give both splits one shape")
    k = len(a.classes)
    for split in ("train", "test"):
        y = getattr(a, f"y_{split}")
        if y.size and y.max() >= k:
            raise UserError(f"y_{split} in {where} has label {int(y.max())} but there are only "
                            f"{k} classes (labels 0..{k - 1}); fix the labels or the class list")
    counts = np.bincount(a.y_train, minlength=k)
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise UserError(f"class {c} ('{a.classes[c]}') has no training examples in {where}; "
                        "give every class at least one training image or relabel to 0..K-1")
    return a


def keep_classes(a: Arrays, classes: list[int]) -> Arrays:
    """Only the images of ``classes`` (original label indices), relabelled 0..k−1 in that order,
    so one dataset gives a pretraining source and a disjoint fine-tuning target."""
    k = len(a.classes)
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise UserError(f"data.classes names class {bad[0]} but {a.source} has {k} classes "
                        f"(0..{k - 1}); pick indices in that range")
    lut = np.full(k, -1, dtype=np.int64)
    lut[np.asarray(classes)] = np.arange(len(classes))
    train, test = lut[a.y_train] >= 0, lut[a.y_test] >= 0
    return Arrays(a.x_train[train], lut[a.y_train[train]], a.x_test[test], lut[a.y_test[test]],
                  [a.classes[c] for c in classes], a.hflip_ok, a.name, a.source)


def classes_from_labels(*ys: np.ndarray) -> list[str]:
    """Class names '0'..'K-1' where a format stores none (K = largest label + 1)."""
    k = max(int(y.max()) + 1 if y.size else 0 for y in ys)
    return [str(i) for i in range(k)]


def stratified_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, test) with ``n_test`` test items spread over classes in
    proportion to their counts (largest remainder), each class shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * n_test / len(y)
    quota = np.floor(exact).astype(np.int64)
    # Hand the leftover test slots to the classes with the largest fractional parts.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n_test - int(quota.sum())]] += 1
    train, test = [], []
    for c, q in zip(classes, quota, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:q])
        train.append(idx[q:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def check_subset_args(fraction: float, max_per_class: int | None) -> None:
    """Raise a UserError unless 0 < fraction <= 1 and max_per_class is None or >= 1."""
    if not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise UserError(f"fraction {fraction} must be in (0, 1]; e.g. 0.1 trains on 10 % of the "
                        "training images")
    if max_per_class is not None and (int(max_per_class) != max_per_class or max_per_class < 1):
        raise UserError(f"max_per_class {max_per_class} must be a whole number >= 1 (or unset)")


def subset_indices(y: np.ndarray, num_classes: int, fraction: float, max_per_class: int | None,
                   seed: int) -> np.ndarray | None:
    """Indices of a stratified training subset, or None for "everything".

    Each class keeps ``round(fraction × its count)`` images (at least 1), capped at
    ``max_per_class``. Each class's images are shuffled once by ``seed`` and the first k are kept,
    so for one seed the 1 % subset lies inside the 10 % subset.
    """
    check_subset_args(fraction, max_per_class)
    if fraction == 1 and max_per_class is None:
        return None
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(math.floor(fraction * len(idx) + 0.5)))
        if max_per_class is not None:
            k = min(k, int(max_per_class))
        keep.append(idx[:k])
    return np.sort(np.concatenate(keep))


class ChannelStats:
    """Exact running per-channel mean/std of uint8 images via 256-bin histograms."""

    def __init__(self) -> None:
        self.hist: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        """Add uint8 images N×C×H×W (or one C×H×W image)."""
        if x.ndim == 3:
            x = x[None]
        c = x.shape[1]
        if self.hist is None:
            self.hist = np.zeros((c, 256), dtype=np.int64)
        # Chunks bound the int64 temporaries np.bincount makes to a few tens of MB.
        step = max(1, (1 << 22) // max(1, x[0].size))
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            for ch in range(c):
                self.hist[ch] += np.bincount(chunk[:, ch].ravel(), minlength=256)

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel on the 0–1 scale; std floored at 1/255 so constant images
        do not divide by zero."""
        assert self.hist is not None
        v = np.arange(256, dtype=np.float64) / 255.0
        n = self.hist.sum(axis=1)
        mean = (self.hist * v).sum(axis=1) / n
        var = (self.hist * (v[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
        std = np.maximum(np.sqrt(var), 1.0 / 255.0)
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on the 0–1 scale of uint8 images N×C×H×W."""
    stats = ChannelStats()
    stats.add(x)
    return stats.result()


def to_uint8_images(x: np.ndarray, scale_to_255: bool) -> np.ndarray:
    """Numeric images (already range-checked) to uint8, multiplying by 255 when on 0–1."""
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float64) * (255.0 if scale_to_255 else 1.0)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
