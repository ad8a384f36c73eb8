"""ImageFolder trees (``train/<class>/*.png``, ``val/<class>/…`` or ``test/<class>/…``), streamed.

Worker processes of a ``torch.utils.data.DataLoader`` only decode: open, convert to RGB (or L when
every image is grayscale), resize the shorter side to ``image_size``, centre-crop to a square, and
hand back uint8 tensors. Order, augmentation and normalisation happen in the main process with
the same code and the same per-batch generators as :class:`~lightship.data.tensor.TensorData`, so
a folder dataset trains exactly like an in-memory one. Default ``image_size``: 64, or the median
shorter side of the training images when that is smaller (small images are never upsampled).

Loading scans every file cheaply (header + ``PIL.Image.verify``) so broken files are named before
training starts; anything that still fails to decode later surfaces as a one-line UserError
naming the file, never a worker traceback.

Every Pillow mode reaches 8 bits by scaling, never by clipping (:func:`to_8bit`): 16-bit images
(``I;16``, ``I;16B``, and ``I`` within 0..65535) are scaled from 0..65535, float images (``F``)
from 0..1; values outside those ranges, or NaN, are refused with one line. Transparent pixels
(``LA``, ``RGBA``, ``PA``, ``P`` or ``L``/``RGB`` with a transparent colour) are composited over
black, so the colour a transparent pixel happens to store never shows. High-bit images whose
values fill too little of their range to survive 8 bits (8-bit data saved in 16-bit files) are
refused at load time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightship import interrupt
from lightship.data.arrays import ChannelStats, subset_indices
from lightship.data.augment import (
    AUGMENT_STREAM,
    Augment,
    augment_batch,
    make_generator,
    norm_constants,
    normalise,
)
from lightship.data.folds import kfold_indices
from lightship.data.info import DatasetInfo
from lightship.data.tensor import BatchedData, check_batch_size
from lightship.errors import UserError
from lightship.errors import exception_line as _reason

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
HIGH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # more than 8 bits a pixel
ALPHA_MODES = {"LA", "PA", "RGBA", "RGBa"}
MIN_LEVELS = 32  # high-bit images must keep at least this many of the 256 grey levels
DEFAULT_IMAGE_SIZE = 64
STATS_IMAGES = 500


def _unreadable(path: str, exc_or_reason: BaseException | str) -> UserError:
    reason = exc_or_reason if isinstance(exc_or_reason, str) else _reason(exc_or_reason)
    reason = reason.replace(f" '{path}'", "").replace(f" {path}", "")  # named once is enough
    return UserError(f"image {path} cannot be read ({reason}); remove or replace the file")


def _list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursive, sorted, hidden files and other types skipped)."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(os.path.join(root, f) for f in sorted(files)
                   if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    return out


def _class_dirs(split: Path) -> list[str]:
    return sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan_split(split: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Files and labels of one split; class folders missing from ``classes`` are an error."""
    files: list[str] = []
    labels: list[int] = []
    index = {c: i for i, c in enumerate(classes)}
    for name in _class_dirs(split):
        if name not in index:
            raise UserError(f"{split / name} is a class that {split.parent / 'train'} does not "
                            "have; every test class needs training images")
        found = _list_images(split / name)
        files += found
        labels += [index[name]] * len(found)
    return files, labels


