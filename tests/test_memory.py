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


# ---- the per-GPU budget (helpers.memory.memory_budget and friends) -------------------------------------------

from helpers.config import deepseek_v3_config  # noqa: E402
from helpers.memory import (BUDGET_ASSUMPTIONS, H800_BYTES, STATE_BYTES, activation_items, memory_budget,  # noqa: E402
                            stage_layout, training_state_bytes_measured)
from helpers.model import count_params  # noqa: E402
from helpers.optim import AdamW  # noqa: E402


def test_stage_layout_covers_every_block_once():
    st = stage_layout(62, 16)
    assert [b for s in st for b in s] == list(range(62))
    assert sorted({len(s) for s in st}) == [3, 4]
    with pytest.raises(ValueError, match="pp"):
        stage_layout(4, 5)


def test_budget_hand_count_one_stage_no_sharding():
    # PP=1, EP=1, DP=1: every parameter on one GPU; state bytes = params × (2 + 4 + 4 + 2 + 2)
    cfg = ModelConfig.cpu()
    r = memory_budget(cfg, pp=1, ep=1, dp=1, micro_batches=1, micro_batch_tokens=64)
    assert r["params_on_gpu"] == count_params(cfg)["total"]
    state = sum(b for k, b in r["rows"] if not k.startswith(("activations", "EMA")))
    assert state == r["params_on_gpu"] * sum(STATE_BYTES.values())
    act = dict(r["rows"])[next(k for k, _ in r["rows"] if k.startswith("activations"))]
    per_tok = sum(r["activation_per_token_layer"][cfg.is_moe_layer(b)] for b in range(cfg.n_layers + cfg.mtp_depth))
    assert act == 64 * per_tok


def test_budget_v3_parts():
    cfg = deepseek_v3_config()
    r = memory_budget()
    # ZeRO-1 sharding and EP change only what they should
    r2 = memory_budget(dp=256)
    assert dict(r2["rows"])["gradients"] == dict(r["rows"])["gradients"]
    assert dict(r2["rows"])["master weights + moments (ZeRO-1 sharded)"] < dict(r["rows"])["master weights + moments (ZeRO-1 sharded)"]
    r3 = memory_budget(ep=32)
    assert r3["params_routed"] == 2 * r["params_routed"]
    assert memory_budget(share_embedding=False)["total"] - r["total"] == \
        cfg.mtp_depth * 2 * count_params(cfg)["embedding"] * (2 + 4 + 8 / 128)
    assert memory_budget(ema_on_gpu=True)["total"] > r["total"]
    assert memory_budget(micro_batches=4)["in_flight"] == 4 and r["in_flight"] == 17
    assert memory_budget(dualpipe=False)["in_flight"] == 16
    assert 0 < r["total"] and isinstance(r["fits"], bool) and H800_BYTES == 80e9
    assert len(BUDGET_ASSUMPTIONS) >= 10


def test_activation_items_recompute_keeps_less():
    cfg = deepseek_v3_config()
    rep = sum(e * b for _, e, b in activation_items(cfg, True, "report"))
    plain = sum(e * b for _, e, b in activation_items(cfg, True, "bf16_no_recompute"))
    assert rep < plain / 1.5
    with pytest.raises(ValueError, match="policy"):
        activation_items(cfg, True, "fp4")


def test_budget_errors():
    with pytest.raises(ValueError, match="ep = 48 must divide dp"):
        memory_budget(ep=48)
    with pytest.raises(ValueError, match="micro_batches"):
        memory_budget(micro_batches=0)


def test_measured_state_bytes_equal_formula():
    torch.manual_seed(0)
    cfg = ModelConfig.cpu(n_layers=2, vocab_size=64, max_seq_len=32)
    m = Transformer(cfg)
    opt = AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, 64, (2, 16))
    m(x, targets=x)["loss"].backward()
    opt.step()
    r = training_state_bytes_measured(m, opt)
    n = count_params(cfg)["total"]
    assert r["weights"] == 4 * n and r["grads"] == 4 * n
    assert 8 * n <= r["optimizer"] <= 8 * n + 16 * len(list(m.parameters()))   # m, v (+ step counters if tensors)


# ---- selective recomputation (helpers.memory.SelectiveRecompute, SelectiveBlock) ----------------------------

from helpers.memory import (SelectiveBlock, SelectiveRecompute, selective_block_forward,  # noqa: E402
                            use_recomputation)
from helpers.norm import RMSNorm  # noqa: E402
from helpers.runtime import use_fast_path  # noqa: E402


def _mla_cfg(**kw):
    return ModelConfig.cpu(vocab_size=64, dim=32, n_heads=2, q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8,
                           qk_rope_head_dim=4, v_head_dim=8, inter_dim=48, moe_inter_dim=16, max_seq_len=32, **kw)


