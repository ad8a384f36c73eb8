"""Page faults and step time of a training step with glibc's default malloc vs keep_freed_memory.

Each repeat runs two fresh processes, alternately: the same model, batch and SGD steps, one with
glibc's default thresholds and one after :func:`lightship.train.malloc.keep_freed_memory`. Prints
ms per step and minor page faults per step of each, the paired ratio per repeat and its median.

    python benchmarks/malloc_faults.py [--repeats 6] [--model fastcnn] [--batch 64] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time
keep = sys.argv[1] == "keep"
if keep:
    from lightship.train.malloc import keep_freed_memory
    assert keep_freed_memory(), "mallopt refused"
import torch
from lightship.models import create_model
model_name, batch, steps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
m = create_model(model_name, num_classes=10, in_chans=1).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True)
x = torch.randn(batch, 1, 28, 28).to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))
def step():
    loss = torch.nn.functional.cross_entropy(m(x), y, label_smoothing=0.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for _ in range(20):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t0 = time.perf_counter()
for _ in range(steps):
    step()
ms = (time.perf_counter() - t0) * 1000 / steps
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
print(json.dumps({"ms": ms, "faults": faults}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--model", default="fastcnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    ratios = []
    seen: dict[str, list[dict]] = {"default": [], "keep": []}
    for i in range(args.repeats):
        for mode in ("default", "keep"):
            out = subprocess.run([sys.executable, "-c", CHILD, mode, args.model, str(args.batch),
                                  str(args.steps)], cwd=root, capture_output=True, text=True,
                                 check=True)
            seen[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        d, k = seen["default"][-1], seen["keep"][-1]
        ratios.append(k["ms"] / d["ms"])
        print(f"repeat {i}: default {d['ms']:.2f} ms/step, {d['faults']:.0f} faults/step; "
              f"keep_freed_memory {k['ms']:.2f} ms/step, {k['faults']:.0f} faults/step; "
              f"ratio {ratios[-1]:.2f}", flush=True)
    med = {m: statistics.median(r["ms"] for r in rs) for m, rs in seen.items()}
    flt = {m: statistics.median(r["faults"] for r in rs) for m, rs in seen.items()}
    print(f"\n{args.model}, batch {args.batch}: median ms/step default {med['default']:.2f}, "
          f"keep {med['keep']:.2f}; faults/step {flt['default']:.0f} → {flt['keep']:.0f}; "
          f"paired ratio keep/default median {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()
