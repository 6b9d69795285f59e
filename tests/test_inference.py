"""helpers.inference: intensity and roofline formulas, cache modes (same tokens, predicted bytes), timings, the
latent's rank; and the model's expanded cache kind."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers import inference as I
from helpers.attention import cache_elements_per_token, kv_cache_bytes_per_token
from helpers.compute import matmul_params
from helpers.config import ModelConfig, deepseek_v3_config
from helpers.model import Transformer

SMALL = dict(dim=32, n_layers=2, n_heads=2, inter_dim=48, moe_inter_dim=16, q_lora_rank=16, kv_lora_rank=8,
             qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, n_routed_experts=4, n_activated_experts=2,
             n_expert_groups=1, n_limited_groups=1, vocab_size=64, max_seq_len=48)


def small(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    return Transformer(ModelConfig.cpu(**{**SMALL, **kw})).eval()


# ---- formulas ------------------------------------------------------------------------------------------------

def test_matmul_intensity_exact_and_limits():
    r = I.matmul_intensity(3, 5, 7, 2)
    assert r["flops"] == 2 * 3 * 5 * 7 and r["bytes"] == 2 * (35 + 15 + 21)
    assert math.isclose(r["intensity"], 210 / 142)
    big = I.matmul_intensity(4, 8192, 8192, 2)              # n ≪ k, m: I → 2n / b
    assert math.isclose(big["intensity"], 4.0, rel_tol=1e-3)
    with pytest.raises(ValueError, match="bytes_per_element"):
        I.matmul_intensity(1, 2, 3, 0)
    with pytest.raises(ValueError, match="n must"):
        I.matmul_intensity(0, 2, 3)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10_000), k=st.integers(1, 4096), m=st.integers(1, 4096))
def test_intensity_grows_with_rows(n, k, m):
    a, b = I.matmul_intensity(n, k, m, 2), I.matmul_intensity(n + 1, k, m, 2)
    assert b["intensity"] >= a["intensity"] - 1e-12
    assert a["intensity"] < min(k, m, n) + 1e-9             # I < min(n, k, m) for b = 2 (never above the smallest side)


def test_block_ops_prefill_flops_equal_active_matmul_params():
    cfg = ModelConfig.cpu()
    S = 64
    ops = I.block_ops(cfg, n_tokens=S, context=S, bytes_per_element=4, phase="prefill")
    mm = sum(o["flops"] for o in ops if o["name"] != "attention core")
    p = matmul_params(cfg)
    assert mm == 2 * S * (p["attention"] + p["moe_ffn"])     # 2·n·N over the block's active matmul weights
    att = next(o for o in ops if o["name"] == "attention core")
    assert att["flops"] == 2 * S * cfg.n_heads * (S + 1) / 2 * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)


def test_block_ops_decode_is_low_intensity_and_cache_read_is_batch_free():
    cfg = ModelConfig.cpu()
    dec = I.block_ops(cfg, 1, 256, 2, phase="decode")
    pre = I.block_ops(cfg, 256, 256, 2, phase="prefill")
    total = lambda ops: sum(o["flops"] for o in ops) / sum(o["bytes"] for o in ops)
    assert total(pre) > 10 * total(dec)
    a1 = next(o for o in I.block_ops(cfg, 1, 256, 2, batch=1) if o["name"] == "attention over latent cache")
    a8 = next(o for o in I.block_ops(cfg, 8, 256, 2, batch=8) if o["name"] == "attention over latent cache")
    assert math.isclose(a1["intensity"], a8["intensity"])    # every user reads their own cache: no reuse
    # the cache bytes read per user and layer: s·(d_c + d_h^R)·b
    cache = 256 * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2
    assert a1["bytes"] > cache and a1["bytes"] < cache * 1.2


def test_block_ops_errors():
    cfg = ModelConfig.cpu()
    with pytest.raises(ValueError, match="phase"):
        I.block_ops(cfg, 1, 1, phase="serve")
    with pytest.raises(ValueError, match="MLA"):
        I.block_ops(ModelConfig.cpu(attn="mha"), 1, 1)
    with pytest.raises(ValueError, match="context"):
        I.block_ops(cfg, 1, 0)


def test_roofline_and_ridge():
    assert I.roofline(1.0, 100.0, 10.0) == 10.0 and I.roofline(50.0, 100.0, 10.0) == 100.0
    assert I.ridge_point(100.0, 10.0) == 10.0
    t = I.roofline(torch.tensor([1.0, 10.0, 100.0]), 100.0, 10.0)
    assert t.tolist() == [10.0, 100.0, 100.0]
    assert I.tokens_per_expert_for(590, 1) == 295
    with pytest.raises(ValueError, match="peak_flops"):
        I.roofline(1.0, 0, 1)
    with pytest.raises(ValueError, match="intensity"):
        I.roofline(-1.0, 1, 1)


@settings(max_examples=50, deadline=None)
@given(i=st.floats(1e-3, 1e4), p=st.floats(1, 1e6), w=st.floats(1, 1e6))
def test_roofline_is_min_of_two_roofs(i, p, w):
    r = I.roofline(i, p, w)
    assert r <= p * (1 + 1e-12) and r <= i * w * (1 + 1e-12)
    assert math.isclose(r, p) or math.isclose(r, i * w)
    assert (i >= I.ridge_point(p, w)) == math.isclose(r, p) or math.isclose(i * w, p)


def test_users_per_budget_report_numbers():
    got = [I.users_per_budget(b, 32 * 1024, 80e9) for b in I.REPORT_KV_BYTES_PER_TOKEN.values()]
    assert got == [34, 7, 4]
    v3 = deepseek_v3_config()
    assert I.REPORT_KV_BYTES_PER_TOKEN["DeepSeek-V3 (MLA)"] == kv_cache_bytes_per_token(
        "mla", v3.n_layers, kv_lora_rank=v3.kv_lora_rank, qk_rope_head_dim=v3.qk_rope_head_dim)
    with pytest.raises(ValueError, match="context"):
        I.users_per_budget(1, 0, 1)


# ---- measurements ------------------------------------------------------------------------------------------

def test_measure_bandwidth_and_time_linear():
    bw = I.measure_bandwidth(1 << 20, repeats=2, budget_s=0.5, device="cpu")
    assert bw["bytes_per_s"] > 1e8 and bw["n_bytes"] == 1 << 20
    r = I.time_linear(torch.randn(16, 8), 4, repeats=2)
    assert r["flops"] == 2 * 4 * 8 * 16 and r["flops_per_s"] > 0
    assert math.isclose(r["intensity"], I.matmul_intensity(4, 8, 16, 4)["intensity"])
    with pytest.raises(ValueError, match="n_bytes"):
        I.measure_bandwidth(10)


# ---- cache modes -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_modes_give_greedy_identical_tokens(seed):
    m = small(seed=seed)
    x = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(seed))
    outs = [I.generate(m, x, 20, mode=mode, temperature=0) for mode in I.MODES]
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert m.cache_bytes() == 0 and all(l.attn.attn_impl == "naive" for l in m.layers)   # restored


def test_expanded_cache_logits_match_latent():
    m = small()
    x = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = m(x)["logits"]
        for kind in ("latent", "expanded"):
            m.setup_cache(2, 12, kind=kind)
            a = m(x[:, :9])["logits"]
            b = torch.cat([m(x[:, i:i + 1], start_pos=i)["logits"] for i in range(9, 12)], dim=1)
            torch.testing.assert_close(torch.cat([a, b], 1), full, atol=1e-5, rtol=1e-5)
            m.clear_cache()


def test_cache_bytes_match_formulas():
    m = small()
    cfg = m.cfg
    assert I.cache_bytes_per_token(m, "absorbed") == 4 * cache_elements_per_token(cfg)
    assert I.cache_bytes_per_token(m, "latent") == 4 * cache_elements_per_token(cfg)
    assert I.cache_bytes_per_token(m, "expanded") == 4 * I.expanded_elements_per_token(cfg)
    assert I.cache_bytes_per_token(m, "none") == 0
    assert I.cache_bytes_per_token(m, "latent", dtype=torch.bfloat16) == 2 * cache_elements_per_token(cfg)
    assert I.expanded_elements_per_token(cfg) == cfg.n_layers * cfg.n_heads * (8 + 4 + 8)


def test_gqa_model_modes():
    m = small(attn="gqa", n_kv_heads=1, n_heads=2)
    x = torch.randint(0, 64, (1, 5))
    assert torch.equal(I.generate(m, x, 6, mode="none", temperature=0), I.generate(m, x, 6, mode="expanded", temperature=0))
    with pytest.raises(ValueError, match="needs an MLA model"):
        I.generate(m, x, 2, mode="absorbed")
    with pytest.raises(ValueError, match="latent cache exists only"):
        m.setup_cache(1, 8, kind="latent")
    assert I.cache_bytes_per_token(m, "expanded") == 4 * cache_elements_per_token(m.cfg)


def test_setup_cache_kind_errors_and_no_partial_state():
    m = small()
    with pytest.raises(ValueError, match="kind must be"):
        m.setup_cache(1, 8, kind="compressed")
    assert m.cache_bytes() == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        I.generate(m, torch.zeros(1, 2, dtype=torch.long), 1, mode="fast")


def test_decode_and_prefill_timers():
    m = small()
    for mode in I.MODES:
        assert I.decode_step_seconds(m, 16, mode, batch=2, repeats=2) > 0
    assert I.prefill_seconds(m, 16, batch=2, repeats=1) > 0
    assert m.cache_bytes() == 0 and not m.training
    with pytest.raises(ValueError, match="exceed max_seq_len"):
        I.decode_step_seconds(m, 49)
    with pytest.raises(ValueError, match="context"):
        I.decode_step_seconds(m, 1)
    with pytest.raises(ValueError, match="prefill_seconds: 49 positions exceed"):
        I.prefill_seconds(m, 49)
    with pytest.raises(ValueError, match="n_tokens must be"):
        I.prefill_seconds(m, 0)


# ---- the latent's rank ------------------------------------------------------------------------------------------

def test_truncated_latent_full_rank_is_identity_and_error_falls_with_rank():
    m = small()
    x = torch.randint(0, 64, (4, 24), generator=torch.Generator().manual_seed(5))
    bases = I.latent_bases(m, x)
    d_c = m.cfg.kv_lora_rank
    assert len(bases) == m.cfg.n_layers and all(U.shape == (d_c, d_c) for U in bases)
    for U in bases:                                          # orthonormal columns
        torch.testing.assert_close(U.T @ U, torch.eye(d_c), atol=1e-5, rtol=0)
    with torch.no_grad():
        full = m(x)["logits"]
        errs = []
        for r in range(1, d_c + 1):
            with I.truncated_latent(m, bases, r):
                errs.append((m(x)["logits"] - full).pow(2).mean().item())
        assert errs[-1] < 1e-10
        assert errs[0] > errs[d_c // 2] > errs[-1]
        torch.testing.assert_close(m(x)["logits"], full)     # hooks removed on exit
    with pytest.raises(ValueError, match="exceeds d_c"):
        with I.truncated_latent(m, bases, d_c + 1):
            pass
    with pytest.raises(ValueError, match="bases"):
        with I.truncated_latent(m, bases[:1], 2):
            pass


def test_latent_bases_is_eckart_young_on_the_captured_latents():
    m = small()
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(6))
    seen = []
    h = m.layers[0].attn.kv_norm.register_forward_hook(lambda mod, i, o: seen.append(o.flatten(0, 1)))
    with torch.no_grad():
        m(x)
    h.remove()
    C = seen[0]
    U = I.latent_bases(m, x)[0]
    r = 3
    proj = C @ U[:, :r] @ U[:, :r].T
    s = torch.linalg.svdvals(C)
    torch.testing.assert_close((C - proj).pow(2).sum(), s[r:].pow(2).sum(), rtol=1e-4, atol=1e-6)


# ---- one request end to end -------------------------------------------------------------------------------------

def test_complete_on_the_base_model():
    from helpers.pretraining import load_base
    from helpers.tokenizer import load_tokenizer
    torch.set_num_threads(1)
    base, tok = load_base("cpu"), load_tokenizer()
    prompt = "Q: What is (3 + 4) * 2?\nA:"
    plain = I.complete(base, tok, prompt, 16)
    spec = I.complete(base, tok, prompt, 16, speculative=True)
    none = I.complete(base, tok, prompt, 16, mode="none")
    assert plain["text"] == spec["text"] == none["text"] and plain["new_tokens"] == 16
    n = plain["prompt_tokens"] + 16
    assert plain["prompt_tokens"] == len(tok.encode(prompt))
    assert plain["cache_bytes"] == n * 4 * cache_elements_per_token(base.cfg) and none["cache_bytes"] == 0
    per_layer = (base.cfg.kv_lora_rank + base.cfg.qk_rope_head_dim) * 4
    assert spec["cache_bytes"] == plain["cache_bytes"] + n * per_layer       # + the MTP module's latent
    assert 0 <= spec["acceptance"] <= 1 and spec["main_forwards"] <= 16 and math.isnan(plain["acceptance"])
    assert plain["ttft_s"] > 0 and plain["tokens_per_s"] > 0
    a = I.complete(base, tok, prompt, 12, temperature=1.0, top_k=20, seed=3)
    assert a["text"] == I.complete(base, tok, prompt, 12, temperature=1.0, top_k=20, seed=3)["text"]
    long = I.complete(base, tok, "x " * 400, 8)                          # keeps the last tokens of a long prompt
    assert long["prompt_tokens"] == base.cfg.max_seq_len - 8
    with pytest.raises(ValueError, match="greedy"):
        I.complete(base, tok, prompt, 4, temperature=0.5, speculative=True)
    with pytest.raises(ValueError, match="latent cache"):
        I.complete(base, tok, prompt, 4, mode="expanded", speculative=True)
    with pytest.raises(ValueError, match="non-empty"):
        I.complete(base, tok, "", 4)
    with pytest.raises(ValueError, match="no room"):
        I.complete(base, tok, prompt, base.cfg.max_seq_len)
    assert base.cache_bytes() == 0


def test_greedy_match_allows_only_near_ties():
    m = small()
    x = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(8))
    a = I.generate(m, x, 10, temperature=0)
    assert I.greedy_match(m, a, a.clone(), 6)
    b = a.clone()
    b[1, 8] = (b[1, 8] + 1) % 64                                          # a real difference, not a tie
    with torch.no_grad():
        top = m(a[1:2, :8])["logits"][0, -1].topk(2).values
    assert I.greedy_match(m, a, b, 6) == bool(top[0] - top[1] < 1e-3)
    assert I.greedy_match(m, a, b, 6, tol=float("inf"))
    assert not I.greedy_match(m, a, a[:, :-1], 6)


@pytest.mark.parametrize("impl,path", [("naive", "naive"), ("absorb", "absorbed")])
def test_decode_attention_cost_slope_matches_counted_flops(impl, path):
    """The FLOPs one decode step adds per cached position, counted by torch's FlopCounterMode on a real MLA layer at
    two context lengths, equal the formula's slope (the context-independent projections cancel in the difference)."""
    from torch.utils.flop_counter import FlopCounterMode
    from helpers.attention import MLA
    from helpers.rope import precompute_freqs_cis

    cfg = ModelConfig.cpu(attn_impl=impl, max_seq_len=64)
    torch.manual_seed(0)
    layer = MLA(cfg).eval()
    freqs = precompute_freqs_cis(cfg.qk_rope_head_dim, 64)

    def counted(s):
        layer.setup_cache(1, 64)
        with torch.no_grad():
            layer(torch.randn(1, s, cfg.dim), freqs[:s], 0)          # prefill s − 1 … fill the cache
            with FlopCounterMode(display=False) as fc:
                layer(torch.randn(1, 1, cfg.dim), freqs[s:s + 1], s)  # one new token against s + 1 positions
        return fc.get_total_flops()

    slope = counted(40) - counted(20)
    formula = I.decode_attention_cost(cfg, 41, path)["flops"] - I.decode_attention_cost(cfg, 21, path)["flops"]
    assert slope == formula


def test_decode_attention_cost_v3_absorbed_is_cheaper_and_errors():
    v3 = deepseek_v3_config()
    naive, absorbed, expanded = (I.decode_attention_cost(v3, 4096, p) for p in ("naive", "absorbed", "expanded"))
    assert naive["flops"] > 50 * absorbed["flops"]
    assert absorbed["bytes"] - 2 * 512 * 128 * 256 == 2 * 4096 * (512 + 64)      # cache + W^UK, W^UV in BF16
    assert expanded["bytes"] / absorbed["bytes"] > 8
    assert I.decode_attention_cost(v3, 1, "expanded")["bytes"] == 2 * 128 * (128 + 64 + 128)
    with pytest.raises(ValueError, match="path must be"):
        I.decode_attention_cost(v3, 8, "fast")
    with pytest.raises(ValueError, match="MLA config"):
        I.decode_attention_cost(ModelConfig.dense_tiny(), 8)
    with pytest.raises(ValueError, match="context"):
        I.decode_attention_cost(v3, 0)
