"""Each transfer loss against a hand computation on small tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightship.methods.attention import at_loss, attention_map
from lightship.methods.kd import dkd_loss, dkd_warmup, hint_loss, kd_loss, rocket_kd_weight
from lightship.methods.terms import TERMS

S = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
T_ = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, 2.0]])


def _softmax(row, T=1.0):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def test_kd_matches_hand_computation():
    T = 2.0
    total = 0.0
    for s, t in zip(S.tolist(), T_.tolist(), strict=True):
        ps, pt = _softmax(s, T), _softmax(t, T)
        total += sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    expected = total / 2 * T * T
    assert kd_loss(S, T_, T).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(S, S, T).item() == pytest.approx(0.0, abs=1e-7)


# the authors' formula uses kl_div's old 'mean' on purpose (batch × classes): torch warns
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("classes", [10, 100])
def test_rocket_kd_weight_is_the_authors_scale(classes):
    """The Rocket authors' ``distillation``: F.kl_div at its old default (mean over batch ×
    classes) × 2·T²·α. On the batch-mean KD that is α·2/K: 0.18 at K=10, 0.018 at K=100."""
    assert rocket_kd_weight(0.9, classes) == pytest.approx(2 * 0.9 / classes)
    assert rocket_kd_weight(0.9, 10) == pytest.approx(0.18)
    assert rocket_kd_weight(0.9, 100) == pytest.approx(0.018)
    g = torch.Generator().manual_seed(classes)
    s, t = torch.randn(8, classes, generator=g), torch.randn(8, classes, generator=g)
    T, alpha = 4.0, 0.9
    theirs = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="mean") \
        * (T * T * 2.0 * alpha)
    assert (rocket_kd_weight(alpha, classes) * kd_loss(s, t, T)).item() == \
        pytest.approx(theirs.item(), rel=1e-5)


def test_kd_term_on_the_rocket_scale_reads_the_class_count():
    from lightship.methods.terms import TermBatch
    from lightship.recipe import MethodCfg

    for classes in (10, 100):
        s, t = torch.randn(4, classes), torch.randn(4, classes)
        b = TermBatch(s, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), s,
                      t, 0)
        for scale, weight in (("batch", 0.9), ("rocket", 1.8 / classes)):
            term = TERMS["kd"](MethodCfg(name="kd", alpha=0.9, kd_scale=scale), None)
            (addend,), _ = term(b)
            assert addend.item() == pytest.approx(weight * kd_loss(s, t, 4.0).item(), rel=1e-6)
            assert term.ce_weight() == pytest.approx(0.1)


def test_hint_both_reductions():
    sq = (S - T_).pow(2)
    assert hint_loss(S, T_, "sum").item() == pytest.approx(sq.sum().item() / 2)
    assert hint_loss(S, T_, "mean").item() == pytest.approx(sq.mean().item())
    with pytest.raises(ValueError, match="sum"):
        hint_loss(S, T_, "max")


def test_dkd_parts_match_hand_computation():
    T, y = 4.0, torch.tensor([0, 2])
    tckd = nckd = 0.0
    for s, t, g in zip(S.tolist(), T_.tolist(), y.tolist(), strict=True):
        ps, pt = _softmax(s, T), _softmax(t, T)
        bs, bt = [ps[g], 1 - ps[g]], [pt[g], 1 - pt[g]]
        tckd += sum(b * math.log(b / a) for a, b in zip(bs, bt, strict=True))
        ns = _softmax([v for k, v in enumerate(s) if k != g], T)
        nt = _softmax([v for k, v in enumerate(t) if k != g], T)
        nckd += sum(b * math.log(b / a) for a, b in zip(ns, nt, strict=True))
    tckd, nckd = tckd / 2 * T * T, nckd / 2 * T * T
    total, parts = dkd_loss(S, T_, y, alpha=1.0, beta=8.0, T=T)
    assert parts["tckd"].item() == pytest.approx(tckd, rel=1e-5)
    assert parts["nckd"].item() == pytest.approx(nckd, rel=1e-5)
    assert total.item() == pytest.approx(tckd + 8 * nckd, rel=1e-5)
    assert dkd_loss(S, S, y)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert [dkd_warmup(e, 20) for e in (0, 10, 20, 40)] == [0.0, 0.5, 1.0, 1.0]


def test_attention_map_and_loss_by_hand():
    a = torch.arange(8.0).reshape(1, 2, 2, 2)
    q = (a.pow(2).mean(1)).flatten(1)
    assert torch.allclose(attention_map(a), q / q.norm())
    b = torch.ones(1, 3, 2, 2)
    qb = torch.full((1, 4), 0.5)
    expected = (q / q.norm() - qb).pow(2).mean().item()
    assert at_loss([a], [b]).item() == pytest.approx(expected, rel=1e-6)
    big = torch.ones(1, 3, 4, 4)  # pooled to 2×2 before the map: same as b
    assert at_loss([a, a], [b, big]).item() == pytest.approx(2 * expected, rel=1e-6)
    assert at_loss([a], [a]).item() == 0.0


def test_gradients_reach_the_student_only_and_bf16_gives_float32():
    s = S.clone().requires_grad_(True)
    t = T_.clone().requires_grad_(True)
    (kd_loss(s, t.detach()) + hint_loss(s, t.detach())).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    assert kd_loss(S.bfloat16(), T_.bfloat16()).dtype == torch.float32
    assert dkd_loss(S.bfloat16(), T_.bfloat16(), torch.tensor([0, 1]))[0].dtype == torch.float32



def _dkd_reference(s, t, y, T):
    """(TCKD, NCKD) in float64 and log space, the target column dropped outright for NCKD."""
    s, t = s.double() / T, t.double() / T
    b = len(y)
    keep = ~F.one_hot(y, s.shape[1]).bool()

    def binary(z):  # log [p(target), p(rest)]
        lse = z.logsumexp(1)
        rest = z[keep].view(b, -1).logsumexp(1)
        return torch.stack([z[torch.arange(b), y] - lse, rest - lse], 1)

    def kl(log_p, log_q):  # Σ_n KL(p ‖ q) / B, p the teacher's
        return (log_p.exp() * (log_p - log_q)).sum() / b

    rest_t, rest_s = t[keep].view(b, -1), s[keep].view(b, -1)
    return (kl(binary(t), binary(s)) * T * T,
            kl(rest_t.log_softmax(1), rest_s.log_softmax(1)) * T * T)


@pytest.mark.parametrize("std", [1.0, 10.0, 40.0, 80.0])
def test_dkd_stays_exact_when_the_softmax_saturates(std):
    """Logit std 40-80 used to lose up to 5 %: 1 − p(target) cancelled to 0 in float32."""
    g = torch.Generator().manual_seed(0)
    s, t = (torch.randn(256, 100, generator=g) * std for _ in range(2))
    y = t.argmax(1)
    s32, s64 = s.clone().requires_grad_(True), s.double().requires_grad_(True)
    total, parts = dkd_loss(s32, t, y, alpha=1.0, beta=8.0, T=4.0)
    tckd, nckd = _dkd_reference(s64, t, y, 4.0)
    ref = tckd + 8.0 * nckd
    assert total.item() == pytest.approx(ref.item(), rel=1e-4)
    assert parts["tckd"].item() == pytest.approx(tckd.item(), rel=1e-4)
    assert parts["nckd"].item() == pytest.approx(nckd.item(), rel=1e-4)
    total.backward()
    ref.backward()
    err = (s32.grad.double() - s64.grad).norm() / s64.grad.norm()
    assert err < 1e-4
