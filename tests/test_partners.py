"""Trainable partners through the one loop: Rocket's booster (sharing, gradient block, export of
the light net alone), mutual-learning peers, adversarial discriminators with their own optimizer,
and exact resume of runs that carry partners."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lightship.cli import main
from lightship.errors import UserError
from lightship.methods.adversarial import Adversarial, critic_loss
from lightship.methods.mutual import mutual_kl
from lightship.methods.objective import TermObjective
from lightship.methods.rocket import Rocket
from lightship.models import create_model
from lightship.recipe import build_recipe
from lightship.train.loop import train

DATA = "synthetic:n=96,classes=3,size=8,channels=1"
SMALL = ["--recipe", "baseline", "--epochs", "2", "--batch-size", "16", "--lr", "0.02",
         "--no-progress"]


def _pair(light="resnet8", booster="resnet14", share="interval", share_bn=False, block=True):
    torch.manual_seed(0)
    lnet, bnet = create_model(light, 3, 1, 8), create_model(booster, 3, 1, 8)
    return lnet, bnet, Rocket(lnet, bnet, share, share_bn, 1.0, block)


def _shared_tensors(light, booster):
    """Names of the light net's parameters that are the booster's very tensors."""
    theirs = {id(p) for p in booster.parameters()}
    return {n for n, p in light.named_parameters() if id(p) in theirs}


# The authors' layouts (Rocket-Launching, rocket_interval.py / rocket_bottom.py), in our names:
# stem conv ↔ stem conv, light block j of group g ↔ booster block j of group g (conv0, conv1,
# convdim = our conv1, conv2, shortcut); BN (bns0/bns1/bns) and head (fcs) stay the light net's.
INTERVAL_16_1_40_1 = {
    "stem.weight",
    "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv1.weight",
    "layer1.1.conv2.weight",
    "layer2.0.conv1.weight", "layer2.0.conv2.weight", "layer2.0.shortcut.weight",
    "layer2.1.conv1.weight", "layer2.1.conv2.weight",
    "layer3.0.conv1.weight", "layer3.0.conv2.weight", "layer3.0.shortcut.weight",
    "layer3.1.conv1.weight", "layer3.1.conv2.weight",
}
BOTTOM_40_1 = {
    "stem.weight", "layer2.0.shortcut.weight",
    *(f"layer{s}.{j}.conv{c}.weight" for s in (1, 2) for j in range(6) for c in (1, 2)),
}


@pytest.mark.parametrize("light,share,expected,own", [
    ("wrn-16-1", "interval", INTERVAL_16_1_40_1, 1578),
    ("wrn-40-1-s2", "bottom", BOTTOM_40_1, 1514),
])
def test_rocket_shares_exactly_the_authors_tensors(light, share, expected, own):
    lnet, bnet = create_model(light, 10, 3, 32), create_model("wrn-40-1", 10, 3, 32)
    Rocket(lnet, bnet, share, False, 0.03, True)
    assert _shared_tensors(lnet, bnet) == expected
    assert len(expected) == (15 if share == "interval" else 26)
    # everything else is the light net's own: every norm, the final norm and the head
    rest = {n for n, _ in lnet.named_parameters()} - expected
    assert all(".norm" in n or n.startswith(("final.", "fc.")) for n in rest)
    assert sum(p.numel() for n, p in lnet.named_parameters() if n in rest) == own
    # and the light net still loads into its plain registry model
    create_model(light, 10, 3, 32).load_state_dict(lnet.state_dict())


@pytest.mark.parametrize("light,share,fragment", [
    ("wrn-16-1", "bottom", "wrn-40-1-s2"),  # no authors' bottom layout for a 3-stage light net
    ("wrn-40-1-s2", "interval", "share=bottom"),
    ("wrn-16-1", "stem+stage1", None),
    ("wrn-16-1", "none", None),
])
def test_rocket_layouts_a_light_net_does_not_fit_are_refused(light, share, fragment):
    lnet, bnet = create_model(light, 10, 1, 8), create_model("wrn-40-1", 10, 1, 8)
    if fragment:
        with pytest.raises(UserError, match=fragment):
            Rocket(lnet, bnet, share, False, 0.03, True)
        return
    Rocket(lnet, bnet, share, False, 0.03, True)
    tied = _shared_tensors(lnet, bnet)
    if share == "none":
        assert tied == set()
    else:
        assert tied == {"stem.weight", *(f"layer1.{j}.conv{c}.weight" for j in (0, 1)
                                          for c in (1, 2))}


@pytest.mark.parametrize("share", ["interval", "stem+stage1"])
def test_rocket_shares_module_objects_and_counts_parameters_once(share):
    light, booster, rocket = _pair(share=share)
    lonely = create_model("resnet8", 3, 1, 8)
    assert rocket.tied  # something is shared
    for path in rocket.tied:
        assert light.get_submodule(path) is booster.get_submodule(path)
        assert isinstance(light.get_submodule(path), torch.nn.Conv2d)
    assert "stem.0" in rocket.tied and "layer1.0.conv1" in rocket.tied
    assert light.stem[1] is not booster.stem[1]  # norm layers stay separate by default
    if share == "interval":
        assert {"layer2.0.conv1", "layer3.0.conv2"} <= set(rocket.tied)
    else:
        assert not any(p.startswith(("layer2", "layer3")) for p in rocket.tied)
    shared = sum(light.get_submodule(p).weight.numel() for p in rocket.tied)
    pair = torch.nn.ModuleDict({"light": light, "booster": booster})
    n = sum(p.numel() for p in pair.parameters())
    own_light = sum(p.numel() for p in lonely.parameters()) - shared
    assert n == sum(p.numel() for p in booster.parameters()) + own_light


def test_rocket_share_bn_ties_norm_layers_too():
    light, booster, rocket = _pair(share_bn=True)
    assert light.stem[1] is booster.stem[1]
    assert light.layer1[0].norm1 is booster.layer1[0].norm1


@pytest.mark.parametrize("block", [True, False])
def test_gradient_block_keeps_the_hint_off_the_booster_own_layers(block):
    light, booster, rocket = _pair(block=block)
    x = torch.randn(4, 1, 8, 8)
    rocket.hint(light(x), booster(x)).backward()
    shared = {id(light.get_submodule(p).weight) for p in rocket.tied}
    own = [(n, p) for n, p in booster.named_parameters() if id(p) not in shared]
    own_grad = sum(float(p.grad.abs().sum()) for _, p in own if p.grad is not None)
    shared_grad = sum(float(light.get_submodule(p).weight.grad.abs().sum()) for p in rocket.tied)
    assert shared_grad > 0  # the shared layers learn from the hint through the light path
    if block:
        assert own_grad == 0.0
    else:
        assert own_grad > 0


@pytest.mark.parametrize("light,booster,fragment", [
    ("resnet8", "wrn-16-1", "family"),
    ("resnet8", "resnet14x2", "equal widths"),
    ("resnet14", "resnet8", "deeper booster"),
])
def test_rocket_refuses_nets_that_cannot_share(light, booster, fragment):
    with pytest.raises(UserError, match=fragment):
        _pair(light, booster)


# ---- the objective against the authors' h(sample), transcribed from rocket_interval.py --------

def _authors_h(ys, y, targets, gamma, batch_size, grad_block, y_t=None, T=4.0, alpha=0.9):
    """rocket_interval.py h(sample): ys light logits, y booster logits, y_t the teacher's."""
    if y_t is None:  # lines 402-416
        y_course = y.detach() if grad_block else y
        return (F.cross_entropy(y, targets) + F.cross_entropy(ys, targets)
                + gamma * ((y_course - ys) * (y_course - ys)).sum() / batch_size)
    # lines 377-393 with utils.rocket_distillation: F.kl_div's old default averaged over all
    # B·C elements, then × T²·2·α
    log_p, q = F.log_softmax(ys / T, dim=1), F.softmax(y_t / T, dim=1)
    kd = F.kl_div(log_p, q, reduction="sum") / log_p.numel() * (T * T * 2.0 * alpha)
    y_tech_temp = y.detach()
    return (kd + F.cross_entropy(y, targets) + F.cross_entropy(ys, targets)
            + gamma * ((y_tech_temp - ys) * (y_tech_temp - ys)).sum() / batch_size)


