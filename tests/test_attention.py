"""MLA and MHA/GQA against from-the-equations references; naive == absorbed; cache decoding; cache sizes."""
import math

import pytest
import torch

from helpers.attention import GQA, MLA, causal_mask, cache_elements_per_token, kv_cache_bytes_per_token, \
    kv_cache_elements_per_token
from helpers.model import ModelConfig, deepseek_v3_config
from helpers.rope import precompute_freqs_cis
from helpers.runtime import use_fast_path

CFG = ModelConfig.cpu(dim=48, n_heads=3, q_lora_rank=24, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4,
                      v_head_dim=6, max_seq_len=64)


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.3 if p.dim() > 1 else 1.0) + (p.dim() == 1))
    return module


def rms(x, w, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rot(x, pos, d, theta=10000.0):
    out = x.clone()
    for j in range(d // 2):
        a = pos * theta ** (-2 * j / d)
        c, s = math.cos(a), math.sin(a)
        out[..., 2 * j], out[..., 2 * j + 1] = x[..., 2 * j] * c - x[..., 2 * j + 1] * s, x[..., 2 * j] * s + x[..., 2 * j + 1] * c
    return out


def mla_from_equations(m: MLA, h):
    """Token-by-token, head-by-head evaluation of the report's MLA equations (§2.1.1) in float64."""
    H, dn, dr, dv, dc = m.n_heads, m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim, m.kv_lora_rank
    W_DQ, W_Q = m.wq_a.weight.double(), m.wq_b.weight.double().view(H, dn + dr, -1)
    W_UQ, W_QR = W_Q[:, :dn], W_Q[:, dn:]
    W_DKV, W_KR = m.wkv_a.weight.double()[:dc], m.wkv_a.weight.double()[dc:]
    W_KV = m.wkv_b.weight.double().view(H, dn + dv, dc)
    W_UK, W_UV = W_KV[:, :dn], W_KV[:, dn:]
    W_O = m.wo.weight.double()
    b, t, _ = h.shape
    out = torch.zeros(b, t, h.shape[-1], dtype=torch.float64)
    for bi in range(b):
        cq = [rms(W_DQ @ h[bi, s], m.q_norm.weight.double()) for s in range(t)]
        ckv = [rms(W_DKV @ h[bi, s], m.kv_norm.weight.double()) for s in range(t)]
        kr = [rot(W_KR @ h[bi, s], s, dr) for s in range(t)]
        for s in range(t):
            heads = []
            for i in range(H):
                qc, qr = W_UQ[i] @ cq[s], rot(W_QR[i] @ cq[s], s, dr)
                logits = torch.stack([(qc @ (W_UK[i] @ ckv[j]) + qr @ kr[j]) / math.sqrt(dn + dr) for j in range(s + 1)])
                p = logits.softmax(0)
                heads.append(sum(p[j] * (W_UV[i] @ ckv[j]) for j in range(s + 1)))
            out[bi, s] = W_O @ torch.cat(heads)
    return out


def test_mla_matches_equations_both_paths():
    m = randomize(MLA(CFG)).double()
    h = torch.randn(2, 6, CFG.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = mla_from_equations(m, h)
    fc = precompute_freqs_cis(CFG.qk_rope_head_dim, 6, dtype=torch.float64)
    for impl in ("naive", "absorb"):
        m.attn_impl = impl
        torch.testing.assert_close(m(h, fc), ref, atol=1e-9, rtol=1e-9)


def test_naive_equals_absorbed_float32_and_cached_decoding():
    torch.manual_seed(0)
    m = randomize(MLA(CFG), seed=3)
    x = torch.randn(2, 20, CFG.dim)
    fc = precompute_freqs_cis(CFG.qk_rope_head_dim, 20)
    m.attn_impl = "naive"
    full = m(x, fc)
    m.attn_impl = "absorb"
    torch.testing.assert_close(m(x, fc), full, atol=1e-4, rtol=1e-4)
    for impl in ("naive", "absorb"):
        m.attn_impl = impl
        m.setup_cache(2, 20)
        steps = [m(x[:, :7], fc[:7], 0)] + [m(x[:, p:p + 1], fc[p:p + 1], p) for p in range(7, 20)]
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)
        assert m.kv_cache.shape == (2, 20, CFG.kv_lora_rank) and m.pe_cache.shape == (2, 20, CFG.qk_rope_head_dim)
        m.clear_cache()


def test_mla_without_query_compression():
    cfg = CFG.replace(q_lora_rank=0)
    m = randomize(MLA(cfg))
    assert not hasattr(m, "wq_a")
    x = torch.randn(1, 9, cfg.dim)
    fc = precompute_freqs_cis(cfg.qk_rope_head_dim, 9)
    a = m(x, fc)
    m.attn_impl = "absorb"
    torch.testing.assert_close(m(x, fc), a, atol=1e-4, rtol=1e-4)


def attention_reference(q, k, v, scale):
    t = q.shape[1]
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("attn,kv", [("mha", 0), ("gqa", 2), ("gqa", 1)])
def test_gqa_matches_explicit_softmax(attn, kv, fast):
    cfg = ModelConfig.dense_tiny(dim=32, n_heads=4, attn=attn, n_kv_heads=kv)
    m = randomize(GQA(cfg), seed=5).double()
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    fc = precompute_freqs_cis(8, 10, dtype=torch.float64)
    from helpers.rope import apply_rotary_emb
    hd, H, G = 8, 4, cfg.kv_heads
    q = apply_rotary_emb(m.wq(x).view(2, 10, H, hd), fc)
    k = apply_rotary_emb(m.wk(x).view(2, 10, G, hd), fc).repeat_interleave(H // G, 2)
    v = m.wv(x).view(2, 10, G, hd).repeat_interleave(H // G, 2)
    ref = m.wo(attention_reference(q, k, v, hd ** -0.5).flatten(2))
    with use_fast_path(fast):               # SDPA (fast) and softmax(q kᵀ·scale + mask) v written out
        torch.testing.assert_close(m(x, fc), ref, atol=1e-10, rtol=1e-10)
    m.setup_cache(2, 10, dtype=torch.float64)
    steps = [m(x[:, :4], fc[:4], 0)] + [m(x[:, p:p + 1], fc[p:p + 1], p) for p in range(4, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), ref, atol=1e-10, rtol=1e-10)


def test_causal_mask_and_cache_errors():
    assert causal_mask(1, 5) is None
    m = causal_mask(3, 2)
    assert m.tolist() == [[True, True, True, False, False], [True] * 4 + [False], [True] * 5]
    att = MLA(CFG)
    fc = precompute_freqs_cis(CFG.qk_rope_head_dim, 8)
    with pytest.raises(ValueError, match="needs a cache"):
        att(torch.randn(1, 1, CFG.dim), fc[3:4], start_pos=3)
    att.setup_cache(1, 4)
    with pytest.raises(ValueError, match="overflow"):
        att(torch.randn(1, 5, CFG.dim), fc[:5])


def test_cache_sizes_real_models():
    # DeepSeek-V3: 61 layers × (512 + 64) × 2 B
    v3 = deepseek_v3_config()
    assert cache_elements_per_token(v3) * 2 == 70_272
    assert kv_cache_bytes_per_token("mla", 61, kv_lora_rank=512, qk_rope_head_dim=64) == 70_272
    assert kv_cache_bytes_per_token("gqa", 80, n_kv_heads=8, head_dim=128) == 327_680     # Qwen-2.5-72B
    assert kv_cache_bytes_per_token("gqa", 126, n_kv_heads=8, head_dim=128) == 516_096    # LLaMA-3.1-405B
    assert kv_cache_elements_per_token("mha", 2, n_heads=4, head_dim=8) == 2 * 2 * 4 * 8
    assert kv_cache_elements_per_token("mqa", 3, head_dim=8) == 3 * 2 * 8
    assert kv_cache_bytes_per_token("mla", 1, bytes_per_element=1, kv_lora_rank=4, qk_rope_head_dim=2) == 6
    cpu = ModelConfig.cpu()
    assert cache_elements_per_token(cpu) == cpu.n_layers * (cpu.kv_lora_rank + cpu.qk_rope_head_dim)
    assert cache_elements_per_token(cpu, "mha") == cpu.n_layers * 2 * cpu.dim
    with pytest.raises(ValueError, match="kv_lora_rank"):
        kv_cache_elements_per_token("mla", 2, qk_rope_head_dim=4)
    with pytest.raises(ValueError, match="attn must be"):
        kv_cache_elements_per_token("xla", 2)
