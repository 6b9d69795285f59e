"""helpers.grpo: advantages, the KL estimator, the mask, the clipped loss against a brute-force loop, sampling."""
import math

import pytest
import torch

from helpers.config import ModelConfig
from helpers.grpo import (completion_logprobs, completion_mask, grpo_loss, group_advantages, kl_k3,
                          sample_completions)
from helpers.model import Transformer


def test_group_advantages():
    r = torch.tensor([[1.0, 0, 0, 1], [1, 1, 1, 1]])
    a = group_advantages(r)
    s = torch.tensor([1.0, 0, 0, 1]).std()
    assert torch.allclose(a[0], (torch.tensor([1.0, 0, 0, 1]) - 0.5) / (s + 1e-4))
    assert torch.equal(a[1], torch.zeros(4))                      # equal rewards teach nothing
    assert torch.allclose(a.sum(1), torch.zeros(2), atol=1e-6)    # zero mean per group
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.ones(3, 1))


def test_kl_k3_is_nonnegative_and_unbiased():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), 0)
    q = torch.softmax(torch.randn(6, generator=g), 0)
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    est = kl_k3(p.log()[x], q.log()[x])
    assert (est >= -1e-7).all()
    exact = float((p * (p.log() - q.log())).sum())                 # KL(p ‖ q), p = policy, q = reference
    assert abs(float(est.mean()) - exact) < 0.02 * max(exact, 0.1)
    assert torch.equal(kl_k3(p.log(), p.log()), torch.zeros(6))


def test_completion_mask():
    c = torch.tensor([[5, 6, 9, 0, 0], [9, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    m = completion_mask(c, stop_id=9)
    assert m.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def _brute(logp, old, ref, adv, mask, eps, beta):
    total = 0.0
    for i in range(len(logp)):
        toks = [t for t in range(len(logp[i])) if mask[i][t]]
        s = 0.0
        for t in toks:
            rho = math.exp(logp[i][t] - old[i][t])
            clipped = min(max(rho, 1 - eps), 1 + eps)
            d = ref[i][t] - logp[i][t]
            s += min(rho * adv[i], clipped * adv[i]) - beta * (math.exp(d) - d - 1)
        total += s / max(len(toks), 1)
    return -total / len(logp)


def test_grpo_loss_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(4, 6, generator=g) * 3
    old = logp + 0.4 * torch.randn(4, 6, generator=g)             # ratios far enough from 1 to clip
    ref = logp + 0.3 * torch.randn(4, 6, generator=g)
    adv = torch.tensor([1.5, -0.5, 0.0, -1.0])
    mask = completion_mask(torch.tensor([[1, 1, 9, 0, 0, 0], [9, 0, 0, 0, 0, 0], [1] * 6, [1, 1, 1, 1, 9, 0]]), 9)
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.04)
    want = _brute(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.04)
    assert abs(float(loss) - want) < 1e-5
    assert 0 < stats["clip_frac"] < 1 and stats["kl"] > 0


def test_grpo_gradient_direction_and_clip():
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = grpo_loss(logp, torch.zeros(2, 3), None, torch.tensor([1.0, -1.0]), torch.ones(2, 3, dtype=torch.bool))
    loss.backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()  # descent raises A>0 tokens, lowers A<0
    lp = torch.full((1, 2), 0.5, requires_grad=True)               # ratio e^0.5 > 1.2 with A > 0: clipped
    loss, st = grpo_loss(lp, torch.zeros(1, 2), None, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert torch.equal(lp.grad, torch.zeros(1, 2)) and st["clip_frac"] == 1.0


def test_sampling_and_logprobs_agree():
    torch.manual_seed(0)
    cfg = ModelConfig.cpu(n_layers=2)
    m = Transformer(cfg).eval()
    prompts = torch.randint(0, cfg.vocab_size, (3, 5))
    g = torch.Generator().manual_seed(0)
    c = sample_completions(m, prompts, 6, stop_id=7, pad_id=0, temperature=0.0, generator=g)
    ref = m.generate(prompts, 6, temperature=0.0)[:, 5:]
    mask = completion_mask(c, 7)
    assert torch.equal(c[mask], ref[:, :c.shape[1]][mask])
    lp = completion_logprobs(m, prompts, ref)
    full = m(torch.cat([prompts, ref], 1))["logits"].log_softmax(-1)
    assert torch.allclose(lp, full[:, 4:-1].gather(-1, ref[..., None])[..., 0], atol=1e-5)
    with pytest.raises(ValueError, match="max_seq_len"):
        sample_completions(m, prompts, cfg.max_seq_len, stop_id=7, pad_id=0)


def test_generate_stops_each_row_at_its_stop_token():
    torch.manual_seed(1)
    cfg = ModelConfig.cpu(n_layers=2)
    m = Transformer(cfg).eval()
    prompts = torch.randint(0, cfg.vocab_size, (2, 4))
    free = m.generate(prompts, 8, temperature=0.0)[:, 4:]
    stop = int(free[0, 1])                                        # row 0 stops at its second token
    got = sample_completions(m, prompts, 8, stop_id=stop, pad_id=0, temperature=0.0)
    assert got[0, :2].tolist() == free[0, :2].tolist() and (got[0, 2:] == 0).all()
    mask = completion_mask(got, stop)
    assert torch.equal(got[1][mask[1]], free[1, :int(mask[1].sum())])   # row 1 as without stopping, up to its stop
    if stop not in free[1].tolist():
        assert got.shape[1] == 8                                  # ran to the end for row 1
