"""Rotary position embedding (RoPE), as DeepSeek-V3's inference/model.py applies it.

A head vector of even size d is read as d/2 consecutive pairs (x_{2j}, x_{2j+1}), i.e. complex numbers
z_j = x_{2j} + i·x_{2j+1}. Position m rotates pair j by the angle m·θ_j with

    θ_j = rope_theta^(−2j/d),   j = 0 … d/2 − 1,

    RoPE(x, m)_j = z_j · e^{i·m·θ_j}.

Because a rotation preserves dot products, ⟨R_m q, R_n k⟩ = Re Σ_j q_j · conj(k_j) · e^{i(m−n)θ_j}
depends on the positions only through the offset m − n (the relative-position property; §2.1.1 of the
report uses RoPE on the decoupled key/query parts of MLA).

Why plain RoPE breaks past the trained length, and what YaRN does (§4.3)
------------------------------------------------------------------------
Pair j turns once every λ_j = 2π/θ_j positions (its wavelength). Over a pre-training context of L
positions (``original_seq_len``) it completes r_j = L/λ_j turns. Fast pairs (small j, short λ_j) turn
many times inside L, so the model has seen every angle they can take; running at longer sequences only
repeats angles it knows. Slow pairs (large j) have λ_j longer than L: during training they only ever
swept part of the circle, and positions beyond L give them angles the model has never seen. That is
where attention breaks when a model is simply run longer than it was trained.

Dividing every frequency by the extension factor s ("position interpolation") keeps all angles inside
the trained range, but it also slows the fast pairs s times, squeezing neighbouring tokens together in
exactly the dimensions that resolve local order. YaRN treats the pairs by how many turns they make in L:

- r_j ≥ β_fast turns: the pair keeps θ_j (extrapolate; nothing unseen happens there);
- r_j ≤ β_slow turns: the pair gets θ_j / s (interpolate; its angles stay inside the trained range);
- in between, a linear ramp in the pair index blends the two.

The pair index where r_j equals a given number of turns β solves L / (2π·θ^{2j/d}) = β:

    j(β) = d · ln( L / (2π·β) ) / (2 · ln θ).

The ramp runs from low = ⌊j(β_fast)⌋ to high = ⌈j(β_slow)⌉ (clamped to [0, d − 1] as in DeepSeek-V3's
inference code), γ_j = clamp((j − low)/(high − low), 0, 1), and

    θ'_j = (1 − γ_j)·θ_j + γ_j·θ_j / s.

A longer context spreads each query's attention over more keys, and interpolated pairs tell nearby
positions apart less sharply, so the softmax gets flatter; YaRN sharpens it again with a temperature,
√t = 0.1·ln s + 1. DeepSeek-V3 writes it as mscale = 0.1·mscale_cfg·ln s + 1 (mscale_cfg = 1.0) and
multiplies the softmax scale by mscale², so the logits are multiplied by (0.1 ln s + 1)². V3 uses
s = 40, β_fast = 32, β_slow = 1 (the report's β and α) on its L = 4096 pre-training context. As in V3's code, YaRN is on when
the sequence length exceeds L (``max_seq_len > original_seq_len``); otherwise everything above is unused.
"""
from __future__ import annotations

import math

import torch

