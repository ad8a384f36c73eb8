"""THE training loop. It knows nothing about KD or Rocket: an objective computes the loss.

Per step: batch (batched augmentation on the device) → optional mixup/cutmix → objective under
autocast → backward → gradient norm (and clipping) → optimizer and per-step scheduler → EMA.
Per epoch: evaluation on the test split, raw metrics to metrics.jsonl, an atomic checkpoint.
Randomness of each batch comes from (seed, epoch, batch index), so resume continues exactly.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lightship.data import Augment, cutmix, load_dataset, mixup
from lightship.data.augment import make_generator, translations
from lightship.diagnose import load_records, verdict
from lightship.errors import UserError
from lightship.methods.supervised import Supervised
from lightship.models import check_norm, create_model, model_stats
from lightship.recipe import Recipe, load_saved_recipe
from lightship.runs import (
    MetricsLog,
    RunLock,
    RunPaths,
    never_started,
    prepare_new_run,
    read_metrics,
    write_error,
    write_json,
)
from lightship.train.checkpoint import (
    atomic_write,
    load_state,
    load_weights,
    save_state,
    save_weights,
)
from lightship.train.distributed import World, close_world, init_world
from lightship.train.optim import make_optimizer, make_scheduler, scaled_lr
from lightship.train.precision import Precision, choose_device, choose_precision
from lightship.train.progress import Progress


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    model: nn.Module


def resolve_augment(recipe: Recipe, input_size: int, hflip_ok: bool) -> Augment:
    cfg = recipe.augment
    pad = max(1, input_size // 8) if cfg.crop_padding == "auto" else int(cfg.crop_padding)
    hflip = hflip_ok if cfg.hflip == "auto" else bool(cfg.hflip)
    return Augment(crop_padding=pad, hflip=hflip, cutout=cfg.cutout, rotate=cfg.rotate)


def build_model(recipe: Recipe, num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    m = recipe.model
    return create_model(m.name, num_classes, in_chans, input_size, norm=m.norm,
                        gn_groups=m.gn_groups, zero_gamma=m.zero_gamma, shortcut=m.shortcut,
                        variant=m.variant, plain=m.plain, width=m.width, dropout=m.dropout)


def model_metadata(recipe: Recipe, info) -> dict[str, Any]:
    """What a weights file needs to be used elsewhere: architecture and preprocessing."""
    return {
        "format": "lightship-weights-1",
        "model": recipe.model.name,
        "model_options": recipe.model.model_dump(mode="json"),
        "num_classes": info.num_classes,
        "in_chans": info.in_chans,
        "input_size": info.input_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "classes": list(info.classes),
        "data": recipe.data.name,
    }


@torch.inference_mode()
def evaluate(model: nn.Module, data, prec: Precision, batch_size: int = 512,
             tta: bool = False) -> dict[str, float]:
    """Top-1, top-5 and mean CE loss on the test split (model put in eval mode, then restored).

    ``tta``: predict with the mean softmax over each image and its four 1-pixel translations
    (``train.tta``); top-k and the loss then read the log of that mean probability."""
    was_training = model.training
    model.eval()
    n, loss_sum, top1, top5 = 0, 0.0, 0, 0
    for x, y in data.test_batches(batch_size, channels_last=prec.channels_last):
        with prec.autocast():
            logits = model(x).float()
            if tta:
                probs = sum(model(v).float().softmax(1) for v in translations(x))
                logits = ((probs + logits.softmax(1)) / 5).log()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        pred = logits.topk(k, dim=1).indices
        hit = pred == y[:, None]
        top1 += hit[:, 0].sum().item()
        top5 += hit.any(dim=1).sum().item()
        n += y.numel()
    model.train(was_training)
    if n == 0:
        raise UserError("the test split is empty; give a dataset with test images")
    return {"test_loss": loss_sum / n, "test_top1": 100.0 * top1 / n, "test_top5": 100.0 * top5 / n}


def _default_name(recipe: Recipe) -> str:
    data = Path(recipe.data.name).name or "data"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{recipe.model.name.replace(':', '-')}_{data}_{stamp}"


MIX_STREAM = 1  # generator stream of mixup/cutmix draws (data order and augmentation use others)


class _Nonfinite(Exception):
    pass


def train(recipe: Recipe | None = None, *, resume: str | Path | None = None,
          overwrite: bool = False, progress: bool | None = None,
          stop_after_epochs: int | None = None, quiet: bool = False) -> RunResult:
    """Train the recipe's student into a run folder and return its summary.

    ``resume`` continues the run folder from its last checkpoint with its saved recipe, giving the
    same final weights as an uninterrupted run on CPU. ``stop_after_epochs`` ends this call early
    (the run stays resumable), which tests use to interrupt a run.
    """
    if resume is not None:
        paths = RunPaths(Path(resume))
        if not paths.root.is_dir():
            raise UserError(f"--resume {resume}: no such run folder")
        if not paths.is_run():
            if never_started(paths):
                raise UserError(f"--resume {resume}: the run was stopped before it started (no "
                                "recipe.yaml); start it again with --overwrite")
            raise UserError(f"--resume {resume}: not a lightship run folder (no recipe.yaml); "
                            "give a folder made by `lightship train`")
        recipe = load_saved_recipe(paths.recipe)
    else:
        recipe = recipe or Recipe()
    t = recipe.train
    world, device_setting = init_world(t.device)
    try:
        return _train(recipe, resume, world, device_setting, overwrite, progress,
                      stop_after_epochs, quiet)
    finally:
        close_world(world)


def _train(recipe: Recipe, resume: str | Path | None, world: World, device_setting: str,
           overwrite: bool, progress: bool | None, stop_after_epochs: int | None,
           quiet: bool) -> RunResult:
    t = recipe.train
    if resume is not None:
        paths = RunPaths(Path(resume))
    else:  # every rank must use rank 0's folder name (the default one holds a timestamp)
        paths = RunPaths(Path(recipe.run.dir) / world.share(recipe.run.name or
                                                            _default_name(recipe)))
        if not overwrite and world.main:
            prepare_new_run(paths, overwrite=False)  # checks only; raises the clear message

    # Validate everything before touching the disk: bad input never leaves a half-made run.
    device = choose_device(device_setting)
    prec = choose_precision(t.precision, t.channels_last, device)
    check_norm(recipe.model.norm)
    data = load_dataset(recipe.data.name, fraction=recipe.data.fraction,
                        max_per_class=recipe.data.max_per_class, seed=recipe.data.seed,
                        image_size=recipe.data.image_size, workers=recipe.data.workers)
    info = data.info
    steps_per_epoch = data.steps_per_epoch(t.batch_size, world.size)
    torch.manual_seed(t.seed)
    model = build_model(recipe, info.num_classes, info.in_chans, info.input_size)
    stats = model_stats(model, info.in_chans, info.input_size)
    model = model.to(device, memory_format=prec.memory_format)
    data.to(device)
    augment = resolve_augment(recipe, info.input_size, info.hflip_ok)
    teacher = None
    method = recipe.method
    if method.needs_teacher:
        from lightship.methods.distill import load_teacher

        teacher = load_teacher(method, info.num_classes, info.in_chans, info.input_size)
    elif method.teacher.run or method.teacher.weights:
        raise UserError(f"method {method.name} uses no teacher; drop --teacher, or add a teacher "
                        f"term (e.g. {method.name}+kd)")
    if method.teacher.cache:
        _check_teacher_cache(recipe, augment, quiet or not world.main)
    objective, teacher_eval = make_objective(recipe, model, teacher, data, prec)

    lock = RunLock(paths)
    try:
        if world.main:  # only rank 0 touches the run folder
            if resume is None:
                prepare_new_run(paths, overwrite)
                paths.root.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                atomic_write(paths.recipe, lambda tmp: tmp.write_text(recipe.to_yaml()))
            else:
                lock.acquire()
        world.barrier()
        return _run(recipe, paths, data, model, objective, teacher_eval, prec, augment,
                    steps_per_epoch, stats, resume is not None, progress, stop_after_epochs, quiet,
                    world)
    except OSError as exc:  # disk full, folder not writable: one line naming the file
        raise write_error(Path(exc.filename or paths.root), exc, paths.root) from None
    finally:
        lock.release()


def _run(recipe: Recipe, paths: RunPaths, data, model: nn.Module, objective,
         teacher_eval: dict[str, float], prec: Precision,
         augment: Augment, steps_per_epoch: int, stats: dict[str, int], resuming: bool,
         progress: bool | None, stop_after_epochs: int | None, quiet: bool,
         world: World) -> RunResult:
    t, info = recipe.train, data.info
    global_batch = t.batch_size * world.size
    trainable = objective.trainable()
    # Partners (booster, peers, adapters) share the student's optimizer and schedule; shared
    # parameters (Rocket) appear once.
    stepped = nn.ModuleDict({"student": model, **trainable}) if trainable else model
    optimizer = make_optimizer(stepped, recipe.optim, global_batch)
    side, partners, evaluated = (objective.side_optimizer, objective.partners(),
                                 objective.evaluated())
    distilling = objective.name != "supervised"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SequentialLR's epoch-argument notice
        scheduler = make_scheduler(optimizer, recipe.schedule, t.epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler(prec.device.type) if prec.scaler else None
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)
           if t.ema else None)
    forward_model = model
    # Partners that share layers with the student (Rocket) cannot sit in separate DDP wrappers;
    # their gradients are averaged over ranks by hand after backward instead.
    manual_sync = world.active and bool(trainable or side is not None)
    if world.active and not manual_sync:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(
            model, device_ids=[prec.device.index] if prec.device.type == "cuda" else None)
    forward_model = torch.compile(forward_model) if t.compile else forward_model
    params = [p for g in optimizer.param_groups for p in g["params"]]
    clip = recipe.optim.grad_clip
    metrics = MetricsLog(paths.metrics)
    log = metrics.write if world.main else (lambda records: None)  # only rank 0 writes

    epoch, step, elapsed = 0, 0, 0.0
    best = {"test_top1": -1.0, "epoch": -1}
    last_eval: dict[str, float] = {}
    if resuming:
        epoch, step, elapsed, best, last_eval = _restore(paths, model, ema, optimizer, scheduler,
                                                          scaler, partners, side)
        if world.main:
            metrics.truncate_after(step)
        if epoch >= t.epochs and paths.weights.exists() and paths.summary.exists():
            raise UserError(f"{paths.root} finished its {t.epochs} epochs; nothing to resume")
        # else: killed after its last checkpoint; the loop below is skipped and the final
        # weights and summary are written from the restored state.

    lr_peak = scaled_lr(recipe.optim, global_batch)
    header = {"kind": "start", "step": step, "epoch": epoch, "resumed": resuming,
              "params": stats["params"], "macs": stats["macs"], "device": str(prec.device),
              "precision": prec.name, "channels_last": prec.channels_last, "lr_peak": lr_peak,
              "steps_per_epoch": steps_per_epoch, "augment": vars(augment),
              "method": recipe.method.name, "world_size": world.size, "time": time.time(),
              **teacher_eval}
    log([header])
    show = Progress(total_epochs=t.epochs, steps_per_epoch=steps_per_epoch,
                    enabled=progress if world.main else False, quiet=quiet or not world.main,
                    title=f"{recipe.model.name} on {info.name}")
    show.start(epoch)
    rec: dict[str, Any] = next((r for r in reversed(read_metrics(paths.metrics))
                                if r.get("kind") == "eval"), {}) if resuming else {}
    mixing_alphas = [(mixup, recipe.augment.mixup_alpha), (cutmix, recipe.augment.cutmix_alpha)]
    mixing_alphas = [(fn, a) for fn, a in mixing_alphas if a > 0]
    stop_epoch = t.epochs if stop_after_epochs is None else min(t.epochs, epoch + stop_after_epochs)
    model.train()
    try:
        while epoch < stop_epoch:
            t0 = time.perf_counter()
            if hasattr(objective, "set_epoch"):
                objective.set_epoch(epoch)
            mixing = bool(mixing_alphas) and epoch < t.epochs - recipe.augment.mix_off_epochs
            records, loss_sum, ce_sum, correct, seen = [], 0.0, 0.0, 0, 0
            tick = time.perf_counter()
            for i, (x, y) in enumerate(data.train_batches(
                    t.batch_size, epoch, t.seed, augment, rank=world.rank, world=world.size,
                    channels_last=prec.channels_last)):
                target: Tensor = y
                if mixing:
                    g = make_generator(t.seed, epoch, i, MIX_STREAM)
                    pick = int(torch.randint(len(mixing_alphas), (1,), generator=g))
                    fn, alpha = mixing_alphas[pick]
                    x, target = fn(x, y, info.num_classes, alpha, g)
                with prec.autocast():
                    loss, terms, logits = objective.loss(forward_model, x, target)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if manual_sync:
                    world.average_grads(params)
                if clip:
                    gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
                else:
                    gnorm = torch.nn.utils.get_total_norm([p.grad for p in params
                                                           if p.grad is not None])
                loss_value = loss.item()
                if world.active:  # the logged loss and the non-finite decision: all ranks alike
                    loss_value, *term_values = world.mean(
                        [loss_value, *(float(v) for v in terms.values())], prec.device)
                    terms = dict(zip(terms, term_values, strict=True))
                if not math.isfinite(loss_value):
                    if t.on_nonfinite == "stop" and scaler is None:
                        raise _Nonfinite(f"loss became {loss_value} at step {step} "
                                         f"(epoch {epoch + 1})")
                    optimizer.zero_grad(set_to_none=True)  # skip this update
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                elif math.isfinite(loss_value):
                    optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                if side is not None:  # the partners with their own optimizer (discriminators)
                    side.zero_grad(set_to_none=True)
                    with prec.autocast():
                        side_loss = objective.side_loss()
                    side_loss.backward()
                    if manual_sync:
                        world.average_grads([p for g in side.param_groups for p in g["params"]])
                    side.step()
                    objective.after_side_step()
                    terms["side"] = side_loss.detach()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                now = time.perf_counter()
                n = y.shape[0] * world.size
                rec = {"kind": "step", "step": step, "epoch": epoch + 1, "loss": loss_value,
                       "lr": lr, "grad_norm": float(gnorm), "ips": n / max(now - tick, 1e-9),
                       "time": time.time()}
                if len(terms) > 1:
                    rec.update({k: float(v) for k, v in terms.items()})
                records.append(rec)
                tick = now
                loss_sum += loss_value
                ce_sum += float(terms["ce"]) if len(terms) > 1 else loss_value
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += y.shape[0]
                show.step(loss_value)
            epoch += 1
            train_time = time.perf_counter() - t0
            elapsed += train_time
            correct, seen = (int(v) for v in world.sum([correct, seen], prec.device))
            if manual_sync:  # one set of BatchNorm statistics, rank 0's, as DDP keeps them
                world.sync_buffers([model, *partners.values()])
            log(records)
            eval_model = ema.module if ema is not None else model
            if epoch % t.eval_every == 0 or epoch == t.epochs:
                last_eval = evaluate(eval_model, data, prec, tta=t.tta)
                for name, partner in evaluated.items():
                    last_eval[f"{name}_test_top1"] = evaluate(partner, data, prec,
                                                              tta=t.tta)["test_top1"]
                if last_eval["test_top1"] > best["test_top1"]:
                    best = {"test_top1": last_eval["test_top1"], "epoch": epoch}
            rec = {"kind": "eval", "step": step, "epoch": epoch,
                   "train_loss": loss_sum / max(len(records), 1),
                   "train_top1": 100.0 * correct / max(seen, 1), **last_eval,
                   **({"train_ce": ce_sum / max(len(records), 1)} if distilling else {}),
                   "lr": optimizer.param_groups[0]["lr"], "epoch_time": train_time,
                   "ips": seen / max(train_time, 1e-9), "time": time.time()}
            log([rec])
            show.epoch_end(epoch, rec)
            if (epoch % t.checkpoint_every == 0 or epoch in (t.epochs, stop_epoch)) and world.main:
                _checkpoint(paths, recipe, info, model, ema, optimizer, scheduler, scaler,
                            epoch, step, elapsed, best, last_eval, partners, side)
            world.barrier()
    except _Nonfinite as exc:
        show.close()
        raise UserError(f"{exc}; the run stopped and keeps its last good checkpoint in "
                        f"{paths.checkpoints}; lower optim.lr or set optim.grad_clip") from None
    finally:
        show.close()

    final_model = ema.module if ema is not None else model
    summary = {
        "run": paths.root.name,
        "status": "finished" if epoch >= t.epochs else "stopped",
        "model": recipe.model.name,
        "data": info.name,
        "params": stats["params"],
        "macs": stats["macs"],
        "epochs": epoch,
        "steps": step,
        "test_top1": last_eval.get("test_top1"),
        "test_top5": last_eval.get("test_top5"),
        "test_loss": last_eval.get("test_loss"),
        "best_top1": best["test_top1"],
        "best_epoch": best["epoch"],
        "train_loss": rec.get("train_loss") if step else None,
        "wall_time_s": round(elapsed, 3),
        "images_per_s": rec.get("ips") if step else None,
        "device": str(prec.device),
        "precision": prec.name,
        "channels_last": prec.channels_last,
        "lr_peak": lr_peak,
        "augment": vars(augment),
    }
    if not world.main:
        return RunResult(run_dir=paths.root, summary=summary, model=final_model)
    if epoch >= t.epochs:
        save_weights(paths.weights, final_model, model_metadata(recipe, info))
    judged = run_verdict(paths, recipe)
    summary["verdict"] = judged.label
    summary["verdict_line"] = judged.one_line()
    write_json(paths.summary, summary)
    show.summary(summary, paths.root)
    return RunResult(run_dir=paths.root, summary=summary, model=final_model)


def make_objective(recipe: Recipe, model: nn.Module, teacher: nn.Module | None, data,
                   prec: Precision):
    """The method plug-in for this recipe, and the teacher's measured test numbers (if any).

    Builds the trainable partners the method asks for (a booster for `rocket`, peers for `dml`)
    with the student's model options, on the student's device and memory format.
    """
    t, method, info = recipe.train, recipe.method, data.info
    if method.name == "supervised":
        return Supervised(label_smoothing=t.label_smoothing), {}
    from lightship.methods.distill import Distill

    def partner(name: str) -> nn.Module:
        cfg = recipe.model.model_copy(update={"name": name})
        net = build_model(recipe.model_copy(update={"model": cfg}), info.num_classes,
                          info.in_chans, info.input_size)
        return net.to(prec.device, memory_format=prec.memory_format).train()

    measured: dict[str, float] = {}
    if teacher is not None:
        teacher = teacher.to(prec.device, memory_format=prec.memory_format)
        measured = evaluate(teacher, data, prec)
        teacher.train(method.teacher.train_bn)
    booster = partner(method.booster) if "rocket" in method.terms else None
    peers = ([partner(method.peer_model or recipe.model.name) for _ in range(method.peers)]
             if "dml" in method.terms else None)
    objective = Distill(method, model, teacher, label_smoothing=t.label_smoothing,
                        booster=booster, peers=peers, input_shape=(info.in_chans, info.input_size),
                        student_name=recipe.model.name)
    return objective, {f"teacher_{k}": v for k, v in measured.items()}


def _check_teacher_cache(recipe: Recipe, augment: Augment, quiet: bool) -> None:
    """Cached teacher logits are right only when every epoch shows the same images."""
    a, method = recipe.augment, recipe.method
    on = [name for name, value in [("crop", augment.crop_padding), ("hflip", augment.hflip),
                                   ("cutout", augment.cutout), ("rotate", augment.rotate),
                                   ("mixup", a.mixup_alpha),
                                   ("cutmix", a.cutmix_alpha)] if value]
    if on:
        raise UserError(f"method.teacher.cache needs augmentation off, but {', '.join(on)} is on: "
                        "each augmented view needs its own teacher output; set "
                        "augment.crop_padding=0, augment.hflip=false, augment.cutout=0, "
                        "augment.rotate=0, no mixup/cutmix, or drop the cache")
    other = [term for term in method.terms if term in ("at", "adversarial")]
    if other or method.teacher.train_bn:
        why = f"{'/'.join(other)} needs teacher features" if other else "train-mode BatchNorm " \
            "makes the teacher's output depend on the batch"
        raise UserError(f"method.teacher.cache holds logits only and {why}; drop the cache")
    if not quiet:
        print("note: teacher logits are cached and augmentation is off; students usually learn "
              "more from a teacher that sees every augmented view (Beyer et al. 2022)",
              file=sys.stderr)


def run_verdict(paths: RunPaths, recipe: Recipe, reference: list[dict] | None = None):
    """The convergence verdict of a run folder, with the recipe's schedule facts."""
    return verdict(load_records(paths.root), schedule=recipe.schedule.name,
                   warmup_epochs=recipe.schedule.warmup_epochs, total_epochs=recipe.train.epochs,
                   mix_off_epochs=recipe.augment.mix_off_epochs if (
                       recipe.augment.mixup_alpha or recipe.augment.cutmix_alpha) else 0,
                   reference=reference)


