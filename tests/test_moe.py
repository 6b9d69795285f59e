"""DeepSeekMoE routing, balancing and formulas against brute-force references."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.model import ModelConfig, Transformer
from helpers.runtime import use_fast_path
from helpers.moe import MLP, MoE, bias_update, capacity_drop, classic_aux_loss, expert_load, fine_grained_split, \
    max_violation, moe_param_counts, random_routing_maxvio, route, seq_balance_loss, seq_max_violation, \
    simulate_bias_balancing


def route_bruteforce(scores, bias, k, n_groups, topk_groups, scale):
    """Per token, in plain Python: rank groups by the sum of their two best (s + b), keep topk_groups,
    take the K best (s + b) inside, gate = scale · s / Σ_selected s."""
    n, N = scores.shape
    per = N // n_groups
    W, I = [], []
    for t in range(n):
        sel = (scores[t] + bias).tolist()
        gscore = [sum(sorted(sel[g * per:(g + 1) * per], reverse=True)[:min(2, per)]) for g in range(n_groups)]
        groups = sorted(range(n_groups), key=lambda g: -gscore[g])[:topk_groups]
        cand = [e for e in range(N) if e // per in groups]
        chosen = sorted(cand, key=lambda e: -sel[e])[:k]
        s = [scores[t, e].item() for e in chosen]
        W.append([scale * x / sum(s) for x in s])
        I.append(chosen)
    return torch.tensor(W), torch.tensor(I)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), groups=st.sampled_from([(1, 1), (2, 1), (4, 2), (4, 3)]), k=st.integers(1, 3))
def test_route_matches_bruteforce(seed, groups, k):
    n_groups, topk_groups = groups
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(12, 8, generator=g, dtype=torch.float64)
    bias = torch.randn(8, generator=g, dtype=torch.float64) * 0.3
    if k > topk_groups * (8 // n_groups):
        with pytest.raises(ValueError):
            route(scores, bias, k, n_groups, topk_groups)
        return
    w, i = route(scores, bias, k, n_groups, topk_groups, 2.5)
    wr, ir = route_bruteforce(scores, bias, k, n_groups, topk_groups, 2.5)
    assert torch.equal(i, ir)
    torch.testing.assert_close(w, wr.double())
    torch.testing.assert_close(w.sum(-1), torch.full((12,), 2.5, dtype=torch.float64))


def test_bias_selects_but_does_not_gate():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.2]])
    w0, i0 = route(scores, torch.zeros(4), 2)
    assert sorted(i0[0].tolist()) == [0, 1]
    w1, i1 = route(scores, torch.tensor([0.0, -1.0, 0.0, 1.0]), 2)
    assert sorted(i1[0].tolist()) == [0, 3]
    torch.testing.assert_close(w1[0].sort()[0], torch.tensor([0.2, 0.9]) / 1.1)   # raw affinities, normalised


def test_bias_update_and_max_violation():
    b = bias_update(torch.zeros(4), torch.tensor([10.0, 2.0, 4.0, 4.0]), 0.1)
    torch.testing.assert_close(b, torch.tensor([-0.1, 0.1, 0.1, 0.1]))   # mean 5: only expert 0 is over
    assert max_violation(torch.tensor([10.0, 2.0, 4.0, 4.0])) == pytest.approx(1.0)
    assert max_violation(torch.ones(5)) == 0.0
    assert max_violation(torch.tensor([[1.0, 3.0], [2.0, 2.0]])) == pytest.approx([0.5, 0.0])
    with pytest.raises(ValueError):
        bias_update(torch.zeros(2), torch.ones(2), -1.0)


def test_balance_losses_match_formulas():
    g = torch.Generator().manual_seed(0)
    B, T, N, K = 3, 10, 6, 2
    s = torch.rand(B, T, N, generator=g)
    _, idx = route(s.view(-1, N), None, K)
    idx = idx.view(B, T, K)
    ref = 0.0
    for b in range(B):
        for i in range(N):
            f = N / (K * T) * (idx[b] == i).any(-1).sum().item()
            P = (s[b, :, i] / s[b].sum(-1)).mean().item()
            ref += f * P / B
    assert seq_balance_loss(s, idx, N, K).item() == pytest.approx(ref, rel=1e-5)
    logits = torch.randn(B * T, N, generator=g)
    f = torch.tensor([(idx.view(-1, K) == i).sum().item() / (B * T * K) for i in range(N)])
    P = logits.softmax(-1).mean(0)
    assert classic_aux_loss(logits, idx.view(-1, K), N, K).item() == pytest.approx(N * (f * P).sum().item(), rel=1e-5)
    # perfectly uniform routing and probabilities give exactly 1
    uni = torch.arange(N).repeat(4).view(-1, 2)
    assert classic_aux_loss(torch.zeros(uni.shape[0], N), uni, N, 2).item() == pytest.approx(1.0)


def moe_reference(moe: MoE, x):
    """Token loop: shared experts + Σ_selected g_i FFN_i (dense, no dispatch)."""
    xf = x.reshape(-1, x.shape[-1])
    s = torch.sigmoid(xf.float() @ moe.gate.weight.float().T)
    w, idx = route_bruteforce(s, moe.gate.bias, moe.topk, moe.gate.n_groups, moe.gate.topk_groups, moe.gate.route_scale)
    out = []
    for t in range(xf.shape[0]):
        y = moe.shared_experts(xf[t]) if moe.shared_experts is not None else 0
        for j, e in enumerate(idx[t].tolist()):
            y = y + w[t, j] * moe.experts[e](xf[t])
        out.append(y)
    return torch.stack(out).view_as(x)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("shared", [0, 1, 2])
def test_moe_forward_matches_token_loop(shared, fast):
    torch.manual_seed(0)
    cfg = ModelConfig.cpu(dim=16, q_lora_rank=8, kv_lora_rank=8, moe_inter_dim=8, n_routed_experts=8, n_shared_experts=shared, n_activated_experts=3,
                          n_expert_groups=4, n_limited_groups=2, route_scale=1.7)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    moe.gate.bias.copy_(torch.randn(8) * 0.2)
    x = torch.randn(2, 5, 16)
    with use_fast_path(fast):               # sorted dispatch (fast) and the per-expert loop (reference)
        torch.testing.assert_close(moe(x), moe_reference(moe, x), atol=1e-5, rtol=1e-5)
    assert moe.last_load.sum().item() == 2 * 5 * 3


def test_after_step_updates_bias_only_for_aux_free():
    for balance, moves in [("aux_free", True), ("none", False), ("seq_aux", False), ("aux_free+seq_aux", True)]:
        torch.manual_seed(0)
        moe = MoE(ModelConfig.cpu(dim=16, q_lora_rank=8, kv_lora_rank=8, moe_inter_dim=8, balance=balance, bias_update_speed=0.01))
        torch.nn.init.normal_(moe.gate.weight, std=1.0)
        x = torch.randn(4, 8, 16)
        moe.train()
        moe(x)
        moe(x)                                          # two micro-batches in one step: loads add up
        load = moe.step_load.clone()
        assert load.sum().item() == 2 * 4 * 8 * 2
        moe.after_step()
        expected = 0.01 * torch.sign(load.mean() - load) if moves else torch.zeros(8)
        torch.testing.assert_close(moe.gate.bias, expected)
        torch.testing.assert_close(moe.last_step_load, load)
        assert moe.step_load.sum().item() == 0
        moe.eval()
        moe(x)
        assert moe.step_load.sum().item() == 0          # evaluation does not count towards the update


def test_aux_loss_present_only_when_asked():
    x = torch.randn(2, 6, 16)
    for balance, positive in [("none", False), ("aux_free", False), ("aux", True), ("seq_aux", True)]:
        moe = MoE(ModelConfig.cpu(dim=16, q_lora_rank=8, kv_lora_rank=8, moe_inter_dim=8, balance=balance, seq_aux_alpha=0.1))
        torch.nn.init.normal_(moe.gate.weight, std=0.5)
        moe(x)
        assert (moe.aux_loss.item() > 0) == positive


def test_capacity_drop_bruteforce():
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(6, generator=g)[:2] for _ in range(50)])
    idx[:20, 0] = 0                                    # make expert 0 popular
    for cf in (0.5, 1.0, 1.25, 2.0):
        cap = math.ceil(cf * 50 * 2 / 6)
        seen, dropped = [0] * 6, torch.zeros(50, 2, dtype=torch.bool)
        for t in range(50):
            for j in range(2):
                e = idx[t, j].item()
                seen[e] += 1
                dropped[t, j] = seen[e] > cap
        r = capacity_drop(idx, 6, cf)
        assert r["capacity"] == cap
        assert r["dropped_assignments"] == pytest.approx(dropped.float().mean().item())
        assert r["tokens_with_drop"] == pytest.approx(dropped.any(-1).float().mean().item())
        assert torch.equal(r["dropped"], dropped)
    assert capacity_drop(idx, 6, None)["dropped_assignments"] == 0.0
    assert capacity_drop(idx, 6, 100.0)["dropped_assignments"] == 0.0
    with pytest.raises(ValueError):
        capacity_drop(idx, 6, 0.0)


def test_bias_simulation_balances_skewed_routing():
    g = torch.Generator().manual_seed(0)
    scores = torch.sigmoid(torch.randn(2000, 8, generator=g) + torch.linspace(-1, 1, 8))
    off = simulate_bias_balancing(scores, 2, 0.0, 50, 512)
    on = simulate_bias_balancing(scores, 2, 0.01, 200, 512)
    assert sum(off["maxvio"][-20:]) / 20 > 1.0
    assert sum(on["maxvio"][-20:]) / 20 < 0.3
    assert on["bias"][-1] < on["bias"][0]           # the favoured expert is pushed down
    assert on["bias_history"].shape == (201, 8)


def test_param_formulas_match_modules():
    cfg = ModelConfig.cpu(dim=16, q_lora_rank=8, kv_lora_rank=8, moe_inter_dim=8, n_routed_experts=8, n_shared_experts=2, n_activated_experts=3)
    moe = MoE(cfg)
    c = moe_param_counts(16, 8, 8, 2, 3)
    assert c["total"] == sum(p.numel() for p in moe.parameters())
    assert c["expert"] == sum(p.numel() for p in MLP(16, 8).parameters())
    assert c["active"] == c["total"] - 5 * c["expert"] and c["flops_per_token"] == 2 * c["active"]
    base = fine_grained_split(16, 64, n_experts=8, topk=2, granularity=1, n_shared=0)
    fine = fine_grained_split(16, 64, n_experts=8, topk=2, granularity=4, n_shared=1)
    assert (fine["n_routed"], fine["topk"], fine["moe_inter_dim"]) == (31, 7, 16)
    assert fine["total"] - fine["gate"] == base["total"] - base["gate"]       # same expert parameters
    assert fine["active"] - fine["gate"] == base["active"] - base["gate"]
    assert fine["combinations"] == math.comb(31, 7) > base["combinations"] == math.comb(8, 2)
    with pytest.raises(ValueError):
        fine_grained_split(16, 64, 8, 1, 1, 1)


def test_expert_load_counts():
    assert expert_load(torch.tensor([[0, 1], [1, 3]]), 4).tolist() == [1.0, 2.0, 0.0, 1.0]


def test_specialisation_laws():
    from helpers.moe import specialisation
    # identical per-domain distributions: no information about the domain in the expert
    same = specialisation({"a": [3, 1, 2, 2], "b": [6, 2, 4, 4]})
    assert abs(same["bits"]) < 1e-12 and same["max_bits"] == 1.0
    # disjoint experts per domain: I = log2 D
    dis = specialisation({"a": [5, 5, 0, 0, 0, 0], "b": [0, 0, 1, 1, 0, 0], "c": [0, 0, 0, 0, 2, 7]})
    assert abs(dis["bits"] - math.log2(3)) < 1e-12
    # brute force: I = H(expert) - H(expert | domain), domains weighted equally
    g = torch.Generator().manual_seed(0)
    loads = {d: torch.rand(2, 8, generator=g) * 10 for d in "xyz"}
    r = specialisation(loads)
    for layer in range(2):
        p = torch.stack([loads[d][layer].double() / loads[d][layer].double().sum() for d in "xyz"])
        h = lambda q: float(-(q * torch.log2(q)).sum())
        assert abs(r["bits"][layer] - (h(p.mean(0)) - sum(h(q) for q in p) / 3)) < 1e-9
    assert torch.allclose(r["relative"]["x"].mean(-1), torch.ones(2, dtype=torch.float64))


def test_specialisation_rejects_bad_loads():
    from helpers.moe import specialisation
    with pytest.raises(ValueError, match="at least two"):
        specialisation({"a": [1, 2]})
    with pytest.raises(ValueError, match="same shape"):
        specialisation({"a": [1, 2], "b": [1, 2, 3]})
    with pytest.raises(ValueError, match="not all zero"):
        specialisation({"a": [1, 2], "b": [0, 0]})


def test_domain_expert_loads_counts_every_routed_slot():
    from helpers.moe import domain_expert_loads
    cfg = ModelConfig.cpu(dim=32, n_layers=3, n_heads=2, q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8,
                          qk_rope_head_dim=8, v_head_dim=8, inter_dim=64, moe_inter_dim=16, vocab_size=64,
                          max_seq_len=16)
    torch.manual_seed(0)
    net = Transformer(cfg)
    x = torch.randint(0, 64, (2, 16))
    loads = domain_expert_loads(net, {"a": [(x, x)], "b": [(x, x), (x[:1], x[:1])]})
    n_moe = sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers))
    assert loads["a"].shape == (n_moe, cfg.n_routed_experts)
    assert (loads["a"].sum(-1) == 2 * 16 * cfg.n_activated_experts).all()
    assert torch.equal(loads["b"], loads["a"] + domain_expert_loads(net, {"c": [(x[:1], x[:1])]})["c"])
    assert net.training  # left as it was


def test_seq_max_violation_is_the_mean_of_per_sequence_maxvio():
    g = torch.Generator().manual_seed(1)
    B, T, N, K = 4, 16, 6, 2
    _, idx = route(torch.rand(B * T, N, generator=g), None, K)
    idx = idx.view(B, T, K)
    per = [max_violation(torch.bincount(idx[b].flatten(), minlength=N).float()) for b in range(B)]
    assert seq_max_violation(idx, N) == pytest.approx(sum(per) / B, rel=1e-12)
    # one sequence that spreads evenly, one that sends everything to two experts: (0 + (4 − 1)) / 2
    even = torch.arange(8).view(1, 4, 2)
    skew = torch.tensor([0, 1]).repeat(4).view(1, 4, 2)
    assert seq_max_violation(torch.cat([even, skew]), 8) == pytest.approx(1.5)
    # a batch can be balanced while its sequences are not: the batch MaxVio is 0 here, per sequence it is 1
    halves = torch.tensor([[[0, 1]] * 4, [[2, 3]] * 4])
    assert max_violation(expert_load(halves, 4)) == 0.0 and seq_max_violation(halves, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[batch, tokens, K\]"):
        seq_max_violation(idx.view(-1, K), N)
    with pytest.raises(ValueError, match="expert ids"):
        seq_max_violation(idx, 3)


def test_random_routing_maxvio_floor():
    # 2 tokens, 2 experts, top-1: loads (2, 0) or (0, 2) with probability 1/2 (MaxVio 1), else (1, 1) (MaxVio 0)
    r = random_routing_maxvio(2, 2, 1, trials=4000, seed=0)
    assert r["mean"] == pytest.approx(0.5, abs=0.03) and r["trials"] == 4000
    assert random_routing_maxvio(5, 4, 4, trials=3)["mean"] == 0.0          # every token uses every expert
    small, large = random_routing_maxvio(64, 8, 2, trials=100), random_routing_maxvio(4096, 8, 2, trials=100)
    assert large["mean"] < small["mean"] / 4                                 # noise falls like 1/√n
    assert random_routing_maxvio(64, 8, 2, trials=50, seed=3) == random_routing_maxvio(64, 8, 2, trials=50, seed=3)
    with pytest.raises(ValueError, match="n_tokens and trials"):
        random_routing_maxvio(0, 8, 2)
