"""AdamW against torch.optim.AdamW and a hand formula; clipping against torch; schedules against their definitions."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.optim import (DEEPSEEK_V3_SCHEDULE, WARMUP_TOKENS, AdamW, clip_grad_norm_, deepseek_v3_batch_size,
                           deepseek_v3_lr, lr_at, param_groups)


def _toy(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))


def _run(model, opt, steps=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("wd,betas", [(0.0, (0.9, 0.999)), (0.1, (0.9, 0.95)), (0.5, (0.8, 0.9))])
def test_adamw_matches_torch(wd, betas):
    a, b = _toy(), _toy()
    _run(a, AdamW(a.parameters(), lr=1e-2, betas=betas, weight_decay=wd))
    _run(b, torch.optim.AdamW(b.parameters(), lr=1e-2, betas=betas, weight_decay=wd, foreach=False))
    dev = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert dev < 1e-6


def test_adamw_one_step_by_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    g = torch.tensor([0.5, 0.1, -4.0], dtype=torch.float64)
    opt = AdamW([p], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for t in (1, 2):
        theta = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        m = (1 - 0.9 ** t) * g          # constant gradient: m_t = (1 − β1^t) g, v_t = (1 − β2^t) g²
        v = (1 - 0.95 ** t) * g * g
        expect = theta * (1 - 0.1 * 0.1) - 0.1 * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.95 ** t)).sqrt() + 1e-8)
        torch.testing.assert_close(p.detach(), expect, rtol=0, atol=1e-12)


def test_l2_differs_from_decoupled_and_equals_adam_with_l2():
    a, b, c = _toy(), _toy(), _toy()
    _run(a, AdamW(a.parameters(), lr=1e-2, weight_decay=0.3, decoupled=True), steps=20)
    _run(b, AdamW(b.parameters(), lr=1e-2, weight_decay=0.3, decoupled=False), steps=20)
    _run(c, torch.optim.Adam(c.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.3, foreach=False), steps=20)
    assert max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters())) > 1e-4
    assert max((p - q).abs().max().item() for p, q in zip(b.parameters(), c.parameters())) < 1e-6


def test_adamw_state_dict_round_trip():
    a, b = _toy(), _toy()
    oa = AdamW(a.parameters(), lr=1e-2)
    _run(a, oa, steps=5)
    b.load_state_dict(a.state_dict())
    ob = AdamW(b.parameters(), lr=1e-2)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))   # state_dict() returns live tensors
    _run(a, oa, steps=5, seed=7)
    _run(b, ob, steps=5, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kw,match", [(dict(lr=-1), "lr"), (dict(betas=(0.9, 1.0)), "betas"),
                                      (dict(eps=0), "eps"), (dict(weight_decay=-0.1), "weight_decay")])
def test_adamw_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        AdamW(_toy().parameters(), **kw)


def test_param_groups_decay_only_matrices():
    groups = param_groups(_toy(), 0.1)
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(_toy().parameters()))


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 100.0), st.floats(0.01, 10.0))
def test_clip_matches_torch(max_norm, scale):
    a, b = _toy(), _toy()
    for m in (a, b):
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
        (m(x).sum() * scale).backward()
    na = clip_grad_norm_(a.parameters(), max_norm)
    nb = torch.nn.utils.clip_grad_norm_(b.parameters(), max_norm)
    assert math.isclose(float(na), float(nb), rel_tol=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-8)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in a.parameters()]))
    assert float(after) <= max_norm * (1 + 1e-5)


def test_clip_inf_measures_without_change_and_rejects_bad_norm():
    a = _toy()
    a(torch.randn(4, 8)).sum().backward()
    before = [p.grad.clone() for p in a.parameters()]
    n = clip_grad_norm_(a.parameters(), math.inf)
    assert math.isclose(float(n), float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in before]))), rel_tol=1e-6)
    assert all(torch.equal(p.grad, g) for p, g in zip(a.parameters(), before))
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_(a.parameters(), 0.0)


def test_lr_at_phases():
    kw = dict(lr=1.0, steps=100, warmup_steps=10, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0) and lr_at(99, **kw) == pytest.approx(0.1)
    assert lr_at(10 + 89 / 2, **kw) == pytest.approx(0.55)          # cosine midpoint = (lr + min_lr)/2
    assert all(lr_at(s, **kw, schedule="constant") == 1.0 for s in range(10, 100))
    wsd = [lr_at(s, **kw, schedule="wsd", decay_frac=0.2) for s in range(100)]
    assert all(v == 1.0 for v in wsd[10:80]) and wsd[99] == pytest.approx(0.1) and wsd[85] < 1.0
    assert lr_at(50, lr=1.0, steps=100) > 0.1 and lr_at(99, lr=1.0, steps=100) == pytest.approx(0.1)  # min_lr = lr/10


@pytest.mark.parametrize("kw,match", [(dict(schedule="linear"), "schedule"), (dict(warmup_steps=200), "warmup"),
                                      (dict(steps=0), "steps"), (dict(decay_frac=0.0), "decay_frac")])
def test_lr_at_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        lr_at(0, **{**dict(lr=1.0, steps=100), **kw})


def test_report_schedule_numbers():
    s = DEEPSEEK_V3_SCHEDULE
    assert s["constant_until"] + s["cosine_tokens"] + s["tail1_tokens"] + s["tail2_tokens"] == pytest.approx(s["total_tokens"])
    assert deepseek_v3_batch_size(0) == 3072 and deepseek_v3_batch_size(469e9) == 15360 and deepseek_v3_batch_size(1e13) == 15360
    # 2000 warm-up steps at ≥ 3072·4096 tokens each, all inside the ramp
    assert 2000 * 3072 * 4096 <= WARMUP_TOKENS <= 2000 * 15360 * 4096 and WARMUP_TOKENS < 469e9
    assert deepseek_v3_lr(0) == 0 and deepseek_v3_lr(WARMUP_TOKENS) == pytest.approx(2.2e-4)
    assert deepseek_v3_lr(5e12) == 2.2e-4 and deepseek_v3_lr(10e12 + 2.15e12) == pytest.approx((2.2e-4 + 2.2e-5) / 2)
    assert deepseek_v3_lr(14.3e12 - 1) == pytest.approx(2.2e-5, rel=1e-6) and deepseek_v3_lr(14.5e12) == 2.2e-5
    assert deepseek_v3_lr(14.8e12) == 7.3e-6
    with pytest.raises(ValueError, match="tokens"):
        deepseek_v3_lr(15e12)
