"""Every Pillow mode the ImageFolder reader can meet reaches 8 bits by scaling, never by clipping
(issue 14): 16-bit, 32-bit integer and float images, alpha, palette transparency, 1-bit. A set
of 16-bit PNGs trains exactly like the same images saved as 8-bit PNGs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightship.data.builtin import load_builtin
from lightship.data.folder import load_image
from lightship.data.load import describe_dataset
from lightship.recipe import build_recipe
from lightship.train.loop import train

GRADIENT = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)  # 0..252: every value in range


def _pgm16(path: Path, values: np.ndarray) -> None:
    h, w = values.shape
    path.write_bytes(f"P5\n{w} {h}\n65535\n".encode() + values.astype(">u2").tobytes())


def _palette_with_transparent_magenta(path: Path) -> None:
    index = np.zeros((8, 8), np.uint8)
    index[2:6, 2:6] = 1
    im = Image.fromarray(index, "P")
    im.putpalette([255, 0, 255, 200, 200, 200] + [0, 0, 0] * 254)
    im.save(path, transparency=0)  # index 0 (magenta) is transparent


def _la(path: Path) -> None:
    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 0] = 200  # the grey that transparent pixels store
    la[:4, ..., 1] = 255
    la[4:6, ..., 1] = 128
    Image.fromarray(la, "LA").save(path)


LA_EXPECTED = np.zeros((8, 8), np.uint8)
LA_EXPECTED[:4] = 200
LA_EXPECTED[4:6] = round(200 * 128 / 255)


# name → (write the file, extension, Pillow's mode, the reader's mode, expected uint8 C×H×W)
MODES = {
    "16-bit png": (lambda p: Image.fromarray(GRADIENT.astype(np.uint16) * 257).save(p), "png",
                   "I;16", "L", GRADIENT[None]),
    "16-bit big-endian tiff": (lambda p: Image.fromarray(
        (GRADIENT.astype(np.uint16) * 257).astype(">u2")).save(p), "tif", "I;16B", "L",
        GRADIENT[None]),
    "32-bit integer tiff": (lambda p: Image.fromarray(GRADIENT.astype(np.int32) * 257).save(p),
                            "tif", "I", "L", GRADIENT[None]),
    "16-bit pgm": (lambda p: _pgm16(p, GRADIENT.astype(np.uint16) * 257), "pgm", "I", "L",
                   GRADIENT[None]),
    "float tiff": (lambda p: Image.fromarray(GRADIENT.astype(np.float32) / 255).save(p), "tif",
                   "F", "L", GRADIENT[None]),
    "16-bit png in a colour set": (lambda p: Image.fromarray(GRADIENT.astype(np.uint16) * 257)
                                   .save(p), "png", "I;16", "RGB", np.stack([GRADIENT] * 3)),
    "grey + alpha png": (_la, "png", "LA", "L", LA_EXPECTED[None]),
    "palette png, transparent index": (_palette_with_transparent_magenta, "png", "P", "RGB",
                                       np.pad(np.full((3, 4, 4), 200, np.uint8),
                                              ((0, 0), (2, 2), (2, 2)))),
    "grey png, transparent grey": (lambda p: Image.fromarray(GRADIENT).save(p, transparency=8),
                                   "png", "L", "L", np.where(GRADIENT == 8, 0, GRADIENT)[None]),
    "1-bit png": (lambda p: Image.fromarray(np.eye(8, dtype=bool)).save(p), "png", "1", "L",
                  (np.eye(8) * 255).astype(np.uint8)[None]),
}


@pytest.mark.parametrize("name", MODES)
def test_every_mode_reaches_8_bits_by_scaling(name, tmp_path):
    """Transparent pixels read 0 whatever colour they store; no warning (each DataLoader worker
    would print Pillow's "Palette images with Transparency ... should be converted")."""
    write, ext, pillow_mode, mode, expected = MODES[name]
    path = tmp_path / f"image.{ext}"
    write(path)
    with Image.open(path) as im:
        assert im.mode == pillow_mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_image(str(path), 8, mode)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def _image_folder(root: Path, bits: int) -> Path:
    """The built-in synthetic set as an ImageFolder of 8-bit or 16-bit grey PNGs."""
    arrays = load_builtin("synthetic:n=96,classes=3,size=8,channels=1")
    for split, xs, ys in (("train", arrays.x_train, arrays.y_train),
                          ("val", arrays.x_test, arrays.y_test)):
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            folder = root / split / f"c{y}"
            folder.mkdir(parents=True, exist_ok=True)
            image = x[0] if bits == 8 else x[0].astype(np.uint16) * 257
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_16_bit_pngs_train_like_the_same_8_bit_pngs(tmp_path):
    """Before: 16-bit PNGs were clipped (98.8 % of pixels at 255, mean 1.0) and training sat at
    chance; now they decode to the 8-bit images' exact values, so the run is the same run."""
    folders = {bits: _image_folder(tmp_path / f"png{bits}", bits) for bits in (8, 16)}
    described = {bits: describe_dataset(str(f), workers=0) for bits, f in folders.items()}
    assert described[16]["mean"] == described[8]["mean"]
    assert described[16]["std"] == described[8]["std"]
    assert described[8]["mean"][0] < 0.9  # not the clipped 1.0
    results = {}
    for bits, folder in folders.items():
        recipe = build_recipe("baseline", [
            f"data.name={folder}", "data.workers=0", "model.name=cnn4", "train.epochs=4",
            "train.batch_size=16", f"run.dir={tmp_path / 'runs'}", f"run.name=b{bits}"])
        results[bits] = train(recipe, progress=False, quiet=True).summary
    assert results[8]["test_top1"] > 60  # chance is 33 %
    assert results[16]["test_top1"] == results[8]["test_top1"]
    assert results[16]["train_loss"] == results[8]["train_loss"]