def _jpeg_has_end(path: str) -> bool:
    """Whether the last KiB of a JPEG holds its end-of-image marker (FF D9). A truncated JPEG
    passes ``Image.verify`` (which checks nothing for JPEG) but fails to decode later."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 1024))
        return b"\xff\xd9" in fh.read()


def _check_image(path: str) -> tuple[int, str]:
    """(shorter side, mode) from the header, after PIL's cheap integrity check (plus, for a
    JPEG without its end marker, a full decode, so truncated JPEGs are named at load time)."""
    try:
        with Image.open(path) as im:
            size, mode, fmt = min(im.size), im.mode, im.format
            im.verify()
        if fmt == "JPEG" and not _jpeg_has_end(path):
            with Image.open(path) as im:  # trailing bytes after the marker, or truncated?
                im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... per format
        raise _unreadable(path, exc) from None
    return size, mode


def to_8bit(im: Image.Image, path: str) -> Image.Image:
    """An 8-bit image (``L``, ``RGB`` or ``im`` itself) with the same content: high-bit values
    scaled to 0..255 (16-bit and ``I`` from 0..65535, float from 0..1; anything outside, or NaN,
    is a UserError), transparent pixels composited over black. Pillow's own ``convert`` would
    clip a 16-bit value of 4000 to 255 and show whatever colour a transparent pixel stores."""
    if im.mode in HIGH_MODES:
        arr = np.asarray(im, dtype=np.float64)
        full = 1.0 if im.mode == "F" else 65535.0
        kind = {"F": "float", "I": "32-bit integer"}.get(im.mode, "16-bit")
        if not np.isfinite(arr).all():
            raise UserError(f"image {path} holds NaN or infinite {kind} values; fix or remove "
                            "the file")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > full:
            raise UserError(f"image {path} holds {kind} values from {lo:g} to {hi:g}, outside "
                            f"0..{full:g}, which lightship scales to 0..255; rescale the images "
                            f"to 0..{full:g} (or save them as 8-bit images)")
        return Image.fromarray(np.rint(arr * (255.0 / full)).astype(np.uint8), "L")
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        rgb = np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0))  # over black
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    return im


def load_image(path: str, size: int, mode: str) -> np.ndarray:
    """Decode → 8 bits (:func:`to_8bit`) → ``mode`` → shorter side resized to ``size`` → centre
    crop; uint8 C×H×W."""
    with Image.open(path) as im:
        im.draft(mode, (size, size))  # JPEG: let the decoder downscale by 2/4/8 (much faster)
        im = to_8bit(im, path).convert(mode)
        w, h = im.size
        if (w, h) != (size, size):
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        arr = np.array(im, dtype=np.uint8)  # a writable copy (torch warns on read-only)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


@dataclass
class _Failed:
    """A decode failure carried to the main process as data, not as a worker exception: the
    one-line message to raise there."""

    message: str


class _ImageFiles(Dataset):
    def __init__(self, files: list[str], labels: list[int], size: int, mode: str) -> None:
        self.files, self.labels, self.size, self.mode = files, labels, size, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int] | _Failed:
        try:
            return torch.from_numpy(load_image(self.files[i], self.size, self.mode)), \
                self.labels[i]
        except UserError as exc:  # refused (a pixel range, say): the message says it all
            return _Failed(str(exc))
        except Exception as exc:
            return _Failed(str(_unreadable(self.files[i], exc)))


_WORKER_START = "fork" if sys.platform.startswith("linux") else None
"""How decoding workers start: fork on Linux, as DataLoader does from a main process, also
inside a study's or lift's cell process, which is started by spawn and so would spawn its
workers too: a fresh interpreter and torch import per worker, per epoch and per evaluation.
On MNIST-5k PNGs, one epoch's training stream plus its evaluation: 0.69 s forked against
5.91 s spawned, 8.6× (benchmarks/folder_workers.py, 2-core AMD EPYC, alone). Elsewhere:
DataLoader's default."""


def _collate(items: list) -> tuple[Tensor, Tensor] | _Failed:
    for item in items:
        if isinstance(item, _Failed):
            return item
    return (torch.stack([x for x, _ in items]),
            torch.tensor([y for _, y in items], dtype=torch.int64))