class _Fixed(torch.nn.Module):
    """A 'net' whose logits are a leaf tensor, so the objective's gradients can be read off."""

    def __init__(self, z):
        super().__init__()
        self.z = torch.nn.Parameter(z.clone())

    def forward(self, x):
        return self.z


Z_L = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
Z_B = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
Z_T = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
Y = torch.tensor([0, 1])


def _ours(method, sets, teacher=None):
    """The objective's total and logit gradients for fixed light/booster(/teacher) logits."""
    cfg = build_recipe("baseline", [f"method.name={method}", "method.booster=resnet14",
                                    *sets]).method
    light, booster = create_model("resnet8", 3, 1, 8), create_model("resnet14", 3, 1, 8)
    obj = TermObjective(cfg, light, teacher, input_shape=(1, 8),
                        build_partner=lambda name: booster)
    rocket = obj.term("rocket").rocket
    rocket.booster = _Fixed(Z_B)
    zl = _Fixed(Z_L)
    total, _, _ = obj.loss(zl, torch.zeros(2, 1, 8, 8), Y)
    total.backward()
    return total.item(), zl.z.grad, rocket.booster.z.grad


@pytest.mark.parametrize("block", [True, False])
def test_rocket_objective_and_gradients_equal_the_authors_h(block):
    ours, g_l, g_b = _ours("rocket", [f"method.gradient_block={block}"])
    ys, y = Z_L.clone().requires_grad_(True), Z_B.clone().requires_grad_(True)
    theirs = _authors_h(ys, y, Y, gamma=0.03, batch_size=2, grad_block=block)
    theirs.backward()
    assert ours == pytest.approx(theirs.item(), rel=1e-6)
    assert ours == pytest.approx(0.9912645252170359, rel=1e-6)  # by hand, float64
    assert torch.allclose(g_l, ys.grad, atol=1e-6) and torch.allclose(g_b, y.grad, atol=1e-6)
    hand_b = [[-0.1065069789192008, 0.05325348945960037, 0.05325348945960037],
              [0.0776812017484818, -0.2888406008742409, 0.2111593991257591]] if block else [
              [-0.0765069789192008, 0.05325348945960037, 0.05325348945960037],
              [0.0776812017484818, -0.31884060087424093, 0.2411593991257591]]
    assert torch.allclose(g_b, torch.tensor(hand_b, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(g_l, torch.tensor(
        [[-0.24194155761708544, 0.10597077880854272, 0.10597077880854272],
         [0.05325348945960037, -0.0765069789192008, 0.023253489459600374]],
        dtype=torch.float64), atol=1e-6)


def test_rocket_plus_kd_total_equals_the_authors():
    """CE(light) keeps weight 1; the authors' α 0.9 on their KL (mean over B·C, ×2) is
    α = 2·0.9/C on lightship's batch-mean KD."""
    ours, g_l, g_b = _ours("rocket+kd", ["method.alpha=0.9", "method.kd_scale=rocket",
                                         "method.teacher.run=unused"], teacher=_Fixed(Z_T))
    ys, y = Z_L.clone().requires_grad_(True), Z_B.clone().requires_grad_(True)
    theirs = _authors_h(ys, y, Y, gamma=0.03, batch_size=2, grad_block=True, y_t=Z_T)
    theirs.backward()
    assert ours == pytest.approx(theirs.item(), rel=1e-6)
    assert ours == pytest.approx(1.384155896580674, rel=1e-6)  # by hand, float64
    assert torch.allclose(g_l, ys.grad, atol=1e-6) and torch.allclose(g_b, y.grad, atol=1e-6)


def test_rocket_defaults_are_the_authors():
    cfg = build_recipe("baseline", ["method.name=rocket", "method.booster=wrn-40-1"]).method
    assert (cfg.rocket_lambda, cfg.share, cfg.gradient_block, cfg.share_bn) == (
        0.03, "interval", True, False)


def test_adversarial_defaults_are_the_gan_kd_logs():
    """The GAN-KD log's Namespace: lrD = lrG = 0.0005, beta1 0.5, clamp ±0.03, and a cosine term
    logged at every line (weight 1: the log names none); adv_weight 0.1 is lightship's."""
    from lightship.methods.adversarial import ADAM_BETAS, Adversarial

    cfg = build_recipe("baseline", ["method.name=adversarial",
                                    "method.teacher.run=unused"]).method
    assert (cfg.adv_lr, cfg.adv_clip, cfg.adv_cos, cfg.adv_weight) == (5e-4, 0.03, 1.0, 0.1)
    assert ADAM_BETAS[0] == 0.5
    adam = Adversarial([4], [4], "hinge", cfg.adv_lr, cfg.adv_clip).optimizer
    assert adam.param_groups[0]["betas"] == (0.5, 0.999) and adam.param_groups[0]["lr"] == 5e-4
    wgan = Adversarial([4], [4], "wgan", cfg.adv_lr, cfg.adv_clip)
    for p in wgan.critics.parameters():
        p.data.fill_(1.0)
    wgan.after_side_step()
    assert all(p.max().item() == pytest.approx(0.03) for p in wgan.critics.parameters())


def test_adversarial_has_one_critic_per_stage_by_default():
    cfg = build_recipe("baseline", ["method.name=adversarial",
                                    "method.teacher.run=unused"]).method
    student, teacher = create_model("resnet8", 3, 1, 8), create_model("resnet20", 3, 1, 8)
    obj = TermObjective(cfg, student, teacher, input_shape=(1, 8))
    adv = obj.term("adversarial")
    assert adv.pairs == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    assert [c[0].in_channels for c in adv.adversarial.critics] == [16, 32, 64]
    x = torch.randn(4, 1, 8, 8)
    total, terms, _ = obj.loss(student, x, torch.tensor([0, 1, 2, 0]))
    total.backward()
    adv.adversarial.side_loss().backward()  # every critic learns on its own stage
    assert all(c[0].weight.grad.abs().sum() > 0 for c in adv.adversarial.critics)


def test_mutual_kl_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0, -1.0]])
    b = torch.tensor([[0.0, 2.0, 0.0]])
    c = torch.tensor([[0.5, 0.5, 0.0]])
    p = [F.softmax(z, 1) for z in (a, b, c)]

    def kl(q, r):  # KL(q ‖ r)
        return float((q * (q.log() - r.log())).sum())

    got = mutual_kl([a, b, c], T=1.0)
    assert float(got[0]) == pytest.approx((kl(p[1], p[0]) + kl(p[2], p[0])) / 2, rel=1e-5)
    assert float(got[2]) == pytest.approx((kl(p[0], p[2]) + kl(p[1], p[2])) / 2, rel=1e-5)


