"""YaRN context extension (§4.3): helpers.rope's YaRN functions, the config fields and the model wiring.

Checked against: plain RoPE (YaRN off or s = 1 must be bit-identical), a brute-force correction range that
scans pair indices and counts turns (no logarithms), the closed forms of the blend and of √t = 0.1 ln s + 1,
the worked V3 numbers in shared/reference/deepseek_v3.md, and the relative-position law of RoPE.
"""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.config import ModelConfig, deepseek_v3_config
from helpers.model import Transformer
from helpers.rope import (apply_rotary_emb, precompute_freqs_cis, rope_frequencies, yarn_active,
                          yarn_correction_dim, yarn_correction_range, yarn_frequencies, yarn_mscale, yarn_pairs,
                          yarn_ramp, yarn_softmax_scale)

DIMS = st.integers(1, 64).map(lambda k: 2 * k)
THETAS = st.sampled_from([1.5, 10.0, 500.0, 10000.0, 50000.0, 1e6, 1e7])
LENGTHS = st.integers(1, 2_000_000)


@st.composite
def betas(draw):
    slow = draw(st.integers(0, 40))
    return draw(st.integers(slow + 1, 200)), slow


# ---- brute force: integer pair indices, counting turns L / λ_i with λ_i = 2π θ^{2i/d} ---------------------

def turns(i, dim, theta, length):
    return length / (2 * math.pi * theta ** (2 * i / dim))


def brute_force_range(dim, theta, length, beta_fast, beta_slow):
    """low = ⌊j(β_fast)⌋ = the largest i with turns(i) ≥ β_fast; high = ⌈j(β_slow)⌉ = the smallest i with
    turns(i) ≤ β_slow (turns fall with i); both clamped to [0, d − 1]. Scanning i ∈ [−1, d] is enough to
    decide every clamped value."""
    scan = range(-1, dim + 1)
    at_least = [i for i in scan if turns(i, dim, theta, length) >= beta_fast]
    low = max(at_least) if at_least else -2                       # below −1: clamps to 0
    at_most = [i for i in scan if turns(i, dim, theta, length) <= beta_slow]
    high = min(at_most) if at_most else dim + 1                   # above d: clamps to d − 1
    return min(max(low, 0), dim - 1), min(max(high, 0), dim - 1)


# ---- YaRN off, or s = 1, is plain RoPE bit for bit -------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(dim=DIMS, theta=THETAS, n=st.integers(1, 300), orig=st.integers(1, 400), b=betas(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_off_or_factor_one_is_plain_rope(dim, theta, n, orig, b, dtype):
    plain = precompute_freqs_cis(dim, n, theta, dtype)
    off = precompute_freqs_cis(dim, n, theta, dtype, original_seq_len=0, rope_factor=40.0, beta_fast=b[0],
                               beta_slow=b[1])
    assert torch.equal(off, plain)
    # fields set, but the sequence is not longer than the pre-training one: inactive (V3's rule)
    inactive = precompute_freqs_cis(dim, n, theta, dtype, original_seq_len=max(n, orig), rope_factor=40.0)
    assert torch.equal(inactive, plain)
    # active with s = 1: every frequency kept exactly
    one = precompute_freqs_cis(dim, n, theta, dtype, original_seq_len=1, rope_factor=1.0, beta_fast=b[0],
                               beta_slow=b[1])
    assert torch.equal(one, plain)
    assert torch.equal(yarn_frequencies(dim, theta, 1.0, orig, *b, dtype=dtype),
                       1.0 / (theta ** (torch.arange(0, dim, 2, dtype=dtype) / dim)))


def test_yarn_active_rule():
    assert not yarn_active(512, 0) and not yarn_active(512, 512) and not yarn_active(100, 512)
    assert yarn_active(513, 512)
    assert not ModelConfig.cpu().yarn_active
    assert not ModelConfig.cpu(original_seq_len=512, rope_factor=4.0).yarn_active        # max_seq_len 512
    assert ModelConfig.cpu(original_seq_len=128, rope_factor=4.0).yarn_active


# ---- the frequencies: kept above the range, divided by s below it, blended in between --------------------

