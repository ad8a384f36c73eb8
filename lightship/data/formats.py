"""Readers for the on-disk formats users bring: CIFAR-10/100 (python), MNIST IDX, .npz.

Each reader returns :class:`~lightship.data.arrays.Arrays` and turns every problem with the files
(truncated, wrong magic number, wrong shape, bad labels) into a one-line :class:`UserError` that
names the file. ImageFolder trees are streamed instead; see :mod:`lightship.data.folder`.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lightship.data.arrays import Arrays, as_labels, classes_from_labels, to_uint8_images
from lightship.errors import UserError, exception_line

CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
CIFAR100_FILES = ["train", "test", "meta"]
IDX_NAMES = {
    "train images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


# ---------------------------------------------------------------------------------------------
# CIFAR


def _numpy_pickle_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch pickle may name: numpy array reconstruction helpers (and
    ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for bytes)."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's "python version" *is* a pickle, so reading it needs the pickle protocol. We only
    open the files the CIFAR layout names in a folder the user pointed at, and, because unpickling
    can run code, refuse every global except numpy's array/dtype reconstruction: a tampered file
    fails to load instead of executing anything."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR batch never contains") from None


def _get(d: dict, key: str) -> Any:
    # encoding="bytes" gives bytes keys for the original (Python 2) files; accept str keys too.
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _load_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exception_line(exc)}); check the file's "
                        "permissions") from None
    except Exception as exc:  # truncated or foreign pickles raise many different types
        raise UserError(f"{path} is truncated or not a CIFAR batch ({exception_line(exc)}); "
                        "re-extract the CIFAR python archive") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch dictionary; "
                        "re-extract the CIFAR python archive")
    return obj


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load_cifar_pickle(path)
    data, labels = _get(d, "data"), _get(d, label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise UserError(f"{path} lacks the 'data' array or '{label_key}'; re-extract the CIFAR "
                        "python archive")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path} has data {data.dtype} {data.shape}; a CIFAR batch holds uint8 "
                        "rows of 3072 pixels; re-extract the CIFAR python archive")
    y = as_labels(np.asarray(labels), label_key, str(path))
    if len(y) != len(data):
        raise UserError(f"{path} has {len(data)} images but {len(y)} labels; re-extract the "
                        "CIFAR python archive")
    return data.reshape(-1, 3, 32, 32), y


def _cifar_names(path: Path, key: str) -> list[str]:
    names = _get(_load_cifar_pickle(path), key)
    if not isinstance(names, list) or not names:
        raise UserError(f"{path} lacks the class-name list '{key}'; re-extract the CIFAR "
                        "python archive")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_cifar10(folder: Path) -> Arrays:
    """CIFAR-10 python folder (``cifar-10-batches-py``): data_batch_1..5, test_batch."""
    parts = [_cifar_batch(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(folder / "test_batch", "labels")
    return Arrays(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                  x_test, y_test, _cifar_names(folder / "batches.meta", "label_names"),
                  hflip_ok=True, name="cifar10", source=str(folder))


def read_cifar100(folder: Path) -> Arrays:
    """CIFAR-100 python folder (``cifar-100-python``): train, test, meta; the 100 fine labels."""
    x_train, y_train = _cifar_batch(folder / "train", "fine_labels")
    x_test, y_test = _cifar_batch(folder / "test", "fine_labels")
    return Arrays(x_train, y_train, x_test, y_test,
                  _cifar_names(folder / "meta", "fine_label_names"),
                  hflip_ok=True, name="cifar100", source=str(folder))


# ---------------------------------------------------------------------------------------------
# MNIST IDX


def find_idx_file(folder: Path, role: str) -> Path | None:
    """The file for ``role`` ('train images', ...) in ``folder``, plain or .gz, or None."""
    for name in IDX_NAMES[role]:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (magic 0x0000 08 ndim, big-endian sizes, then data)."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read {path} ({exception_line(exc)}); the file is truncated or "
                        "corrupt, download it again") from None
    kind = "image" if ndim == 3 else "label"
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated ({len(raw)} bytes, shorter than an IDX header); "
                        "download it again")
    if raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        magic = raw[:4].hex()
        raise UserError(f"{path} is not an IDX {kind} file (magic 0x{magic}, expected "
                        f"0x000008{ndim:02x}); check which file is which")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    need = int(np.prod(dims))
    body = memoryview(raw)[4 + 4 * ndim:]
    if len(body) != need:
        shape = "×".join(str(d) for d in dims)
        state = "truncated" if len(body) < need else "longer than its header says"
        raise UserError(f"{path} is {state}: the header says {shape} ({need} bytes) but "
                        f"{len(body)} bytes follow; download it again")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def read_idx_folder(folder: Path) -> Arrays:
    """MNIST-style IDX files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-* (or .gz)."""
    files = {role: find_idx_file(folder, role) for role in IDX_NAMES}
    missing = [IDX_NAMES[r][0] for r, p in files.items() if p is None]
    if missing:
        raise UserError(f"{folder} has MNIST IDX files but lacks {', '.join(missing)} "
                        "(plain or .gz); add the missing files")
    split = {}
    for part in ("train", "test"):
        img_path, lab_path = files[f"{part} images"], files[f"{part} labels"]
        assert img_path is not None and lab_path is not None
        x = read_idx(img_path, 3)
        y = as_labels(read_idx(lab_path, 1), lab_path.name, str(folder))
        if len(x) != len(y):
            raise UserError(f"{img_path.name} has {len(x)} images but {lab_path.name} has "
                            f"{len(y)} labels; use matching files")
        split[part] = (x[:, None], y)
    return Arrays(*split["train"], *split["test"],
                  classes_from_labels(split["train"][1], split["test"][1]),
                  hflip_ok=False, name=folder.name or "idx", source=str(folder))


# ---------------------------------------------------------------------------------------------
# .npz


def _layout(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """N×H×W, N×H×W×C or N×C×H×W → N×C×H×W, deciding by which axis has size 1 or 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if first and last:  # e.g. N×3×3×3 or N×1×H×1: pick the reading with square images
            first = x.shape[2] == x.shape[3] or x.shape[1] != x.shape[2]
            last = not first
        if last:
            return x.transpose(0, 3, 1, 2)
        if first:
            return x
    raise UserError(f"{key} in {path} has shape {x.shape}; expected N×H×W, N×H×W×C or "
                    "N×C×H×W with C = 1 or 3")


