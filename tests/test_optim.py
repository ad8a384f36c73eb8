import math

import pytest
import torch
from torch import nn

from lightship.recipe import OptimCfg, ScheduleCfg
from lightship.train.optim import (
    lr_at_steps,
    make_optimizer,
    make_scheduler,
    param_groups,
    scaled_lr,
)


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3), nn.GroupNorm(1, 3))


def test_linear_lr_scaling():
    cfg = OptimCfg(lr=0.1, lr_scaling=True)
    assert scaled_lr(cfg, 256) == pytest.approx(0.1)
    assert scaled_lr(cfg, 1024) == pytest.approx(0.4)
    assert scaled_lr(cfg, 64) == pytest.approx(0.025)
    assert scaled_lr(OptimCfg(lr=0.1, lr_scaling=False), 1024) == pytest.approx(0.1)
    opt = make_optimizer(_net(), cfg, 512)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_no_bias_decay_groups():
    net = _net()
    groups = param_groups(net, 5e-4, no_bias_decay=True)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(net[0].weight), id(net[3].weight)}  # conv and linear weights only
    expected = {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias),
                id(net[4].weight), id(net[4].bias)}
    assert no_decay == expected
    everything = param_groups(net, 5e-4, no_bias_decay=False)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(net.parameters()))
    opt = make_optimizer(net, OptimCfg(no_bias_decay=True, weight_decay=5e-4), 128)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]


def _lrs(schedule: ScheduleCfg, epochs=4, steps=10, lr=0.1):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_scheduler(opt, schedule, epochs, steps)
    return lr_at_steps(opt, sched, epochs * steps)


def test_warmup_lr_values():
    lrs = _lrs(ScheduleCfg(name="constant", warmup_epochs=1), epochs=4, steps=10)
    # 10 warmup steps from lr/11 rising linearly; never zero, reaches lr at step 10.
    assert lrs[0] == pytest.approx(0.1 / 11)
    for i in range(10):
        assert lrs[i] == pytest.approx(0.1 * (1 / 11 + (1 - 1 / 11) * i / 10))
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:11], strict=True))
    assert lrs[10:] == pytest.approx([0.1] * 30)


def test_cosine_after_warmup_ends_at_min_lr():
    lrs = _lrs(ScheduleCfg(name="cosine", warmup_epochs=1, min_lr=0.0), epochs=4, steps=10)
    main = lrs[10:]
    assert main[0] == pytest.approx(0.1)
    for j, v in enumerate(main):
        assert v == pytest.approx(0.05 * (1 + math.cos(math.pi * j / 30)), abs=1e-9)
    assert main[-1] < 0.001


def test_multistep_default_milestones_at_half_and_three_quarters():
    lrs = _lrs(ScheduleCfg(name="multistep"), epochs=4, steps=10)
    assert lrs[19] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01)
    assert lrs[29] == pytest.approx(0.01) and lrs[30] == pytest.approx(0.001)


def test_step_and_linear():
    lrs = _lrs(ScheduleCfg(name="step", step_epochs=1, gamma=0.5), epochs=3, steps=5)
    assert lrs[4] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05)
    assert lrs[10] == pytest.approx(0.025)
    lin = _lrs(ScheduleCfg(name="linear"), epochs=2, steps=5)
    assert lin[0] == pytest.approx(0.1) and lin[-1] == pytest.approx(0.01, abs=1e-6)
    assert all(b < a for a, b in zip(lin, lin[1:], strict=False))
