"""Cluster cost model: node counts against brute force, node-limited routing bounds them, the report's numbers."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.cluster import (COMBINE_BYTES, DISPATCH_BYTES, Cluster, H800_CLUSTER, affinity_mass, dispatch_time,
                             experts_per_node_used, ib_bytes_per_token, max_experts_at_ib_cost, node_histogram,
                             nodes_per_token, overlap_pays_above, sm_partition, transfer_seconds)
from helpers.moe import route


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), per_node=st.sampled_from([1, 2, 4, 8]), k=st.integers(1, 8))
def test_nodes_per_token_bruteforce(seed, per_node, k):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(32, generator=g)[:k] for _ in range(20)])
    want = torch.tensor([len({e // per_node for e in row.tolist()}) for row in idx])
    assert torch.equal(nodes_per_token(idx, per_node), want)
    h = node_histogram(idx, per_node, max_nodes=8)
    assert h.sum().item() == pytest.approx(1.0)
    assert h.tolist() == pytest.approx([(want == n).double().mean().item() for n in range(1, 9)])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 8))
def test_group_limited_route_is_node_limited(seed, m):
    """helpers.moe.route with one group per node never reaches more than M nodes; M = 8 is unlimited."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(200, 64, generator=g)
    _, lim = route(scores, None, topk=8, n_groups=8, topk_groups=m)
    _, free = route(scores, None, topk=8)
    assert nodes_per_token(lim, 8).max() <= m
    if m == 8:
        assert torch.equal(lim.sort(-1).values, free.sort(-1).values)
    # the limited router keeps at most the unlimited router's affinity mass
    assert (affinity_mass(scores, lim) <= affinity_mass(scores, free) + 1e-6).all()


def test_report_numbers():
    assert H800_CLUSTER.n_nodes == 256 and H800_CLUSTER.bandwidth_ratio == pytest.approx(3.2)
    assert max_experts_at_ib_cost(4) == pytest.approx(12.8)
    sp = sm_partition()
    assert sp["sm_share"] == pytest.approx(20 / 132) and sp["slowdown"] == pytest.approx(132 / 112)
    assert overlap_pays_above() == pytest.approx(20 / 112)
    # V3: 4 nodes × 7168 values × (FP8 + scale, BF16)
    assert ib_bytes_per_token(4, 7168) == pytest.approx(4 * 7168 * (1 + 4 / 128 + 2))
    assert ib_bytes_per_token(torch.tensor([2, 4]), 10, 1, 2) == pytest.approx(90)
    assert DISPATCH_BYTES < COMBINE_BYTES
    assert transfer_seconds(50e9, "ib") == pytest.approx(1.0) and transfer_seconds(160e9, "nvlink") == pytest.approx(1.0)


def test_dispatch_is_ib_bound_up_to_the_bandwidth_ratio():
    base = dispatch_time(4, 1, 7168)["time_s"]
    for k in (1, 2, 3, 3.2):
        d = dispatch_time(4, k, 7168)
        assert d["bound"] == "ib" and d["time_s"] == pytest.approx(base)
    d = dispatch_time(4, 4, 7168)
    assert d["bound"] == "nvlink" and d["time_s"] == pytest.approx(base * 4 / 3.2)


def test_experts_per_node_used():
    idx = torch.tensor([[0, 1, 8, 9], [0, 8, 16, 24]])
    assert experts_per_node_used(idx, 8) == pytest.approx(4 / 3)


def test_clear_errors():
    with pytest.raises(ValueError, match="multiple"):
        Cluster(n_gpus=10, gpus_per_node=8)
    with pytest.raises(ValueError, match="bandwidths"):
        Cluster(ib_GBps=0)
    with pytest.raises(ValueError, match="comm_sms"):
        Cluster(comm_sms=132)
    with pytest.raises(ValueError, match="experts_per_node"):
        nodes_per_token(torch.zeros(2, 3, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="indices"):
        nodes_per_token(torch.zeros(3), 2)
    with pytest.raises(ValueError, match="link"):
        transfer_seconds(1, "ethernet")
    with pytest.raises(ValueError, match="max_nodes"):
        max_experts_at_ib_cost(0)
    with pytest.raises(ValueError, match="≥ 0"):
        dispatch_time(-1, 1, 10)


def test_routing_traffic_widget_function():
    from helpers.cluster import routing_traffic
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(300, 64, generator=g)
    free = routing_traffic(scores, None, 8, 8, None, 7168)
    lim = routing_traffic(scores, None, 8, 8, 4, 7168)
    assert lim["max_nodes_seen"] <= 4 < free["max_nodes_seen"]
    assert lim["ib_bytes"] < free["ib_bytes"] and free["mass_kept"] == pytest.approx(1.0) and lim["mass_kept"] < 1
    assert free["changed"] == 0 and lim["changed"] > 0
    assert lim["ib_bytes"] == pytest.approx(lim["mean_nodes"] * 7168 * (DISPATCH_BYTES + COMBINE_BYTES))
    with pytest.raises(ValueError, match="cannot fit"):
        routing_traffic(scores, None, 8, 2, 3, 10)
    with pytest.raises(ValueError, match="dividing"):
        routing_traffic(scores, None, 8, 5, None, 10)
    with pytest.raises(ValueError, match="max_nodes"):
        routing_traffic(scores, None, 8, 8, 9, 10)
