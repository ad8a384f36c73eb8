"""Probes: shattered gradients (ResNet vs plain twin) and the gradient noise scale estimator."""

import argparse
import math

import pytest
import torch
from torch import nn

from lightship.data import Augment, load_dataset
from lightship.errors import UserError
from lightship.models import create_model
from lightship.probes.cli import add_probe_parser
from lightship.probes.gradients import (
    calibrate_bn,
    effective_rank,
    format_table,
    gradient_correlation,
    probe_models,
)
from lightship.probes.noise_scale import (
    NoiseScale,
    check_batch_sizes,
    measure_noise_scale,
    probe_noise_scale,
    suggest,
    unbiased_estimates,
)
from lightship.recipe import build_recipe

TINY_DATA = "synthetic:n=64,classes=3,size=8,channels=1"


@pytest.fixture(scope="module")
def tiny():
    data = load_dataset(TINY_DATA)
    x = next(iter(data.test_batches(4)))[0]
    calib = next(iter(data.train_batches(32, 0, 0, Augment())))[0]
    return x, calib


def _measure(name, x, calib, seed=0, radius=0.05):
    torch.manual_seed(seed)
    model = create_model(name, 3, 1, 8, width=0.5)
    calibrate_bn(model, calib)
    return gradient_correlation(model, x, name=name, points=9, radius=radius, seed=seed)


# --- shattered gradients ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_plain_net_shatters_gradients_resnet_does_not(tiny, seed):
    x, calib = tiny
    res, plain = _measure("resnet32", x, calib, seed), _measure("plain32", x, calib, seed)
    # measured: resnet32 C(h) 0.81..0.87, plain32 -0.01..0.11 over seeds 0-3
    assert res.neighbour > 0.6
    assert plain.neighbour < 0.3
    assert res.neighbour > plain.neighbour + 0.4
    assert plain.effective_rank > res.effective_rank


def test_plain_net_decorrelates_with_depth(tiny):
    x, calib = tiny
    assert _measure("plain8", x, calib).neighbour > _measure("plain32", x, calib).neighbour + 0.3


def test_correlation_falls_with_distance_and_is_one_at_tiny_steps(tiny):
    x, calib = tiny
    r = _measure("resnet20", x, calib)
    assert r.autocorr[0] > r.autocorr[-1]
    assert _measure("resnet20", x, calib, radius=1e-7).neighbour > 0.999  # piecewise linear


def test_gradient_probe_is_deterministic(tiny):
    x, calib = tiny
    a, b = _measure("plain14", x, calib, seed=3), _measure("plain14", x, calib, seed=3)
    assert a.autocorr == b.autocorr and a.effective_rank == b.effective_rank
    assert _measure("plain14", x, calib, seed=4).autocorr != a.autocorr


def test_gradient_probe_leaves_the_model_as_it_was(tiny):
    x, calib = tiny
    model = create_model("resnet8", 3, 1, 8)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_correlation(model, x, points=5)
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_effective_rank_bounds():
    torch.manual_seed(0)
    same = torch.ones(6, 10)
    assert effective_rank(same) == pytest.approx(1.0)
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0)