def _checkpoint(paths: RunPaths, recipe: Recipe, info, model: nn.Module, ema, optimizer,
                scheduler, scaler, epoch: int, step: int, elapsed: float, best: dict,
                last_eval: dict, partners: dict[str, nn.Module], side) -> None:
    """Write step-N weights and state, then point last.json at them (the atomic commit)."""
    import json

    tag = f"step-{step:08d}"
    save_weights(paths.checkpoints / f"{tag}.safetensors", model, model_metadata(recipe, info))
    if ema is not None:
        save_weights(paths.checkpoints / f"{tag}.ema.safetensors", ema)
    if partners:
        save_weights(paths.checkpoints / f"{tag}.partners.safetensors", nn.ModuleDict(partners))
    state = {
        "epoch": epoch,
        "step": step,
        "elapsed": elapsed,
        "best_top1": best["test_top1"],
        "best_epoch": best["epoch"],
        "last_eval": dict(last_eval),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "side_optimizer": side.state_dict() if side is not None else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    save_state(paths.checkpoints / f"{tag}.state.pt", state)
    atomic_write(paths.last, lambda tmp: tmp.write_text(json.dumps({"tag": tag, "step": step,
                                                                    "epoch": epoch})))
    for old in paths.checkpoints.glob("step-*"):
        if not old.name.startswith(tag + "."):
            old.unlink(missing_ok=True)


def _restore(paths: RunPaths, model: nn.Module, ema, optimizer, scheduler, scaler,
             partners: dict[str, nn.Module], side):
    import json

    if not paths.last.exists():
        raise UserError(f"{paths.root} has no checkpoint yet (checkpoints/last.json); start it "
                        "again with --overwrite")
    tag = json.loads(paths.last.read_text())["tag"]
    load_weights(model, paths.checkpoints / f"{tag}.safetensors")
    if ema is not None:
        load_weights(ema, paths.checkpoints / f"{tag}.ema.safetensors")
    if partners:
        load_weights(nn.ModuleDict(partners), paths.checkpoints / f"{tag}.partners.safetensors")
    state = load_state(paths.checkpoints / f"{tag}.state.pt")
    optimizer.load_state_dict(state["optimizer"])
    if side is not None and state.get("side_optimizer"):
        side.load_state_dict(state["side_optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    best = {"test_top1": state["best_top1"], "epoch": state["best_epoch"]}
    return state["epoch"], state["step"], state["elapsed"], best, state["last_eval"]
