"""Cost of knowledge transfer per training step, measured side by side in one run.

KD: the step time of ``TermObjective`` (teacher forward in inference mode + student
forward/backward/update + the KD term) against the sum of its parts measured alone (a plain
student step + a teacher forward). Goal: ratio ≤ 1.05, i.e. the plug-in adds nothing but the
teacher's own forward.
Rocket: a co-training step (light + booster with shared layers) against a light step plus a
booster step trained separately.

Steps are interleaved (A B C A B C ...) so machine noise hits every variant alike, and medians
are compared. Same device, channels_last and precision choice as ``lightship train``.

    python benchmarks/distill_overhead.py [--student resnet8] [--teacher resnet20] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightship.data import Augment, load_dataset
from lightship.methods.objective import TermObjective
from lightship.methods.supervised import Supervised
from lightship.models import create_model
from lightship.recipe import build_recipe
from lightship.train.precision import choose_device, choose_precision


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--teacher", default="resnet20")
    ap.add_argument("--booster", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    device = choose_device(args.device)
    prec = choose_precision("auto", "auto", device)
    data = load_dataset(args.data)
    data.to(device)
    info = data.info
    x, y = next(data.train_batches(args.batch_size, 0, 0, Augment(crop_padding=3),
                                   channels_last=prec.channels_last))

    def net(name: str) -> torch.nn.Module:
        torch.manual_seed(0)
        m = create_model(name, info.num_classes, info.in_chans, info.input_size)
        return m.to(device, memory_format=prec.memory_format).train()

    def stepper(model, objective, extra=()):
        params = list(torch.nn.ModuleList([model, *extra]).parameters())
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

        def step() -> None:
            with prec.autocast():
                loss, _, _ = objective.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    teacher = net(args.teacher).requires_grad_(False).eval()

    def teacher_forward() -> None:
        with torch.inference_mode(), prec.autocast():
            teacher(x)

    student = net(args.student)
    kd_student = net(args.student)
    kd_cfg = build_recipe("baseline", ["method.name=kd", "method.teacher.run=unused"]).method
    light, booster_alone = net(args.student), net(args.booster)
    r_light, r_booster = net(args.student), net(args.booster)
    r_cfg = build_recipe("baseline", ["method.name=rocket",
                                      f"method.booster={args.booster}"]).method
    rocket = TermObjective(r_cfg, r_light, None, build_partner=lambda name: r_booster)
    variants = {
        "student step": stepper(student, Supervised()),
        "teacher forward": teacher_forward,
        "kd step": stepper(kd_student, TermObjective(kd_cfg, kd_student, teacher)),
        "light step": stepper(light, Supervised()),
        "booster step": stepper(booster_alone, Supervised()),
        "rocket step": stepper(r_light, rocket, [r_booster]),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(args.steps):
        for k, fn in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"device {device}, precision {prec.name}, channels_last {prec.channels_last}, "
          f"batch {args.batch_size}, {args.steps} interleaved steps, median ms:")
    for k, v in med.items():
        print(f"  {k:16s} {v:8.2f} ms")
    kd_ratio = med["kd step"] / (med["student step"] + med["teacher forward"])
    rocket_ratio = med["rocket step"] / (med["light step"] + med["booster step"])
    print(f"kd step / (student step + teacher forward) = {kd_ratio:.3f}  (goal ≤ 1.05)")
    print(f"rocket step / (light step + booster step)  = {rocket_ratio:.3f}")


if __name__ == "__main__":
    main()
