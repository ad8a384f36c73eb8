"""Loop overhead: lightship's training epoch vs a hand-written PyTorch loop, side by side.

Both use the same model, batch size, optimizer, per-step scheduler, in-memory data and batched
augmentation (lightship's ``train_batches``), so the ratio is the cost of everything the loop adds
(gradient-norm logging, metrics records, progress, checkpoint bookkeeping). Eval time is excluded
from both. Runs alternate (lightship, hand, lightship, hand, ...) and the medians of the
steady-state epochs (first epoch of each run dropped) are compared. Goal: ratio ≤ 1.05.

    python benchmarks/overhead.py [--model resnet8] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from lightship.build import build_augment, build_model
from lightship.data import load_dataset
from lightship.recipe import build_recipe
from lightship.train.loop import train
from lightship.train.optim import make_optimizer, make_scheduler
from lightship.train.precision import choose_device, choose_precision


def lightship_epochs(recipe) -> list[float]:
    res = train(recipe, progress=False, quiet=True, overwrite=True)
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch_time"] for r in recs if r["kind"] == "eval"]


def hand_epochs(recipe) -> list[float]:
    t = recipe.train
    device = choose_device(t.device)
    prec = choose_precision(t.precision, t.channels_last, device)
    data = load_dataset(recipe.data.name)
    info = data.info
    torch.manual_seed(t.seed)
    model = build_model(recipe, info.num_classes, info.in_chans, info.input_size)
    model = model.to(device, memory_format=prec.memory_format)
    data.to(device)
    aug = build_augment(recipe, info)
    opt = make_optimizer(model, recipe.optim, t.batch_size)
    sched = make_scheduler(opt, recipe.schedule, t.epochs, data.steps_per_epoch(t.batch_size))
    times = []
    model.train()
    for epoch in range(t.epochs):
        t0 = time.perf_counter()
        for x, y in data.train_batches(t.batch_size, epoch, t.seed, aug,
                                       channels_last=prec.channels_last):
            with prec.autocast():
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = build_recipe("baseline", [
            f"data.name={args.data}", f"model.name={args.model}", f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}", f"run.dir={tmp}", "run.name=overhead",
            "train.checkpoint_every=1000"])
        ours, hand = [], []
        for _ in range(args.repeats):
            ours += lightship_epochs(recipe)[1:]
            hand += hand_epochs(recipe)[1:]
    o, h = statistics.median(ours), statistics.median(hand)
    print(f"device {choose_device('auto')}, {args.model} on {args.data}, batch {args.batch_size}, "
          f"{args.repeats}×{args.epochs - 1} steady epochs each")
    print(f"lightship epoch  median {o:.3f}s  (all: {', '.join(f'{v:.3f}' for v in ours)})")
    print(f"hand-written     median {h:.3f}s  (all: {', '.join(f'{v:.3f}' for v in hand)})")
    print(f"ratio lightship/hand = {o / h:.3f}  (goal ≤ 1.05)")


if __name__ == "__main__":
    main()