@settings(max_examples=60, deadline=None)
@given(dim=DIMS, theta=THETAS, orig=LENGTHS, b=betas(), factor=st.floats(1.0, 1000.0))
def test_frequencies_kept_divided_blended(dim, theta, orig, b, factor):
    low, high = yarn_correction_range(dim, theta, orig, *b)
    for dtype in (torch.float32, torch.float64):
        base = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=dtype) / dim))
        new = yarn_frequencies(dim, theta, factor, orig, *b, dtype=dtype)
        gamma = yarn_ramp(dim // 2, low, high, dtype=dtype)
        assert new.dtype == dtype and new.shape == (dim // 2,)
        kept, divided = gamma == 0, gamma == 1
        assert torch.equal(new[kept], base[kept])                    # high-frequency pairs: exactly θ_j
        assert torch.equal(new[divided], base[divided] / factor)     # low-frequency pairs: exactly θ_j / s
        assert bool((new <= base).all() and (new >= base / factor).all())
        assert bool((new[1:] <= new[:-1]).all())                     # still slower and slower with j
    # the blend against its closed form, in float64
    g = gamma.double()
    b64 = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    torch.testing.assert_close(yarn_frequencies(dim, theta, factor, orig, *b, dtype=torch.float64),
                               (1 - g) * b64 + g * b64 / factor, rtol=1e-12, atol=0)


@settings(max_examples=60, deadline=None)
@given(dim=DIMS, theta=THETAS, orig=LENGTHS, b=betas())
def test_ramp_monotone_in_unit_interval(dim, theta, orig, b):
    low, high = yarn_correction_range(dim, theta, orig, *b)
    g = yarn_ramp(dim // 2, low, high, dtype=torch.float64)
    assert bool(((g >= 0) & (g <= 1)).all())
    assert bool((g[1:] >= g[:-1]).all())
    j = torch.arange(dim // 2)
    assert bool((g[j <= low] == 0).all()) and bool((g[(j >= high) & (j > low)] == 1).all())
    if high > low:
        inner = (j > low) & (j < high)
        torch.testing.assert_close(g[inner], (j[inner].double() - low) / (high - low), rtol=0, atol=1e-15)


def test_ramp_step_when_range_is_a_point():
    assert yarn_ramp(6, 2, 2).tolist() == [0, 0, 0, 1, 1, 1]
    assert yarn_ramp(4, 0, 3).tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])


# ---- the correction range against brute force --------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(dim=DIMS, theta=THETAS, orig=LENGTHS, b=betas())
def test_correction_range_matches_brute_force(dim, theta, orig, b):
    assert yarn_correction_range(dim, theta, orig, *b) == brute_force_range(dim, theta, orig, *b)


@settings(max_examples=60, deadline=None)
@given(dim=DIMS, theta=THETAS, orig=st.integers(7, 2_000_000), b=betas())
def test_correction_dim_solves_turns_equation(dim, theta, orig, b):
    for beta in b:
        if beta == 0:
            assert yarn_correction_dim(beta, dim, theta, orig) == math.inf
            continue
        j = yarn_correction_dim(beta, dim, theta, orig)
        assert turns(j, dim, theta, orig) == pytest.approx(beta, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(dim=DIMS, theta=THETAS, orig=LENGTHS, b=betas(), factor=st.floats(1.0, 100.0))
def test_pair_table_law(dim, theta, orig, b, factor):
    """Extrapolated pairs (j > 0) turn at least β_fast times over L, interpolated ones at most β_slow times."""
    rows = yarn_pairs(dim, theta, orig, factor, *b)
    new = yarn_frequencies(dim, theta, factor, orig, *b, dtype=torch.float64)
    assert [r["pair"] for r in rows] == list(range(dim // 2))
    for r in rows:
        j = r["pair"]
        assert r["theta"] == pytest.approx(theta ** (-2 * j / dim), rel=1e-12)
        assert r["wavelength"] == pytest.approx(2 * math.pi / r["theta"], rel=1e-12)
        assert r["turns"] == pytest.approx(turns(j, dim, theta, orig), rel=1e-9)
        assert r["theta_yarn"] == new[j].item()
        assert r["kind"] == {0.0: "extrapolated", 1.0: "interpolated"}.get(r["ramp"], "blended")
        if r["kind"] == "extrapolated" and j > 0:
            assert r["turns"] >= b[0] * (1 - 1e-9)
        if r["kind"] == "interpolated":
            assert r["turns"] <= b[1] * (1 + 1e-9)
            assert r["wavelength_yarn"] == pytest.approx(factor * r["wavelength"], rel=1e-12)


# ---- the attention temperature ------------------------------------------------------------------------

def test_mscale_formula():
    assert yarn_mscale(1.0) == 1.0 and yarn_mscale(1) == 1.0
    assert yarn_mscale(math.e) == pytest.approx(1.1, rel=1e-15)
    assert yarn_mscale(math.e ** 2, mscale=0.5) == pytest.approx(1.1, rel=1e-15)
    assert yarn_mscale(40.0, mscale=0.0) == 1.0
    assert round(yarn_mscale(40.0), 4) == 1.3689
    assert yarn_softmax_scale(192, 1.0) == 192 ** -0.5


@settings(max_examples=50, deadline=None)
@given(s1=st.floats(1.0, 1e4), s2=st.floats(1.0, 1e4), m=st.floats(0.0, 5.0))
def test_mscale_is_logarithmic(s1, s2, m):
    """√t − 1 is 0.1·mscale·ln s: additive over products of factors, linear in mscale."""
    assert yarn_mscale(s1 * s2, m) - 1 == pytest.approx((yarn_mscale(s1, m) - 1) + (yarn_mscale(s2, m) - 1),
                                                         rel=1e-9, abs=1e-12)
    assert yarn_mscale(s1, m) - 1 == pytest.approx(m * (yarn_mscale(s1) - 1), rel=1e-9, abs=1e-12)


# ---- DeepSeek-V3's numbers ----------------------------------------------------------------------------

def test_deepseek_v3_numbers():
    v3 = deepseek_v3_config()
    d, theta, L, s = v3.qk_rope_head_dim, v3.rope_theta, v3.original_seq_len, v3.rope_factor
    assert (d, theta, L, s, v3.beta_fast, v3.beta_slow, v3.mscale) == (64, 10000.0, 4096, 40.0, 32, 1, 1.0)
    assert not v3.yarn_active                                        # pre-training length 4096 = L
    assert v3.replace(max_seq_len=131072).yarn_active                 # the 128K model of §4.3
    low, high = yarn_correction_range(d, theta, L, v3.beta_fast, v3.beta_slow)
    assert (low, high) == brute_force_range(d, theta, L, v3.beta_fast, v3.beta_slow) == (10, 23)
    rows = yarn_pairs(d, theta, L, s, v3.beta_fast, v3.beta_slow)
    print("\npair  wavelength  turns in 4096  ramp   kind")
    for r in rows:
        print(f"{r['pair']:4d}  {r['wavelength']:10.1f}  {r['turns']:13.3f}  {r['ramp']:.3f}  {r['kind']}")
    kinds = [r["kind"] for r in rows]
    assert kinds == ["extrapolated"] * 11 + ["blended"] * 12 + ["interpolated"] * 9
    f = yarn_frequencies(d, theta, s, L, v3.beta_fast, v3.beta_slow)            # float32, as V3's code
    # each against its closed form (θ_j = 10^{-j/8}; γ_j = (j − 10)/13 inside the ramp) ...
    assert f[0].item() == 1.0
    assert f[10].item() == pytest.approx(10 ** (-10 / 8), rel=1e-6)
    assert f[16].item() == pytest.approx(0.01 * (1 - 6 / 13 * (1 - 1 / 40)), rel=1e-6)    # = 0.0055
    assert f[31].item() == pytest.approx(10 ** (-31 / 8) / 40, rel=1e-6)
    # ... and against the worked numbers of the reference sheet
    assert (f[10].item(), f[16].item(), f[31].item()) == pytest.approx((0.05623413, 0.0055, 3.3338e-6), rel=1e-4)
    assert f.double().sum().item() == pytest.approx(3.94893627, rel=1e-7)
    assert yarn_mscale(s, v3.mscale) == pytest.approx(1.36888795, abs=1e-8)
    qk = v3.qk_nope_head_dim + v3.qk_rope_head_dim
    assert yarn_softmax_scale(qk, s, v3.mscale) == pytest.approx(0.13523378, abs=1e-8)
    # where the ramp sits: pair 10 turns ≥ 32 times in 4096 positions, pair 23 less than once
    assert rows[10]["turns"] >= 32 > rows[11]["turns"] and rows[22]["turns"] > 1 >= rows[23]["turns"]


# ---- the model ---------------------------------------------------------------------------------------

SMALL = dict(vocab_size=64, dim=32, n_heads=2, q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8,
             qk_rope_head_dim=8, v_head_dim=8, inter_dim=48, moe_inter_dim=16, max_seq_len=32)
KINDS = {"mla": dict(), "mla_absorb": dict(attn_impl="absorb"), "mha": dict(attn="mha"),
         "gqa": dict(attn="gqa", n_kv_heads=1)}


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return Transformer(ModelConfig.cpu(**{**SMALL, **kw})).eval()


@pytest.mark.parametrize("kind", list(KINDS))
def test_default_config_is_bit_identical(kind):
    """YaRN off (defaults) or fields set but inactive: the same table, the same scale, the same logits."""
    m = _model(**KINDS[kind])
    cfg = m.cfg
    assert torch.equal(m.freqs_cis("cpu"), precompute_freqs_cis(cfg.rope_dim, cfg.max_seq_len, cfg.rope_theta))
    head = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim if cfg.attn == "mla" else cfg.dim // cfg.n_heads
    assert all(layer.attn.softmax_scale == head ** -0.5 for layer in m.layers)
    idx = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(1))
    inactive = _model(**KINDS[kind], original_seq_len=32, rope_factor=40.0)   # max_seq_len = 32: off
    factor_one = _model(**KINDS[kind], original_seq_len=8, rope_factor=1.0)    # active, s = 1: nothing moves
    assert factor_one.cfg.yarn_active and not inactive.cfg.yarn_active
    with torch.no_grad():
        ref = m(idx, targets=idx)
        for other in (inactive, factor_one):
            out = other(idx, targets=idx)
            assert torch.equal(out["logits"], ref["logits"]) and torch.equal(out["loss"], ref["loss"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_yarn_model_loads_weights_and_runs_at_4x(kind):
    short = _model(**KINDS[kind])                                           # "pre-trained" at 32 positions
    long_cfg = short.cfg.replace(max_seq_len=128, original_seq_len=32, rope_factor=4.0)
    assert long_cfg.yarn_active
    torch.manual_seed(1)
    long = Transformer(long_cfg).eval()
    long.load_state_dict(short.state_dict(), strict=True)                   # no new weights: same state dict
    # frequencies: the table the config asks for, and only the slow pairs moved
    fc = long.freqs_cis("cpu")
    assert torch.equal(fc, precompute_freqs_cis(long_cfg.rope_dim, 128, original_seq_len=32, rope_factor=4.0))
    low, high = yarn_correction_range(long_cfg.rope_dim, long_cfg.rope_theta, 32)
    plain = precompute_freqs_cis(long_cfg.rope_dim, 128)
    assert torch.equal(fc[:, :low + 1], plain[:, :low + 1]) and not torch.equal(fc, plain)
    head = (long_cfg.qk_nope_head_dim + long_cfg.qk_rope_head_dim if long_cfg.attn == "mla"
            else long_cfg.dim // long_cfg.n_heads)
    assert all(layer.attn.softmax_scale == pytest.approx(yarn_softmax_scale(head, 4.0)) for layer in long.layers)
    idx = torch.randint(0, 64, (2, 128), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = long(idx, targets=idx)
        assert out["logits"].shape == (2, 128, 64)
        assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["loss"])
        with pytest.raises(ValueError, match="max_seq_len = 32"):
            short(idx)
        # the cached decoder agrees with the full forward past the original length
        long.setup_cache(2, 128)
        first = long(idx[:, :100])["logits"]
        steps = [long(idx[:, p:p + 1], start_pos=p)["logits"] for p in range(100, 104)]
        long.clear_cache()
    torch.testing.assert_close(torch.cat([first] + steps, 1), out["logits"][:, :104], atol=2e-5, rtol=1e-4)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 300), n=st.integers(0, 300), shift=st.integers(0, 300), seed=st.integers(0, 10_000),
       factor=st.floats(1.0, 64.0))
def test_relative_position_law_under_yarn(m, n, shift, seed, factor):
    """YaRN only changes the frequencies, so ⟨R_m q, R_n k⟩ still depends on m − n alone."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, 1, 1, 16, generator=g, dtype=torch.float64) for _ in range(2))
    fc = precompute_freqs_cis(16, 601, dtype=torch.float64, original_seq_len=100, rope_factor=factor)
    assert not torch.equal(fc, precompute_freqs_cis(16, 601, dtype=torch.float64)) or factor == 1.0

    def dot(a, b):
        return (apply_rotary_emb(q, fc[a:a + 1]) * apply_rotary_emb(k, fc[b:b + 1])).sum().item()
    assert dot(m, n) == pytest.approx(dot(m + shift, n + shift), abs=1e-9)


# ---- bad arguments ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(rope_factor=0.5), r"rope_factor \(YaRN's s\) must be ≥ 1, got 0.5.*use 1.0"),
    (dict(rope_factor=float("nan")), r"rope_factor must be a finite number, got nan"),
    (dict(original_seq_len=-1), r"original_seq_len must be ≥ 0, got -1.*use 0"),
    (dict(original_seq_len=128.0), r"original_seq_len must be an int, got 128.0"),
    (dict(beta_slow=-1), r"beta_slow must be ≥ 0, got -1"),
    (dict(beta_fast=1, beta_slow=1), r"beta_fast = 1 must be larger than beta_slow = 1"),
    (dict(beta_fast=2, beta_slow=5), r"beta_fast = 2 must be larger than beta_slow = 5"),
    (dict(mscale=-1.0), r"mscale must be ≥ 0, got -1.0"),
])
def test_config_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.cpu(**kw)


@pytest.mark.parametrize("call,match", [
    (lambda: yarn_frequencies(15, 10000.0, 4.0, 128), r"dim must be a positive even int"),
    (lambda: yarn_frequencies(16, 1.0, 4.0, 128), r"theta \(rope_theta\) must be a finite number > 1"),
    (lambda: yarn_frequencies(16, 10000.0, 0.5, 128), r"factor \(the extension factor s\) must be a finite number ≥ 1, "
                                                      r"got 0.5"),
    (lambda: yarn_frequencies(16, 10000.0, 4.0, 0), r"original_seq_len must be a positive int.*got 0.*4096"),
    (lambda: yarn_frequencies(16, 10000.0, 4.0, 128, 1, 32), r"beta_fast must be a finite number larger than "
                                                             r"beta_slow = 32, got 1"),
    (lambda: yarn_frequencies(16, 10000.0, 4.0, 128, dtype=torch.float16), r"dtype must be torch.float32"),
    (lambda: yarn_correction_range(16, 10000.0, 128, 32, -1), r"beta_slow must be a finite number ≥ 0 .*got -1"),
    (lambda: yarn_correction_dim(-1, 16, 10000.0, 128), r"n_turns must be a finite number ≥ 0, got -1"),
    (lambda: yarn_ramp(0, 0, 1), r"n_pairs must be a positive int"),
    (lambda: yarn_ramp(8, 3, 2), r"0 ≤ low ≤ high, got low=3, high=2"),
    (lambda: yarn_ramp(8, -1, 2), r"0 ≤ low ≤ high, got low=-1"),
    (lambda: yarn_mscale(0.9), r"factor \(the extension factor s\) must be a finite number ≥ 1, got 0.9"),
    (lambda: yarn_mscale(40.0, mscale=float("inf")), r"mscale must be a finite number ≥ 0, got inf"),
    (lambda: yarn_softmax_scale(0, 40.0), r"qk_head_dim must be a positive int"),
    (lambda: yarn_pairs(16, 10000.0, 128, factor=True), r"factor .* got True"),
    (lambda: precompute_freqs_cis(16, 64, rope_factor=0.5, original_seq_len=16), r"rope_factor \(the extension "
                                                                                 r"factor s\) must be .* got 0.5"),
    (lambda: precompute_freqs_cis(16, 64, original_seq_len=-3), r"original_seq_len must be an int ≥ 0 "
                                                                r"\(0 = YaRN off\).*got -3"),
])
def test_rope_yarn_rejects(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_plain_frequencies_untouched():
    """rope_frequencies (plain θ_j) is what YaRN starts from: the extrapolated pairs equal it exactly."""
    low, _ = yarn_correction_range(16, 10000.0, 128)
    assert torch.equal(yarn_frequencies(16, 10000.0, 8.0, 128)[:low + 1], rope_frequencies(16)[:low + 1])