def test_selective_norm_then_linear_hand_count_and_gradients():
    # plain: RMSNorm keeps x, 1/RMS [N, 1], x/RMS [N, d]; the linear keeps the norm's output [N, d] → 4(3Nd + N).
    # selective: the norm keeps only x, and the linear's saved input is a recipe → 4 N d.
    torch.manual_seed(0)
    n, d = 10, 16
    norm, lin = RMSNorm(d), torch.nn.Linear(d, 8, bias=False)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(n, d, requires_grad=True)
    with SavedTensors([*norm.parameters(), *lin.parameters()]) as s0:
        y0 = lin(norm(x))
    with SavedTensors([*norm.parameters(), *lin.parameters()]) as s1, SelectiveRecompute() as sr:
        y1 = lin(sr(norm, x))
    assert s0.activation_bytes == 4 * (3 * n * d + n) and s1.activation_bytes == 4 * n * d
    assert sr.n_pieces == 1 and sr.n_recipes == 1
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)
    wrt = [x, norm.weight, lin.weight]
    g0 = torch.autograd.grad(y0.sin().sum(), wrt)
    g1 = torch.autograd.grad(y1.sin().sum(), wrt)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_selective_piece_recomputed_once_and_views_of_outputs():
    calls = []
    w = torch.nn.Parameter(torch.randn(6, 6))

    def piece(a):
        calls.append(1)
        return (a @ w).contiguous()
    a = torch.randn(4, 6, requires_grad=True)
    with SelectiveRecompute() as sr:
        y = sr(piece, a, params=[w])
        z = (y.t() * y.t()).sum() + y[:, :3].exp().sum()          # ops keep views of y (transposed, sliced)
    assert sr.n_recipes >= 2
    z.backward()
    assert len(calls) == 2                                        # the forward and one recomputation
    a2, w2 = a.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    y2 = a2 @ w2
    ((y2.t() * y2.t()).sum() + y2[:, :3].exp().sum()).backward()
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(w.grad, w2.grad)


@pytest.mark.parametrize("layer", [0, 1])        # dense block, MoE block
def test_selective_block_same_function_and_gradients_fewer_bytes(layer):
    torch.manual_seed(0)
    m = Transformer(_mla_cfg())
    blk, fr = m.layers[layer], m.freqs_cis("cpu")[:16]
    x = torch.randn(2, 16, 32, requires_grad=True)
    with use_fast_path(False):
        plain, sel, whole = (saved_bytes(mod, x, fr) for mod in (blk, SelectiveBlock(blk), Recompute(blk)))
        torch.testing.assert_close(plain["output"], sel["output"], rtol=1e-6, atol=1e-6)
        wrt = [x, *blk.parameters()]     # backward on the same path (checkpoint recomputes the same ops)
        g = [torch.autograd.grad(r["output"].pow(2).sum(), wrt, allow_unused=True) for r in (plain, sel, whole)]
    for other in g[1:]:
        for a, b in zip(g[0], other):
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # q, k, v in float32 alone: N·n_h·(2(d_h + d_h^R) + d_v)·4 bytes are no longer kept
    qkv = 2 * 16 * 2 * (2 * 12 + 8) * 4
    assert plain["activation_bytes"] - sel["activation_bytes"] >= qkv
    assert whole["activation_bytes"] < sel["activation_bytes"]


def test_use_recomputation_whole_model_gradients_match():
    torch.manual_seed(0)
    base = Transformer(_mla_cfg())
    x = torch.randint(0, 64, (2, 16))
    import copy
    grads, counts = {}, {}
    for mode in ("none", "selective", "block"):
        m = use_recomputation(copy.deepcopy(base), mode)
        with use_fast_path(False):
            with SavedTensors(m.parameters()) as s:
                loss = m(x, targets=x)["loss"]
            loss.backward()
        grads[mode] = [p.grad for p in m.parameters()]
        counts[mode] = s.activation_bytes
    assert counts["block"] < counts["selective"] < counts["none"]
    for mode in ("selective", "block"):
        for a, b in zip(grads["none"], grads[mode]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    m = use_recomputation(copy.deepcopy(base), "selective")
    assert isinstance(m.layers[0], SelectiveBlock) and isinstance(use_recomputation(m, "none").layers[0], type(base.layers[0]))
    with torch.no_grad():                                            # generation goes through the plain block
        torch.testing.assert_close(m(x)["logits"], base(x)["logits"])


def test_selective_errors():
    with pytest.raises(RuntimeError, match="inside"):
        SelectiveRecompute()(torch.nn.Linear(2, 2), torch.randn(1, 2))
    with SelectiveRecompute() as sr:
        with pytest.raises(TypeError, match="params"):
            sr(lambda a: a * 2, torch.randn(2, requires_grad=True))
        with pytest.raises(ValueError, match="fresh contiguous"):
            sr(lambda a: (a * 2).t(), torch.randn(2, 3, requires_grad=True), params=[])
    gqa = Transformer(ModelConfig.dense_tiny(vocab_size=64, dim=32, n_heads=2, inter_dim=64, max_seq_len=32))
    with pytest.raises(TypeError, match="MLA"):
        SelectiveBlock(gqa.layers[0])
    with pytest.raises(ValueError, match="mode"):
        use_recomputation(gqa, "some")
    m = Transformer(_mla_cfg())
    m.setup_cache(1, 8)
    with pytest.raises(ValueError, match="cache"), SelectiveRecompute() as sr:
        selective_block_forward(m.layers[0], torch.randn(1, 4, 32), m.freqs_cis("cpu")[:4], sr)
