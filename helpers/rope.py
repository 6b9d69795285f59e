"""Rotary position embedding (RoPE), as DeepSeek-V3's inference/model.py applies it.

A head vector of even size d is read as d/2 consecutive pairs (x_{2j}, x_{2j+1}), i.e. complex numbers
z_j = x_{2j} + i·x_{2j+1}. Position m rotates pair j by the angle m·θ_j with

    θ_j = rope_theta^(−2j/d),   j = 0 … d/2 − 1,

    RoPE(x, m)_j = z_j · e^{i·m·θ_j}.

Because a rotation preserves dot products, ⟨R_m q, R_n k⟩ = Re Σ_j q_j · conj(k_j) · e^{i(m−n)θ_j}
depends on the positions only through the offset m − n (the relative-position property, §2.1.2 of the
report uses RoPE on the decoupled key/query parts of MLA).
"""
from __future__ import annotations

import math

import torch

__all__ = ["rope_frequencies", "precompute_freqs_cis", "apply_rotary_emb", "relative_scores"]


def _check(dim, theta, where: str) -> None:
    if not (isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 and dim % 2 == 0):
        raise ValueError(f"{where}: dim must be a positive even int (RoPE rotates pairs), got {dim!r}; "
                         "use the head's rotated size, e.g. 16")
    if not (isinstance(theta, (int, float)) and not isinstance(theta, bool) and math.isfinite(theta) and theta > 1):
        raise ValueError(f"{where}: theta (rope_theta) must be a finite number > 1, got {theta!r}; "
                         "the usual value is 10000.0")


def rope_frequencies(dim: int, theta: float = 10000.0) -> torch.Tensor:
    """The d/2 angular frequencies θ_j = theta^(−2j/d) (float32, shape [dim // 2])."""
    _check(dim, theta, "rope_frequencies")
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


def precompute_freqs_cis(dim: int, max_seq_len: int, theta: float = 10000.0,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The complex rotations e^{i·m·θ_j} for positions m = 0 … max_seq_len − 1: [max_seq_len, dim // 2].

    complex64 by default (as the reference code); ``dtype=torch.float64`` gives complex128 for exact checks.
    """
    _check(dim, theta, "precompute_freqs_cis")
    if not (isinstance(max_seq_len, int) and not isinstance(max_seq_len, bool) and max_seq_len > 0):
        raise ValueError(f"precompute_freqs_cis: max_seq_len must be a positive int (positions 0 … max_seq_len − 1), "
                         f"got {max_seq_len!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"precompute_freqs_cis: dtype must be torch.float32 or torch.float64, got {dtype}")
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=dtype) / dim))
    t = torch.arange(max_seq_len, dtype=dtype)
    return torch.polar(torch.ones(max_seq_len, dim // 2, dtype=dtype), torch.outer(t, freqs))


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate x [batch, seq, heads, d] (or [batch, seq, d]) by the rotations freqs_cis [seq, d/2].

    Pairs are consecutive elements (2j, 2j+1), exactly as in DeepSeek-V3's reference code. Computed in
    float32 (float64 for float64 inputs) and returned in x's dtype.
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"apply_rotary_emb: x must be [batch, seq, heads, d] or [batch, seq, d], got shape "
                         f"{tuple(x.shape)}; add a batch dimension with x[None]")
    if not freqs_cis.is_complex():
        raise TypeError(f"apply_rotary_emb: freqs_cis must be the complex tensor from precompute_freqs_cis, "
                        f"got dtype {freqs_cis.dtype}")
    if x.shape[-1] % 2:
        raise ValueError(f"apply_rotary_emb: last dimension must be even, got {x.shape[-1]}")
    seq = x.shape[1]
    if freqs_cis.shape != (seq, x.shape[-1] // 2):
        raise ValueError(f"apply_rotary_emb: freqs_cis has shape {tuple(freqs_cis.shape)}, expected "
                         f"({seq}, {x.shape[-1] // 2}) for x of shape {tuple(x.shape)}")
    dtype = x.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    z = torch.view_as_complex(x.to(work).reshape(*x.shape[:-1], -1, 2))
    shape = [1, seq] + [1] * (x.dim() - 3) + [x.shape[-1] // 2]
    y = torch.view_as_real(z * freqs_cis.to(z.dtype).view(*shape)).flatten(-2)
    return y.to(dtype)


def relative_scores(q: torch.Tensor, k: torch.Tensor, offsets, theta: float = 10000.0) -> torch.Tensor:
    """⟨R_{n+Δ} q, R_n k⟩ for each offset Δ in ``offsets`` (q, k: vectors of even size d), float64.

    By the relative-position property this is Re Σ_j q_j conj(k_j) e^{iΔθ_j}, whatever n is; this function
    evaluates that closed form (used for the RoPE widget; tests check it against explicit rotations).
    """
    if q.shape != k.shape or q.dim() != 1:
        raise ValueError(f"relative_scores: q and k must be 1-D vectors of the same size, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    _check(q.numel(), theta, "relative_scores")
    freqs = 1.0 / (theta ** (torch.arange(0, q.numel(), 2, dtype=torch.float64) / q.numel()))
    zq = torch.view_as_complex(q.double().reshape(-1, 2).contiguous())
    zk = torch.view_as_complex(k.double().reshape(-1, 2).contiguous())
    off = torch.as_tensor(offsets, dtype=torch.float64)
    return (zq * zk.conj() * torch.polar(torch.ones(len(off), len(freqs), dtype=torch.float64),
                                         off[:, None] * freqs)).real.sum(-1)