def test_critic_losses_match_their_formulas():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-1.0, 0.5])
    assert float(critic_loss("wgan", real, fake)) == pytest.approx(-0.25 - 1.25)
    assert float(critic_loss("hinge", real, fake)) == pytest.approx(0.25 + 0.75)
    bce = (F.softplus(-real).mean() + F.softplus(fake).mean()).item()
    assert float(critic_loss("bce", real, fake)) == pytest.approx(bce, rel=1e-6)


def test_an_adversarial_step_changes_discriminator_and_student():
    torch.manual_seed(0)
    student = torch.nn.Conv2d(1, 4, 3, padding=1)
    adv = Adversarial([4], [6], "wgan", lr=1e-2, clip=0.01)
    opt = torch.optim.SGD([*student.parameters(), *adv.adapters.parameters()], lr=0.1)
    before_s = student.weight.detach().clone()
    before_d = [p.detach().clone() for p in adv.critics.parameters()]
    x, t_feat = torch.randn(4, 1, 8, 8), torch.randn(4, 6, 8, 8)
    g, _ = adv.terms([student(x)], [t_feat])
    assert all(p.grad is None for p in adv.critics.parameters())  # G term: critics untouched
    g.backward()
    assert all(p.grad is None for p in adv.critics.parameters())
    opt.step()
    adv.optimizer.zero_grad()
    adv.side_loss().backward()
    adv.optimizer.step()
    adv.after_side_step()
    assert not torch.equal(student.weight, before_s)
    assert any(not torch.equal(a, b) for a, b in zip(adv.critics.parameters(), before_d,
                                                          strict=True))
    clipped = [float(p.detach().abs().max()) for p in adv.critics.parameters()]
    assert max(clipped) <= 0.01 + 1e-7  # wgan weight clipping