__all__ = ["rope_frequencies", "precompute_freqs_cis", "apply_rotary_emb", "relative_scores", "yarn_active",
           "yarn_correction_dim", "yarn_correction_range", "yarn_ramp", "yarn_frequencies", "yarn_mscale",
           "yarn_softmax_scale", "yarn_pairs"]


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
                         dtype: torch.dtype = torch.float32, *, original_seq_len: int = 0, rope_factor: float = 1.0,
                         beta_fast: float = 32, beta_slow: float = 1) -> torch.Tensor:
    """The complex rotations e^{i·m·θ_j} for positions m = 0 … max_seq_len − 1: [max_seq_len, dim // 2].

    complex64 by default (as the reference code); ``dtype=torch.float64`` gives complex128 for exact checks.

    YaRN (keyword-only, off by default): when ``original_seq_len > 0`` and ``max_seq_len > original_seq_len``
    (see :func:`yarn_active`) the frequencies are :func:`yarn_frequencies` θ'_j (factor s = ``rope_factor``)
    instead of θ_j. Otherwise the table is exactly the plain RoPE table, bit for bit.
    """
    _check(dim, theta, "precompute_freqs_cis")
    if not (isinstance(max_seq_len, int) and not isinstance(max_seq_len, bool) and max_seq_len > 0):
        raise ValueError(f"precompute_freqs_cis: max_seq_len must be a positive int (positions 0 … max_seq_len − 1), "
                         f"got {max_seq_len!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"precompute_freqs_cis: dtype must be torch.float32 or torch.float64, got {dtype}")
    _check_yarn("precompute_freqs_cis", factor=rope_factor, beta_fast=beta_fast, beta_slow=beta_slow,
                original_seq_len=original_seq_len, allow_off=True, factor_name="rope_factor")
    if yarn_active(max_seq_len, original_seq_len):
        freqs = yarn_frequencies(dim, theta, rope_factor, original_seq_len, beta_fast, beta_slow, dtype=dtype)
    else:
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


# ---- YaRN context extension (§4.3) -----------------------------------------------------------------------

def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_yarn(where: str, *, factor=None, beta_fast=None, beta_slow=None, original_seq_len=None,
                mscale=None, allow_off: bool = False, factor_name: str = "factor") -> None:
    """Argument checks shared by the YaRN functions (only the arguments given are checked)."""
    if original_seq_len is not None:
        lo = 0 if allow_off else 1
        if not (isinstance(original_seq_len, int) and not isinstance(original_seq_len, bool)
                and original_seq_len >= lo):
            what = "an int ≥ 0 (0 = YaRN off)" if allow_off else "a positive int"
            raise ValueError(f"{where}: original_seq_len must be {what}: the context length the model was "
                             f"pre-trained at, got {original_seq_len!r}; DeepSeek-V3 uses 4096")
    if factor is not None and not (_is_real(factor) and factor >= 1):
        raise ValueError(f"{where}: {factor_name} (the extension factor s) must be a finite number ≥ 1, got "
                         f"{factor!r}; use 1.0 for no extension, DeepSeek-V3 uses 40")
    if beta_slow is not None and not (_is_real(beta_slow) and beta_slow >= 0):
        raise ValueError(f"{where}: beta_slow must be a finite number ≥ 0 (a number of turns over the original "
                         f"context), got {beta_slow!r}; DeepSeek-V3 uses 1")
    if beta_fast is not None and not (_is_real(beta_fast) and (beta_slow is None or beta_fast > beta_slow)):
        raise ValueError(f"{where}: beta_fast must be a finite number larger than beta_slow = {beta_slow!r}, got "
                         f"{beta_fast!r}; pairs turning more than beta_fast times keep their frequency, those "
                         "turning fewer than beta_slow times are interpolated (DeepSeek-V3: 32 and 1)")
    if mscale is not None and not (_is_real(mscale) and mscale >= 0):
        raise ValueError(f"{where}: mscale must be a finite number ≥ 0, got {mscale!r}; DeepSeek-V3 uses 1.0 "
                         "(0 switches the attention temperature off)")


def yarn_active(max_seq_len: int, original_seq_len: int) -> bool:
    """True when YaRN changes anything: ``original_seq_len > 0 and max_seq_len > original_seq_len``.

    This is DeepSeek-V3's rule (``if seqlen > args.original_seq_len``): a model run no longer than the context
    it was pre-trained at keeps plain RoPE and the plain softmax scale.
    """
    return original_seq_len > 0 and max_seq_len > original_seq_len


def yarn_correction_dim(n_turns: float, dim: int, theta: float, original_seq_len: int) -> float:
    """The (real) pair index j at which pair j turns ``n_turns`` times over ``original_seq_len`` positions.

    Pair j has wavelength λ_j = 2π·θ^{2j/d}, so it makes L/λ_j turns over L positions; solving L/λ_j = β:

        j(β) = d · ln( L / (2π·β) ) / (2 · ln θ).

    Decreasing in β (more turns ↔ faster pair ↔ smaller index); may lie outside [0, d/2) and is +∞ for β = 0.
    """
    _check(dim, theta, "yarn_correction_dim")
    _check_yarn("yarn_correction_dim", original_seq_len=original_seq_len)
    if not (_is_real(n_turns) and n_turns >= 0):
        raise ValueError(f"yarn_correction_dim: n_turns must be a finite number ≥ 0, got {n_turns!r}; "
                         "it is a number of turns over the original context, e.g. beta_fast = 32")
    if n_turns == 0:
        return math.inf
    return dim * math.log(original_seq_len / (2 * math.pi * n_turns)) / (2 * math.log(theta))


def yarn_correction_range(dim: int, theta: float, original_seq_len: int, beta_fast: float = 32,
                          beta_slow: float = 1) -> tuple[int, int]:
    """The ramp's ends (low, high) in pair indices: low = ⌊j(β_fast)⌋, high = ⌈j(β_slow)⌉ (see
    :func:`yarn_correction_dim`), each clamped to [0, d − 1].

    Pairs j ≤ low keep θ_j, pairs j ≥ high get θ_j / s. The upper clamp is d − 1, not d/2 − 1, as in
    DeepSeek-V3's ``find_correction_range``: a ramp that would end past the last pair is not shortened.
    V3 clamps low only from below and high only from above; clamping both ways changes nothing unless
    L < 2π·β_slow (high < 0: then low = high = 0) or L is astronomically long (low > d − 1), and keeps
    0 ≤ low ≤ high always (low < high whenever neither clamp bites, since j(β) falls as β grows).
    DeepSeek-V3 (d_h^R = 64, θ = 10000, L = 4096, β_fast = 32, β_slow = 1) gives (10, 23).
    """
    _check(dim, theta, "yarn_correction_range")
    _check_yarn("yarn_correction_range", beta_fast=beta_fast, beta_slow=beta_slow, original_seq_len=original_seq_len)

    def clamp(j: int) -> int:
        return min(max(j, 0), dim - 1)
    j_fast = yarn_correction_dim(beta_fast, dim, theta, original_seq_len)          # finite: beta_fast > 0
    j_slow = yarn_correction_dim(beta_slow, dim, theta, original_seq_len)          # +∞ for beta_slow = 0
    return clamp(math.floor(j_fast)), dim - 1 if math.isinf(j_slow) else clamp(math.ceil(j_slow))


def yarn_ramp(n_pairs: int, low: int, high: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """γ_j = clamp((j − low) / (high − low), 0, 1) for j = 0 … n_pairs − 1: 0 = keep θ_j, 1 = θ_j / s.

    Non-decreasing in j, 0 up to ``low`` and 1 from ``high`` on. When low == high the ramp is a step
    (γ_j = 0 for j ≤ low, 1 after), which is what DeepSeek-V3's ``high += 0.001`` amounts to.
    """
    if not (isinstance(n_pairs, int) and not isinstance(n_pairs, bool) and n_pairs > 0):
        raise ValueError(f"yarn_ramp: n_pairs must be a positive int (dim // 2), got {n_pairs!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) or not 0 <= low <= high:
        raise ValueError(f"yarn_ramp: low and high must be ints with 0 ≤ low ≤ high, got low={low!r}, high={high!r}; "
                         "take them from yarn_correction_range")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"yarn_ramp: dtype must be torch.float32 or torch.float64, got {dtype}")
    j = torch.arange(n_pairs, dtype=dtype)
    if low == high:
        return (j > low).to(dtype)
    return ((j - low) / (high - low)).clamp(0, 1)


def yarn_frequencies(dim: int, theta: float, factor: float, original_seq_len: int, beta_fast: float = 32,
                     beta_slow: float = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """YaRN's frequencies θ'_j = (1 − γ_j)·θ_j + γ_j·θ_j/s, shape [dim // 2] (float32 by default).

    γ is :func:`yarn_ramp` between :func:`yarn_correction_range`. The blend is evaluated from the nearer end
    (θ_j + γ·Δ for γ < ½, θ_j/s − (1 − γ)·Δ otherwise, Δ = θ_j/s − θ_j), so it is exact where it matters:
    γ_j = 0 gives θ_j bit for bit, γ_j = 1 gives θ_j/s bit for bit, and s = 1 gives the plain frequencies.
    """
    _check(dim, theta, "yarn_frequencies")
    _check_yarn("yarn_frequencies", factor=factor, beta_fast=beta_fast, beta_slow=beta_slow,
                original_seq_len=original_seq_len)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"yarn_frequencies: dtype must be torch.float32 or torch.float64, got {dtype}")
    base = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=dtype) / dim))       # the plain θ_j, same expression
    gamma = yarn_ramp(dim // 2, *yarn_correction_range(dim, theta, original_seq_len, beta_fast, beta_slow), dtype=dtype)
    slow = base / factor
    delta = slow - base
    return torch.where(gamma < 0.5, base + gamma * delta, slow - (1 - gamma) * delta)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention factor √t = 0.1 · mscale · ln s + 1 (1 for s = 1). DeepSeek-V3: s = 40 → 1.36889.

    The softmax scale is multiplied by its square (:func:`yarn_softmax_scale`).
    """
    _check_yarn("yarn_mscale", factor=factor, mscale=mscale)
    return 0.1 * mscale * math.log(factor) + 1.0


def yarn_softmax_scale(qk_head_dim: int, factor: float, mscale: float = 1.0) -> float:
    """The attention softmax scale with YaRN's temperature: qk_head_dim^(−½) · yarn_mscale(s, mscale)².

    qk_head_dim is the size of the dot product: d_h + d_h^R for MLA (V3: 192 → 0.135234), d_h for MHA/GQA.
    """
    if not (isinstance(qk_head_dim, int) and not isinstance(qk_head_dim, bool) and qk_head_dim > 0):
        raise ValueError(f"yarn_softmax_scale: qk_head_dim must be a positive int (d_h + d_h^R for MLA), "
                         f"got {qk_head_dim!r}")
    m = yarn_mscale(factor, mscale)
    return qk_head_dim ** -0.5 * m * m


def yarn_pairs(dim: int, theta: float, original_seq_len: int, factor: float = 1.0, beta_fast: float = 32,
               beta_slow: float = 1) -> list[dict]:
    """One row per frequency pair j, for tables and widgets (all values float64, as Python numbers):

    ``pair`` j, ``theta`` θ_j, ``wavelength`` 2π/θ_j (positions per turn), ``turns`` L/λ_j over the original
    context, ``ramp`` γ_j, ``kind`` ("extrapolated" γ = 0, "blended" 0 < γ < 1, "interpolated" γ = 1),
    ``theta_yarn`` θ'_j for the given factor s and ``wavelength_yarn`` 2π/θ'_j. The kind does not depend on s.
    """
    _check(dim, theta, "yarn_pairs")
    _check_yarn("yarn_pairs", factor=factor, beta_fast=beta_fast, beta_slow=beta_slow,
                original_seq_len=original_seq_len)
    base = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    gamma = yarn_ramp(dim // 2, *yarn_correction_range(dim, theta, original_seq_len, beta_fast, beta_slow),
                      dtype=torch.float64)
    new = yarn_frequencies(dim, theta, factor, original_seq_len, beta_fast, beta_slow, dtype=torch.float64)
    rows = []
    for j in range(dim // 2):
        g = gamma[j].item()
        lam = 2 * math.pi / base[j].item()
        rows.append({"pair": j, "theta": base[j].item(), "wavelength": lam, "turns": original_seq_len / lam,
                     "ramp": g, "kind": "extrapolated" if g == 0 else "interpolated" if g == 1 else "blended",
                     "theta_yarn": new[j].item(), "wavelength_yarn": 2 * math.pi / new[j].item()})
    return rows
