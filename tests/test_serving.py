"""Sparse serving: routing traces against the model's own counts, the balancer's constraints and its bounds against
brute force, re-planning on a stream, and the prefill/decode simulation against hand-worked timelines."""
import itertools
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.config import ModelConfig
from helpers.model import Transformer
from helpers.moe import max_violation, route
from helpers.serving import (Placement, Request, RoutingTrace, balanced_packing, contiguous_placement, domain_loads,
                             drift_schedule, gpu_loads, hierarchical_placement, load_ratio, main_moe_layers,
                             make_requests, percentiles, placement_report, replan_stream, replicate, routing_traces,
                             sample_batch_loads, simulate_serving)


# ---- routing traces ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = ModelConfig.cpu(dim=16, n_heads=2, q_lora_rank=8, kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4,
                          v_head_dim=8, inter_dim=32, moe_inter_dim=8, n_layers=3, n_dense_layers=1, vocab_size=64,
                          max_seq_len=16, n_routed_experts=8, n_activated_experts=2, n_expert_groups=2,
                          n_limited_groups=1, mtp_depth=1)
    model = Transformer(cfg).eval()
    for m in model.moe_layers():            # a non-zero selection bias, so the check below covers it
        m.gate.bias.copy_(torch.linspace(-0.1, 0.1, 8))
    return model


def _batches():
    g = torch.Generator().manual_seed(1)
    return {"a": torch.randint(0, 64, (3, 16), generator=g), "b": [torch.randint(0, 64, (2, 16), generator=g)] * 2}


def test_main_moe_layers_leave_out_mtp(tiny):
    main = main_moe_layers(tiny)
    assert len(main) == 2 and len(tiny.moe_layers()) == 3
    assert all(a is b for a, b in zip(main, tiny.moe_layers()[:2]))
    assert tiny.moe_layers()[2] is tiny.mtp[0].block.ffn


def test_routing_traces_match_the_gate(tiny):
    batches = _batches()
    tr = routing_traces(tiny, batches)
    assert isinstance(tr, RoutingTrace)
    assert tr.indices.shape == (2, 3 * 16 + 4 * 16, 2) and tr.n_experts == 8 and tr.domains == ("a", "b")
    assert (tr.domain == 0).sum() == 48 and (tr.domain == 1).sum() == 64
    # independent check: rerun, capture the gate's affinities, and re-route them with helpers.moe.route
    scores = {0: [], 1: []}
    hooks = [m.gate.register_forward_hook(lambda mod, i, o, k=k: scores[k].append(o[2])) for k, m in
             enumerate(main_moe_layers(tiny))]
    mtp_calls = []
    hooks.append(tiny.mtp[0].block.ffn.gate.register_forward_hook(lambda *a: mtp_calls.append(1)))
    with torch.no_grad():
        for x in [batches["a"], *batches["b"]]:
            tiny(x)
    for h in hooks:
        h.remove()
    assert not mtp_calls, "a plain forward must not run the MTP module"
    for k, m in enumerate(main_moe_layers(tiny)):
        _, idx = route(torch.cat(scores[k]), m.gate.bias, 2, 2, 1)
        assert torch.equal(idx, tr.indices[k])
    # the trace's loads equal the MoE layer's own count over the last batch
    for k, m in enumerate(main_moe_layers(tiny)):
        assert torch.equal(tr.indices[k, -32:].flatten().bincount(minlength=8).float(), m.last_load)


def test_trace_loads_and_domain_loads(tiny):
    tr = routing_traces(tiny, _batches())
    load = tr.load()
    assert load.shape == (2, 8) and torch.all(load.sum(1) == 2 * tr.n_tokens)
    assert torch.allclose(tr.load("a") + tr.load("b"), load)
    dl = domain_loads(tr)
    assert set(dl) == {"a", "b"}
    for v in dl.values():
        assert torch.allclose(v.sum(1), torch.full((2,), 2.0, dtype=torch.float64))
    assert torch.allclose(dl["a"] * 48, tr.load("a"))
    with pytest.raises(ValueError, match=r"unknown domain 'c'.*\['a', 'b'\]"):
        tr.load("c")


