"""Input pipeline: lightship's batched augmentation vs torchvision per-sample transforms.

Both sides produce the same kind of training batch (batch 256, random crop with 4 px zero
padding, horizontal flip, a cutout square of side size/4, normalise, float32 N×C×H×W) from the
same uint8 images:

* lightship: ``TensorData.train_batches`` — uint8 tensors in memory (on the device when there is
  one), index gather + batched crop/flip/cutout + normalise in a few whole-batch ops.
* torchvision: a Dataset returning ``Compose([RandomCrop(padding=4), RandomHorizontalFlip(),
  ToTensor(), Normalize(), RandomErasing(square, p=1)])`` of a PIL image per sample, through
  ``DataLoader(num_workers=2, batch_size=256, shuffle=True, drop_last=True)`` with persistent
  workers.

Sizes: 28×28×1 (MNIST-5k's 4,000 training digits) and 32×32×3 (10,000 synthetic CIFAR-sized
uint8 images). Each epoch's clock starts after its first batch (worker start-up and warm-up are
excluded on both sides); the median epoch is reported. Goal: ratio ≥ 20×.

    python benchmarks/input_pipeline.py [--epochs 3] [--quick] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from lightship.data import Augment, TensorData, load_dataset

BATCH = 256


def lightship_ips(data: TensorData, epochs: int, device: torch.device) -> float:
    """Median images/s of train_batches over ``epochs`` epochs (first batch of each excluded)."""
    size = data.info.input_size
    aug = Augment(crop_padding=4, hflip=True, cutout=size // 4)
    data.to(device)
    rates = []
    for epoch in range(epochs):
        it = data.train_batches(BATCH, epoch, 0, aug)
        next(it)
        _sync(device)
        t0, n = time.perf_counter(), 0
        for x, _ in it:
            n += x.shape[0]
        _sync(device)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


class _PerSample(Dataset):
    """uint8 images (N×H×W or N×H×W×3) → torchvision transforms on one PIL image at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: T.Compose) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def torchvision_ips(data: TensorData, epochs: int) -> float:
    """Median images/s of the per-sample torchvision pipeline through a 2-worker DataLoader."""
    info = data.info
    size, cut = info.input_size, info.input_size // 4
    x = data.x_train.cpu().numpy().transpose(0, 2, 3, 1)
    x = x[..., 0] if info.in_chans == 1 else np.ascontiguousarray(x)
    area = cut * cut / (size * size)
    transform = T.Compose([
        T.RandomCrop(size, padding=4),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(info.mean, info.std),
        T.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0),  # cutout
    ])
    loader = DataLoader(_PerSample(x, data.y_train.cpu().numpy(), transform), batch_size=BATCH,
                        shuffle=True, drop_last=True, num_workers=2, persistent_workers=True)
    rates = []
    for _ in range(epochs):
        it = iter(loader)
        next(it)
        t0, n = time.perf_counter(), 0
        for xb, _ in it:
            n += xb.shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per side (median kept)")
    p.add_argument("--quick", action="store_true", help="1 epoch on 2,560 images per size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device of lightship's tensors (torchvision's side is CPU workers)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for lightship's side (default 1: the baseline gets "
                   "2 worker processes, and a second thread on a busy 2-core machine only waits)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    epochs = 1 if args.quick else max(1, args.epochs)
    device = torch.device(args.device)
    n = 2560 if args.quick else 10000
    sets = {
        "28×28×1 mnist5k": load_dataset("mnist5k", max_per_class=256 if args.quick else None),
        "32×32×3 synthetic": load_dataset(f"synthetic:n={n},classes=10,size=32,channels=3"),
    }
    print(f"batch {BATCH}, crop pad 4 + flip + cutout size/4 + normalise; lightship on {device} "
          f"({torch.get_num_threads()} threads), torchvision with 2 DataLoader workers; "
          f"{epochs} epoch(s), median")
    print(f"{'size':<20}{'images':>8}{'lightship img/s':>18}{'torchvision img/s':>20}"
          f"{'ratio':>9}")
    for name, data in sets.items():
        fast = lightship_ips(data, epochs, device)
        slow = torchvision_ips(data, epochs)
        print(f"{name:<20}{data.info.n_train:>8}{fast:>18,.0f}{slow:>20,.0f}"
              f"{fast / slow:>8.1f}×", flush=True)


if __name__ == "__main__":
    main()
