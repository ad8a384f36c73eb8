"""Stratified K-fold over every image of a built-in dataset (``data.folds`` / ``data.fold``).

The built-ins (mnist5k, digits, synthetic) have no official test split: lightship cut theirs once
with a fixed seed. With ``data.folds = K`` their train and test images are pooled and split by
scikit-learn's ``StratifiedKFold(K, shuffle=True, random_state=data.seed)``; fold ``i``'s test
part is never trained on, and over the K folds every image is tested exactly once (all 5,000
MNIST-5k digits instead of 1,000). Datasets that come with their own test split (CIFAR, MNIST IDX,
ImageFolder, .npz) are refused: their test split is the one results are compared on.

With ``data.folds_of = "train"`` the K folds split the *training* split only, of any dataset:
fold ``i``'s held-out part is a validation set carved from the training images, and the test
split is never read (ImageFolder: test/ is not even listed). ``lightship lift`` selects on
these folds, then evaluates its final choice once on the test split.
"""

from __future__ import annotations

import numpy as np

from lightship.data.arrays import Arrays
from lightship.errors import UserError


def check_folds(folds: int | None, fold: int) -> None:
    """Raise a one-line UserError unless (folds, fold) is usable: folds None or >= 2, and
    0 <= fold < folds (fold must be 0 without folds)."""
    if folds is None:
        if fold:
            raise UserError(f"data.fold={fold} needs data.folds (the number of folds), e.g. "
                            "--set data.folds=5")
        return
    if isinstance(folds, bool) or int(folds) != folds or folds < 2:
        raise UserError(f"data.folds={folds} must be a whole number >= 2 (K-fold needs at "
                        "least two parts)")
    if isinstance(fold, bool) or int(fold) != fold or not 0 <= fold < folds:
        raise UserError(f"data.fold={fold} must be in 0..{folds - 1} for data.folds={folds}")


def kfold_indices(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of each of the ``folds`` stratified folds of labels ``y``."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    small = counts[counts > 0].min()
    if small < folds:
        c = int(np.flatnonzero(counts == small)[0])
        raise UserError(f"data.folds={folds} needs at least {folds} images of every class, but "
                        f"class {c} has {small}; use fewer folds")
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(te)) for tr, te in split.split(np.zeros(len(y)), y)]


def fold_arrays(a: Arrays, folds: int, fold: int, seed: int) -> Arrays:
    """Pool ``a``'s train and test images and return fold ``fold`` of ``folds`` as the split."""
    check_folds(folds, fold)
    x = np.concatenate([a.x_train, a.x_test])
    y = np.concatenate([a.y_train, a.y_test])
    train, test = kfold_indices(y, folds, seed)[fold]
    return Arrays(x[train], y[train], x[test], y[test], list(a.classes), hflip_ok=a.hflip_ok,
                  name=a.name, source=f"{a.source}, fold {fold} of {folds} (seed {seed})")


def train_fold_arrays(a: Arrays, folds: int, fold: int, seed: int) -> Arrays:
    """Fold ``fold`` of ``folds`` of ``a``'s *training* split: its held-out part becomes the
    evaluated split (validation); ``a``'s test images are dropped."""
    check_folds(folds, fold)
    train, val = kfold_indices(a.y_train, folds, seed)[fold]
    return Arrays(a.x_train[train], a.y_train[train], a.x_train[val], a.y_train[val],
                  list(a.classes), hflip_ok=a.hflip_ok, name=a.name,
                  source=f"{a.source}, validation fold {fold} of {folds} of the training split "
                         f"(seed {seed})")
