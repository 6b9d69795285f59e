"""Expert parallelism over spawned gloo processes equals the single-process MoE (forward and backward)."""
import pytest
import torch

from helpers.config import ModelConfig
from helpers.moe import MoE
from helpers.parallel import (dispatch_plan, expert_owner, gloo_collectives, local_experts,
                              reference_forward_backward, run_expert_parallel)


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    moe = MoE(ModelConfig.cpu(**kw))
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return moe


def _assert_equal_to_single(moe, x, g, world_size, impl="single"):
    ref = reference_forward_backward(moe, x, g)
    ep = run_expert_parallel(moe, x, g, world_size=world_size, impl=impl)
    torch.testing.assert_close(ep["y"], ref["y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ep["x_grad"], ref["x_grad"], rtol=1e-5, atol=1e-5)
    assert set(ep["grads"]) == set(ref["grads"])
    for n, v in ref["grads"].items():
        torch.testing.assert_close(ep["grads"][n], v, rtol=1e-4, atol=1e-5, msg=n)
    return ep, ref


def test_two_ranks_equal_single_process_and_bytes_add_up():
    moe = _layer()
    x, g = torch.randn(96, 128), torch.randn(96, 128)
    ep, ref = _assert_equal_to_single(moe, x, g, 2)
    # every routed assignment was sent exactly once; what rank r sends to rank s, s receives from r
    k = moe.topk
    assert sum(sum(s["send_rows"]) for s in ep["stats"]) == 96 * k
    send = torch.tensor([s["send_rows"] for s in ep["stats"]])
    recv = torch.tensor([s["recv_rows"] for s in ep["stats"]])
    assert torch.equal(send, recv.T)
    for r, s in enumerate(ep["stats"]):
        assert s["dispatch_bytes"] == (sum(s["send_rows"]) - s["send_rows"][r]) * 128 * 4
        assert s["combine_bytes"] == (sum(s["recv_rows"]) - s["recv_rows"][r]) * 128 * 4
        assert s["dedup_dispatch_bytes"] <= s["dispatch_bytes"]
    assert torch.equal(ep["load"], torch.bincount(moe.gate(x)[1].flatten(), minlength=8).float())


def test_four_ranks_grouped_routing_and_padded_list_form():
    moe = _layer(seed=1)                                   # course config: 2 groups, 1 kept
    x, g = torch.randn(2, 40, 128), torch.randn(2, 40, 128)
    _assert_equal_to_single(moe, x, g, 4, impl="list")


def test_gloo_supports_unequal_all_to_all_single():
    res = gloo_collectives(2)
    assert res["all_to_all_single, unequal split sizes"] == "works"
    assert res["all_to_all (lists), equal sizes"] == "works"


def test_plan_and_owner():
    idx = torch.tensor([[5, 0], [2, 7], [1, 0]])
    assert expert_owner(idx, 8, 4).tolist() == [[2, 0], [1, 3], [0, 0]]
    p = dispatch_plan(idx, 8, 4)
    assert p["expert"].tolist() == sorted(idx.flatten().tolist())
    assert p["send_counts"] == [3, 1, 1, 1]
    assert p["dedup_counts"] == [2, 1, 1, 1]                # token 2 sends to rank 0 once for experts 1 and 0
    assert torch.equal(idx[p["token"], p["slot"]], p["expert"])
    assert list(local_experts(8, 4, 3)) == [6, 7]


def test_errors():
    with pytest.raises(ValueError, match="divisible by world_size"):
        local_experts(8, 3, 0)
    with pytest.raises(ValueError, match="world_size"):
        run_expert_parallel(_layer(), torch.randn(4, 128), world_size=0)
    with pytest.raises(TypeError, match="MoE"):
        run_expert_parallel(torch.nn.Linear(2, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="last dimension"):
        run_expert_parallel(_layer(), torch.randn(4, 64))