def test_routing_traces_rejects_bad_batches(tiny):
    with pytest.raises(ValueError, match=r"batches must be a non-empty dict.*domain"):
        routing_traces(tiny, [])
    with pytest.raises(ValueError, match=r"batches\['a'\] must hold LongTensors \[rows, T\]"):
        routing_traces(tiny, {"a": torch.zeros(16, dtype=torch.long)})
    dense = Transformer(ModelConfig.dense_tiny(vocab_size=64, dim=16, n_heads=2, inter_dim=32, max_seq_len=16))
    with pytest.raises(ValueError, match=r"no MoE layers.*MoE config"):
        routing_traces(dense, {"a": torch.zeros(1, 4, dtype=torch.long)})


def _toy_trace():
    idx = torch.tensor([[[0, 1], [0, 2], [3, 1], [2, 3]], [[1, 0], [1, 0], [2, 0], [3, 2]]])
    return RoutingTrace(idx, torch.tensor([0, 0, 1, 1]), ("x", "y"), 4)


def test_sample_batch_loads():
    tr = _toy_trace()
    sched = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    a = sample_batch_loads(tr, sched, 50, seed=3)
    assert a.shape == (3, 2, 4) and torch.all(a.sum(-1) == 100)
    assert torch.equal(a, sample_batch_loads(tr, sched, 50, seed=3))
    # a pure-x batch can only use experts that x's tokens use
    assert a[0, 0, 3] == 0 and a[0, 1, 2] == 0 and a[0, 1, 3] == 0
    assert a[1, 0, 0] == 0 and a[1, 1, 1] == 0
    with pytest.raises(ValueError, match=r"schedule must be \[n_batches, 2\]"):
        sample_batch_loads(tr, torch.ones(3, 3) / 3, 10)
    with pytest.raises(ValueError, match=r"summing to 1.*normalise"):
        sample_batch_loads(tr, torch.ones(3, 2), 10)
    with pytest.raises(ValueError, match=r"batch_tokens must be an int ≥ 1, got 0"):
        sample_batch_loads(tr, sched, 0)


# ---- packing and replication against brute force -------------------------------------------------------------

def _brute_pack(w, n_bins, cap):
    best = math.inf
    for assign in itertools.product(range(n_bins), repeat=len(w)):
        if max(assign.count(b) for b in range(n_bins)) > cap:
            continue
        best = min(best, max(sum(x for x, a in zip(w, assign) if a == b) for b in range(n_bins)))
    return best


def _bins_max(w, bins):
    return max(sum(w[i] for i in b) for b in bins)


def test_balanced_packing_places_every_item_once():
    w = [5, 1, 4, 4, 2, 3, 0, 7]
    bins = balanced_packing(w, 3, 3)
    assert sorted(i for b in bins for i in b) == list(range(8)) and max(map(len, bins)) <= 3
    assert balanced_packing(w, 3, 3) == bins                            # deterministic
    # labels: two items of the same label avoid each other while another bin has room
    bins = balanced_packing([3, 3, 1, 1], 2, 2, labels=["a", "a", "b", "b"])
    assert all(len({["a", "a", "b", "b"][i] for i in b}) == 2 for b in bins)


def test_balanced_packing_against_brute_force():
    """Within 4/3 of the optimal max load on these seeded small cases (observed, not a theorem: with exact slot
    counts the packing has no such guarantee), optimal on most; refining never hurts the greedy."""
    rng, optimal, n = random.Random(0), 0, 0
    for _ in range(150):
        n_bins, cap = rng.choice([2, 3]), rng.choice([2, 3])
        w = [rng.choice([rng.random(), rng.randint(0, 9), rng.paretovariate(1.0)]) for _ in range(rng.randint(n_bins, n_bins * cap))]
        opt = _brute_pack(w, n_bins, cap)
        got = _bins_max(w, balanced_packing(w, n_bins, cap))
        assert got <= _bins_max(w, balanced_packing(w, n_bins, cap, refine=False)) + 1e-12
        assert opt - 1e-12 <= got <= 4 / 3 * opt + 1e-12
        optimal += got <= opt + 1e-12
        n += 1
    assert optimal / n >= 0.85


