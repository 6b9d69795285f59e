"""Saved-tensor accounting against hand counts; recomputation keeps outputs and gradients and saves less."""
import pytest
import torch

from helpers.memory import Recompute, SavedTensors, saved_bytes, time_forward_backward
from helpers.model import MLP, ModelConfig, Transformer


def test_linear_saves_its_input():
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(5, 16, requires_grad=True)
    r = saved_bytes(lin, x)
    assert r["activation_bytes"] == 5 * 16 * 4 and r["param_bytes"] == 8 * 16 * 4


def test_swiglu_hand_count():
    # FFN(x) = W2 (SiLU(W1 x) ⊙ W3 x): saved x (for W1, W3), h1 (SiLU), SiLU(h1) and h3 (product), product (W2)
    n, d, i = 3 * 7, 12, 20
    mlp = MLP(d, i)
    r = saved_bytes(mlp, torch.randn(3, 7, d, requires_grad=True))
    assert r["activation_bytes"] == 4 * (n * d + 4 * n * i)


def test_duplicates_counted_once():
    x = torch.randn(100, requires_grad=True)
    with SavedTensors() as s:
        y = x * x  # noqa: F841  (y keeps the graph, and so the saved tensors, alive)
    assert len(s.records) == 2 and s.activation_bytes == 400


def test_recompute_same_function_fewer_bytes():
    torch.manual_seed(0)
    cfg = ModelConfig.dense_tiny(vocab_size=64, dim=32, n_heads=2, inter_dim=64, max_seq_len=32)
    m = Transformer(cfg)
    blk, fr = m.layers[0], m.freqs_cis("cpu")[:16]
    x = torch.randn(2, 16, 32, requires_grad=True)
    plain, rec = saved_bytes(blk, x, fr), saved_bytes(Recompute(blk), x, fr)
    assert rec["activation_bytes"] < plain["activation_bytes"] / 5 and rec["param_bytes"] == 0
    torch.testing.assert_close(plain["output"], rec["output"], rtol=0, atol=0)
    g1 = torch.autograd.grad(plain["output"].pow(2).sum(), [x, *blk.parameters()])
    g2 = torch.autograd.grad(rec["output"].pow(2).sum(), [x, *blk.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(Recompute(blk)(x, fr), blk(x, fr))
    assert time_forward_backward(blk, x, fr, repeats=2) > 0


def test_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        Recompute(lambda x: x)
    with pytest.raises(ValueError, match="repeats"):
        time_forward_backward(torch.nn.Linear(2, 2), torch.randn(1, 2), repeats=0)


def test_discarded_branches_not_counted_and_counts_deterministic():
    x = torch.randn(1000, requires_grad=True)
    with SavedTensors() as s:
        for _ in range(5):
            tmp = (x * 2).sin()          # each iteration's branch is discarded except the last
        y = (x * 3).sin()
    assert s.activation_bytes == 2 * 4000 and len(s.records) == 2
    del tmp, y
    torch.manual_seed(0)
    m = Transformer(ModelConfig.cpu(vocab_size=64, dim=32, n_heads=2, q_lora_rank=16, kv_lora_rank=8,
                                    qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, inter_dim=48,
                                    moe_inter_dim=16, max_seq_len=32))
    x = torch.randint(0, 64, (2, 16))
    counts = []
    for _ in range(3):
        with SavedTensors(m.parameters()) as s:
            out = m(x, targets=x)
        counts.append(s.activation_bytes)
        del out
    assert len(set(counts)) == 1
