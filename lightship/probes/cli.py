"""``lightship probe gradients|noise-scale``: thin wrappers that parse arguments and print.

:func:`add_probe_parser` adds the ``probe`` command to the subparsers of ``lightship``'s parser.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from lightship.errors import UserError
from lightship.fileio import user_path


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.replace(",", " ").split() if n.strip()]


def cmd_probe(args: argparse.Namespace) -> int:
    raise UserError("lightship probe needs an action: 'lightship probe gradients' or "
                    "'lightship probe noise-scale' (see 'lightship probe --help')")


def cmd_gradients(args: argparse.Namespace) -> int:
    from lightship.probes.gradients import format_table, plot, probe_models

    models = _names(args.models) if args.models is not None else []
    if args.models is None and not args.weights:
        from lightship.probes.gradients import DEFAULT_MODELS

        models = list(DEFAULT_MODELS)
    start = time.perf_counter()

    def log(name: str) -> None:
        print(f"  {name} done ({time.perf_counter() - start:.1f} s)", file=sys.stderr,
              flush=True)

    results = probe_models(args.data, models, images=args.images, points=args.points,
                           radius=args.radius, calib=args.calib, seed=args.seed,
                           weights=args.weights, device=args.device, log=log)
    h = results[0].spacing
    print(f"shattered gradients on {args.data}: {args.images} test images, {args.points} points "
          f"on a random line through each (t in [-{args.radius:g}, {args.radius:g}] per-pixel "
          f"std, spacing h = {h:.3g}), seed {args.seed}")
    print("C(Δt) = mean cosine of d(u·logits)/dx at points Δt apart; eval-mode BatchNorm "
          f"(recalibrated on {args.calib} training images at init, stored stats for --weights)")
    print(format_table(results))
    if args.output:
        plot(results, str(user_path(args.output)),
             title=f"shattered gradients, {args.data}, seed {args.seed}")
        print(f"plot: {args.output}")
    return 0


def cmd_noise_scale(args: argparse.Namespace) -> int:
    from lightship.probes.noise_scale import probe_noise_scale
    from lightship.recipe import build_recipe

    flags = {"data": "data.name", "model": "model.name", "batch_size": "train.batch_size",
             "lr": "optim.lr", "seed": "train.seed"}
    overrides: list[str | tuple[str, object]] = [  # shortcuts keep their types (not YAML)
        (key, getattr(args, attr)) for attr, key in flags.items()
        if getattr(args, attr) is not None]
    overrides += args.overrides
    recipe = build_recipe(args.recipe, overrides)
    noise, tip, ctx = probe_noise_scale(recipe, b_small=args.small_batch, b_big=args.big_batch,
                                        n_batches=args.batches, weights=args.weights, bn=args.bn,
                                        calib=args.calib, device=args.device)
    print(f"gradient noise scale of {ctx['model']} on {ctx['data']} at {ctx['where']} "
          f"(BatchNorm {ctx['bn']} mode, seed {recipe.train.seed})")
    print(f"  mean |G_B|^2 over {noise.n_batches} batches: B={noise.b_small}: "
          f"{noise.sq_small:.6g}   B={noise.b_big}: {noise.sq_big:.6g}")
    print(f"  |G|^2   ≈ {noise.grad_sq:.6g}   (true-gradient squared norm)")
    print(f"  tr(Σ)   ≈ {noise.trace:.6g}   (per-example gradient variance, summed)")
    if not noise.ok:
        print("  B_simple: undefined (an estimate is not positive: the gradient signal is below "
              "the noise of this many batches); raise --batches or --big-batch")
        return 0
    lo, hi = (f"{v:.4g}" if not math.isnan(v) else "nan" for v in noise.halves)
    print(f"  B_simple = tr(Σ)/|G|^2 ≈ {noise.b_simple:.4g}   (halves of the batches: {lo}, {hi})")
    if tip is not None:
        rule = "lr_scaling on" if ctx["lr_scaling"] else (
            f"linear scaling from the recipe's lr {ctx['lr']:g} at batch {ctx['batch_size']}")
        print(f"suggestion: batch size {tip.batch_size} (power of two nearest B_simple), peak lr "
              f"{tip.lr:.4g} ({rule}): {tip.flags}")
        print("  B_simple grows during training, so a value at initialisation is a lower bound")
    return 0


def add_probe_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``probe`` with its ``gradients`` and ``noise-scale`` actions to ``sub``."""
    probe = sub.add_parser("probe", help="measure shattered gradients or the gradient noise scale")
    probe.set_defaults(func=cmd_probe)
    actions = probe.add_subparsers(dest="probe_action", parser_class=type(probe))

    p = actions.add_parser(
        "gradients", help="gradient correlation of nearby inputs, ResNets vs plain twins "
        "(Balduzzi et al. 2017)")
    p.add_argument("--data", default="mnist5k", help="dataset name or path (default mnist5k)")
    p.add_argument("--models", help="comma-separated model names, measured at initialisation "
                   "(default resnet20,plain20,resnet56,plain56,resnet110,plain110)")
    p.add_argument("--weights", action="append", default=[], metavar="FILE",
                   help="also measure a trained model: a lightship .safetensors file or run "
                   "folder (repeatable; alone, it replaces the default models)")
    p.add_argument("--images", type=int, default=8, help="test images N (default 8)")
    p.add_argument("--points", type=int, default=33, help="grid points K per line (default 33)")
    p.add_argument("--radius", type=float, default=0.05,
                   help="half-width of the line in per-pixel std units (default 0.05)")
    p.add_argument("--calib", type=int, default=512,
                   help="training images that set BatchNorm statistics at init (default 512)")
    p.add_argument("--seed", type=int, default=0, help="weights, direction and projection seed")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("-o", "--output", metavar="FILE.png", help="save a plot here")
    p.set_defaults(func=cmd_gradients)

    p = actions.add_parser(
        "noise-scale", help="simple gradient noise scale B_simple (McCandlish et al. 2018) and "
        "a batch size")
    p.add_argument("-r", "--recipe", help="preset (baseline, tricks, fast, default) or a YAML "
                   "file")
    p.add_argument("--data", help="dataset name or path (sets data.name)")
    p.add_argument("--model", help="model name (sets model.name)")
    p.add_argument("--batch-size", type=int,
                   help="sets train.batch_size (the reference of the LR suggestion)")
    p.add_argument("--lr", type=float, help="sets optim.lr")
    p.add_argument("--seed", type=int, help="sets train.seed (weights and batch order)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key (repeatable)")
    p.add_argument("--weights", metavar="FILE",
                   help="measure at trained weights (.safetensors or run folder) instead of init")
    p.add_argument("--small-batch", type=int, default=8, help="B_small (default 8)")
    p.add_argument("--big-batch", type=int, default=256, help="B_big (default 256)")
    p.add_argument("--batches", type=int, default=32,
                   help="batches averaged at each size (default 32)")
    p.add_argument("--bn", choices=["eval", "train"], default="eval",
                   help="BatchNorm mode: eval (default; recalibrated at init, per-example "
                   "gradients independent) or train (batch statistics)")
    p.add_argument("--calib", type=int, default=512,
                   help="training images that set BatchNorm statistics at init (default 512)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.set_defaults(func=cmd_noise_scale)
    return probe
