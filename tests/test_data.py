"""Data layer: every format on tiny files written here, every bad input as a one-line UserError,
augmentation on hand-made tensors, exact batch order (determinism, start, ranks), mixup/cutmix."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from lightship.data import (
    Augment,
    FolderData,
    TensorData,
    cutmix,
    describe_dataset,
    list_datasets,
    load_dataset,
    mixup,
)
from lightship.data.arrays import Arrays, stratified_split
from lightship.data.augment import apply_params, augment_batch, draw_params, norm_constants
from lightship.data.mix import cutmix_box
from lightship.errors import UserError
from tests.conftest import write_npz

RNG = np.random.default_rng(0)
AUG = Augment(crop_padding=2, hflip=True, cutout=3)


def one_line_error(fn, *words: str) -> str:
    """Run ``fn``; it must raise a one-line UserError containing every word."""
    with pytest.raises(UserError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    for word in words:
        assert word in msg, msg
    return msg


def batches(data, *args, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.train_batches(*args, **kw))


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# Writers of tiny files in each format


def write_cifar10(folder, n=4):
    folder.mkdir(parents=True)
    images = {}
    for b, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(b * n + j) % 10 for j in range(n)]  # every class gets training images
        images[name] = (data, labels)
        # Protocol 2 with bytes keys, like the original Python 2 files.
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return images


def write_cifar100(folder, n=6):
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = list(range(n)) if name == "train" else [0] * n
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"fine_labels": fine,
                                                  b"coarse_labels": [0] * n}))
    names = [f"c{i}".encode() for i in range(n)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}))


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(folder, gz=False, n_train=20, n_test=10, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


def write_folder(root, size=8, mode="RGB", per_class=3, classes=("cat", "dog")):
    """train/<class>/i.png and val/<class>/i.png; returns {path: uint8 C×H×W}."""
    pixels = {}
    for split, n in (("train", per_class), ("val", 2)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                arr = RNG.integers(0, 256, shape, dtype=np.uint8)
                path = root / split / c / f"{i}.png"
                Image.fromarray(arr, mode).save(path)
                pixels[str(path)] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return pixels


def indexed_data(n=40, classes=4, size=4) -> TensorData:
    """Images that carry their own index in pixels (0, 0, 0) and (0, 0, 1)."""
    x = np.zeros((n, 1, size, size), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    y = np.arange(n) % classes
    a = Arrays(x, y, x[:classes], y[:classes], [str(i) for i in range(classes)], False, "idx",
               "test")
    return TensorData(a)


def decode_index(x: torch.Tensor, data: TensorData) -> list[int]:
    """Invert normalisation of unaugmented batches back to the image indices."""
    m, s = data.info.mean[0], data.info.std[0]
    raw = torch.round((x[:, 0, 0, :2] * s + m) * 255).long()
    return (raw[:, 0] + 256 * raw[:, 1]).tolist()


# ---------------------------------------------------------------------------------------------
# Formats


def test_cifar10_folder_and_its_parent(tmp_path):
    images = write_cifar10(tmp_path / "cifar-10-batches-py")
    for spec in (tmp_path / "cifar-10-batches-py", tmp_path):
        d = load_dataset(str(spec))
        info = d.info
        assert (info.name, info.n_train, info.n_test, info.num_classes) == ("cifar10", 20, 4, 10)
        assert (info.in_chans, info.input_size, info.hflip_ok) == (3, 32, True)
        assert info.classes[:2] == ("airplane", "automobile")
        data, labels = images["data_batch_1"]
        assert torch.equal(d.x_train[0], torch.from_numpy(data[0].reshape(3, 32, 32)))
        assert d.y_train[:4].tolist() == labels
    assert torch.equal(d.x_test[-1], torch.from_numpy(images["test_batch"][0][-1])
                       .view(3, 32, 32))


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    d = load_dataset(str(tmp_path))
    assert (d.info.name, d.info.num_classes, d.info.n_train) == ("cifar100", 6, 6)
    assert d.info.classes == ("c0", "c1", "c2", "c3", "c4", "c5")
    assert d.y_train.tolist() == list(range(6))


def test_cifar_refuses_pickled_code_and_truncation(tmp_path):
    write_cifar10(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "c" / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil()}))
    one_line_error(lambda: load_dataset(str(tmp_path / "c")), "data_batch_2", "builtins.print")
    write_cifar10(tmp_path / "t")
    raw = (tmp_path / "t" / "test_batch").read_bytes()
    (tmp_path / "t" / "test_batch").write_bytes(raw[: len(raw) // 2])
    one_line_error(lambda: load_dataset(str(tmp_path / "t")), "test_batch", "truncated")
    (tmp_path / "t" / "test_batch").unlink()
    one_line_error(lambda: load_dataset(str(tmp_path / "t")), "lacks test_batch")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gz(tmp_path, gz):
    arrays = write_idx(tmp_path / "mnist", gz=gz)
    d = load_dataset(str(tmp_path / "mnist"))
    assert (d.info.n_train, d.info.n_test, d.info.num_classes) == (20, 10, 10)
    assert (d.info.in_chans, d.info.input_size, d.info.hflip_ok) == (1, 8, False)
    assert np.array_equal(d.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert d.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_mnist_idx_corruption(tmp_path):
    write_idx(tmp_path / "m")
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    raw = f.read_bytes()
    f.write_bytes(raw[:-5])
    one_line_error(lambda: load_dataset(str(tmp_path / "m")), "train-images-idx3-ubyte",
                   "truncated")
    f.write_bytes(b"\x00\x00\x08\x01" + raw[4:])
    one_line_error(lambda: load_dataset(str(tmp_path / "m")), "not an IDX image file")
    write_idx(tmp_path / "g", gz=True)
    g = tmp_path / "g" / "t10k-labels-idx1-ubyte.gz"
    g.write_bytes(g.read_bytes()[:-8])
    one_line_error(lambda: load_dataset(str(tmp_path / "g")), "t10k-labels-idx1-ubyte.gz")


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "NCHW1", "float01", "float255"])
def test_npz_layouts(tmp_path, layout):
    base = RNG.integers(0, 256, (12, 3, 6, 6), dtype=np.uint8)
    x = {"NHW": base[:, 0], "NHWC": base.transpose(0, 2, 3, 1), "NCHW": base,
         "NCHW1": base[:, :1], "float01": base / 255.0,
         "float255": base.astype(np.float32)}[layout]
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(12) % 3, x_test=x[:3],
                     y_test=np.arange(3), classes=np.array(["a", "b", "c"]), hflip_ok=True)
    d = load_dataset(path)
    want = base[:, :1] if layout in ("NHW", "NCHW1") else base
    assert np.array_equal(d.x_train.numpy(), want)
    assert d.info.classes == ("a", "b", "c") and d.info.hflip_ok and d.info.name == "d"


def test_imagefolder_streams_like_in_memory(tmp_path):
    pixels = write_folder(tmp_path / "imgs")
    d = load_dataset(str(tmp_path / "imgs"), workers=0)
    assert isinstance(d, FolderData)
    info = d.info
    assert info.classes == ("cat", "dog") and (info.n_train, info.n_test) == (6, 4)
    assert (info.in_chans, info.input_size, info.hflip_ok) == (3, 8, True)  # no upsampling
    # The same images in memory must give bit-identical batches and statistics.
    x_tr = np.stack([pixels[f] for f in d.train_files])
    x_te = np.stack([pixels[f] for f in d.test_files])
    mem = TensorData(Arrays(x_tr, d.train_labels, x_te, d.test_labels, ["cat", "dog"], True,
                            "imgs", "x"))
    assert mem.info.mean == pytest.approx(info.mean) and mem.info.std == pytest.approx(info.std)
    for epoch in (0, 1):
        assert same(batches(d, 2, epoch, 3, AUG), batches(mem, 2, epoch, 3, AUG))
    assert same(batches(d, 2, 0, 3, AUG, start=1), batches(mem, 2, 0, 3, AUG, start=1))
    assert same(list(d.test_batches(3)), list(mem.test_batches(3)))
    # Resized and grayscale: all-L images give one channel at the requested size.
    write_folder(tmp_path / "gray", size=12, mode="L")
    g = load_dataset(str(tmp_path / "gray"), image_size=6, workers=0)
    assert (g.info.in_chans, g.info.input_size) == (1, 6)
    x, y = next(iter(g.train_batches(4, 0, 0, Augment())))
    assert x.shape == (4, 1, 6, 6) and y.dtype == torch.int64


def test_imagefolder_bad_files_are_named(tmp_path):
    write_folder(tmp_path / "a")
    big = tmp_path / "a" / "train" / "dog" / "big.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    raw = big.read_bytes()
    big.write_bytes(raw[: int(len(raw) * 0.6)])
    one_line_error(lambda: load_dataset(str(tmp_path / "a"), workers=0), "big.png")
    big.unlink()
    (tmp_path / "a" / "val" / "cat" / "notes.jpg").write_text("not an image")
    one_line_error(lambda: load_dataset(str(tmp_path / "a"), workers=0), "notes.jpg")


def test_imagefolder_decode_failure_in_worker_is_one_line(tmp_path):
    write_folder(tmp_path / "a", per_class=4)
    d = load_dataset(str(tmp_path / "a"), workers=2)
    victim = d.train_files[5]
    with open(victim, "wb") as f:  # the file breaks after the load-time scan
        f.write(b"garbage")
    one_line_error(lambda: batches(d, 2, 0, 0, AUG), victim)


def test_builtin_mnist5k_split():
    a, b = load_dataset("mnist5k"), load_dataset("mnist5k", seed=7)
    info = a.info
    assert (info.n_train, info.n_test, info.num_classes) == (4000, 1000, 10)
    assert (info.in_chans, info.input_size, info.hflip_ok) == (1, 28, False)
    assert info.classes == tuple("0123456789") and info.source == "builtin"
    assert np.bincount(a.train_labels).tolist() == [400] * 10
    assert np.bincount(a.test_labels).tolist() == [100] * 10
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)  # fixed split
    assert 0.1 < info.mean[0] < 0.15 and 0.29 < info.std[0] < 0.33
    train, test = stratified_split(np.arange(5000) % 10, 1000, seed=0)
    assert len(np.union1d(train, test)) == 5000 and not np.intersect1d(train, test).size


def test_builtin_digits_and_listing():
    d = load_dataset("digits")
    assert (d.info.n_train, d.info.n_test, d.info.input_size) == (1437, 360, 8)
    assert int(d.x_train.max()) == 255 and d.info.classes == tuple("0123456789")
    assert list_datasets() == ["mnist5k", "digits", "synthetic"]
    desc = describe_dataset("digits", fraction=0.5)
    assert desc["num_classes"] == 10 and sum(desc["test_counts"].values()) == 360
    assert sum(desc["train_counts"].values()) == desc["n_train"]


def test_synthetic_is_deterministic_and_learnable():
    spec = "synthetic:n=60,classes=3,size=8,channels=1"
    a, b = load_dataset(spec), load_dataset(spec)
    assert torch.equal(a.x_train, b.x_train) and a.x_train.shape == (60, 1, 8, 8)
    assert a.info.n_test == 15 and np.bincount(a.train_labels).tolist() == [20] * 3
    assert not torch.equal(a.x_train, load_dataset(spec + ",seed=1").x_train)
    x, y = a.x_train.float().flatten(1), a.y_train
    means = torch.stack([x[y == c].mean(0) for c in range(3)])
    pred = torch.cdist(a.x_test.float().flatten(1), means).argmin(1)
    assert (pred == a.y_test).float().mean() > 0.8  # nearest class mean already works
    assert load_dataset("synthetic").info.in_chans == 3
    big = load_dataset(spec, image_size=12)  # in-memory data is resized once at load time
    assert big.info.input_size == 12 and big.x_train.shape == (60, 1, 12, 12)
    assert next(iter(big.train_batches(8, 0, 0, AUG)))[0].shape == (8, 1, 12, 12)


@pytest.mark.parametrize("fraction,per_class", [(0.1, 40), (0.01, 4)])
def test_fraction_is_stratified_and_deterministic(fraction, per_class):
    a = load_dataset("mnist5k", fraction=fraction)
    assert np.bincount(a.train_labels).tolist() == [per_class] * 10
    assert a.info.n_test == 1000
    assert torch.equal(a.x_train, load_dataset("mnist5k", fraction=fraction).x_train)
    assert not torch.equal(a.x_train, load_dataset("mnist5k", fraction=fraction, seed=1).x_train)
    tiny = load_dataset("digits", fraction=0.001)
    assert np.bincount(tiny.train_labels).tolist() == [1] * 10
    capped = load_dataset("mnist5k", fraction=fraction, max_per_class=2)
    assert np.bincount(capped.train_labels).tolist() == [2] * 10
    assert capped.info.mean != load_dataset("mnist5k").info.mean  # stats of the subset


# ---------------------------------------------------------------------------------------------
# Bad input: one-line UserError each


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    ld = load_dataset
    one_line_error(lambda: ld(str(tmp_path / "nope")), "nope", "does not exist")
    one_line_error(lambda: ld(str(tmp_path / "empty_dir")), "empty_dir", "CIFAR-10", "ImageFolder")
    one_line_error(lambda: ld("mnist5"), "did you mean 'mnist5k'", "lightship data list")
    one_line_error(lambda: ld("synthetic:clases=3"), "did you mean 'classes'")
    one_line_error(lambda: ld("mnist5k", fraction=0), "fraction")
    one_line_error(lambda: ld("mnist5k", fraction=1.5), "fraction")
    one_line_error(lambda: ld("mnist5k", fraction=float("nan")), "fraction")
    one_line_error(lambda: ld("mnist5k", max_per_class=0), "max_per_class")
    p = tmp_path
    cases = {
        "negative label": (dict(y_train=np.arange(30) % 3 - 1), "negative label"),
        "non-integer label": (dict(y_train=np.arange(30) % 3 + 0.5), "non-integer label"),
        "label >= classes": (dict(classes=np.array(["a", "b"])), "only 2 classes"),
        "NaN": (dict(x_train=np.full((30, 8, 8), np.nan)), "NaN"),
        "inf": (dict(x_test=np.full((9, 8, 8), np.inf)), "infinite"),
        "wrong shape": (dict(x_train=np.zeros((30, 8, 8, 4), np.uint8)), "shape"),
        "4-d labels": (dict(y_train=np.zeros((30, 1))), "1-D"),
        "length": (dict(y_train=np.arange(29) % 3), "29 labels"),
        "empty": (dict(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, int)),
                  "empty"),
        "empty class": (dict(y_train=(np.arange(30) % 2) * 2), "class 1"),
        "range": (dict(x_train=np.full((30, 8, 8), 300.0)), "[0, 255]"),
        "missing key": (dict(x_test=None), "lacks x_test"),
    }
    for name, (over, word) in cases.items():
        arrays = {k: v for k, v in over.items() if v is not None}
        path = write_npz(p / f"{name}.npz", **arrays)
        if "x_test" in over and over["x_test"] is None:
            z = dict(np.load(path))
            del z["x_test"]
            np.savez(path, **z)
        one_line_error(lambda path=path: ld(path), word)
    (p / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(lambda: ld(str(p / "junk.npz")), "junk.npz")
    (p / "data.txt").write_text("x")
    one_line_error(lambda: ld(str(p / "data.txt")), "data.txt")
    (p / "only_train" / "train" / "a").mkdir(parents=True)
    one_line_error(lambda: ld(str(p / "only_train")), "no val/ or test/")
    write_folder(p / "ec")
    (p / "ec" / "train" / "bird").mkdir()
    one_line_error(lambda: ld(str(p / "ec")), "bird", "no images")


def test_batch_errors():
    d = load_dataset("synthetic:n=40,classes=4,size=8,channels=1")
    one_line_error(lambda: d.steps_per_epoch(512), "batch_size 512 is larger than the 40 "
                   "training images; lower batch_size")
    one_line_error(lambda: d.train_batches(512, 0, 0, Augment()), "batch_size 512")
    one_line_error(lambda: d.steps_per_epoch(30, world=2), "20 training images per rank")
    one_line_error(lambda: d.train_batches(8, 0, 0, Augment(), start=9), "start")
    one_line_error(lambda: Augment(crop_padding=-1), "crop_padding")
    assert d.steps_per_epoch(8) == 5 and d.steps_per_epoch(8, world=2) == 2


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_crop_shifts_content_by_the_drawn_offset():
    x = torch.arange(1, 1 + 5 * 2 * 6 * 6, dtype=torch.int64).remainder(250).add(1)
    x = x.to(torch.uint8).view(5, 2, 6, 6)
    aug = Augment(crop_padding=2)
    prm = draw_params(5, 6, 6, aug, torch.Generator().manual_seed(3))
    out = apply_params(x, prm, aug)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    assert (prm.dy != 2).any() and (prm.flip == 0).all()
    for i in range(5):
        dy, dx = int(prm.dy[i]), int(prm.dx[i])
        assert torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6])
        # Content moved by (2 - dy, 2 - dx); pixels shifted in from outside are zero.
        sy, sx = 2 - dy, 2 - dx
        src = x[i, :, max(0, -sy):6 - max(0, sy), max(0, -sx):6 - max(0, sx)]
        dst = out[i, :, max(0, sy):6 - max(0, -sy), max(0, sx):6 - max(0, -sx)]
        assert torch.equal(src, dst)
        assert int((out[i] == 0).sum()) == 2 * (36 - src[0].numel())


def test_flip_mirrors_and_cutout_zeroes_a_square():
    x = torch.randint(1, 256, (16, 3, 7, 7), dtype=torch.uint8)
    flip = Augment(hflip=True)
    prm = draw_params(16, 7, 7, flip, torch.Generator().manual_seed(0))
    out = apply_params(x, prm, flip)
    assert 0 < int(prm.flip.sum()) < 16
    for i in range(16):
        assert torch.equal(out[i], x[i].flip(-1) if prm.flip[i] else x[i])
    cut = Augment(cutout=3)
    prm = draw_params(16, 7, 7, cut, torch.Generator().manual_seed(1))
    out = apply_params(x, prm, cut)
    for i in range(16):
        y0, x0 = int(prm.cy[i]) - 1, int(prm.cx[i]) - 1
        mask = torch.zeros(7, 7, dtype=torch.bool)
        mask[max(y0, 0):y0 + 3, max(x0, 0):x0 + 3] = True
        assert torch.equal(out[i] == 0, mask.expand(3, 7, 7))  # x has no zeros of its own
        assert torch.equal(out[i][:, ~mask], x[i][:, ~mask])
    inner = (prm.cy >= 1) & (prm.cy <= 5) & (prm.cx >= 1) & (prm.cx <= 5)
    assert inner.any() and ((out[inner] == 0).sum((1, 2, 3)) == 3 * 9).all()


def test_combined_augment_matches_a_per_image_reference():
    x = torch.randint(1, 256, (32, 3, 9, 9), dtype=torch.uint8)
    prm = draw_params(32, 9, 9, AUG, torch.Generator().manual_seed(5))
    out = apply_params(x, prm, AUG)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(32):
        dy, dx = int(prm.dy[i]), int(prm.dx[i])
        ref = padded[i, :, dy:dy + 9, dx:dx + 9]
        ref = ref.flip(-1) if prm.flip[i] else ref.clone()
        y0, x0 = int(prm.cy[i]) - 1, int(prm.cx[i]) - 1
        ref[:, max(y0, 0):y0 + 3, max(x0, 0):x0 + 3] = 0
        assert torch.equal(out[i], ref)
    # Normalisation: with mean 0 and std 1/255 the float output is the uint8 result.
    scale, shift = norm_constants((0.0,) * 3, (1 / 255,) * 3)
    norm = augment_batch(x, AUG, torch.Generator().manual_seed(5), scale, shift)
    assert norm.dtype == torch.float32 and torch.allclose(norm, out.float(), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Batch order: determinism, resume, ranks


def test_batches_are_deterministic_and_epochs_differ():
    d = load_dataset("synthetic:n=64,classes=4,size=8,channels=3")
    a = batches(d, 16, 0, 0, AUG)
    assert len(a) == 4 and a[0][0].shape == (16, 3, 8, 8) and a[0][0].dtype == torch.float32
    assert a[0][1].dtype == torch.int64
    assert same(a, batches(d, 16, 0, 0, AUG))
    assert not same(a, batches(d, 16, 1, 0, AUG))
    assert not same(a, batches(d, 16, 0, 1, AUG))
    plain = indexed_data()
    e0 = sum((decode_index(x, plain) for x, _ in plain.train_batches(8, 0, 0, Augment())), [])
    e1 = sum((decode_index(x, plain) for x, _ in plain.train_batches(8, 1, 0, Augment())), [])
    assert sorted(e0) == sorted(e1) == list(range(40)) and e0 != e1
    cl = next(iter(d.train_batches(16, 0, 0, AUG, channels_last=True)))[0]
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, a[0][0])
    test = list(d.test_batches(10))
    assert [len(y) for _, y in test] == [10, 6] and torch.equal(torch.cat([y for _, y in test]),
                                                                 d.y_test)


def test_start_skips_batches_without_changing_later_ones():
    d = load_dataset("synthetic:n=80,classes=4,size=8,channels=1")
    full = batches(d, 8, 2, 5, AUG)
    for k in (0, 3, 9, 10):
        assert same(batches(d, 8, 2, 5, AUG, start=k), full[k:])


def test_rank_shards_are_disjoint_and_cover_the_epoch():
    d = indexed_data(n=50)
    single = [decode_index(x, d) for x, _ in d.train_batches(10, 3, 1, Augment())]
    shards = [[decode_index(x, d) for x, _ in d.train_batches(5, 3, 1, Augment(), rank=r,
                                                               world=2)]
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    flat = [sorted(sum(s, [])) for s in shards]
    assert not set(flat[0]) & set(flat[1])
    for step in range(5):  # step i of all ranks together = batch i of world=1 at 2× the size
        assert sorted(shards[0][step] + shards[1][step]) == sorted(single[step])
    three = [sum((decode_index(x, d) for x, _ in d.train_batches(4, 0, 0, Augment(), rank=r,
                                                                  world=3)), [])
             for r in range(3)]
    assert all(len(s) == 16 for s in three) and len(set(sum(three, []))) == 48


# ---------------------------------------------------------------------------------------------
# Mixup and CutMix


def test_mixup_and_cutmix_targets():
    n = 8
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 10, 10)
    x = x.contiguous()
    y = torch.arange(n)
    xm, t = mixup(x, y, n, 0.4, torch.Generator().manual_seed(0))
    assert torch.allclose(t.sum(1), torch.ones(n))
    # Image i is a constant; mixing it gives λ·v_i + (1 − λ)·v_j, matching its targets.
    expect = (t * torch.arange(1, n + 1, dtype=torch.float32)).sum(1)
    assert torch.allclose(xm[:, 0, 0, 0], expect)
    for seed in range(5):
        xc, t = cutmix(x, y, n, 1.0, torch.Generator().manual_seed(seed))
        assert torch.allclose(t.sum(1), torch.ones(n))
        own = (xc == x).float().mean((1, 2, 3))  # share of pixels still from the image itself
        assert torch.allclose(t[torch.arange(n), y], own)
    g = torch.Generator().manual_seed(0)
    y0, y1, x0, x1 = cutmix_box(10, 10, 0.75, g)
    assert 0 <= y0 < y1 <= 10 and 0 <= x0 < x1 <= 10
    one_line_error(lambda: mixup(x, y, n, 0.0, g), "alpha")


def test_rotation_turns_images_about_the_centre_and_keeps_the_other_draws():
    from lightship.data.augment import augment_batch, make_generator, rotate_batch

    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 6] = 1.0  # two pixels right of the centre
    quarter = rotate_batch(x, torch.tensor([90.0]), torch.zeros(1, 1, 1, 1))
    assert quarter[0, 0].argmax().item() in (2 * 9 + 4, 6 * 9 + 4)  # now above or below it
    assert rotate_batch(x, torch.tensor([0.0]), torch.zeros(1, 1, 1, 1)).equal(x)
    # the corners a turn uncovers get the fill (black after normalisation), not zeros
    fill = torch.full((1, 1, 1, 1), -0.5)
    turned = rotate_batch(torch.full((1, 1, 9, 9), -0.5), torch.tensor([45.0]), fill)
    assert torch.allclose(turned, fill.expand_as(turned))
    u8 = torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8)
    scale, shift = torch.full((1, 1, 1, 1), 1 / 255), torch.zeros(1, 1, 1, 1)
    plain = augment_batch(u8, Augment(crop_padding=2), make_generator(0, 0, 0, 5), scale, shift)
    again = augment_batch(u8, Augment(crop_padding=2), make_generator(0, 0, 0, 5), scale, shift)
    turned = augment_batch(u8, Augment(crop_padding=2, rotate=10), make_generator(0, 0, 0, 5),
                           scale, shift)
    assert plain.equal(again) and not plain.equal(turned)
    zero = augment_batch(u8, Augment(crop_padding=2, rotate=0), make_generator(0, 0, 0, 5),
                         scale, shift)
    assert zero.equal(plain)  # rotate 0 leaves existing recipes bit-identical
    one_line_error(lambda: Augment(rotate=200), "rotate")
