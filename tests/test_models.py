"""The model zoo: literature parameter counts, architecture variants, the shared API, errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torchvision
from torch import nn

from lightship.errors import UserError
from lightship.models import Taps, check_norm, create_model, list_models, make_norm, model_stats
from lightship.models.mobilenet import InvertedResidual
from lightship.models.resnet import BasicBlock, Bottleneck, PadShortcut


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def last_norm(block: nn.Module) -> nn.Module:
    return block.norm3 if isinstance(block, Bottleneck) else block.norm2


# --- parameter counts -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "millions"), [
    ("resnet20", 0.27), ("resnet56", 0.86), ("resnet110", 1.7),  # He et al. 2016, Table 6
    ("wrn-16-1", 0.175), ("wrn-40-2", 2.24),  # Zagoruyko & Komodakis 2016
])
def test_cifar_param_counts_match_literature(name, millions):
    count = n_params(create_model(name, 10, 3, 32))
    assert count == pytest.approx(millions * 1e6, rel=0.02)


@pytest.mark.parametrize(("depth", "millions"), [(18, 11.7), (50, 25.6)])
@pytest.mark.parametrize("variant", ["v1", "B"])
def test_imagenet_param_counts_equal_torchvision(depth, millions, variant):
    ours = n_params(create_model(f"resnet{depth}", 1000, 3, 224, variant=variant))
    theirs = n_params(getattr(torchvision.models, f"resnet{depth}")())
    assert ours == theirs
    assert ours == pytest.approx(millions * 1e6, rel=0.01)


# --- CIFAR ResNet shortcuts and the plain twin --------------------------------------------------

def test_shortcut_a_is_parameter_free_and_b_projects():
    a = create_model("resnet20", 10, shortcut="A")
    b = create_model("resnet20", 10, shortcut="B")
    a_shortcuts = [blk.shortcut for blk in residual_blocks(a)]
    assert all(n_params(s) == 0 for s in a_shortcuts)
    assert sum(isinstance(s, PadShortcut) for s in a_shortcuts) == 2  # the two downsamplings
    projections = [blk.shortcut for blk in residual_blocks(b) if n_params(blk.shortcut)]
    assert len(projections) == 2
    for proj in projections:
        conv = proj[0]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
        assert conv.stride == (2, 2)
    assert n_params(b) > n_params(a)


def test_shortcut_c_projects_every_shortcut():
    """He et al. 2016 Table 3, option C: every shortcut a 1×1 projection (+ its norm)."""
    a, b, c = (create_model("resnet20", 10, shortcut=k) for k in "ABC")
    blocks = residual_blocks(c)
    assert len(blocks) == 9
    for blk in blocks:
        conv = blk.shortcut[0]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
        assert isinstance(blk.shortcut[1], nn.BatchNorm2d)
    # B projects the two downsamplings: 16·32 + 2·32 and 32·64 + 2·64 parameters
    assert n_params(b) - n_params(a) == (16 * 32 + 64) + (32 * 64 + 128) == 2752
    # C projects all nine: three 16→16, 16→32 and two 32→32, 32→64 and two 64→64
    every = 3 * (16 * 16 + 32) + (16 * 32 + 64) + 2 * (32 * 32 + 64) + (32 * 64 + 128) \
        + 2 * (64 * 64 + 128)
    assert n_params(c) - n_params(a) == every == 14240
    assert n_params(c) - n_params(b) == 11488
    x = torch.randn(2, 3, 32, 32)
    assert c(x).shape == (2, 10)
    assert n_params(create_model("plain20", 10, shortcut="C")) == n_params(a)  # no shortcuts


def test_shortcut_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 7, 7)
    y = PadShortcut(2, 16)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert not y[:, 16:].any()


@pytest.mark.parametrize(("plain_name", "residual_name"), [
    ("plain20", "resnet20"), ("plain18", "resnet18")])
def test_plain_twin_has_no_residual_addition(plain_name, residual_name):
    plain = create_model(plain_name, 10, 3, 32)
    spelled = create_model(residual_name, 10, 3, 32, plain=True)
    residual = create_model(residual_name, 10, 3, 32)
    assert all(blk.shortcut is None for blk in residual_blocks(plain) + residual_blocks(spelled))
    if residual_name == "resnet20":  # shortcut A adds no parameters, so the twin matches exactly
        assert n_params(plain) == n_params(residual)
    # With γ=β=0 on each block's last norm, a block's branch outputs 0: a plain block must then
    # output exactly 0 for any input, a residual block relu(shortcut(x)). End to end, the plain
    # net's logits stop depending on the input; the residual net's do not.
    x = torch.randn(2, 3, 32, 32)
    for model, residual_kept in ((plain, False), (spelled, False), (residual, True)):
        model.eval()
        for blk in residual_blocks(model):
            nn.init.zeros_(last_norm(blk).weight)
            nn.init.zeros_(last_norm(blk).bias)
        with torch.no_grad():
            for blk in residual_blocks(model):
                out = blk(torch.rand(2, blk.conv1.in_channels, 8, 8) + 0.1)
                assert bool(out.any()) == residual_kept
            logits = model(x)
        assert (not torch.allclose(logits[0], logits[1])) == residual_kept


# --- ImageNet ResNet variants (Bag of Tricks) ---------------------------------------------------

def test_resnet_b_moves_the_stride_to_the_3x3():
    v1 = create_model("resnet50", 10, 3, 224, variant="v1").layer2[0]
    b = create_model("resnet50", 10, 3, 224, variant="B").layer2[0]
    assert (v1.conv1.stride, v1.conv2.stride) == ((2, 2), (1, 1))
    assert (b.conv1.stride, b.conv2.stride) == ((1, 1), (2, 2))


def test_resnet_c_stem_is_three_3x3_convs():
    for variant in ("C", "D"):
        model = create_model("resnet50", 10, 3, 224, variant=variant)
        convs = [m for m in model.stem if isinstance(m, nn.Conv2d)]
        assert [c.kernel_size for c in convs] == [(3, 3)] * 3
        assert [c.out_channels for c in convs] == [32, 32, 64]
        assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1)]
        assert model.layer2[0].conv2.stride == (2, 2)  # C and D include B
    v1_convs = [m for m in create_model("resnet50", 10, 3, 224).stem if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in v1_convs] == [(7, 7)]


def test_resnet_d_shortcut_avg_pools_before_a_stride_1_conv():
    model = create_model("resnet50", 10, 3, 224, variant="D")
    for stage in (model.layer2, model.layer3, model.layer4):
        pool, conv = stage[0].shortcut[0], stage[0].shortcut[1]
        assert isinstance(pool, nn.AvgPool2d) and (pool.kernel_size, pool.stride) == (2, 2)
        assert conv.kernel_size == (1, 1) and conv.stride == (1, 1)
    assert isinstance(model.layer1[0].shortcut[0], nn.Conv2d)  # stride 1: nothing to pool
    # odd feature maps (7×7 → 4×4) must line up with the strided conv path
    x = torch.randn(1, 512, 7, 7)
    assert model.layer3[0](x).shape == (1, 1024, 4, 4)


def test_small_input_stem_keeps_resolution():
    model = create_model("resnet18", 10, 3, 32)
    convs = [m for m in model.stem if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] and convs[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.stem)
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)


# --- initialisation ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet20", "resnet50", "mobilenet_v2"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_zero_gamma_only_on_the_last_norm_of_residual_blocks(name, norm):
    model = create_model(name, 10, 3, 32, norm=norm, zero_gamma=True)
    if name == "mobilenet_v2":
        zeroed = {id(b.conv[-1][1]) for b in model.modules()
                  if isinstance(b, InvertedResidual) and b.use_residual}
    else:
        zeroed = {id(last_norm(b)) for b in residual_blocks(model)}
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert zeroed and len(norms) > len(zeroed)
    for m in norms:
        assert torch.all(m.weight == (0.0 if id(m) in zeroed else 1.0))
    default = create_model(name, 10, 3, 32, norm=norm)
    assert all(torch.all(m.weight == 1) for m in default.modules() if hasattr(m, "affine"))


def test_zero_gamma_is_a_no_op_without_residual_blocks():
    for name in ("cnn4", "plain20"):
        model = create_model(name, 10, zero_gamma=True)
        assert all(torch.all(m.weight == 1) for m in model.modules()
                   if isinstance(m, nn.BatchNorm2d))


# --- every registry model, the shared API --------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize(("chans", "size"), [(1, 28), (3, 32)])
def test_every_model_runs_and_has_the_api(name, chans, size):
    model = create_model(name, 7, chans, size).eval()
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), logits)
    assert logits.shape == (2, 7) and feats.ndim == 4
    assert model.num_classes == 7
    modules = dict(model.named_modules())
    assert all(stage in modules for stage in model.stage_names)
    assert {"stem", "layer1", "fc"} <= set(model.stage_names)


def test_reset_classifier():
    model = create_model("resnet20", 10)
    model.reset_classifier(5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5) and model.num_classes == 5


def test_name_grammar():
    assert [m.out_channels for m in create_model("resnet8x4", 10).modules()
            if isinstance(m, nn.Conv2d)][-1] == 256
    assert create_model("cnn4", 10).stem[0].out_channels == 4
    assert create_model("cnn32", 10).stem[0].out_channels == 32
    assert n_params(create_model("mobilenet_v2_x0.5", 10)) == n_params(
        create_model("mobilenet_v2", 10, width=0.5))
    assert n_params(create_model("ResNet20", 10)) == n_params(create_model("resnet20", 10))
    drop = create_model("wrn-16-1", 10, dropout=0.3)
    assert sum(isinstance(m, nn.Dropout) for m in drop.modules()) == 6  # one per block


# --- taps -------------------------------------------------------------------------------------

def test_taps_capture_stage_outputs():
    model = create_model("resnet20", 10, 3, 32)
    with Taps(model, model.stage_names) as taps:
        model(torch.randn(2, 3, 32, 32))
    shapes = {name: tuple(out.shape) for name, out in taps.features.items()}
    assert shapes == {"stem": (2, 16, 32, 32), "layer1": (2, 16, 32, 32),
                      "layer2": (2, 32, 16, 16), "layer3": (2, 64, 8, 8), "pool": (2, 64),
                      "fc": (2, 10)}
    assert not any(m._forward_hooks for m in model.modules())  # removed on exit
    taps.clear()
    model(torch.randn(2, 3, 32, 32))
    assert taps.features == {}


def test_taps_unknown_name_lists_stages():
    model = create_model("resnet20", 10)
    with pytest.raises(UserError, match="did you mean 'layer3'.*stages: stem, layer1"):
        Taps(model, ["layer1", "layer9"])
    assert not any(m._forward_hooks for m in model.modules())


# --- errors and options -----------------------------------------------------------------------

def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_model_suggests_a_name():
    msg = one_line_error(create_model, "resnt20", 10)
    assert msg == ("unknown model 'resnt20' (did you mean 'resnet20'?); "
                   "`lightship models` lists them")
    assert "unknown model" in one_line_error(create_model, "resnet21", 10)
    assert "unknown model" in one_line_error(create_model, "wrn-15-2", 10)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_syncbn_on_cpu_is_a_user_error():
    for fn, args in ((check_norm, ("syncbn",)), (create_model, ("resnet20", 10))):
        kwargs = {"norm": "syncbn"} if fn is create_model else {}
        assert "use norm: bn on CPU" in one_line_error(fn, *args, **kwargs)
    assert "did you mean 'bn'" in one_line_error(check_norm, "bm")


def test_group_norm():
    assert make_norm("gn", 12, 8).num_groups == 6  # largest group count dividing 12
    assert make_norm("gn", 3, 8).num_groups == 3
    assert isinstance(make_norm("none", 8), nn.Identity)
    model = create_model("resnet20", 10, norm="gn", gn_groups=4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.num_groups == 4 for m in model.modules() if isinstance(m, nn.GroupNorm))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"shortcut": "D"}, "shortcut must be one of 'A', 'B', 'C'"),
    ({"variant": "E"}, "variant must be one of 'v1', 'B', 'C', 'D'"),
    ({"variant": "D"}, "variant='D' does not apply"),  # resnet20 is a CIFAR ResNet
    ({"width": 0}, "width must be > 0"),
    ({"dropout": 1.5}, "dropout must be in [0, 1)"),
    ({"norm": "layer"}, "unknown norm 'layer'"),
])
def test_bad_options_are_user_errors(kwargs, needle):
    assert needle in one_line_error(create_model, "resnet20", 10, **kwargs)


def test_options_a_family_cannot_honour_are_rejected():
    assert "plain=True does not apply" in one_line_error(create_model, "wrn-16-1", 10, plain=True)
    assert "shortcut='B' does not apply" in one_line_error(create_model, "resnet18", 10,
                                                            shortcut="B")
    assert "num_classes must be" in one_line_error(create_model, "resnet20", 0)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_missing_says_how_to_install():
    assert "pip install 'lightship[timm]'" in one_line_error(create_model, "timm:resnet18", 10)


def test_torchvision_models():
    model = create_model("torchvision:resnet18", 10, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        logits = model(x)
        assert torch.allclose(model.forward_head(model.forward_features(x)), logits)
    assert logits.shape == (2, 10) and "model.layer4" in model.stage_names
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4
    assert "did you mean 'resnet18'" in one_line_error(create_model, "torchvision:resnet19", 10)


# --- stats ------------------------------------------------------------------------------------

def test_model_stats_counts_macs_and_restores_modes():
    model = create_model("resnet20", 10, 3, 32)
    model.layer1.eval()  # a frozen part must stay frozen
    stats = model_stats(model, 3, 32)
    assert stats["params"] == 269_722
    assert stats["macs"] == pytest.approx(41e6, rel=0.02)
    assert model.training and not model.layer1.training and model.layer2.training