def test_balanced_packing_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"5 items do not fit in 2 bins × 2 slots; raise capacity"):
        balanced_packing([1] * 5, 2, 2)
    with pytest.raises(ValueError, match=r"capacity must be an int ≥ 1, got 0"):
        balanced_packing([1], 2, 0)
    with pytest.raises(ValueError, match=r"weights must be finite and ≥ 0"):
        balanced_packing([1, -1], 2, 1)
    with pytest.raises(ValueError, match=r"labels has 1 entries for 2 weights"):
        balanced_packing([1, 2], 2, 1, labels=["a"])


@settings(max_examples=60, deadline=None)
@given(load=st.lists(st.integers(0, 30), min_size=1, max_size=5), extra=st.integers(0, 4))
def test_replicate_is_optimal(load, extra):
    r = replicate(load, len(load) + extra)
    assert sum(r) == len(load) + extra and min(r) >= 1
    best = min(max(l / c for l, c in zip(load, combo))
               for combo in itertools.product(range(1, extra + 2), repeat=len(load)) if sum(combo) == len(load) + extra)
    assert max(l / c for l, c in zip(load, r)) == pytest.approx(best)


def test_replicate_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"n_replicas must be an int ≥ 3.*at least one replica"):
        replicate([1, 2, 3], 2)
    with pytest.raises(ValueError, match=r"finite loads ≥ 0"):
        replicate([1, float("nan")], 3)
    with pytest.raises(ValueError, match=r"1-D sequence.*load\[layer\]"):
        replicate([[1, 2]], 3)


# ---- placements -------------------------------------------------------------------------------------------

def test_placement_loads_by_hand():
    p = Placement(((0, 1), (0, 2), (3, 3)), 1, 4)
    assert p.n_gpus == 3 and p.n_nodes == 3 and p.slots_per_gpu == 2 and p.replicas() == [2, 1, 1, 2]
    assert p.idle_copies() == 1                                         # the second copy of 3 shares nothing
    assert p.node_of_expert() == [{0, 1}, {0}, {1}, {2}]
    loads = gpu_loads(p, [8, 1, 2, 6])
    assert loads.tolist() == [5.0, 6.0, 6.0]
    assert load_ratio(p, [8, 1, 2, 6]) == pytest.approx(6 / (17 / 3)) == pytest.approx(1 + max_violation(loads))
    with pytest.raises(ValueError, match=r"load has 3 experts but the placement holds 4"):
        gpu_loads(p, [1, 2, 3])
    with pytest.raises(ValueError, match=r"finite loads ≥ 0"):
        gpu_loads(p, [1, -2, 3, 4])


def test_contiguous_placement():
    p = contiguous_placement(8, 2, 2)
    assert p.gpus == ((0, 1), (2, 3), (4, 5), (6, 7)) and p.replicas() == [1] * 8
    with pytest.raises(ValueError, match=r"8 experts cannot be split evenly over 3 GPUs"):
        contiguous_placement(8, 3, 1)


def _check_constraints(p: Placement, load, n_nodes, per_node, slots, n_groups):
    n = len(load)
    assert p.n_gpus == n_nodes * per_node and p.gpus_per_node == per_node
    assert all(len(g) == slots for g in p.gpus)                           # exactly S replicas per GPU
    assert min(p.replicas()) >= 1 and sum(p.replicas()) == n_nodes * per_node * slots
    size = n // n_groups
    nodes = p.node_of_expert()
    for k in range(n_groups):                                            # a group's experts stay on one node
        assert len(set.union(*(nodes[e] for e in range(k * size, (k + 1) * size)))) == 1
    assert gpu_loads(p, load).sum().item() == pytest.approx(float(sum(load)))   # load conserved


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n_nodes=st.sampled_from([1, 2, 4]), per_node=st.sampled_from([1, 2, 4]),
       groups_per_node=st.sampled_from([1, 2]), experts_per_gpu=st.sampled_from([1, 2]), extra=st.integers(0, 3))