@pytest.mark.parametrize("method,extra,terms", [
    ("rocket", ["--booster", "resnet14"], ["ce", "booster_ce", "rocket"]),
    ("rocket+kd", ["--booster", "resnet14", "--teacher", "T"], ["ce", "kd", "rocket"]),
    ("dml", ["--set", "method.peers=2"], ["ce", "dml", "peer_ce"]),
    ("adversarial", ["--teacher", "T"], ["ce", "adversarial", "side"]),
])
def test_partner_methods_from_the_cli(method, extra, terms, teacher_run, tmp_path, capsys):
    extra = [str(teacher_run) if a == "T" else a for a in extra]
    out = tmp_path / "runs"
    assert main(["distill", "--method", method, *extra, "--data", DATA, "--model", "resnet8",
                 *SMALL, "--out", str(out), "--name", "s"]) == 0
    assert "test top-1" in capsys.readouterr().out
    recs = [json.loads(x) for x in (out / "s" / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in recs if r["kind"] == "step")
    assert all(term in step and step[term] == step[term] for term in terms)
    evals = [r for r in recs if r["kind"] == "eval"]
    if "rocket" in method:
        assert "booster_test_top1" in evals[-1]
    # the exported weights are the light net alone: they load into the plain registry model
    weights = load_file(out / "s" / "weights.safetensors")
    plain = create_model("resnet8", 3, 1, 8)
    plain.load_state_dict(weights)


def test_rocket_light_net_exports_alone_with_identical_outputs(tmp_path):
    recipe = build_recipe("baseline", [
        f"data.name={DATA}", "model.name=resnet8", "method.name=rocket",
        "method.booster=resnet14", "train.epochs=2", "train.batch_size=16", "optim.lr=0.02",
        f"run.dir={tmp_path}", "run.name=r"])
    res = train(recipe, progress=False, quiet=True)
    light = res.model.eval()
    plain = create_model("resnet8", 3, 1, 8)
    plain.load_state_dict(load_file(res.run_dir / "weights.safetensors"))
    plain.eval().to(memory_format=torch.channels_last)  # the layout the run used on CPU
    x = torch.randn(5, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(plain(x), light(x))


@pytest.mark.parametrize("method,extra", [
    ("rocket", ["method.booster=resnet14"]),
    ("adversarial+kd", []),
    ("dml", []),
])
def test_runs_with_partners_resume_exactly(method, extra, teacher_run, tmp_path):
    sets = [f"data.name={DATA}", "model.name=resnet8", f"method.name={method}", *extra,
            "train.epochs=3", "train.batch_size=16", "optim.lr=0.02", f"run.dir={tmp_path}"]
    if "kd" in method or "adversarial" in method:
        sets.append(f"method.teacher.run={teacher_run}")
    whole = train(build_recipe("baseline", [*sets, "run.name=whole"]), progress=False, quiet=True)
    part = build_recipe("baseline", [*sets, "run.name=part"])
    train(part, progress=False, quiet=True, stop_after_epochs=1)
    resumed = train(resume=tmp_path / "part", progress=False, quiet=True)
    a = load_file(whole.run_dir / "weights.safetensors")
    b = load_file(resumed.run_dir / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_method_bad_input_is_one_clear_line(teacher_run, tmp_path, capsys):
    base = ["--data", DATA, "--model", "resnet8", *SMALL, "--out", str(tmp_path)]
    assert main(["distill", "--method", "rocket", *base]) == 2
    assert "method.booster" in capsys.readouterr().err
    assert main(["distill", "--method", "kd", *base]) == 2
    assert "--teacher" in capsys.readouterr().err
    assert main(["distill", "--method", "dml", "--teacher", str(teacher_run), *base]) == 2
    assert "uses no teacher" in capsys.readouterr().err
    assert main(["distill", "--method", "rocket", "--booster", "wrn-16-1", *base]) == 2
    err = capsys.readouterr().err
    assert "family" in err and err.count("\n") == 1
    assert main(["distill", "--method", "adversarial", "--teacher", str(teacher_run), *base,
                 "--set", "method.adv_pairs=[[nope,layer3]]"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-made
