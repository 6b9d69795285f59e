"""The fast path computes the same function as the written-out reference: outputs, gradients, a loss curve."""
import pytest
import torch
import torch.nn.functional as F

from helpers import runtime
from helpers.attention import GQA, MLA, attend, causal_mask
from helpers.model import ModelConfig, Transformer
from helpers.moe import MoE
from helpers.objective import linear_cross_entropy
from helpers.rope import precompute_freqs_cis
from helpers.runtime import fast_path, use_fast_path


def both_paths(fn):
    """fn() on the fast path and on the reference path: (fast result, reference result)."""
    with use_fast_path(True):
        fast = fn()
    with use_fast_path(False):
        ref = fn()
    return fast, ref


def grads_of(module, *inputs):
    """Output, input gradients and parameter gradients of sum(out · fixed random weights)."""
    for p in module.parameters():
        p.grad = None
    inputs = [i.detach().clone().requires_grad_() for i in inputs]
    out = module(*inputs) if not callable(getattr(module, "_run", None)) else module._run(*inputs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * w).sum().backward()
    return [out.detach()] + [i.grad for i in inputs] + [p.grad.clone() for p in module.parameters() if p.grad is not None]


def assert_all_close(a, b, tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)


# ---- the switch -----------------------------------------------------------------------------------------

def test_switch_default_call_and_context_manager():
    assert fast_path() is True                       # the default (tests run without COURSE_FAST_PATH=0)
    with use_fast_path(False) as s:
        assert fast_path() is False and isinstance(s, use_fast_path)
        with use_fast_path(True):
            assert fast_path() is True
        assert fast_path() is False
    assert fast_path() is True
    with pytest.raises(RuntimeError):
        with use_fast_path(False):
            raise RuntimeError("boom")
    assert fast_path() is True                       # restored after an exception too
    try:
        use_fast_path(False)                         # as a call: stays switched
        assert fast_path() is False
    finally:
        use_fast_path(True)
    assert fast_path() is True


def test_bf16_probe_and_autocast_are_consistent():
    r = runtime.probe_bf16("cpu")
    assert {"fp32_ms", "bf16_ms", "ratio", "bf16_faster", "device"} <= set(r)
    assert r["fp32_ms"] > 0 and r["bf16_ms"] > 0
    assert runtime.probe_bf16("cpu") == r                              # cached per process
    want = torch.bfloat16 if r["bf16_faster"] else None
    assert runtime.autocast_dtype("cpu") == want
    with runtime.training_autocast("cpu"):
        y = torch.randn(4, 8) @ torch.randn(8, 4)
    assert y.dtype == (want or torch.float32)


# ---- attention ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t,s", [(7, 7), (3, 9), (1, 9)])
def test_attend_fast_equals_written_out(t, s):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, t, 8, generator=g), torch.randn(2, 3, s, 8, generator=g)
    v = torch.randn(2, 3, s, 5, generator=g)
    mask = None if t == s or t == 1 else causal_mask(t, s - t)

    def run():
        qq, kk, vv = (z.clone().requires_grad_() for z in (q, k, v))
        o = attend(qq, kk, vv, 0.3, mask, causal=t > 1)
        o.pow(2).sum().backward()
        return [o.detach(), qq.grad, kk.grad, vv.grad]
    fast, ref = both_paths(run)
    assert_all_close(fast, ref, 1e-5)


def test_mla_naive_and_gqa_fast_equal_reference_with_gradients():
    torch.manual_seed(0)
    mla_cfg = ModelConfig.cpu(dim=48, n_heads=3, q_lora_rank=24, kv_lora_rank=12, qk_nope_head_dim=8,
                              qk_rope_head_dim=4, v_head_dim=6, max_seq_len=64)
    gqa_cfg = ModelConfig.dense_tiny(dim=32, n_heads=4, attn="gqa", n_kv_heads=2)
    for cfg, cls, rope in [(mla_cfg, MLA, 4), (gqa_cfg, GQA, 8)]:
        m = cls(cfg)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2)
        x = torch.randn(2, 11, cfg.dim)
        fc = precompute_freqs_cis(rope, 11)
        fast, ref = both_paths(lambda: grads_of(_Bound(m, fc), x))
        assert_all_close(fast, ref, 1e-5)