def test_probe_models_table_and_plot(tmp_path):
    from lightship.probes.gradients import plot

    results = probe_models(TINY_DATA, ["resnet8", "plain8"], images=2, points=5, calib=16)
    table = format_table(results)
    assert "resnet8" in table and "plain8" in table and "eff. rank (of 5)" in table
    plot(results, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").stat().st_size > 1000


@pytest.mark.parametrize("kwargs, fix", [
    ({"models": ["resnt20"]}, "did you mean 'resnet20'"),
    ({"images": 1000}, "lower --images"),
    ({"calib": 10_000}, "lower --calib"),
    ({"points": 2}, "must be >= 3"),
    ({"radius": 0.0}, "must be > 0"),
])
def test_gradient_probe_bad_input(kwargs, fix):
    kwargs = {"models": ["resnet8"], "images": 2, "points": 5, "calib": 16, **kwargs}
    with pytest.raises(UserError, match=fix):
        probe_models(TINY_DATA, **kwargs)


# --- gradient noise scale --------------------------------------------------------------------

def test_unbiased_estimates_recover_exact_expectations():
    grad_sq, trace = 2.5, 40.0  # E|G_B|^2 = |G|^2 + tr(Σ)/B, exactly
    got = unbiased_estimates(8, 128, grad_sq + trace / 8, grad_sq + trace / 128)
    assert got == pytest.approx((grad_sq, trace))


def test_noise_scale_of_a_linear_model_with_known_gradient_statistics():
    # loss = -mean(w · z): per-example gradient -z, z ~ N(mu, diag(sigma^2)), so
    # |G|^2 = |mu|^2 and tr(Σ) = Σ sigma^2 are known exactly.
    dim = 20
    g = torch.Generator().manual_seed(0)
    mu = torch.linspace(-0.5, 0.5, dim)
    sigma = torch.linspace(0.5, 2.0, dim)
    true_grad_sq, true_trace = float(mu.pow(2).sum()), float(sigma.pow(2).sum())

    def batches(b, n):
        for _ in range(n):
            z = mu + sigma * torch.randn(b, dim, generator=g)
            yield z, torch.zeros(b)

    model = nn.Linear(dim, 1, bias=False)
    est = measure_noise_scale(model, batches, lambda out, y: -out.mean(), 4, 64, 2000)
    assert est.grad_sq == pytest.approx(true_grad_sq, rel=0.1)
    assert est.trace == pytest.approx(true_trace, rel=0.05)
    assert est.b_simple == pytest.approx(true_trace / true_grad_sq, rel=0.12)
    assert all(v == pytest.approx(est.b_simple, rel=0.25) for v in est.halves)


def test_noise_scale_probe_on_a_recipe_is_deterministic():
    recipe = build_recipe("baseline", [f"data.name={TINY_DATA}", "model.name=cnn4",
                                       "train.batch_size=16"])
    a, tip, ctx = probe_noise_scale(recipe, b_small=2, b_big=32, n_batches=4, calib=32)
    b, _, _ = probe_noise_scale(recipe, b_small=2, b_big=32, n_batches=4, calib=32)
    assert (a.sq_small, a.sq_big) == (b.sq_small, b.sq_big)
    assert a.sq_small > a.sq_big > 0  # small batches are noisier
    assert ctx["where"] == "initialisation"
    if a.ok:
        assert tip is not None and tip.batch_size & (tip.batch_size - 1) == 0


def test_suggestion_uses_linear_lr_scaling():
    noise = NoiseScale(8, 256, 4, 0.0, 0.0, grad_sq=1.0, trace=100.0, halves=(90.0, 110.0))
    off = build_recipe("baseline", ["train.batch_size=64", "optim.lr=0.1"])
    tip = suggest(noise, off, n_train=4000)
    assert tip.batch_size == 128 and tip.lr == pytest.approx(0.2)
    assert "--batch-size 128" in tip.flags and "--lr 0.2" in tip.flags
    on = build_recipe("tricks", ["optim.lr=0.2", "optim.reference_batch=256"])
    tip = suggest(noise, on, n_train=4000)
    assert tip.lr == pytest.approx(0.2 * 128 / 256) and tip.flags == "--batch-size 128"
    assert suggest(noise, off, n_train=50).batch_size == 32  # capped by the data
    bad = NoiseScale(8, 256, 4, 0.0, 0.0, grad_sq=-1.0, trace=100.0, halves=(1.0, 1.0))
    assert suggest(bad, off, 4000) is None and math.isnan(bad.b_simple)


@pytest.mark.parametrize("args, fix", [
    ((64, 64, 8, None), "must be smaller than --big-batch"),
    ((128, 16, 8, None), "must be smaller than --big-batch"),
    ((0, 16, 8, None), "--small-batch 0 must be"),
    ((8, 5000, 8, 4000), "lower --big-batch to at most 4000"),
    ((8, 64, 1, None), "--batches 1 must be"),
])
def test_noise_scale_bad_batch_sizes(args, fix):
    with pytest.raises(UserError, match=fix):
        check_batch_sizes(*args)


def test_noise_scale_batch_larger_than_data():
    recipe = build_recipe("baseline", [f"data.name={TINY_DATA}", "model.name=cnn4"])
    with pytest.raises(UserError, match="larger than the 64 training images"):
        probe_noise_scale(recipe, b_small=8, b_big=128, n_batches=2)


# --- command line ----------------------------------------------------------------------------

def _parser():
    from lightship.cli import _Parser

    parser = _Parser(prog="lightship")
    add_probe_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    return parser


def test_cli_gradients_prints_table_and_saves_plot(tmp_path, capsys):
    out = tmp_path / "g.png"
    args = _parser().parse_args(["probe", "gradients", "--data", TINY_DATA, "--models",
                                 "resnet8,plain8", "--images", "2", "--points", "5",
                                 "--calib", "16", "-o", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "plain8" in text and "eff. rank" in text and out.exists()


def test_cli_noise_scale_prints_estimates(capsys):
    args = _parser().parse_args(["probe", "noise-scale", "-r", "baseline", "--data", TINY_DATA,
                                 "--model", "cnn4", "--small-batch", "2", "--big-batch", "32",
                                 "--batches", "4", "--calib", "32"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "|G|^2" in text and "tr(Σ)" in text


@pytest.mark.parametrize("argv, fix", [
    (["probe"], "needs an action"),
    (["probe", "noise-scale", "--data", TINY_DATA, "--small-batch", "64", "--big-batch", "32"],
     "must be smaller than --big-batch"),
    (["probe", "noise-scale", "--model", "resnt8", "--data", TINY_DATA, "--big-batch", "32"],
     "did you mean"),
    (["probe", "gradients", "--bogus"], "unrecognized arguments"),
])
def test_cli_bad_input_is_a_user_error(argv, fix):
    parser = _parser()
    with pytest.raises(UserError, match=fix):
        args = parser.parse_args(argv)
        args.func(args)


def test_add_probe_parser_returns_the_probe_parser():
    sub = argparse.ArgumentParser().add_subparsers()
    assert add_probe_parser(sub).prog.endswith("probe")


# --- trained weights -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from lightship.train.loop import train

    tmp = tmp_path_factory.mktemp("probe_run")
    recipe = build_recipe("baseline", [f"data.name={TINY_DATA}", "model.name=resnet8",
                                       "train.epochs=2", "train.batch_size=16",
                                       f"run.dir={tmp}", "run.name=t"])
    return recipe, train(recipe, progress=False, quiet=True).run_dir


def test_probes_at_trained_weights(trained_run):
    recipe, run_dir = trained_run
    results = probe_models(TINY_DATA, [], images=2, points=5, calib=16,
                           weights=[str(run_dir / "weights.safetensors"), str(run_dir)])
    assert [r.name for r in results] == ["resnet8 (weights.safetensors)", "resnet8 (t)"]
    assert results[0].autocorr == results[1].autocorr  # same weights, same numbers
    noise, _, ctx = probe_noise_scale(recipe, b_small=2, b_big=32, n_batches=4,
                                      weights=str(run_dir))
    assert ctx["where"].startswith("weights") and noise.sq_small > 0


def test_probe_weights_of_another_architecture_is_a_user_error(trained_run):
    recipe, run_dir = trained_run
    other = build_recipe("baseline", [f"data.name={TINY_DATA}", "model.name=cnn4"])
    with pytest.raises(UserError, match="load it with the model it was trained with"):
        probe_noise_scale(other, b_small=2, b_big=32, n_batches=2, weights=str(run_dir))