def test_hierarchical_placement_constraints_and_never_worse(data, n_nodes, per_node, groups_per_node,
                                                            experts_per_gpu, extra):
    n_groups = n_nodes * groups_per_node
    n = n_nodes * per_node * experts_per_gpu
    if n % n_groups:
        return
    load = data.draw(st.lists(st.one_of(st.integers(0, 1000), st.floats(0, 1e3)), min_size=n, max_size=n))
    base = hierarchical_placement(load, n_nodes, per_node, experts_per_gpu, n_groups)
    red = hierarchical_placement(load, n_nodes, per_node, experts_per_gpu + extra, n_groups)
    _check_constraints(base, load, n_nodes, per_node, experts_per_gpu, n_groups)
    _check_constraints(red, load, n_nodes, per_node, experts_per_gpu + extra, n_groups)
    assert base.replicas() == [1] * n
    peak_red, peak_base = gpu_loads(red, load).max().item(), gpu_loads(base, load).max().item()
    assert peak_red <= peak_base * (1 + 1e-12) + 1e-12                   # redundancy never raises the max load
    assert peak_red >= sum(load) / (n_nodes * per_node) * (1 - 1e-12)     # and cannot beat the mean


def test_redundancy_never_raises_the_max_load_seeded_sweep():
    """Without the balancer's guard, redundancy raises the max load on ~1% of such random cases (greedy steps
    chosen separately); with it, never."""
    rng = random.Random(0)
    for _ in range(1000):
        n_nodes, per_node, per_gpu = rng.choice([1, 2]), rng.choice([2, 3, 4]), rng.choice([1, 2, 3])
        n, n_groups = n_nodes * per_node * per_gpu, n_nodes * rng.choice([1, 2])
        if n % n_groups:
            continue
        load = [rng.choice([rng.randint(0, 50), 10 * rng.paretovariate(1.0)]) for _ in range(n)]
        base = gpu_loads(hierarchical_placement(load, n_nodes, per_node, per_gpu, n_groups), load).max().item()
        red = hierarchical_placement(load, n_nodes, per_node, per_gpu + rng.choice([1, 2, 3]), n_groups)
        assert gpu_loads(red, load).max().item() <= base * (1 + 1e-12) + 1e-12, (load, n_nodes, per_node, per_gpu)


def _brute_placement(load, n_nodes, per_node, slots, n_groups):
    """The lowest max GPU load over every placement obeying the constraints (copies share their expert's load)."""
    size, per = len(load) // n_groups, n_groups // n_nodes
    best = math.inf
    for perm in itertools.permutations(range(n_groups)):
        peak = 0.0
        for k in range(n_nodes):
            experts = [e for g in perm[k * per:(k + 1) * per] for e in range(g * size, (g + 1) * size)]
            multisets = list(itertools.combinations_with_replacement(experts, slots))
            node_best = math.inf
            for combo in itertools.combinations_with_replacement(multisets, per_node):
                r = {e: sum(m.count(e) for m in combo) for e in experts}
                if min(r.values()) == 0:
                    continue
                node_best = min(node_best, max(sum(load[e] / r[e] for e in m) for m in combo))
            peak = max(peak, node_best)
        best = min(best, peak)
    return best


