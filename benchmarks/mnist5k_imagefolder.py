"""Write MNIST-5k (lightship's built-in 4,000 / 1,000 split) as an ImageFolder of PNGs:
OUT/train/<digit>/<i>.png and OUT/test/<digit>/<i>.png, 28×28 grey. The README's ImageFolder
lift transcript reads it:

    python benchmarks/mnist5k_imagefolder.py /tmp/mnist5k-png
    lightship lift --data /tmp/mnist5k-png --model resnet8 --set model.width=0.25 \\
        --teacher-model resnet8 --budget 30m --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lightship.data.builtin import load_builtin


def main(out: str) -> None:
    a = load_builtin("mnist5k")
    root = Path(out)
    for split, x, y in (("train", a.x_train, a.y_train), ("test", a.x_test, a.y_test)):
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            folder = root / split / str(a.classes[label])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.asarray(img).reshape(28, 28).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i:05d}.png")
    print(f"wrote {len(a.y_train)} training and {len(a.y_test)} test PNGs under {root}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mnist5k-png")
