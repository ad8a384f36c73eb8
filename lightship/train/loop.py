"""THE training loop. It knows no method: an objective (lightship.methods) computes the loss.

Per step (:func:`train_step`): batch (batched augmentation on the device) → optional
mixup/cutmix → objective under autocast → backward → gradient norm (and clipping) → ONE
host-device sync (loss, norm, terms, hits) → optimizer and per-step scheduler → the objective's
side step → EMA.
Per epoch (:func:`end_epoch`): evaluation on the test split, raw metrics to metrics.jsonl, an
atomic checkpoint (:mod:`lightship.train.checkpoint`). At the end (:func:`end_run`): final
weights, the verdict, summary.json. Randomness of each batch comes from (seed, epoch, batch
index), so resume continues exactly. Builders live in :mod:`lightship.build`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lightship import interrupt
from lightship.build import build_augment, build_model, build_objective
from lightship.data import Augment, cutmix, load_data, mixup
from lightship.data.augment import make_generator
from lightship.diagnose import judge_run
from lightship.errors import Interrupted, UserError
from lightship.evaluate import clean_fit, evaluate
from lightship.fileio import atomic_write_text, user_path
from lightship.finetune import freeze, init_student, lr_multipliers
from lightship.methods.objective import Objective
from lightship.models import check_norm, model_stats
from lightship.recipe import Recipe, build_recipe, load_saved_recipe
from lightship.runs import (
    MetricsLog,
    RunLock,
    RunPaths,
    how_to_continue,
    never_started,
    prepare_new_run,
    read_records,
    run_finished,
    write_error,
    write_json,
)
from lightship.train.checkpoint import TrainState, restore_checkpoint, save_checkpoint
from lightship.train.distributed import World, close_world, init_world
from lightship.train.dynamo import dynamo_import_skipped
from lightship.train.optim import make_optimizer, make_scheduler, scaled_lr
from lightship.train.precision import Precision, choose_device, choose_precision, cpu_kind
from lightship.train.progress import Progress
from lightship.train.threads import fit_threads
from lightship.weights import save_weights, weights_metadata

MIX_STREAM = 1  # generator stream of mixup/cutmix draws (data order and augmentation use others)


@dataclass
class RunResult:
    """What a training call returns: the run folder, the trained student, the typed summary."""

    run_dir: Path
    summary: dict[str, Any]
    model: nn.Module

    @property
    def status(self) -> str:
        """``finished`` or ``stopped`` (resumable)."""
        return self.summary["status"]

    @property
    def test_top1(self) -> float | None:
        return self.summary.get("test_top1")

    @property
    def best_top1(self) -> float:
        return self.summary["best_top1"]

    @property
    def train_loss(self) -> float | None:
        return self.summary.get("train_loss")

    @property
    def verdict(self) -> str | None:
        """The convergence label (``converged``, ``still improving``, ...)."""
        return self.summary.get("verdict")

    @property
    def weights(self) -> Path | None:
        """The final weights file (None while the run is stopped before its last epoch)."""
        path = RunPaths(self.run_dir).weights
        return path if path.exists() else None


class _Nonfinite(Exception):
    pass


@dataclass
class Loop:
    """The wired-up pieces of one training call, built once and read by every step."""

    recipe: Recipe
    paths: RunPaths
    data: Any
    objective: Objective
    prec: Precision
    augment: Augment
    world: World
    state: TrainState
    forward_model: nn.Module
    params: list[Tensor]
    manual_sync: bool
    mixing: list[tuple[Callable, float]]
    log: Callable[[list[dict]], None]
    progress: Progress
    lr_peak: float
    resuming: bool
    steps_per_epoch: int
    last_rec: dict[str, Any] = field(default_factory=dict)  # the last eval record


def train(recipe: Recipe | None = None, *, resume: str | Path | None = None,
          overwrite: bool = False, progress: bool | None = None,
          stop_after_epochs: int | None = None, quiet: bool = False) -> RunResult:
    """Train the recipe's student into a run folder and return its summary.

    ``resume`` continues the run folder from its last checkpoint with its saved recipe, giving the
    same final weights as an uninterrupted run on CPU. ``stop_after_epochs`` ends this call early
    (the run stays resumable), which tests use to interrupt a run.
    """
    if resume is not None:
        resume = user_path(resume)
        paths = RunPaths(resume)
        if not paths.root.is_dir():
            raise UserError(f"--resume {resume}: no such run folder")
        if not paths.is_run():
            if never_started(paths):
                raise UserError(f"--resume {resume}: the run was stopped before it started (no "
                                "recipe.yaml); start it again with --overwrite")
            raise UserError(f"--resume {resume}: not a lightship run folder (no recipe.yaml); "
                            "give a folder made by `lightship train`")
        recipe = load_saved_recipe(paths.recipe)
        if run_finished(paths, recipe.train.epochs):  # refuse before anything is written
            raise UserError(f"{paths.root} finished its {recipe.train.epochs} epochs; nothing to "
                            "resume")
    else:
        recipe = recipe or build_recipe()  # no recipe: the default preset, as on the CLI
    world, device_setting = init_world(recipe.train.device)
    try:
        with dynamo_import_skipped(enabled=not recipe.train.compile):
            return _train_in_world(recipe, resume, world, device_setting, overwrite, progress,
                                   stop_after_epochs, quiet)
    finally:
        close_world(world)


def _default_name(recipe: Recipe) -> str:
    data = Path(recipe.data.name).name or "data"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{recipe.model.name.replace(':', '-')}_{data}_{stamp}"


def _train_in_world(recipe: Recipe, resume: str | Path | None, world: World,
                    device_setting: str, overwrite: bool, progress: bool | None,
                    stop_after_epochs: int | None, quiet: bool) -> RunResult:
    """Validate and build everything, then take the run folder and run the loop."""
    if resume is not None:
        paths = RunPaths(Path(resume))
    else:  # every rank must use rank 0's folder name (the default one holds a timestamp)
        paths = RunPaths(user_path(recipe.run.dir) / world.share(
            recipe.run.name or _default_name(recipe)))
        if not overwrite and world.main:
            prepare_new_run(paths, overwrite=False)  # checks only; raises the clear message
    # Validate everything before touching the disk: bad input never leaves a half-made run.
    cfg = recipe.train
    prec = choose_precision(cfg.precision, cfg.channels_last, choose_device(device_setting))
    check_norm(recipe.model.norm)
    data = load_data(recipe.data)
    info = data.info
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size, world.size)  # checks the batch size
    torch.manual_seed(cfg.seed)
    model = build_model(recipe, info.num_classes, info.in_chans, info.input_size)
    stats = model_stats(model, info.in_chans, info.input_size)
    # model.init (a resumed run restores its own weights) and the frozen parts, before the disk
    init_rec = init_student(model, recipe, info.classes) if resume is None else None
    freeze(model, recipe.finetune, recipe.model.name)
    model = model.to(prec.device, memory_format=prec.memory_format)
    data.to(prec.device)
    augment = build_augment(recipe, info)
    objective, teacher_eval = build_objective(recipe, model, data, prec, augment,
                                              quiet or not world.main)
    lock = RunLock(paths)
    made = resume is not None  # paths.root holds this run (before that, Ctrl-C wrote nothing)
    try:
        if world.main:  # only rank 0 touches the run folder
            if resume is None:
                with interrupt.deferred():  # Ctrl-C never leaves a half-replaced folder
                    prepare_new_run(paths, overwrite)
                    paths.root.mkdir(parents=True, exist_ok=True)
                    lock.acquire()
                    atomic_write_text(paths.recipe, recipe.to_yaml())
                    made = True
            else:
                lock.acquire()
        world.barrier()
        loop = _wire(recipe, paths, data, model, objective, prec, augment, world,
                     steps_per_epoch, resume is not None, progress, quiet)
        if init_rec is not None and world.main and not quiet:
            print(f"init from {init_rec['source']} (sha256 {init_rec['sha256'][:12]}): "
                  f"{init_rec['line']}", flush=True)
        start = {**teacher_eval, **({"init": init_rec} if init_rec is not None else {})}
        result = run_epochs(loop, stats, start, stop_after_epochs)
        interrupt.check()  # a Ctrl-C that came while the data loader stopped its workers
        return result
    except OSError as exc:  # disk full, folder not writable: one line naming the file
        raise write_error(Path(exc.filename or paths.root), exc, paths.root) from None
    except KeyboardInterrupt:
        raise Interrupted(f"{interrupt.stopped()}; {how_to_continue(paths.root)}" if made else
                          f"{interrupt.stopped()} before the run folder was made; nothing was "
                          "written") from None
    finally:
        lock.release()


def _wire(recipe: Recipe, paths: RunPaths, data: Any, model: nn.Module, objective: Objective,
          prec: Precision, augment: Augment, world: World, steps_per_epoch: int,
          resuming: bool, progress: bool | None, quiet: bool) -> Loop:
    """Optimizer, schedule, scaler, EMA, DDP wrapper; the restored state when resuming."""
    cfg, global_batch = recipe.train, recipe.train.batch_size * world.size
    trainable = objective.trainable()
    # Partners (booster, peers, adapters) share the student's optimizer and schedule; shared
    # parameters (Rocket) appear once.
    optimizer = make_optimizer(nn.ModuleDict({"student": model, **trainable}) if trainable
                               else model, recipe.optim, global_batch,
                               lr_multipliers(model, recipe.finetune))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SequentialLR's epoch-argument notice
        scheduler = make_scheduler(optimizer, recipe.schedule, cfg.epochs, steps_per_epoch)
    state = TrainState(
        model, optimizer, scheduler, partners=objective.partners(),
        ema=(AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
             if cfg.ema else None),
        scaler=torch.amp.GradScaler(prec.device.type) if prec.scaler else None,
        side=objective.side_optimizer)
    # Partners that share layers with the student (Rocket) cannot sit in separate DDP wrappers;
    # their gradients are averaged over ranks by hand after backward instead.
    manual_sync = world.active and bool(trainable or state.side is not None)
    forward_model = model
    if world.active and not manual_sync:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(
            model, device_ids=[prec.device.index] if prec.device.type == "cuda" else None)
    metrics = MetricsLog(paths.metrics)
    loop = Loop(
        recipe, paths, data, objective, prec, augment, world, state,
        torch.compile(forward_model) if cfg.compile else forward_model,
        [p for g in optimizer.param_groups for p in g["params"]], manual_sync,
        [(fn, a) for fn, a in [(mixup, recipe.augment.mixup_alpha),
                               (cutmix, recipe.augment.cutmix_alpha)] if a > 0],
        metrics.write if world.main else (lambda records: None),  # only rank 0 writes
        Progress(total_epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                 enabled=progress if world.main else False, quiet=quiet or not world.main,
                 title=f"{recipe.model.name} on {data.info.name}", setup=prec.describe()),
        scaled_lr(recipe.optim, global_batch), resuming, steps_per_epoch)
    if resuming:
        _resume(loop, metrics)
    return loop


def _resume(loop: Loop, metrics: MetricsLog) -> None:
    """Restore the last checkpoint and drop the records written after it."""
    paths, state = loop.paths, loop.state
    restore_checkpoint(paths, state)
    if loop.world.main:
        metrics.truncate_after(state.step)
    # A run killed after its last checkpoint skips the loop; the final weights and summary are
    # written from the restored state (a finished run was refused in train()).
    loop.last_rec = (read_records(paths.root).evals or [{}])[-1]


def run_epochs(loop: Loop, stats: dict[str, int], start: dict[str, Any],
         stop_after_epochs: int | None) -> RunResult:
    """The loop itself: epochs until the end (or ``stop_after_epochs``), then the run's end.
    ``start`` adds to the start record (the teacher's test numbers, the init report)."""
    state, epochs, prec = loop.state, loop.recipe.train.epochs, loop.prec
    loop.log([{"kind": "start", "step": state.step, "epoch": state.epoch,
               "resumed": loop.resuming, "params": stats["params"], "macs": stats["macs"],
               "device": str(prec.device), "precision": prec.name, "cpu": cpu_kind(),
               "channels_last": prec.channels_last, "lr_peak": loop.lr_peak,
               "steps_per_epoch": loop.steps_per_epoch, "num_classes": loop.data.info.num_classes,
               "augment": vars(loop.augment), "method": loop.recipe.method.name,
               "world_size": loop.world.size, "time": time.time(), **start}])
    stop_epoch = epochs if stop_after_epochs is None else min(epochs,
                                                              state.epoch + stop_after_epochs)
    loop.progress.start(state.epoch)
    state.model.train()
    try:
        while state.epoch < stop_epoch:
            end_epoch(loop, train_epoch(loop), stop_epoch)
    except _Nonfinite as exc:
        loop.progress.close()
        paths = loop.paths
        kept = (f"the run stopped and keeps its last good checkpoint in {paths.checkpoints}"
                if paths.last.exists() else "the run stopped before its first checkpoint")
        raise UserError(f"{exc}; {kept}; lower optim.lr or set optim.grad_clip, then start it "
                        "again with --overwrite") from None
    finally:
        loop.progress.close()
    return end_run(loop, stats)


@dataclass
class EpochStats:
    """What one epoch's steps add up to (this rank's share)."""

    records: list[dict[str, Any]]
    loss_sum: float = 0.0
    ce_sum: float = 0.0
    hits: int = 0
    seen: int = 0
    train_time: float = 0.0
    threads: int = 0


def train_epoch(loop: Loop) -> EpochStats:
    """Every step of the current epoch."""
    recipe, state, world = loop.recipe, loop.state, loop.world
    cfg, epoch = recipe.train, state.epoch
    t0 = time.perf_counter()
    loop.objective.set_epoch(epoch)
    mixing = bool(loop.mixing) and epoch < cfg.epochs - recipe.augment.mix_off_epochs
    # once per epoch: torch threads fit to the CPUs this process gets (lightship.train.threads)
    stats = EpochStats(records=[], threads=fit_threads())
    tick = time.perf_counter()
    for i, (x, y) in enumerate(loop.data.train_batches(
            cfg.batch_size, epoch, cfg.seed, loop.augment, rank=world.rank, world=world.size,
            channels_last=loop.prec.channels_last)):
        record, hits = train_step(loop, x, y, i if mixing else None)
        now = time.perf_counter()
        record["ips"] = y.shape[0] * world.size / max(now - tick, 1e-9)
        tick = now
        stats.records.append(record)
        stats.loss_sum += record["loss"]
        stats.ce_sum += record.get("ce", record["loss"])
        stats.hits += hits
        stats.seen += y.shape[0]
        loop.progress.step(record["loss"])
    stats.train_time = time.perf_counter() - t0
    return stats


def train_step(loop: Loop, x: Tensor, y: Tensor, mix_index: int | None
               ) -> tuple[dict[str, Any], int]:
    """One update of the student (and its partners); returns the step record and the hits.

    The one host-device sync of the step reads the loss, gradient norm, terms and hits together.
    """
    state, prec, opt, world = loop.state, loop.prec, loop.state.optimizer, loop.world
    cfg, clip = loop.recipe.train, loop.recipe.optim.grad_clip
    target = y
    if mix_index is not None:
        g = make_generator(cfg.seed, state.epoch, mix_index, MIX_STREAM)
        fn, alpha = loop.mixing[int(torch.randint(len(loop.mixing), (1,), generator=g))]
        x, target = fn(x, y, loop.data.info.num_classes, alpha, g)
    with prec.autocast():
        loss, terms, logits = loop.objective.loss(loop.forward_model, x, target)
    opt.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(opt)
    else:
        loss.backward()
    if loop.manual_sync:
        world.average_grads(loop.params)
    gnorm = (torch.nn.utils.clip_grad_norm_(loop.params, clip) if clip else
             torch.nn.utils.get_total_norm([p.grad for p in loop.params if p.grad is not None]))
    hits = (logits.detach().argmax(1) == y).sum()
    loss_value, gnorm_value, *values, hit_count = torch.stack(  # the step's one sync
        [loss.detach().float(), gnorm.float(), *(v.float() for v in terms.values()),
         hits.float()]).tolist()
    if world.active:  # the logged loss and the non-finite decision: all ranks alike
        loss_value, *values = world.mean([loss_value, *values], prec.device)
    if not math.isfinite(loss_value):
        if cfg.on_nonfinite == "stop" and state.scaler is None:
            raise _Nonfinite(f"loss became {loss_value} at step {state.step} "
                             f"(epoch {state.epoch + 1})")
        opt.zero_grad(set_to_none=True)  # skip this update
    if state.scaler is not None:
        state.scaler.step(opt)
        state.scaler.update()
    elif math.isfinite(loss_value):
        opt.step()
    lr = opt.param_groups[0]["lr"]
    state.scheduler.step()
    side = loop.objective.side_step(prec.autocast, world.average_grads if loop.manual_sync
                                    else None)
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    state.step += 1
    record = {"kind": "step", "step": state.step, "epoch": state.epoch + 1, "loss": loss_value,
           "lr": lr, "grad_norm": gnorm_value, "ips": 0.0, "time": time.time()}
    logged = dict(zip(terms, values, strict=True)) | ({"side": side} if side is not None else {})
    if len(logged) > 1:  # a CE-only objective logs only the total
        record.update(logged)
    return record, int(hit_count)


def _side_values(records: list[dict[str, Any]]) -> None:
    """Side losses stay on the device during the epoch; read them in one transfer at its end."""
    pending = [r for r in records if isinstance(r.get("side"), Tensor)]
    if pending:
        for r, v in zip(pending, torch.stack([r["side"] for r in pending]).tolist(),
                        strict=True):
            r["side"] = v


def end_epoch(loop: Loop, stats: EpochStats, stop_epoch: int) -> None:
    """Count the epoch, log its steps, evaluate, write its eval record and checkpoint."""
    state, world, cfg, prec = loop.state, loop.world, loop.recipe.train, loop.prec
    state.epoch += 1
    state.elapsed += stats.train_time
    correct, seen = (int(v) for v in world.sum([stats.hits, stats.seen], prec.device))
    if loop.manual_sync:  # one set of BatchNorm statistics, rank 0's, as DDP keeps them
        world.sync_buffers([state.model, *state.partners.values()])
    _side_values(stats.records)
    loop.log(stats.records)
    if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
        tta = cfg.tta_at(state.epoch)
        result = evaluate(state.ema.module if state.ema is not None else state.model,
                          loop.data, prec, tta=tta)
        for name, partner in loop.objective.evaluated().items():
            result[f"{name}_test_top1"] = evaluate(partner, loop.data, prec,
                                                   tta=tta)["test_top1"]
        if state.epoch == cfg.epochs:  # the final model's fit of its training data (the verdict)
            result.update(clean_fit(state.ema.module if state.ema is not None else state.model,
                                    loop.data, prec))
        state.note_eval({**result, **({"tta": True} if cfg.tta == "final" and tta else {})})
    steps = max(len(stats.records), 1)
    record = {"kind": "eval", "step": state.step, "epoch": state.epoch,
           "train_loss": stats.loss_sum / steps, "train_top1": 100.0 * correct / max(seen, 1),
           **state.last_eval,
           **({"train_ce": stats.ce_sum / steps} if len(loop.objective.term_names) > 1 else {}),
           "lr": state.optimizer.param_groups[0]["lr"], "epoch_time": stats.train_time,
           "ips": seen / max(stats.train_time, 1e-9), "threads": stats.threads,
           "time": time.time()}
    loop.log([record])
    loop.last_rec = record
    loop.progress.epoch_end(state.epoch, record)
    if (state.epoch % cfg.checkpoint_every == 0 or state.epoch in (cfg.epochs, stop_epoch)) \
            and world.main:
        save_checkpoint(loop.paths, state, weights_metadata(loop.recipe, loop.data.info))
    world.barrier()


def end_run(loop: Loop, stats: dict[str, int]) -> RunResult:
    """Final weights (finished runs), the verdict and summary.json (rank 0)."""
    recipe, state, paths, prec = loop.recipe, loop.state, loop.paths, loop.prec
    final_model = state.ema.module if state.ema is not None else state.model
    last = loop.last_rec if state.step else {}
    summary = {
        "run": paths.root.name,
        "status": "finished" if state.epoch >= recipe.train.epochs else "stopped",
        "model": recipe.model.name,
        "data": loop.data.info.name,
        "params": stats["params"],
        "macs": stats["macs"],
        "epochs": state.epoch,
        "steps": state.step,
        "test_top1": state.last_eval.get("test_top1"),
        "test_top5": state.last_eval.get("test_top5"),
        "test_loss": state.last_eval.get("test_loss"),
        "best_top1": state.best_top1,
        "best_epoch": state.best_epoch,
        "train_loss": last.get("train_loss"),
        "wall_time_s": round(state.elapsed, 3),
        "images_per_s": last.get("ips"),
        "device": str(prec.device),
        "precision": prec.name,
        "cpu": cpu_kind(),
        "channels_last": prec.channels_last,
        "lr_peak": loop.lr_peak,
        "augment": vars(loop.augment),
    }
    if not loop.world.main:
        return RunResult(run_dir=paths.root, summary=summary, model=final_model)
    if state.epoch >= recipe.train.epochs:
        save_weights(paths.weights, final_model, weights_metadata(recipe, loop.data.info))
    judged = judge_run(paths.root, recipe)
    summary["verdict"] = judged.label
    summary["verdict_line"] = judged.one_line()
    write_json(paths.summary, summary, paths.root)
    loop.progress.summary(summary, paths.root)
    return RunResult(run_dir=paths.root, summary=summary, model=final_model)
