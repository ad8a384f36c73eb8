"""Which input pixels reach the output of a freshly initialised net, with and without zero-γ.

With zero-γ every residual branch starts switched off, so at step 0 the net is its stem plus
its shortcuts. In the ImageNet-style resnets the stage-changing shortcuts are strided 1×1
projections (ResNet-B/C) or an average pool then a 1×1 (ResNet-D). On a 28×28 digit the stem
leaves a 7×7 map; three strided 1×1 shortcuts then keep 1 of its 49 positions, so the output
depends on a sparse lattice of input pixels until γ has grown. The script counts the pixels with
a non-zero input gradient (eval mode, random input) for each variant; it explains the `tricks`
study's zero-γ rows (docs/studies.md).

    python benchmarks/zero_gamma_field.py [--model resnet10] [--width 0.125] [--size 28]
"""

from __future__ import annotations

import argparse

import torch

from lightship.models import create_model


def seen_pixels(model: torch.nn.Module, size: int, chans: int) -> int:
    x = torch.randn(8, chans, size, size, requires_grad=True)
    model.eval()(x).sum().backward()
    return int((x.grad.abs().sum((0, 1)) > 0).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet10")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--chans", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{args.model} ×{args.width:g} at {args.size}×{args.size}: input pixels that reach the "
          "output at initialisation")
    print("| variant | zero-γ off | zero-γ on |\n|---|---|---|")
    total = args.size * args.size
    for variant in ("B", "C", "D"):
        counts = [seen_pixels(create_model(args.model, num_classes=10, in_chans=args.chans,
                                           width=args.width, variant=variant, zero_gamma=zg),
                              args.size, args.chans) for zg in (False, True)]
        print(f"| ResNet-{variant} | " + " | ".join(f"{c} of {total}" for c in counts) + " |")


if __name__ == "__main__":
    main()
