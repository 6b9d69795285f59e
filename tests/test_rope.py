"""RoPE against an independent real-valued rotation, and its relative-position law."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.rope import apply_rotary_emb, precompute_freqs_cis, relative_scores, rope_frequencies


def rotate_reference(x, positions, theta=10000.0):
    """Rotate consecutive pairs (x_{2j}, x_{2j+1}) by angle m·theta^(-2j/d), written with cos/sin."""
    d = x.shape[-1]
    out = torch.empty_like(x, dtype=torch.float64)
    for j in range(d // 2):
        ang = positions.double() * theta ** (-2 * j / d)
        shape = [1, -1] + [1] * (x.dim() - 2)
        c, s = torch.cos(ang).view(shape[: x.dim() - 1]), torch.sin(ang).view(shape[: x.dim() - 1])
        a, b = x[..., 2 * j].double(), x[..., 2 * j + 1].double()
        out[..., 2 * j] = a * c - b * s
        out[..., 2 * j + 1] = a * s + b * c
    return out


def test_frequencies_formula():
    f = rope_frequencies(16, 10000.0)
    assert f.shape == (8,)
    for j in range(8):
        assert f[j].item() == pytest.approx(10000.0 ** (-2 * j / 16), rel=1e-6)


def test_precompute_is_unit_rotations():
    fc = precompute_freqs_cis(8, 20)
    assert fc.shape == (20, 4) and fc.dtype == torch.complex64
    torch.testing.assert_close(fc.abs(), torch.ones(20, 4))
    torch.testing.assert_close(fc[0], torch.ones(4, dtype=torch.complex64))


@pytest.mark.parametrize("shape", [(2, 7, 3, 8), (2, 7, 6)])
def test_apply_matches_cos_sin_reference(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    y = apply_rotary_emb(x, precompute_freqs_cis(shape[-1], shape[1]))
    ref = rotate_reference(x, torch.arange(shape[1]))
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)  # rotations keep norms


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(0, 200), seed=st.integers(0, 10_000))
def test_dot_product_depends_only_on_offset(m, n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    fc = precompute_freqs_cis(16, 401)

    def dot(a, b):
        return (apply_rotary_emb(q, fc[a:a + 1]) * apply_rotary_emb(k, fc[b:b + 1])).sum().item()
    assert dot(m, n) == pytest.approx(dot(m + shift, n + shift), abs=2e-4)


def test_errors():
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="freqs_cis"):
        apply_rotary_emb(torch.randn(1, 5, 2, 8), precompute_freqs_cis(8, 4))
    with pytest.raises(ValueError, match="even"):
        apply_rotary_emb(torch.randn(1, 5, 2, 7), precompute_freqs_cis(8, 5))


def test_relative_scores_closed_form():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    fc = precompute_freqs_cis(8, 300, dtype=torch.float64)
    offsets = [0, 1, 7, 100]
    got = relative_scores(q, k, offsets)
    for o, v in zip(offsets, got):
        n = 37
        ref = (apply_rotary_emb(q.view(1, 1, 8), fc[n + o:n + o + 1]) * apply_rotary_emb(k.view(1, 1, 8), fc[n:n + 1])).sum()
        assert v.item() == pytest.approx(ref.item(), abs=1e-10)
    assert got[0].item() == pytest.approx((q @ k).item())
    with pytest.raises(ValueError):
        relative_scores(q, k[:6], [0])