class FolderData(BatchedData):
    """An ImageFolder tree streamed through a DataLoader; same API and semantics as TensorData."""

    def __init__(self, root: Path, train_dir: Path, test_dir: Path, *, fraction: float = 1.0,
                 max_per_class: int | None = None, seed: int = 0, image_size: int | None = None,
                 workers: int = 2, folds: tuple[int, int] | None = None) -> None:
        """``folds`` = (K, i): validation fold i of a stratified K-fold of train/ (shuffled by
        ``seed``) is the evaluated split, and the test split is never listed or read."""
        self.root, self.workers = root, workers
        classes = _class_dirs(train_dir)
        if not classes:
            raise UserError(f"{train_dir} has no class folders; put images in "
                            f"{train_dir}/<class>/")
        files, labels = scan_split(train_dir, classes)
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
        if (counts == 0).any():
            c = classes[int(np.flatnonzero(counts == 0)[0])]
            raise UserError(f"class folder {train_dir / c} has no images (looked for "
                            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove it")
        if folds is not None:  # validation carved from train/: test/ stays unread
            part, val = kfold_indices(np.asarray(labels, dtype=np.int64), folds[0], seed)[folds[1]]
            test_files, test_labels = [files[i] for i in val], [labels[i] for i in val]
            files, labels = [files[i] for i in part], [labels[i] for i in part]
        else:
            test_files, test_labels = scan_split(test_dir, classes)
        if not test_files:
            raise UserError(f"{test_dir} has no images in class folders; put test images in "
                            f"{test_dir}/<class>/")
        pool = ThreadPoolExecutor(max_workers=8)  # header reads are I/O bound
        try:
            checked = list(pool.map(_check_image, files + test_files))
        finally:  # on an error or Ctrl-C, drop the files not yet read (a big tree takes long)
            pool.shutdown(wait=True, cancel_futures=True)
        mode = "L" if all(m in GRAY_MODES for _, m in checked) else "RGB"
        high = {f for f, (_, m) in zip(files + test_files, checked, strict=True)
                if m in HIGH_MODES}
        if image_size is None:
            median = int(np.median([s for s, _ in checked[:len(files)]]))
            image_size = max(4, min(DEFAULT_IMAGE_SIZE, median))

        y = np.asarray(labels, dtype=np.int64)
        keep = subset_indices(y, len(classes), fraction, max_per_class, seed)
        if keep is not None:
            files, y = [files[i] for i in keep], y[keep]
        self.train_files, self.test_files = files, test_files
        self._y_train, self._y_test = y, np.asarray(test_labels, dtype=np.int64)
        self.size, self.mode = image_size, mode

        # Mean/std from up to STATS_IMAGES training images spread evenly over the (sorted) list.
        stats = ChannelStats()
        pick = np.unique(np.linspace(0, len(files) - 1, min(STATS_IMAGES, len(files))).round())
        brightest = -1  # over the high-bit images among them
        for i in pick.astype(int):
            try:
                image = load_image(files[i], image_size, mode)
            except UserError:
                raise
            except Exception as exc:
                raise _unreadable(files[i], exc) from None
            stats.add(image)
            if files[i] in high:
                brightest = max(brightest, int(image.max()))
        if 0 <= brightest < MIN_LEVELS - 1:
            raise UserError(f"the 16-bit (or float) images in {root} use only the darkest "
                            f"{brightest + 1} of 256 grey levels once scaled from 0..65535 (float: "
                            "0..1) to 0..255, as 8-bit data saved in 16-bit files does; save them "
                            "as 8-bit images or stretch their values to the full range")
        mean, std = stats.result()
        self.info = DatasetInfo(
            name=root.name or "images", num_classes=len(classes), classes=tuple(classes),
            in_chans=1 if mode == "L" else 3, input_size=image_size, n_train=len(files),
            n_test=len(test_files), mean=mean, std=std, hflip_ok=True, source=str(root))
        self.device = torch.device("cpu")
        self._scale, self._shift = norm_constants(mean, std)

    def to(self, device: torch.device | str) -> FolderData:
        """Send future batches to ``device`` (images stay on disk)."""
        self.device = torch.device(device)
        self._scale, self._shift = self._scale.to(self.device), self._shift.to(self.device)
        return self

    @property
    def train_labels(self) -> np.ndarray:
        """Training labels (int64, CPU numpy), e.g. for per-class counts."""
        return self._y_train

    @property
    def test_labels(self) -> np.ndarray:
        """Test labels (int64, CPU numpy) in test_batches order."""
        return self._y_test

    def _stream(self, files: list[str], labels: np.ndarray,
                batches: list[list[int]]) -> Iterator[tuple[Tensor, Tensor]]:
        """Decoded uint8 batches on the device; every failure becomes a one-line UserError."""
        if not batches:
            return
        loader = DataLoader(_ImageFiles(files, labels.tolist(), self.size, self.mode),
                            batch_sampler=batches, num_workers=self.workers,
                            collate_fn=_collate, pin_memory=self.device.type == "cuda",
                            worker_init_fn=interrupt.ignore_in_worker if self.workers else None,
                            multiprocessing_context=_WORKER_START if self.workers else None)
        # Starting and stopping workers runs fork hooks and finalizers, where Python loses a
        # KeyboardInterrupt ("Exception ignored in ..."), and a batch cut off in transit from a
        # worker makes it print a traceback: Ctrl-C waits for those to end (a batch at most).
        it = None
        try:
            with interrupt.deferred():
                it = iter(loader)
            while True:
                try:
                    with interrupt.deferred():
                        item = next(it, None)
                except Exception as exc:  # a worker died or the loader failed: one line
                    interrupt.check()  # ... unless Ctrl-C stopped it
                    raise UserError(f"reading images from {self.root} failed ({_reason(exc)}); "
                                    "retry with workers=0 to see which file") from None
                if item is None:
                    break
                if isinstance(item, _Failed):
                    raise UserError(item.message)
                x, y = item
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        finally:  # shut the workers down now (this may run as the generator's finalizer)
            with interrupt.deferred(then_raise=False):
                it = None
        interrupt.check()  # reached when the stream ended normally, not when it was dropped

    def train_batches(self, batch_size: int, epoch: int, seed: int, augment: Augment, *,
                      start: int = 0, rank: int = 0, world: int = 1,
                      channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """Same order, sharding, ``start`` and augmentation as TensorData.train_batches."""
        order, steps = self._plan(batch_size, epoch, seed, start, rank, world)
        slots = [self._slot(i, rank, world) for i in range(start, steps)]
        batches = [order[s * batch_size:(s + 1) * batch_size].tolist() for s in slots]
        return self._train_iter(batches, slots, epoch, seed, augment, channels_last)

    def _train_iter(self, batches: list[list[int]], slots: list[int], epoch: int, seed: int,
                    augment: Augment, channels_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
        # The stream first, so it runs to its end (and stops its workers) inside the loop.
        for (x, y), slot in zip(self._stream(self.train_files, self._y_train, batches), slots,
                                strict=True):
            g = make_generator(seed, epoch, slot, AUGMENT_STREAM)
            yield augment_batch(x, augment, g, self._scale, self._shift, channels_last), y

    def test_batches(self, batch_size: int, *,
                     channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """The whole test split in order, normalised, unaugmented (last batch may be short)."""
        check_batch_size(batch_size)
        n = len(self.test_files)
        batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        return self._test_iter(batches, channels_last)

    def train_in_order(self, batch_size: int, *,
                       channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """The whole training split in order, normalised, unaugmented: what ``measure_fit``
        reads (the loop's end-of-run fit skips streamed data, not to re-read a large tree)."""
        check_batch_size(batch_size)
        n = len(self.train_files)
        batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        for x, y in self._stream(self.train_files, self._y_train, batches):
            yield normalise(x, self._scale, self._shift, channels_last), y

    def _test_iter(self, batches: list[list[int]],
                   channels_last: bool) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self._stream(self.test_files, self._y_test, batches):
            yield normalise(x, self._scale, self._shift, channels_last), y
