"""Which precision and memory format train fastest on this device? Measured, not guessed.

Times training steps of a small ResNet for fp32 / bf16 autocast (and fp16 on CUDA), each with
NCHW and channels_last, side by side in one run, and prints each one's speed relative to fp32
NCHW. lightship's ``auto`` defaults (lightship/train/precision.py) follow these numbers.

    python benchmarks/precision.py [--model resnet20] [--size 28] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lightship.models import create_model


def steps_per_s(model_name, size, chans, batch, steps, dtype, channels_last, device) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(model_name, 10, chans, size).to(device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, chans, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    ctx = (torch.autocast(device.type, dtype=dtype) if dtype is not None
           else torch.autocast(device.type, enabled=False))

    def step():
        with ctx:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--chans", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["fp16"] = torch.float16
    what = (torch.backends.cpu.get_cpu_capability() if device.type == "cpu"
            else torch.cuda.get_device_name())
    print(f"device {device} ({what}), "
          f"{args.model} at {args.chans}×{args.size}×{args.size}, batch {args.batch}")
    base = None
    for name, dtype in dtypes.items():
        for cl in (False, True):
            s = steps_per_s(args.model, args.size, args.chans, args.batch, args.steps, dtype, cl,
                            device)
            base = base or s
            fmt = "channels_last" if cl else "NCHW"
            print(f"{name:5s} {fmt:14s} {s * args.batch:9.0f} img/s   ×{s / base:.2f} vs fp32 NCHW")


if __name__ == "__main__":
    main()
