"""FP8 quantisation with scales, limited-precision accumulation, the FP8-emulated linear layer."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.fp8 import (E4M3_MAX, BF16Linear, FP8Linear, block_outlier_damage, fake_quant, limited_dot,
                         quant_error, quantize_fp8, restore_linears, round_mantissa, scaled_mm_available,
                         scaled_mm_fp8, swap_linears)
from helpers.model import ModelConfig, Transformer
from helpers.precision import quantize


@pytest.mark.parametrize("gran,shape", [("tensor", (7, 300)), ("tile", (5, 3, 200)), ("block", (130, 260))])
def test_equals_hand_rounding_with_scales(gran, shape):
    torch.manual_seed(0)
    x = torch.randn(shape) * torch.logspace(-3, 2, shape[-1])
    q = quantize_fp8(x, gran)
    assert q.q.dtype == torch.float8_e4m3fn and q.q.float().abs().max() <= E4M3_MAX
    assert q.q.float().abs().amax().item() == E4M3_MAX          # the largest value of a group lands on 448
    # the hand rule on x / s, group by group, equals the cast (dequantised back)
    from helpers.fp8 import _group, _ungroup
    g = _group(x, gran, 128, -1)
    ref = _ungroup(quantize(g / q.scale, "fp8_e4m3", saturate=True).float() * q.scale, shape, gran, 128, -1)
    assert torch.equal(ref, q.dequantize())


def test_outlier_hurts_per_tensor_not_tiles():
    torch.manual_seed(0)
    x = torch.randn(256, 256)
    x[:, 3] *= 1000.0                                             # an outlier channel
    e = {g: quant_error(x, g)["rel_err"] for g in ("tensor", "tile", "block")}
    assert e["tile"] < e["block"] <= e["tensor"] * 1.01
    # away from the outlier's tiles, tiles keep E4M3's own error (≤ 2^-4 relative per value)
    xh = fake_quant(x, "tile")
    far = (xh[:, 128:] - x[:, 128:]).abs() / x[:, 128:].abs()
    assert far.max() <= 2 ** -4 + 1e-6


def test_tiles_along_other_dim_and_partial_tiles():
    x = torch.randn(200, 96)
    a = fake_quant(x, "tile", dim=0)
    b = fake_quant(x.t().contiguous(), "tile").t()
    assert torch.equal(a, b) and a.shape == x.shape


@settings(max_examples=30, deadline=None)
@given(st.floats(1e-30, 1e30), st.integers(1, 20))
def test_round_mantissa_bounds(v, bits):
    x = torch.tensor([v], dtype=torch.float64)
    for mode in ("nearest", "truncate"):
        r = round_mantissa(x, bits, mode).item()
        assert abs(r - v) <= v * 2.0 ** -bits * (0.5 if mode == "nearest" else 1.0) * (1 + 1e-12)
        if mode == "truncate":
            assert r <= v


def test_limited_accumulator_error_grows_and_promotion_fixes_it():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(64, 4096, generator=g).to(torch.float8_e4m3fn).double()
    b = torch.rand(64, 4096, generator=g).to(torch.float8_e4m3fn).double()
    exact = torch.stack([(a[:, :k] * b[:, :k]).sum(1) for k in (512, 4096)])
    lim = limited_dot(a, b, 14, None, "truncate", prefixes=[512, 4096])
    pro = limited_dot(a, b, 14, 128, "truncate", prefixes=[512, 4096])
    err = ((lim - exact).abs() / exact).max(1)[0]
    perr = ((pro - exact).abs() / exact).max(1)[0]
    assert err[1] > 4 * err[0] and 0.005 < err[1] < 0.1           # one-sided error grows ~linearly in K
    assert perr[1] < err[1] / 20
    # with plenty of bits it is exact FP32 summation
    assert torch.allclose(limited_dot(a, b, 52, None, "nearest"), exact[1], rtol=1e-6)


def test_fp8_linear_close_to_fp32_and_gradients_flow():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 192, bias=False)
    x = torch.randn(4, 64, 256, requires_grad=True)
    f = FP8Linear(lin)
    y, y0 = f(x), lin(x)
    assert (y - y0).norm() / y0.norm() < 0.06
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad((y * g).sum(), [x, lin.weight])
    gx0, gw0 = torch.autograd.grad((y0 * g).sum(), [x, lin.weight])
    assert (gx - gx0).norm() / gx0.norm() < 0.08 and (gw - gw0).norm() / gw0.norm() < 0.08
    # backward uses exactly the quantised operands (recomputed here by hand)
    g2 = g.reshape(-1, 192)
    torch.testing.assert_close(gx.reshape(-1, 256), fake_quant(g2, "tile") @ fake_quant(lin.weight, "block"))
    torch.testing.assert_close(gw, fake_quant(g2, "tile", dim=0).t() @ fake_quant(x.detach().reshape(-1, 256), "tile", dim=0))


def test_swap_and_restore_keep_parameters():
    torch.manual_seed(0)
    m = Transformer(ModelConfig.cpu(n_layers=2, vocab_size=64, max_seq_len=32))
    params = {n: p for n, p in m.named_parameters()}
    x = torch.randint(0, 64, (2, 16))
    ref = m(x, targets=x)["loss"].item()
    names = swap_linears(m, "fp8")
    assert names and "head" not in names and all(isinstance(m.get_submodule(n), FP8Linear) for n in names)
    assert set(map(id, m.parameters())) == set(map(id, params.values()))
    fp8 = m(x, targets=x)["loss"].item()
    assert fp8 != ref and abs(fp8 - ref) / ref < 0.01
    assert restore_linears(m) == len(names)
    assert m(x, targets=x)["loss"].item() == ref
    swap_linears(m, "bf16")
    assert isinstance(m.layers[0].attn.wkv_a, BF16Linear)
    restore_linears(m)


def test_scaled_mm_matches_emulation_when_available():
    ok = scaled_mm_available()
    if ok is not True:
        pytest.skip(f"torch._scaled_mm unavailable on CPU here: {ok}")
    torch.manual_seed(0)
    x, w = torch.randn(32, 256), torch.randn(48, 256)
    for rowwise in (True, False):
        gran = "tile" if rowwise else "tensor"
        emu = fake_quant(x, gran, tile=256) @ fake_quant(w, gran, tile=256).t()
        torch.testing.assert_close(scaled_mm_fp8(x, w, rowwise), emu, rtol=1e-5, atol=1e-4)


def test_block_damage_on_an_outlier_token():
    torch.manual_seed(0)
    g = torch.randn(256, 128) * 1e-3
    g[5] *= 1e5                                                   # one token with a huge gradient
    d = block_outlier_damage(g)
    others = torch.arange(256) != 5
    same_block = others & (torch.arange(256) < 128)
    assert d["block_err"][same_block].median() > 8 * d["tile_err"][same_block].median()
    assert d["block_err"][128:].median() < 0.05 and d["block_zeroed"][same_block].mean() > 0.3
    assert d["tile_zeroed"].max() < 0.05


def test_errors():
    with pytest.raises(ValueError, match="granularity"):
        quantize_fp8(torch.randn(4, 4), "row")
    with pytest.raises(ValueError, match="2-D"):
        quantize_fp8(torch.randn(2, 4, 4), "block")
    with pytest.raises(TypeError, match="floating-point"):
        quantize_fp8(torch.arange(4), "tile")
    with pytest.raises(ValueError, match="same shape"):
        limited_dot(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="promote_every"):
        limited_dot(torch.randn(2, 3), torch.randn(2, 3), promote_every=0)
    with pytest.raises(ValueError, match="mode"):
        round_mantissa(torch.ones(1), 4, "up")
    with pytest.raises(ValueError, match="kind"):
        swap_linears(torch.nn.Linear(2, 2), "fp4")
    with pytest.raises(ValueError, match="bias"):
        FP8Linear(torch.nn.Linear(2, 2))
    assert math.isfinite(E4M3_MAX)


def test_paired_gaps_interval_and_verdicts():
    from helpers.fp8 import paired_gaps
    r = paired_gaps([1.01, 2.0, 3.03], [1.0, 2.0, 3.0], claim=0.0025)
    assert r["per_seed"] == pytest.approx([0.01, 0.0, 0.01])
    assert r["mean"] == pytest.approx(0.02 / 3) and r["std"] == pytest.approx(math.sqrt(((0.01 - 0.02 / 3) ** 2 * 2 + (0.02 / 3) ** 2) / 2))
    try:                                                          # the t quantile, independently
        from scipy.stats import t as student_t
        assert r["ci95_half_width"] == pytest.approx(student_t.ppf(0.975, 2) * r["std"] / math.sqrt(3), rel=1e-3)
    except ImportError:
        pass
    assert r["verdict"] == "not resolved" and not r["measurable"]
    tight = paired_gaps([1.0001, 1.0002, 1.0001, 1.0002], [1.0] * 4)
    assert tight["verdict"] == "reproduced" and tight["measurable"] and tight["ci95"][1] < 0.0025
    far = paired_gaps([1.05, 1.051, 1.052], [1.0] * 3)
    assert far["verdict"] == "contradicted"
    with pytest.raises(ValueError, match="same number"):
        paired_gaps([1.0], [1.0])
    with pytest.raises(ValueError, match="claim"):
        paired_gaps([1.0, 1.0], [1.0, 1.0], claim=0)


def test_train_with_precision_is_paired_and_bigram_uses_the_same_windows():
    from helpers.fp8 import bigram_baseline, train_with_precision
    kw = dict(steps=2, batch_size=2, block_size=16, n_layers=1, eval_batches=1, n_routed_experts=4,
              n_expert_groups=1, n_limited_groups=1, mtp_depth=0)
    a, b = train_with_precision("fp32", 0, **kw), train_with_precision("fp32", 0, **kw)
    assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]      # deterministic
    f = train_with_precision("fp8", 0, **kw)
    assert f["train_loss"][0] != a["train_loss"][0] and abs(f["train_loss"][0] - a["train_loss"][0]) < 0.05
    assert set(a["val_losses"]) == {"shakespeare", "code", "arithmetic"}
    bg = bigram_baseline(block_size=16, eval_batches=1)
    assert bg["val_loss"] == pytest.approx(sum(bg["val_losses"].values()) / 3)
    assert 0 < bg["val_loss"] < math.log(4096) < a["val_loss"] + 1          # bigram far below uniform
    with pytest.raises(ValueError, match="kind"):
        train_with_precision("fp4", 0)
    with pytest.raises(ValueError, match="steps"):
        train_with_precision("fp8", 0, steps=0)