def test_hierarchical_placement_against_brute_force():
    """On these seeded small clusters the balancer stays within 4/3 of the best placement (observed, not
    guaranteed) and is optimal on most cases."""
    rng, optimal, n_cases = random.Random(0), 0, 0
    shapes = [(1, 2, 2, 2, 1), (1, 2, 2, 3, 1), (2, 1, 2, 2, 2), (2, 2, 4, 2, 4), (2, 2, 4, 3, 2), (1, 3, 3, 2, 1),
              (1, 2, 4, 3, 1), (2, 2, 8, 3, 2)]                              # the last: the course model's 8 experts
    for _ in range(15):
        for n_nodes, per_node, n, slots, n_groups in shapes:
            load = [float(rng.choice([rng.randint(0, 20), rng.paretovariate(1.0)])) for _ in range(n)]
            opt = _brute_placement(load, n_nodes, per_node, slots, n_groups)
            got = gpu_loads(hierarchical_placement(load, n_nodes, per_node, slots, n_groups), load).max().item()
            assert opt * (1 - 1e-12) <= got <= 4 / 3 * opt + 1e-12
            optimal += got <= opt * (1 + 1e-9)
            n_cases += 1
    assert optimal / n_cases >= 0.85


def test_hierarchical_placement_moves_load_off_a_hot_expert():
    load = [40, 10, 10, 10, 10, 10, 10, 10]
    plain = hierarchical_placement(load, 1, 4, 2)
    red = hierarchical_placement(load, 1, 4, 3)
    assert gpu_loads(plain, load).max() == 50                             # the hot expert plus the lightest
    assert red.replicas()[0] >= 2 and gpu_loads(red, load).max() < 40
    assert gpu_loads(contiguous_placement(8, 1, 4), load).max() == 50


def test_hierarchical_placement_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"n_groups = 3 does not divide the 8 experts"):
        hierarchical_placement([1] * 8, 1, 2, 4, 3)
    with pytest.raises(ValueError, match=r"2 groups cannot be spread evenly over n_nodes = 4"):
        hierarchical_placement([1] * 8, 4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"cannot hold the 8 experts of a node; need slots_per_gpu ≥ 4"):
        hierarchical_placement([1] * 8, 1, 2, 3)
    with pytest.raises(ValueError, match=r"gpus_per_node must be an int ≥ 1, got 0"):
        hierarchical_placement([1] * 8, 1, 0, 3)
    with pytest.raises(ValueError, match=r"finite loads ≥ 0"):
        hierarchical_placement([1, -1], 1, 1, 2)


def test_placement_report_is_the_widget_logic():
    plan = torch.tensor([[40.0, 10, 10, 10, 10, 10, 10, 10], [5, 5, 5, 5, 30, 5, 5, 5]])
    serve = plan.flip(-1)
    rep = placement_report(plan, serve, 2, 2, 1, 2)
    assert set(rep) == {"contiguous", "balanced", "redundant"}
    for name, v in rep.items():
        assert v["gpu_loads"].shape == (2, 4)
        want = sum(load_ratio(p, s) for p, s in zip(v["placements"], serve)) / 2
        assert v["ratio"] == pytest.approx(want)
        assert torch.allclose(v["gpu_loads"].sum(1), serve.sum(1).double())
    assert rep["redundant"]["placements"][0].slots_per_gpu == 3 and rep["balanced"]["placements"][0].slots_per_gpu == 2
    same = placement_report(plan[0], plan[0], 1, 4, 1)
    assert same["redundant"]["ratio"] <= same["balanced"]["ratio"] <= same["contiguous"]["ratio"]
    with pytest.raises(ValueError, match=r"must have the same shape"):
        placement_report(plan, plan[0], 1, 4, 1)
    with pytest.raises(ValueError, match=r"redundant_per_gpu must be an int ≥ 0.*use 0"):
        placement_report(plan, plan, 1, 4, -1)
    with pytest.raises(ValueError, match=r"8 experts cannot be split evenly over 3 GPUs"):
        placement_report(plan, plan, 1, 3, 1)


# ---- drift and re-planning --------------------------------------------------------------------------------

