"""Batching shared by every dataset, and :class:`TensorData`, a dataset held on the device.

Epoch order is ``torch.randperm(n_train, generator=G(seed, epoch))`` on a CPU generator. With
``world`` ranks, global step i uses the permutation slice ``[i·world·B, (i+1)·world·B)`` and rank r
takes the r-th block of B inside it, so every rank gets the same number of full batches, the
ranks' batches are disjoint, and together they are exactly the world=1 epoch with batch world·B.
Each batch's augmentation draws come from G(seed, epoch, i·world + rank): skipping the first
``start`` batches (resume mid-epoch) leaves every later batch bit-identical.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightship.data.arrays import (
    Arrays,
    channel_stats,
    check_arrays,
    keep_classes,
    subset_indices,
)
from lightship.data.augment import (
    AUGMENT_STREAM,
    ORDER_STREAM,
    Augment,
    augment_batch,
    make_generator,
    norm_constants,
    normalise,
)
from lightship.data.info import DatasetInfo
from lightship.errors import UserError


def check_batch_size(batch_size: int) -> None:
    """Raise a UserError unless ``batch_size`` is a whole number >= 1."""
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise UserError(f"batch_size {batch_size} must be a whole number >= 1")


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The epoch's permutation of ``range(n)`` (CPU int64), fixed by (seed, epoch)."""
    return torch.randperm(n, generator=make_generator(seed, epoch, 0, ORDER_STREAM))


class BatchedData:
    """Shared batching rules: batch-size checks, steps per epoch, rank shards, per-batch RNG."""

    info: DatasetInfo

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        """Full batches per epoch on each rank (the last partial batch is dropped)."""
        check_batch_size(batch_size)
        if not isinstance(world, numbers.Integral) or world < 1:
            raise UserError(f"world size {world} must be a whole number >= 1")
        per_rank = self.info.n_train // world
        if batch_size > per_rank:
            ranks = f" per rank ({world} ranks)" if world > 1 else ""
            raise UserError(f"batch_size {batch_size} is larger than the {per_rank} training "
                            f"images{ranks}; lower batch_size")
        return per_rank // batch_size

    def _plan(self, batch_size: int, epoch: int, seed: int, start: int, rank: int,
              world: int) -> tuple[Tensor, int]:
        steps = self.steps_per_epoch(batch_size, world)
        if not 0 <= rank < world:
            raise UserError(f"rank {rank} must be in [0, {world}) for world size {world}")
        if not 0 <= start <= steps:
            raise UserError(f"start batch {start} must be in [0, {steps}] (the epoch has {steps} "
                            "batches)")
        return epoch_order(self.info.n_train, seed, epoch), steps

    @staticmethod
    def _slot(i: int, rank: int, world: int) -> int:
        return i * world + rank


class TensorData(BatchedData):
    """A dataset held in memory as uint8 tensors; :meth:`to` moves it to the device once.

    Batches are ``index_select`` gathers of a random permutation plus the batched augmentation of
    :mod:`lightship.data.augment`: no DataLoader, no worker processes, no per-image Python.
    """

    def __init__(self, arrays: Arrays, *, fraction: float = 1.0, max_per_class: int | None = None,
                 seed: int = 0, image_size: int | None = None,
                 classes: list[int] | None = None) -> None:
        a = check_arrays(arrays)
        if classes is not None:
            a = check_arrays(keep_classes(a, classes))
        k = len(a.classes)
        keep = subset_indices(a.y_train, k, fraction, max_per_class, seed)
        x_train, y_train = (a.x_train, a.y_train) if keep is None else (a.x_train[keep],
                                                                        a.y_train[keep])
        x_test = a.x_test
        if image_size is not None and image_size != x_train.shape[-1]:
            x_train, x_test = _resize(x_train, image_size), _resize(x_test, image_size)
        mean, std = channel_stats(x_train)
        self.info = DatasetInfo(
            name=a.name, num_classes=k, classes=tuple(a.classes), in_chans=x_train.shape[1],
            input_size=x_train.shape[-1], n_train=len(x_train), n_test=len(x_test), mean=mean,
            std=std, hflip_ok=a.hflip_ok, source=a.source)
        self.x_train = torch.from_numpy(np.ascontiguousarray(x_train))
        self.y_train = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64))
        self.x_test = torch.from_numpy(np.ascontiguousarray(x_test))
        self.y_test = torch.from_numpy(np.ascontiguousarray(a.y_test, dtype=np.int64))
        self.device = torch.device("cpu")
        self._scale, self._shift = norm_constants(mean, std)

    def to(self, device: torch.device | str) -> TensorData:
        """Move the uint8 images, labels and normalisation constants to ``device`` (once)."""
        device = torch.device(device)
        if device != self.device:
            for name in ("x_train", "y_train", "x_test", "y_test", "_scale", "_shift"):
                setattr(self, name, getattr(self, name).to(device))
            self.device = device
        return self

    @property
    def train_labels(self) -> np.ndarray:
        """Training labels (int64, CPU numpy), e.g. for per-class counts."""
        return self.y_train.cpu().numpy()

    @property
    def test_labels(self) -> np.ndarray:
        """Test labels (int64, CPU numpy) in test_batches order."""
        return self.y_test.cpu().numpy()

    def train_batches(self, batch_size: int, epoch: int, seed: int, augment: Augment, *,
                      start: int = 0, rank: int = 0, world: int = 1,
                      channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the epoch's full, augmented, normalised batches (float32 x, int64 y) for
        ``rank``, from batch ``start`` on; see the module docstring for the exact order."""
        order, steps = self._plan(batch_size, epoch, seed, start, rank, world)
        return self._train_iter(order.to(self.device), steps, batch_size, epoch, seed, augment,
                                start, rank, world, channels_last)

    def _train_iter(self, order: Tensor, steps: int, bs: int, epoch: int, seed: int,
                    augment: Augment, start: int, rank: int, world: int,
                    channels_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(start, steps):
            slot = self._slot(i, rank, world)
            idx = order[slot * bs:(slot + 1) * bs]
            x = self.x_train.index_select(0, idx)
            g = make_generator(seed, epoch, slot, AUGMENT_STREAM)
            yield (augment_batch(x, augment, g, self._scale, self._shift, channels_last),
                   self.y_train.index_select(0, idx))

    def test_batches(self, batch_size: int, *,
                     channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the whole test split in order, normalised, unaugmented (last batch may be
        short)."""
        check_batch_size(batch_size)
        return self._ordered(self.x_test, self.y_test, batch_size, channels_last)

    def train_eval_batches(self, batch_size: int, *,
                           channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the whole training split in order, normalised, unaugmented, as test_batches
        does for the test split (to measure how well the training images are fit)."""
        check_batch_size(batch_size)
        return self._ordered(self.x_train, self.y_train, batch_size, channels_last)

    def _ordered(self, xs: Tensor, ys: Tensor, bs: int,
                 channels_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(0, len(xs), bs):
            yield normalise(xs[i:i + bs], self._scale, self._shift, channels_last), ys[i:i + bs]


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images N×C×H×W to size×size once at load time (bilinear, antialiased)."""
    out = np.empty((len(x), x.shape[1], size, size), dtype=np.uint8)
    for i in range(0, len(x), 1024):  # chunks bound the float32 temporaries
        chunk = torch.from_numpy(x[i:i + 1024]).float()
        r = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out[i:i + 1024] = r.round().clamp_(0, 255).to(torch.uint8).numpy()
    return out