def read_npz(path: Path) -> Arrays:
    """An .npz with x_train, y_train, x_test, y_test and optional ``classes`` (strings) and
    ``hflip_ok`` (bool). Loaded with ``allow_pickle=False``: an .npz never runs code."""
    required = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise UserError(f"{path} lacks {', '.join(missing)} (it has "
                                f"{', '.join(z.files) or 'no arrays'}); an .npz dataset needs "
                                "x_train, y_train, x_test, y_test")
            arrays = {k: z[k] for k in z.files if k in (*required, "classes", "hflip_ok")}
    except UserError:
        raise
    except Exception as exc:  # zip, pickle-refusal and truncation errors come in many types
        raise UserError(f"cannot read {path} as .npz ({exception_line(exc)}); save it with "
                        "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) using "
                        "numeric arrays") from None
    xs = {}
    for key in ("x_train", "x_test"):
        x = arrays[key]
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise UserError(f"{key} in {path} has dtype {x.dtype}; give uint8 pixels or floats "
                            "in [0, 1] or [0, 255]")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise UserError(f"{key} in {path} contains NaN or infinite pixel values; fix or "
                            "drop those images")
        xs[key] = _layout(x, key, path)
    lo = min(float(x.min()) if x.size else 0.0 for x in xs.values())
    hi = max(float(x.max()) if x.size else 0.0 for x in xs.values())
    if lo < 0 or hi > 255:
        raise UserError(f"pixel values in {path} span [{lo:g}, {hi:g}]; give uint8 pixels or "
                        "floats in [0, 1] or [0, 255]")
    # One scale for both splits: floats whose maximum is <= 1 are on the 0–1 scale.
    to_255 = all(np.issubdtype(x.dtype, np.floating) for x in xs.values()) and hi <= 1.0
    y_train = as_labels(arrays["y_train"], "y_train", str(path))
    y_test = as_labels(arrays["y_test"], "y_test", str(path))
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or not len(names):
            raise UserError(f"classes in {path} has shape {names.shape}; give a 1-D array of "
                            "class names")
        classes = [str(n) for n in names.tolist()]
    else:
        classes = classes_from_labels(y_train, y_test)
    hflip_ok = False
    if "hflip_ok" in arrays:
        flag = arrays["hflip_ok"]
        if flag.size != 1 or flag.dtype.kind not in "biu":
            raise UserError(f"hflip_ok in {path} must be one boolean (np.savez(..., "
                            "hflip_ok=True)) saying whether mirrored images keep their labels")
        hflip_ok = bool(flag.reshape(()))
    return Arrays(to_uint8_images(np.ascontiguousarray(xs["x_train"]), to_255), y_train,
                  to_uint8_images(np.ascontiguousarray(xs["x_test"]), to_255), y_test,
                  classes, hflip_ok=hflip_ok, name=path.stem, source=str(path))