class _Bound(torch.nn.Module):
    """module(x, freqs) as a one-argument module (for grads_of)."""

    def __init__(self, m, fc):
        super().__init__()
        self.m, self.fc = m, fc

    def forward(self, x):
        return self.m(x, self.fc)


# ---- MoE dispatch ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,groups,limited,shared", [(1, 1, 1, 0), (2, 2, 1, 1), (3, 4, 2, 1), (6, 2, 2, 2)])
def test_moe_sorted_dispatch_equals_loop(k, groups, limited, shared):
    torch.manual_seed(k)
    cfg = ModelConfig.cpu(dim=16, q_lora_rank=8, kv_lora_rank=8, moe_inter_dim=8, n_routed_experts=8,
                          n_shared_experts=shared, n_activated_experts=k, n_expert_groups=groups,
                          n_limited_groups=limited, route_scale=1.5)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    moe.gate.bias.copy_(torch.randn(8) * 0.3)
    x = torch.randn(3, 7, 16)
    fast, ref = both_paths(lambda: grads_of(moe, x))
    assert_all_close(fast, ref, 1e-5)


def test_moe_sorted_dispatch_with_idle_experts():
    torch.manual_seed(0)
    cfg = ModelConfig.cpu(dim=16, q_lora_rank=8, kv_lora_rank=8, moe_inter_dim=8, n_expert_groups=1,
                          n_limited_groups=1)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    moe.gate.bias.copy_(torch.tensor([9.0, 9.0, 0, 0, 0, 0, 0, 0]))     # every token picks experts 0 and 1
    x = torch.randn(2, 5, 16)
    fast, ref = both_paths(lambda: grads_of(moe, x))
    assert moe.last_load.tolist() == [10, 10, 0, 0, 0, 0, 0, 0]
    assert_all_close(fast, ref, 1e-5)


# ---- head + loss -----------------------------------------------------------------------------------------

def test_linear_cross_entropy_matches_torch_with_ignored_targets_and_logit_gradients():
    g = torch.Generator().manual_seed(0)
    x0, w0 = torch.randn(37, 8, generator=g), torch.randn(50, 8, generator=g)
    y = torch.randint(0, 50, (37,), generator=g)
    y[[3, 20]] = -1
    c = torch.randn(37, 50, generator=g)

    def run(fused, use_logits):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        if fused:
            loss, z = linear_cross_entropy(x, w, y, chunk=10)
        else:
            z = x @ w.T
            loss = F.cross_entropy(z, y, ignore_index=-1)
        total = loss + ((z * c).sum() * 1e-2 if use_logits else 0)
        total.backward()
        return [loss.detach(), z.detach(), x.grad, w.grad]
    for use_logits in (False, True):
        assert_all_close(run(True, use_logits), run(False, use_logits), 1e-5)
    loss, z = linear_cross_entropy(x0, w0, y, return_logits=False)
    assert z is None
    with pytest.raises(ValueError):
        linear_cross_entropy(x0, w0, y[:5])


def test_linear_cross_entropy_under_bf16_autocast_matches_torch_and_keeps_fp32_gradients():
    """Training on CUDA runs under bf16 autocast (helpers.runtime.training_autocast). The fused head must work there:
    the chunk products are bf16, the weight gradient accumulates in fp32 over chunks (one chunk and several alike),
    and loss and gradients match the unfused head + F.cross_entropy under the same autocast to bf16 accuracy."""
    g = torch.Generator().manual_seed(0)
    x0, w0 = torch.randn(40, 16, generator=g), torch.randn(64, 16, generator=g) * 0.3
    y = torch.randint(0, 64, (40,), generator=g)
    y[5] = -1

    def run(fused, chunk=8):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fused:
                loss, _ = linear_cross_entropy(x, w, y, chunk=chunk)
            else:
                loss = F.cross_entropy((x @ w.T).float(), y, ignore_index=-1)
        loss.backward()
        return [loss.detach().float(), x.grad, w.grad]
    ref = run(False)
    for chunk in (8, 64):
        out = run(True, chunk)
        assert out[1].dtype == out[2].dtype == torch.float32           # master weights' gradients stay fp32
        assert_all_close(out, ref, 2e-2)


