"""Number formats from bit counts against torch.finfo and torch's casts; rounding laws; policies; the BF16 stall."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.precision import (POLICIES, accumulate_updates, bytes_per_param, format_table, get_format,
                               precision_report, quantize, representable_values, training_state_bytes)

TORCH_FORMATS = ["fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2"]


@pytest.mark.parametrize("name", TORCH_FORMATS)
def test_constants_match_finfo(name):
    f = get_format(name)
    fi = torch.finfo(f.dtype)
    assert (f.max, f.min_normal, f.eps, f.bits) == (fi.max, fi.smallest_normal, fi.eps, fi.bits)


def test_known_values():
    assert get_format("e4m3").max == 448 and get_format("e5m2").max == 57344 and get_format("fp16").max == 65504
    assert get_format("fp8_e4m3").min_subnormal == 2 ** -9 and get_format("e5m6").eps == 2 ** -6
    assert [r["format"] for r in format_table()] == TORCH_FORMATS


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp8_e4m3", "fp8_e5m2"])
def test_quantize_matches_torch_cast(name):
    f = get_format(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50_000, generator=g) * torch.exp2(torch.randint(-30, 20, (50_000,), generator=g).float())
    x = torch.cat([x, representable_values(f, 0, min(f.max, 1e4))[:2000].float()])   # exact grid points and ties nearby
    x = x[x.abs() <= f.max]                                                         # in range (float32 inputs)
    torch.testing.assert_close(quantize(x, f), x.to(f.dtype).double(), rtol=0, atol=0)


def test_overflow_behaviour():
    big = torch.tensor([1e6, -1e6])
    assert torch.isinf(quantize(big, "fp8_e5m2")).all() and torch.isinf(quantize(big, "fp16")).all()
    assert torch.isnan(quantize(big, "fp8_e4m3")).all()                         # E4M3FN has no inf
    torch.testing.assert_close(quantize(big, "fp8_e4m3", saturate=True), big.to(torch.float8_e4m3fn).double())
    assert quantize(torch.tensor([464.0]), "e4m3").item() == 448                 # tie rounds to even (to max)
    assert quantize(torch.tensor([float("inf")]), "bf16").item() == math.inf


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e4, 1e4, allow_nan=False), st.sampled_from(["bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "e5m6"]))
def test_quantize_is_nearest_representable(x, name):
    f = get_format(name)
    q = quantize(torch.tensor([x], dtype=torch.float64), f, saturate=True).item()
    grid = representable_values(f, 0, f.max)
    grid = torch.cat([-grid.flip(0), grid])
    best = (grid - x).abs().min().item()
    assert abs(q - x) == pytest.approx(best, rel=1e-12, abs=0)                   # no grid point is closer
    assert quantize(torch.tensor([q]), f).item() == q                          # idempotent


def test_representable_values_counts():
    assert len(representable_values("fp8_e4m3")) == 127                        # 2^7 non-negative codes − NaN
    assert len(representable_values("fp8_e5m2")) == 124                        # 2^7 − 3 NaNs − inf
    v = representable_values("bf16", 1.0, 2.0)
    assert len(v) == 129 and v[1] - v[0] == 2 ** -7
    with pytest.raises(ValueError, match="lo"):
        representable_values("bf16", 2.0, 1.0)
    with pytest.raises(ValueError, match="narrow"):
        representable_values("fp32", 0.0, 1.0)


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown number format"):
        get_format("fp4")
    with pytest.raises(ValueError, match="unknown number format"):
        quantize(torch.ones(2), "int8")


def test_precision_report_counts():
    x = torch.tensor([1e-9, 0.5, 1.0, 3.0, 1000.0, 0.0], dtype=torch.float64)
    r = precision_report("fp8_e4m3", 1.0, x)
    assert (r["overflow"], r["underflow"], r["n"]) == (1, 1, 6)
    assert r["max_rel_err"] == 0.0                                             # 0.5, 1, 3 are exact in E4M3
    r2 = precision_report("fp8_e4m3", 0.4, x)                                  # 1000·0.4 = 400 ≤ 448: fits
    assert r2["overflow"] == 0 and r2["max_rel_err"] <= 2 ** -4 + 1e-12        # ≤ ε/2 for normal numbers
    rs = precision_report("fp8_e4m3", 1.0, x, saturate=True)
    assert rs["overflow"] == 1
    with pytest.raises(ValueError, match="scale"):
        precision_report("bf16", 0.0, x)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["bf16", "fp16", "fp8_e4m3", "fp8_e5m2"]), st.floats(1e-3, 1e3))
def test_relative_error_bound_in_normal_range(name, scale):
    f = get_format(name)
    x = torch.linspace(-3, 3, 997, dtype=torch.float64)
    r = precision_report(f, scale, x)
    if r["overflow"] == 0 and r["subnormal"] == 0 and r["underflow"] == 0:
        assert r["max_rel_err"] <= f.eps / 2 * (1 + 1e-12)


def test_policies():
    assert bytes_per_param("fp32 Adam") == 16 and bytes_per_param("bf16 mixed + fp32 master") == 16
    assert bytes_per_param("DeepSeek-V3 (FP8 GEMMs)") == 12 and bytes_per_param("pure bf16 (no master)") == 8
    s = training_state_bytes(671_000_000_000, "DeepSeek-V3 (FP8 GEMMs)")
    assert s["total"] == 12 * 671_000_000_000 and s["m"] == 2 * 671_000_000_000
    assert set(POLICIES) >= {"fp32 Adam", "DeepSeek-V3 (FP8 GEMMs)"}
    with pytest.raises(ValueError, match="unknown policy"):
        bytes_per_param("fp4 everything")


def test_bf16_updates_stall_fp32_do_not():
    w0 = torch.full((4,), 0.02, dtype=torch.float64)
    u = 1e-5                                                                   # < half the BF16 spacing at 0.02 (6.1e-5)
    assert torch.equal(accumulate_updates(w0, u, 200, "bf16"), quantize(w0, "bf16"))
    w32 = accumulate_updates(w0, u, 200, "fp32")
    assert torch.allclose(w32, w0 + 200 * u, rtol=1e-5)
    # the same, through torch's own bf16 arithmetic
    wt = w0.to(torch.bfloat16)
    for _ in range(200):
        wt = wt + torch.tensor(u, dtype=torch.bfloat16)
    assert torch.equal(wt.double(), accumulate_updates(w0, u, 200, "bf16"))
    _, traj = accumulate_updates(w0, u, 10, "fp32", every=5)
    assert traj.shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        accumulate_updates(w0, torch.ones(3), 5, "bf16")
