"""Attention and its inference state: MHA/GQA/MQA baselines and Multi-head Latent Attention (MLA, §2.1.1).

MHA/GQA/MQA (baselines). n_h query heads of size d_h; n_g key/value heads (n_g = n_h: MHA; 1 < n_g < n_h:
GQA; n_g = 1: MQA), each shared by n_h / n_g query heads. RoPE on the whole head, scale 1/sqrt(d_h).
Cache per token per layer: 2·n_g·d_h elements (a key and a value per KV head).

MLA, in the report's symbols (h_t the block input, already RMS-normalised by the block):

    c_t^Q  = RMSNorm(W^DQ h_t)                         query latent, rank d_c' = q_lora_rank
    [q_{t,i}^C]  = W^UQ c_t^Q,  [q_{t,i}^R] = RoPE(W^QR c_t^Q)     per head i: d_h and d_h^R parts
    c_t^KV = RMSNorm(W^DKV h_t)                        joint KV latent, rank d_c = kv_lora_rank
    k_t^R  = RoPE(W^KR h_t)                            decoupled key, d_h^R, shared by all heads
    [k_{t,i}^C] = W^UK c_t^KV,  [v_{t,i}^C] = W^UV c_t^KV
    o_{t,i} = Σ_{j≤t} softmax_j( (q_{t,i}^C·k_{j,i}^C + q_{t,i}^R·k_j^R) / sqrt(d_h + d_h^R) ) v_{j,i}^C
    u_t = W^O [o_{t,1}; …; o_{t,n_h}]

As in DeepSeek-V3's inference/model.py, W^UQ and W^QR are one matrix ``wq_b`` (per head the first d_h
rows are the content part, the last d_h^R the RoPE part), W^DKV and W^KR are one matrix ``wkv_a``, and W^UK
and W^UV are one matrix ``wkv_b`` (per head: d_h key rows then d_v value rows). The RMSNorm on c^KV is
applied before the up-projection (the reference code's ``kv_norm``). Only c_t^KV and k_t^R are cached:
d_c + d_h^R elements per token per layer.

Cache kinds (``setup_cache(..., kind=)``): "latent" (the default, what MLA is for) holds c^KV and k^R;
"expanded" holds the per-head keys [k^C; k^R] and values v^C that the naive path materialises, n_h·(d_h +
d_h^R + d_v) elements per token per layer, as an MHA cache would — the baseline chapter 05 measures against.

Two ways to compute the same numbers:
- naive: materialise k^C, v^C for every head from the latent, then ordinary attention;
- absorbed: q^C·k^C = q^C·(W^UK_i c) = (W^UK_iᵀ q^C)·c, so fold W^UK into the query and attend over the
  latent c^KV directly; and Σ_j p_j W^UV_i c_j = W^UV_i Σ_j p_j c_j, so apply W^UV once to the weighted sum
  of latents (what this module does), or fold it further into the output projection, W^O_i W^UV_i (one matrix
  per head, an option a deployment can take). This works only because the RoPE part is decoupled: RoPE applied to k^C would put a
  position-dependent rotation between W^UQ and W^UK and nothing fixed could be folded.

Training-time attention (the naive MLA path and MHA/GQA) goes through :func:`attend`: PyTorch's fused
``scaled_dot_product_attention`` on the fast path (the default, see ``helpers.runtime.fast_path``), and
softmax(q kᵀ · scale + mask) v written out on the reference path. The absorbed path is always written out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .norm import RMSNorm
from .rope import apply_rotary_emb, yarn_mscale
from .runtime import fast_path


__all__ = ["GQA", "MLA", "attend", "causal_mask", "kv_cache_elements_per_token", "kv_cache_bytes_per_token",
           "cache_elements_per_token"]


def causal_mask(seqlen: int, start_pos: int, device=None) -> torch.Tensor | None:
    """Boolean mask [seqlen, start_pos + seqlen], True where query start_pos+i may attend key j (j ≤ start_pos+i).

    None when no masking is needed (a single new token attends to the whole cache).
    """
    if seqlen == 1:
        return None
    i = torch.arange(seqlen, device=device)[:, None] + start_pos
    j = torch.arange(start_pos + seqlen, device=device)[None, :]
    return j <= i


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """softmax(q kᵀ · scale + M) v for q [b, h, t, d], k [b, h, s, d], v [b, h, s, d_v] → [b, h, t, d_v].

    M is 0 where ``mask`` [t, s] is True and −∞ elsewhere; ``causal=True`` (with no mask) means query i sees
    keys j ≤ i. Fast path: ``F.scaled_dot_product_attention``; reference path: the formula as written.
    """
    if fast_path():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, scale=scale)
    scores = (q @ k.transpose(-2, -1)) * scale                                    # [b, h, t, s]
    if causal and mask is None:
        mask = causal_mask(q.shape[-2], k.shape[-2] - q.shape[-2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    p = scores.softmax(dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).type_as(q)
    return p @ v


class _Cached(nn.Module):
    """Shared bookkeeping for a per-layer inference cache (allocated by ``setup_cache``)."""

    def _cache_names(self) -> tuple[str, ...]:  # pragma: no cover - overridden
        raise NotImplementedError

    def clear_cache(self) -> None:
        for n in self._cache_names():
            setattr(self, n, None)

    def _write(self, name: str, value: torch.Tensor, start_pos: int) -> torch.Tensor:
        buf = getattr(self, name)
        b, t = value.shape[:2]
        end = start_pos + t
        if b > buf.shape[0] or end > buf.shape[1]:
            raise ValueError(f"cache overflow: batch {b} × positions up to {end} do not fit the cache "
                             f"[{buf.shape[0]}, {buf.shape[1]}]; call setup_cache with a larger size")
        buf[:b, start_pos:end] = value.to(buf.dtype)
        return buf[:b, :end]


class GQA(_Cached):
    """Multi-head attention with n_kv_heads key/value heads: MHA (n_kv_heads = n_heads), GQA, MQA (1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.kv_heads
        self.head_dim = cfg.dim // cfg.n_heads
        self.wq = nn.Linear(cfg.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.dim, bias=False)
        self.softmax_scale = self.head_dim ** -0.5
        if cfg.yarn_active:                      # YaRN's attention temperature (§4.3), × mscale²
            self.softmax_scale = self.softmax_scale * yarn_mscale(cfg.rope_factor, cfg.mscale) ** 2
        self.k_cache = self.v_cache = None

    def _cache_names(self):
        return ("k_cache", "v_cache")

    def setup_cache(self, batch_size: int, max_len: int, device=None, dtype=torch.float32,
                    kind: str | None = None) -> None:
        """Allocate K and V [B, max_len, n_g, d_h]; ``kind`` may only be None or "expanded" (there is no latent)."""
        if kind not in (None, "expanded"):
            raise ValueError(f"setup_cache: MHA/GQA caches keys and values (kind None or 'expanded'), got kind={kind!r}; "
                             "a latent cache exists only for attn='mla'")
        shape = (batch_size, max_len, self.n_kv_heads, self.head_dim)
        self.k_cache = torch.zeros(shape, device=device, dtype=dtype)
        self.v_cache = torch.zeros(shape, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        q = apply_rotary_emb(self.wq(x).view(b, t, self.n_heads, self.head_dim), freqs_cis)
        k = apply_rotary_emb(self.wk(x).view(b, t, self.n_kv_heads, self.head_dim), freqs_cis)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.k_cache is not None:
            k = self._write("k_cache", k, start_pos)
            v = self._write("v_cache", v, start_pos)
        elif start_pos != 0:
            raise ValueError("start_pos > 0 needs a cache: call model.setup_cache(batch_size, max_len) first")
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        s = k.shape[2]
        mask = None if s == t else causal_mask(t, s - t, x.device)
        o = attend(q, k, v, self.softmax_scale, mask, causal=t > 1)
        return self.wo(o.transpose(1, 2).flatten(2))


class MLA(_Cached):
    """Multi-head Latent Attention with query compression, joint KV compression and a decoupled RoPE key.

    ``attn_impl`` is "naive" (materialise per-head K and V from the latent) or "absorb" (attend over the
    latent cache with W^UK folded into the query and W^UV applied to the weighted sum of latents, before the
    output projection W^O). Both compute the same
    function; the cache (when set up) always holds the latent c^KV and k^R.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dim, self.n_heads = cfg.dim, cfg.n_heads
        self.q_lora_rank, self.kv_lora_rank = cfg.q_lora_rank, cfg.kv_lora_rank
        self.qk_nope_head_dim, self.qk_rope_head_dim = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.qk_head_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        self.v_head_dim = cfg.v_head_dim
        if self.q_lora_rank == 0:
            self.wq = nn.Linear(self.dim, self.n_heads * self.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(self.dim, self.q_lora_rank, bias=False)            # W^DQ
            self.q_norm = RMSNorm(self.q_lora_rank, cfg.norm_eps)
            self.wq_b = nn.Linear(self.q_lora_rank, self.n_heads * self.qk_head_dim, bias=False)  # [W^UQ; W^QR]
        self.wkv_a = nn.Linear(self.dim, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)  # [W^DKV; W^KR]
        self.kv_norm = RMSNorm(self.kv_lora_rank, cfg.norm_eps)
        self.wkv_b = nn.Linear(self.kv_lora_rank, self.n_heads * (self.qk_nope_head_dim + self.v_head_dim),
                               bias=False)                                          # [W^UK; W^UV] per head
        self.wo = nn.Linear(self.n_heads * self.v_head_dim, self.dim, bias=False)  # W^O
        self.softmax_scale = self.qk_head_dim ** -0.5
        if cfg.yarn_active:
            # YaRN (§4.3): its new frequencies reach only the decoupled q^R·k^R (the only rotated part), but the
            # temperature multiplies the whole logit (q^C·k^C + q^R·k^R), as in DeepSeek-V3: scale × mscale².
            self.softmax_scale = self.softmax_scale * yarn_mscale(cfg.rope_factor, cfg.mscale) ** 2
        self.attn_impl = cfg.attn_impl
        self.kv_cache = self.pe_cache = self.k_cache = self.v_cache = None

    def _cache_names(self):
        return ("kv_cache", "pe_cache", "k_cache", "v_cache")

    def setup_cache(self, batch_size: int, max_len: int, device=None, dtype=torch.float32,
                    kind: str | None = None) -> None:
        """Allocate the cache. kind "latent" (default): c^KV [B, max_len, d_c] and k^R [B, max_len, d_h^R].
        kind "expanded": per-head keys [B, max_len, n_h, d_h + d_h^R] and values [B, max_len, n_h, d_v]."""
        kind = kind or "latent"
        if kind not in ("latent", "expanded"):
            raise ValueError(f"setup_cache: kind must be 'latent' or 'expanded', got {kind!r}")
        self.clear_cache()
        if kind == "latent":
            self.kv_cache = torch.zeros(batch_size, max_len, self.kv_lora_rank, device=device, dtype=dtype)
            self.pe_cache = torch.zeros(batch_size, max_len, self.qk_rope_head_dim, device=device, dtype=dtype)
        else:
            h = self.n_heads
            self.k_cache = torch.zeros(batch_size, max_len, h, self.qk_head_dim, device=device, dtype=dtype)
            self.v_cache = torch.zeros(batch_size, max_len, h, self.v_head_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        h, dn, dr, dv = self.n_heads, self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim
        q = self.wq(x) if self.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        q_nope, q_pe = q.view(b, t, h, dn + dr).split([dn, dr], dim=-1)
        q_pe = apply_rotary_emb(q_pe, freqs_cis)
        kv, k_pe = self.wkv_a(x).split([self.kv_lora_rank, dr], dim=-1)
        kv = self.kv_norm(kv)                                                      # c^KV  [b, t, d_c]
        k_pe = apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis).squeeze(2)           # k^R   [b, t, d_h^R]
        if self.k_cache is not None:                  # expanded cache: per-head K and V, always the naive path
            k_nope, v = self.wkv_b(kv).view(b, t, h, dn + dv).split([dn, dv], dim=-1)
            k = self._write("k_cache", torch.cat([k_nope, k_pe.unsqueeze(2).expand(b, t, h, dr)], dim=-1), start_pos)
            v = self._write("v_cache", v, start_pos)
            s = k.shape[1]
            mask = None if s == t else causal_mask(t, s - t, x.device)
            qf = torch.cat([q_nope, q_pe], dim=-1)
            o = attend(qf.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.softmax_scale, mask,
                       causal=t > 1).transpose(1, 2)
            return self.wo(o.flatten(2))
        if self.kv_cache is not None:
            kv = self._write("kv_cache", kv, start_pos)
            k_pe = self._write("pe_cache", k_pe, start_pos)
        elif start_pos != 0:
            raise ValueError("start_pos > 0 needs a cache: call model.setup_cache(batch_size, max_len) first")
        s = kv.shape[1]
        mask = None if s == t else causal_mask(t, s - t, x.device)   # s == t: plain causal (is_causal)
        if self.attn_impl == "naive":
            k_nope, v = self.wkv_b(kv).view(b, s, h, dn + dv).split([dn, dv], dim=-1)
            k = torch.cat([k_nope, k_pe.unsqueeze(2).expand(b, s, h, dr)], dim=-1)
            qf = torch.cat([q_nope, q_pe], dim=-1)
            o = attend(qf.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.softmax_scale, mask,
                       causal=t > 1).transpose(1, 2)
        elif self.attn_impl == "absorb":
            w = self.wkv_b.weight.view(h, dn + dv, self.kv_lora_rank)
            q_lat = torch.einsum("bshd,hdc->bshc", q_nope, w[:, :dn])             # W^UKᵀ q^C
            scores = (torch.einsum("bshc,btc->bsht", q_lat, kv) +
                      torch.einsum("bshr,btr->bsht", q_pe, k_pe)) * self.softmax_scale
            if t > 1:
                m = mask if mask is not None else causal_mask(t, 0, x.device)
                scores = scores.masked_fill(~m[None, :, None, :], float("-inf"))
            p = scores.softmax(dim=-1, dtype=torch.promote_types(x.dtype, torch.float32)).type_as(x)
            o = torch.einsum("bsht,btc->bshc", p, kv)                              # attend over the latent
            o = torch.einsum("bshc,hdc->bshd", o, w[:, dn:])                       # then W^UV
        else:
            raise ValueError(f"attn_impl must be 'naive' or 'absorb', got {self.attn_impl!r}")
        return self.wo(o.flatten(2))


# ---- cache sizes: elements and bytes per token -------------------------------------------------------

def kv_cache_elements_per_token(attn: str, n_layers: int, *, n_heads: int = 0, head_dim: int = 0,
                                n_kv_heads: int = 0, kv_lora_rank: int = 0, qk_rope_head_dim: int = 0) -> int:
    """Elements cached per token over all layers.

    MHA 2·n_h·d_h·L; GQA 2·n_g·d_h·L; MQA 2·d_h·L; MLA (d_c + d_h^R)·L.
    """
    def need(**kw):
        bad = [k for k, v in kw.items() if v <= 0]
        if bad:
            raise ValueError(f"{attn} cache size needs positive {', '.join(bad)}")
    if n_layers <= 0:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    if attn == "mha":
        need(n_heads=n_heads, head_dim=head_dim)
        per_layer = 2 * n_heads * head_dim
    elif attn == "gqa":
        need(n_kv_heads=n_kv_heads, head_dim=head_dim)
        per_layer = 2 * n_kv_heads * head_dim
    elif attn == "mqa":
        need(head_dim=head_dim)
        per_layer = 2 * head_dim
    elif attn == "mla":
        need(kv_lora_rank=kv_lora_rank, qk_rope_head_dim=qk_rope_head_dim)
        per_layer = kv_lora_rank + qk_rope_head_dim
    else:
        raise ValueError(f"attn must be one of 'mha', 'gqa', 'mqa', 'mla', got {attn!r}")
    return per_layer * n_layers


def kv_cache_bytes_per_token(attn: str, n_layers: int, bytes_per_element: float = 2, **kw) -> float:
    """Bytes cached per token over all layers (default BF16: 2 bytes per element)."""
    if bytes_per_element <= 0:
        raise ValueError(f"bytes_per_element must be positive, got {bytes_per_element}")
    n = kv_cache_elements_per_token(attn, n_layers, **kw) * bytes_per_element
    return int(n) if float(n).is_integer() else n


def cache_elements_per_token(cfg: ModelConfig, attn: str | None = None) -> int:
    """Cache elements per token of a ModelConfig's main model (MTP not counted, it is not used when decoding).

    ``attn`` overrides the config's kind to ask "what would MHA/GQA/MQA cost at this width?"; MHA/GQA/MQA
    use d_h = dim / n_heads and the config's n_kv_heads.
    """
    attn = attn or cfg.attn
    if attn == "mla":
        return kv_cache_elements_per_token("mla", cfg.n_layers, kv_lora_rank=cfg.kv_lora_rank,
                                           qk_rope_head_dim=cfg.qk_rope_head_dim)
    return kv_cache_elements_per_token(attn, cfg.n_layers, n_heads=cfg.n_heads, head_dim=cfg.dim // cfg.n_heads,
                                       n_kv_heads=cfg.kv_heads)
