"""Per-layer memory format: forward + backward of each layer type in channels_last vs NCHW.

The `channels_last: auto` choice was first made on whole-model numbers; this looks per layer
(conv 3×3, conv 1×1, BatchNorm, ReLU, max-pool, global average and max pool) at the shapes
lightship's small nets see on 28×28 digits, and on whole models. The two formats alternate,
best-of-rounds time is kept (the least disturbed by other jobs on a shared machine), and the
ratio channels_last / NCHW is printed: above 1 means channels_last is slower.

    python benchmarks/memory_format.py [--batch 128] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from lightship.models import create_model


def best_time(fn, rounds: int, inner: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def layer_step(layer: nn.Module, shape: tuple[int, ...], channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    layer = layer.to(memory_format=fmt)
    x = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_(True)

    def step():
        out = layer(x)
        out.backward(torch.ones_like(out))
    return step


def model_step(name: str, batch: int, channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = create_model(name, 10, 1, 28).to(memory_format=fmt)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*",
                    default=["fastcnn", "fastcnn24-4", "cnn", "resnet8", "resnet20"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b = args.batch
    layers = [
        ("conv3x3 16→16 @28", lambda: nn.Conv2d(16, 16, 3, padding=1, bias=False), (b, 16, 28, 28)),
        ("conv3x3 32→32 @14", lambda: nn.Conv2d(32, 32, 3, padding=1, bias=False), (b, 32, 14, 14)),
        ("conv3x3 64→64 @7", lambda: nn.Conv2d(64, 64, 3, padding=1, bias=False), (b, 64, 7, 7)),
        ("conv3x3 1→16 @28", lambda: nn.Conv2d(1, 16, 3, padding=1, bias=False), (b, 1, 28, 28)),
        ("conv1x1 16→32 @14", lambda: nn.Conv2d(16, 32, 1, bias=False), (b, 16, 14, 14)),
        ("BatchNorm 16 @28", lambda: nn.BatchNorm2d(16), (b, 16, 28, 28)),
        ("BatchNorm 32 @14", lambda: nn.BatchNorm2d(32), (b, 32, 14, 14)),
        ("BatchNorm 64 @7", lambda: nn.BatchNorm2d(64), (b, 64, 7, 7)),
        ("ReLU 16 @28", lambda: nn.ReLU(), (b, 16, 28, 28)),
        ("MaxPool2 16 @28", lambda: nn.MaxPool2d(2), (b, 16, 28, 28)),
        ("AvgPool(1) 64 @7", lambda: nn.AdaptiveAvgPool2d(1), (b, 64, 7, 7)),
        ("MaxPool(1) 64 @7", lambda: nn.AdaptiveMaxPool2d(1), (b, 64, 7, 7)),
    ]
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, batch {b}, forward+backward, best of "
          f"{args.rounds}×{args.inner}")
    print("| layer / model | NCHW (ms) | channels_last (ms) | channels_last / NCHW |")
    print("|---|---|---|---|")
    rows = [(name, lambda cl, make=make, shape=shape: layer_step(make(), shape, cl))
            for name, make, shape in layers]
    rows += [(f"model {m} (train step)", lambda cl, m=m: model_step(m, b, cl))
             for m in args.models]
    for name, build in rows:
        try:
            steps = {cl: build(cl) for cl in (False, True)}
        except Exception as exc:  # a model this tree does not have
            print(f"| {name} | skipped: {exc} | | |")
            continue
        times = {False: float("inf"), True: float("inf")}
        for _ in range(args.rounds):  # interleave the two formats round by round
            for cl in (False, True):
                times[cl] = min(times[cl], best_time(steps[cl], 1, args.inner))
        print(f"| {name} | {times[False] * 1e3:.2f} | {times[True] * 1e3:.2f} | "
              f"{times[True] / times[False]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