def test_drift_schedule():
    s = drift_schedule(40, 4, period=20, sharpness=3.0)
    assert s.shape == (40, 4) and torch.allclose(s.sum(1), torch.ones(40, dtype=torch.float64))
    assert torch.allclose(s[:20], s[20:])                                 # periodic
    assert s[0].argmax() == 0 and s[5].argmax() == 1 and s[10].argmax() == 2   # a quarter period per domain
    assert torch.allclose(drift_schedule(5, 3, 7, 0.0), torch.full((5, 3), 1 / 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"period must be a number of batches > 0"):
        drift_schedule(5, 3, 0)
    with pytest.raises(ValueError, match=r"sharpness must be a finite number ≥ 0"):
        drift_schedule(5, 3, 4, -1.0)
    with pytest.raises(ValueError, match=r"n_domains must be an int ≥ 1"):
        drift_schedule(5, 0, 4)


def test_replan_stream():
    steady = torch.tensor([[40.0, 10, 10, 10, 10, 10, 10, 10]]).expand(12, 1, 8)
    ref = load_ratio(hierarchical_placement(steady[0, 0], 1, 4, 3), steady[0, 0])
    for every in (0, 1, 3, 50):
        r = replan_stream(steady, every, 1, 4, 3, warmup=2)
        assert len(r["ratio"]) == 10 and r["mean"] == pytest.approx(ref)
    assert replan_stream(steady, 3, 1, 4, 3, warmup=2)["plans"] == 4      # at t = 2, 5, 8, 11
    assert replan_stream(steady, 0, 1, 4, 3, warmup=2)["plans"] == 10
    # a load that moves: a plan made once is worse than one made on the batch itself
    g = torch.Generator().manual_seed(0)
    moving = torch.stack([torch.roll(torch.tensor([[60.0, 5, 5, 5, 5, 5, 5, 5]]), t, -1) for t in range(10)])
    moving = moving + torch.rand(10, 1, 8, generator=g)
    once = replan_stream(moving, 100, 1, 4, 3, warmup=1)
    oracle = replan_stream(moving, 0, 1, 4, 3, warmup=1)
    assert oracle["mean"] < once["mean"]
    with pytest.raises(ValueError, match=r"batch_loads must be \[n_batches, n_layers, n_experts\]"):
        replan_stream(steady[0], 1, 1, 4, 3)
    with pytest.raises(ValueError, match=r"replan_every must be an int ≥ 0.*oracle"):
        replan_stream(steady, -1, 1, 4, 3)
    with pytest.raises(ValueError, match=r"warmup = 12 leaves no batch"):
        replan_stream(steady, 1, 1, 4, 3, warmup=12)


# ---- prefill/decode disaggregation ------------------------------------------------------------------------

def test_make_requests():
    reqs = make_requests(2000, 50.0, (10, 20), (1, 5), seed=1)
    assert reqs == make_requests(2000, 50.0, (10, 20), (1, 5), seed=1)
    arr = [r.arrival_ms for r in reqs]
    assert arr == sorted(arr) and all(10 <= r.prompt <= 20 and 1 <= r.output <= 5 for r in reqs)
    assert 2000 / (arr[-1] / 1000) == pytest.approx(50.0, rel=0.1)        # Poisson at the asked rate
    with pytest.raises(ValueError, match=r"rate_per_s must be a finite number > 0"):
        make_requests(3, 0.0)
    with pytest.raises(ValueError, match=r"prompt_range must be \(lo, hi\) ints with 1 ≤ lo ≤ hi"):
        make_requests(3, 1.0, (5, 2))


def test_simulate_serving_by_hand():
    # one pool, one worker: A prefills (10 tokens × 1 ms), decodes; B arrives at 12 ms and its prefill stalls A
    reqs = [Request(0.0, 10, 4), Request(12.0, 5, 2)]
    out = simulate_serving(reqs, 1.0, (2.0, 1.0), n_workers=1)
    # A: first token at 10; a step of 3 ms (batch 1) → 13; B's prefill 13 → 18; a batch-2 step (4 ms) → 22; A alone → 25
    assert out["token_times"][0] == [10.0, 13.0, 22.0, 25.0]
    assert out["token_times"][1] == [18.0, 22.0]
    assert out["ttft"] == [10.0, 6.0] and out["tpot"] == [5.0, 4.0]
    assert out["max_gap"] == [9.0, 4.0]                                   # A waited through B's prefill
    # disaggregated: one prefill worker, one decode worker, 1 ms transfer
    out = simulate_serving(reqs, 1.0, (2.0, 1.0), n_workers=2, n_prefill=1, transfer_ms=1.0)
    # A: prefill → 10, ready 11, steps 11 → 14 → 17; B: prefill 12 → 17, ready 18 joins at 20 (A done at 20)
    assert out["token_times"][0] == [10.0, 14.0, 17.0, 20.0]
    assert out["token_times"][1] == [17.0, 23.0]
    assert out["max_gap"][0] == 4.0 and out["tokens_per_s"] == pytest.approx(6 / 23 * 1000)


def test_simulate_serving_invariants():
    reqs = make_requests(120, 40.0, (64, 512), (1, 40), seed=0)
    for kw in ({}, {"n_prefill": 1}, {"n_prefill": 2, "transfer_ms": 0.5}):
        out = simulate_serving(reqs, 0.1, (4.0, 0.6), n_workers=4, **kw)
        for r, ts in zip(reqs, out["token_times"]):
            assert len(ts) == r.output and ts == sorted(ts) and ts[0] >= r.arrival_ms + r.prompt * 0.1 - 1e-9
        assert min(out["ttft"]) > 0 and len(out["tpot"]) == sum(r.output > 1 for r in reqs)
    # in separate pools no decode step waits for a prefill: a pause is at most a step in flight plus one step
    out = simulate_serving(reqs, 0.1, (4.0, 0.6), n_workers=4, n_prefill=2)
    assert max(out["max_gap"]) <= 2 * (4.0 + 0.6 * 120)
    colo = simulate_serving(reqs, 0.1, (4.0, 0.6), n_workers=4)
    assert max(colo["max_gap"]) > max(out["max_gap"])
    step = simulate_serving(reqs, 0.1, lambda b: 4.0 + 0.6 * b, n_workers=4)
    assert step["token_times"] == colo["token_times"]


def test_simulate_serving_rejects_bad_arguments():
    reqs = [Request(0.0, 4, 2)]
    with pytest.raises(ValueError, match=r"non-empty list of Request.*make_requests"):
        simulate_serving([], 1.0, (1.0, 0.0))
    with pytest.raises(ValueError, match=r"prefill_ms_per_token must be a finite number > 0"):
        simulate_serving(reqs, 0.0, (1.0, 0.0))
    with pytest.raises(ValueError, match=r"decode_ms must be \(fixed_ms, ms_per_sequence\)"):
        simulate_serving(reqs, 1.0, (0.0, 0.0))
    with pytest.raises(ValueError, match=r"n_prefill must be None \(one pool\) or an int in \[1, n_workers − 1 = 1\]"):
        simulate_serving(reqs, 1.0, (1.0, 0.0), n_workers=2, n_prefill=2)
    with pytest.raises(ValueError, match=r"transfer_ms must be a finite number ≥ 0"):
        simulate_serving(reqs, 1.0, (1.0, 0.0), n_workers=2, n_prefill=1, transfer_ms=-1)


def test_percentiles_match_numpy():
    v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    got = percentiles(v, (0, 25, 50, 90, 99, 100))
    for q, x in got.items():
        assert x == pytest.approx(np.percentile(v, q))
    with pytest.raises(ValueError, match=r"non-empty 1-D"):
        percentiles([])
    with pytest.raises(ValueError, match=r"qs must be percentiles in \[0, 100\]"):
        percentiles(v, (50, 101))
