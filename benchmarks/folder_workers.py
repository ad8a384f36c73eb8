"""How an ImageFolder epoch streams inside a study's or lift's cell process (a process started
by *spawn*, as the study runner starts its workers): decoding workers forked (lightship's
choice on Linux, lightship/data/folder.py) against spawned (that process's own default),
side by side, on MNIST-5k written as PNGs (benchmarks/mnist5k_imagefolder.py).

    python benchmarks/folder_workers.py [PNG_FOLDER]

Prints, for each start method, the seconds of one epoch's training stream (batch 64, the
default recipe's augmentation) and of one evaluation stream, measured twice, and the ratio.
No training: only the data pipeline. Measure alone (nothing else on the cores).
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _epoch(folder: str, start: str) -> list[float]:
    import lightship.data.folder as folder_mod
    from lightship.build import build_augment
    from lightship.data import load_dataset
    from lightship.recipe import build_recipe

    folder_mod._WORKER_START = start
    recipe = build_recipe("default", {"data.name": folder})
    data = load_dataset(folder, workers=2, folds=5, fold=0, folds_of="train")
    augment = build_augment(recipe, data.info)
    out = []
    for epoch in range(2):
        t0 = time.perf_counter()
        for _ in data.train_batches(64, epoch, 0, augment):
            pass
        t1 = time.perf_counter()
        for _ in data.test_batches(512):
            pass
        out += [t1 - t0, time.perf_counter() - t1]
    return out


def main(folder: str | None) -> None:
    from lightship.train.precision import cpu_kind

    tmp = None
    if folder is None:
        from mnist5k_imagefolder import main as write_pngs

        tmp = tempfile.TemporaryDirectory()
        folder = str(Path(tmp.name) / "mnist5k-png")
        write_pngs(folder)
    print(f"CPU: {cpu_kind()}; {multiprocessing.cpu_count()} cores; 2 decoding workers")
    ctx = multiprocessing.get_context("spawn")  # as lightship.studies.runner starts cells
    results = {}
    for start in ("fork", "spawn"):
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            results[start] = pool.submit(_epoch, folder, start).result()
        t = results[start]
        print(f"workers by {start}: train epoch {t[0]:.2f} s, {t[2]:.2f} s; evaluation "
              f"{t[1]:.2f} s, {t[3]:.2f} s")
    per_epoch = {k: (v[2] + v[3]) for k, v in results.items()}  # the second, warm epoch
    ratio = per_epoch["spawn"] / per_epoch["fork"]
    print(f"spawn / fork, one epoch with its evaluation: {ratio:.1f}×")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1] if len(sys.argv) > 1 else None)