def test_transformer_fast_equals_reference_loss_logits_and_gradients():
    cfg = ModelConfig.cpu(vocab_size=64, dim=32, n_layers=2, n_heads=2, q_lora_rank=16, kv_lora_rank=16,
                          qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, inter_dim=48, moe_inter_dim=16,
                          max_seq_len=32)
    torch.manual_seed(0)
    model = Transformer(cfg).train()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 64, (3, 16), generator=g), torch.randint(0, 64, (3, 16), generator=g)
    y[0, :4] = -1

    def run():
        model.zero_grad()
        out = model(x, targets=y)
        out["loss"].backward()
        return [out[k].detach() for k in ("loss", "main_loss", "mtp_loss", "logits")] + \
            [p.grad.clone() for p in model.parameters() if p.grad is not None]
    fast, ref = both_paths(run)
    assert_all_close(fast, ref, 1e-5)


def test_same_loss_curve_over_100_steps():
    """A tiny course model trained 100 steps on each path: the curves agree within seed noise."""
    cfg = ModelConfig.cpu(vocab_size=48, dim=16, n_layers=2, n_heads=2, q_lora_rank=8, kv_lora_rank=8,
                          qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=4, inter_dim=32, moe_inter_dim=8,
                          max_seq_len=16)
    # a learnable stream: token i+1 = (3·token i + 1) mod 48, with 10% noise
    g = torch.Generator().manual_seed(0)
    stream = [0]
    for _ in range(2000):
        stream.append((3 * stream[-1] + 1) % 48 if torch.rand(1, generator=g) > 0.1 else int(torch.randint(48, (1,), generator=g)))
    stream = torch.tensor(stream)

    def curve(seed):
        torch.manual_seed(seed)
        model = Transformer(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        gen, losses = torch.Generator().manual_seed(seed), []
        for _ in range(100):
            s = torch.randint(0, len(stream) - 13, (4,), generator=gen)
            w = torch.stack([stream[i:i + 13] for i in s.tolist()])
            out = model(w[:, :-1], targets=w[:, 1:])
            out["loss"].backward()
            opt.step()
            opt.zero_grad()
            model.after_step()
            losses.append(out["main_loss"].item())
        return torch.tensor(losses)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # a tiny model: one thread is faster (and immune to a busy machine)
    try:
        fast, ref = both_paths(lambda: curve(0))
        other_seed = curve(1)
    finally:
        torch.set_num_threads(threads)
    late = slice(80, 100)
    assert fast[late].mean() < 0.5 * fast[:5].mean()                      # it learned
    gap = (fast[late].mean() - ref[late].mean()).abs()
    noise = (other_seed[late].mean() - ref[late].mean()).abs()
    assert gap <= max(noise, 0.05), (gap, noise)


def test_fused_head_does_no_gradient_work_under_no_grad(monkeypatch):
    """Evaluation (torch.no_grad) must not pay for the gradients the training forward forms on the way."""
    from helpers.objective import linear_cross_entropy
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 50, (64,), generator=g)
    calls = []
    real = torch.Tensor.addmm_
    monkeypatch.setattr(torch.Tensor, "addmm_", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    with torch.no_grad():
        loss_eval, _ = linear_cross_entropy(x, w, y, chunk=16)
    assert calls == []
    loss_train, _ = linear_cross_entropy(x, w, y, chunk=16)
    assert len(calls) == 3 and torch.equal(loss_eval, loss_train.detach())
