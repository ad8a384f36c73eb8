"""Optimizer and per-step LR schedule from the recipe, using torch's own optimizers and schedulers.

The tricks live here: linear LR scaling, no weight decay on biases and norm parameters, linear
warmup chained before cosine / step / multistep / linear / constant (all stepped once per step).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
    StepLR,
)

from lightship.recipe import OptimCfg, ScheduleCfg

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def scaled_lr(cfg: OptimCfg, batch_size: int) -> float:
    """Peak LR: ``lr × batch_size / reference_batch`` under the linear scaling rule, else ``lr``."""
    return cfg.lr * batch_size / cfg.reference_batch if cfg.lr_scaling else cfg.lr


def param_groups(model: nn.Module, weight_decay: float, no_bias_decay: bool,
                 lr_mult: dict[int, float] | None = None) -> list[dict]:
    """Split parameters into decayed and not-decayed groups, each split again by LR multiplier.

    With ``no_bias_decay`` (Bag of Tricks §3.1), biases and every parameter of a norm layer get
    weight_decay 0; convolution and linear weights keep it. Shared parameters appear once; frozen
    ones (``requires_grad=False``) not at all. ``lr_mult`` maps ``id(param)`` to a multiplier
    (fine-tuning's backbone/head LRs, :func:`lightship.finetune.lr_multipliers`; others 1); groups
    at multiplier 1 come first, so the first group's LR is the logged base LR.
    """
    groups = _decay_groups(model, weight_decay, no_bias_decay)
    if lr_mult is None:
        return groups
    out = []
    for group in groups:
        by_mult: dict[float, list] = {}
        for p in group["params"]:
            by_mult.setdefault(lr_mult.get(id(p), 1.0), []).append(p)
        out += [{**group, "params": ps, "lr_mult": m, "name": f"{group['name']}@lr×{m:g}"}
                for m, ps in by_mult.items()]
    return sorted(out, key=lambda g: g["lr_mult"] != 1.0)


def _decay_groups(model: nn.Module, weight_decay: float, no_bias_decay: bool) -> list[dict]:
    if not no_bias_decay:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay, "name": "all"}]
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORM_TYPES) or pname.endswith("bias") or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def make_optimizer(model: nn.Module, cfg: OptimCfg, batch_size: int,
                   lr_mult: dict[int, float] | None = None) -> torch.optim.Optimizer:
    """torch SGD (momentum, Nesterov) or AdamW over the recipe's parameter groups (each group's
    LR is the peak LR times its ``lr_mult``; schedules scale every group alike)."""
    groups = param_groups(model, cfg.weight_decay, cfg.no_bias_decay, lr_mult)
    lr = scaled_lr(cfg, batch_size)
    for group in groups:
        if "lr_mult" in group:
            group["lr"] = lr * group["lr_mult"]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleCfg, epochs: int,
                   steps_per_epoch: int) -> LRScheduler:
    """A per-step schedule: optional linear warmup, then the main schedule on the remaining steps.

    Epoch quantities (warmup, milestones, step size) are converted to steps, so the LR changes
    smoothly inside epochs. Milestones count from the start of training, warmup included.
    """
    total = epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    main_steps = total - warmup
    if cfg.name == "cosine":
        peak = optimizer.param_groups[0]["lr"]
        main: LRScheduler = CosineAnnealingLR(optimizer, T_max=max(main_steps, 1),
                                              eta_min=cfg.min_lr * peak)
    elif cfg.name == "linear":
        main = LinearLR(optimizer, start_factor=1.0, end_factor=max(cfg.min_lr, 1e-8),
                        total_iters=max(main_steps, 1))
    elif cfg.name == "step":
        main = StepLR(optimizer, step_size=max(int(round(cfg.step_epochs * steps_per_epoch)), 1),
                      gamma=cfg.gamma)
    elif cfg.name == "multistep":
        marks = cfg.milestones if cfg.milestones is not None else [0.5 * epochs, 0.75 * epochs]
        steps = sorted({max(int(round(m * steps_per_epoch)) - warmup, 1) for m in marks})
        main = MultiStepLR(optimizer, milestones=steps, gamma=cfg.gamma)
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    start = cfg.warmup_start if cfg.warmup_start > 0 else 1.0 / (warmup + 1)
    warm = LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [warm, main], milestones=[warmup])


def lr_at_steps(optimizer: torch.optim.Optimizer, scheduler: LRScheduler, n: int) -> list[float]:
    """The LR of the first group for steps 0..n-1 (for tests and plots; steps the scheduler)."""
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


