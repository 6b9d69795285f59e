"""Inference: prefill vs decode, the roofline, and decoding with each kind of cache (DeepSeek-V3 §2.1.1, §3.4).

Two regimes. *Prefill* runs a prompt of S tokens for B users in one forward: every weight matrix multiplies
n = B·S rows, so each byte of weight read from memory is used n times. *Decode* produces one token per user
per step: n = B rows, against a cache of s earlier positions per user that must be read in full every step.

Arithmetic intensity. An operation doing F FLOPs while moving M bytes between memory and the chip has
intensity I = F / M (FLOP per byte). A weight matrix k × m applied to n rows, b bytes per element:

    F = 2·n·k·m,    M = b·(k·m + n·k + n·m)    →   I ≈ 2·n / b   when n ≪ k, m     (weights dominate)

so a decode step at batch B has I ≈ 2B/b: tiny (and never above 2km/(b(k + m)), however large n).

Attention over a cache cannot be batched — every user reads a cache of their own — so its intensity does not
grow with B. What it is depends on the cache. MHA/GQA: each cached key or value element serves the n_h/n_g query
heads of its group, I ≈ 2·(n_h/n_g)/b — about 1 FLOP/byte for MHA in BF16. MLA (absorbed): the latent is shared by
all n_h heads, so per user and step it reads s·(d_c + d_h^R) elements per layer to do 2·n_h·s·(2·d_c + d_h^R) FLOPs,

    I ≈ 2·n_h·(2·d_c + d_h^R) / (b·(d_c + d_h^R))       (V3, BF16: ≈ 240 FLOP/byte, near the H800's ridge)

so MLA does not only shrink the cache: it moves decode attention from deeply memory-bound to nearly compute-bound.

Roofline (Williams et al. 2009). A chip with peak P FLOP/s and memory bandwidth W bytes/s runs an operation
of intensity I at most at

    attainable(I) = min(P, I·W),    ridge point I* = P / W.

Below I* an operation is memory-bound, above it compute-bound. An H800 (§3.4 serves on them) has
P = 989 TFLOP/s in BF16 (1979 in FP8) and W = 3.35 TB/s: I* ≈ 295 FLOP/byte in BF16.

Caches ("modes" of :func:`generate` and :func:`decode_step_seconds`):

    "none"      no cache: every step re-runs the whole sequence (work grows with the context, per token)
    "expanded"  per-head K and V, n_h·(d_h + d_h^R + d_v) elements per token per layer (MHA-sized)
    "latent"    MLA's c^KV and k^R, d_c + d_h^R per token per layer, re-expanded by W^UK, W^UV every step
    "absorbed"  the latent cache read by the absorbed path (W^UK folded into q, W^UV after the sum)

All four give the same function; :func:`generate` with temperature 0 gives the same tokens in each mode.
Users per memory budget: a cache of c bytes per token at context T fits ⌊budget / (c·T)⌋ users.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time

import torch
import torch.nn.functional as F

from .config import ModelConfig

__all__ = [
    "H800_HBM_BYTES_PER_S", "REPORT_KV_BYTES_PER_TOKEN", "MODES", "matmul_intensity", "block_ops", "roofline",
    "ridge_point", "measure_bandwidth", "time_linear", "decode_mode", "generate", "decode_step_seconds",
    "prefill_seconds", "cache_bytes_per_token", "users_per_budget", "tokens_per_expert_for", "greedy_match",
    "decode_attention_cost",
]

H800_HBM_BYTES_PER_S = 3.35e12   # HBM3 bandwidth of the H800 SXM (= H100 SXM5 datasheet, 3.35 TB/s)

# KV cache per token in BF16 for the report's comparison (ISCA'25 hardware paper, arXiv 2505.09343, Table 1).
REPORT_KV_BYTES_PER_TOKEN = {"DeepSeek-V3 (MLA)": 70_272, "Qwen-2.5-72B (GQA)": 327_680,
                             "LLaMA-3.1-405B (GQA)": 516_096}

MODES = ("none", "expanded", "latent", "absorbed")


def _count(name: str, v, where: str, lo: int = 1) -> int:
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
        raise ValueError(f"{where}: {name} must be an int ≥ {lo}, got {v!r}")
    return v


def _pos(name: str, v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where}: {name} must be a positive finite number, got {v!r}")
    return float(v)


# ---- arithmetic intensity and the roofline ---------------------------------------------------------------

def matmul_intensity(n: int, k: int, m: int, bytes_per_element: float = 2) -> dict:
    """FLOPs, bytes and intensity of [n, k] @ [k, m] (weights k × m read once, input and output once)."""
    for name, v in (("n", n), ("k", k), ("m", m)):
        _count(name, v, "matmul_intensity")
    b = _pos("bytes_per_element", bytes_per_element, "matmul_intensity")
    flops = 2.0 * n * k * m
    nbytes = b * (k * m + n * k + n * m)
    return {"flops": flops, "bytes": nbytes, "intensity": flops / nbytes}


def _expected_distinct(n_assign: float, n_experts: int, topk: int) -> float:
    """Expected number of distinct experts touched by n tokens routing uniformly at random to K of N."""
    return n_experts * (1.0 - (1.0 - topk / n_experts) ** n_assign)


def block_ops(cfg: ModelConfig, n_tokens: int, context: int, bytes_per_element: float = 2,
              batch: int = 1, phase: str = "decode") -> list[dict]:
    """The operations of one MoE block of ``cfg`` (MLA + DeepSeekMoE) for one forward.

    phase "prefill": ``n_tokens`` = B·S rows, causal attention over the prompt (average context (S+1)/2,
    naive path: K and V materialised from the latent). phase "decode": ``n_tokens`` = B rows, each attending to
    ``context`` cached positions through the absorbed path, reading its own user's cache (``batch`` users).

    Routed experts: the n·K_r routed rows go to the experts; the weights read are those of the experts touched
    (expected number under uniform routing), so at small n the intensity of an expert matmul is ≈ 2·(n·K_r/N_r)/b.
    Returns dicts {name, flops, bytes, intensity} (FLOPs and bytes per forward, all heads, one layer).
    """
    where = "block_ops"
    n = _count("n_tokens", n_tokens, where)
    s = _count("context", context, where)
    B = _count("batch", batch, where)
    b = _pos("bytes_per_element", bytes_per_element, where)
    if phase not in ("prefill", "decode"):
        raise ValueError(f"{where}: phase must be 'prefill' or 'decode', got {phase!r}")
    if cfg.attn != "mla" or cfg.n_routed_experts == 0:
        raise ValueError(f"{where}: needs an MLA + MoE config (attn='mla', n_routed_experts > 0), got attn={cfg.attn!r}, "
                         f"n_routed_experts={cfg.n_routed_experts}")
    h, dn, dr, dv, dc = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    dq, d, f = cfg.q_lora_rank, cfg.dim, cfg.moe_inter_dim
    ops = []

    def mm(name, k, m, rows=n):
        ops.append({"name": name, **matmul_intensity(rows, k, m, b)})

    if dq:
        mm("W^DQ (wq_a)", d, dq)
        mm("W^UQ,W^QR (wq_b)", dq, h * (dn + dr))
    else:
        mm("W^Q (wq)", d, h * (dn + dr))
    mm("W^DKV,W^KR (wkv_a)", d, dc + dr)
    if phase == "prefill":
        mm("W^UK,W^UV (wkv_b)", dc, h * (dn + dv))
        avg = (s + 1) / 2                                     # causal: query i sees i keys
        flops = 2.0 * n * h * avg * (dn + dr + dv)
        nbytes = b * n * h * (2 * (dn + dr) + 2 * dv)        # q, k, v in and o out, each once (fused kernel)
        ops.append({"name": "attention core", "flops": flops, "bytes": nbytes, "intensity": flops / nbytes})
    else:
        ops.append({"name": "absorb W^UK into q", **_per_head(n, h, dn, dc, b)})
        flops = 2.0 * n * h * s * (2 * dc + dr)               # q·c and q^R·k^R, then Σ p·c
        nbytes = b * (B * s * (dc + dr) + n * h * (dc + dr) + n * h * dc)
        ops.append({"name": "attention over latent cache", "flops": flops, "bytes": nbytes,
                    "intensity": flops / nbytes})
        ops.append({"name": "absorb W^UV after", **_per_head(n, h, dc, dv, b)})
    mm("W^O (wo)", h * dv, d)
    mm("router (gate)", d, cfg.n_routed_experts)
    if cfg.n_shared_experts:
        fs = cfg.n_shared_experts * f
        ops.append({"name": "shared expert", **{k: v for k, v in _ffn(n, d, fs, b).items()}})
    touched = _expected_distinct(n, cfg.n_routed_experts, cfg.n_activated_experts)
    flops = 2.0 * n * cfg.n_activated_experts * 3 * d * f
    nbytes = b * (touched * 3 * d * f + n * cfg.n_activated_experts * (2 * d + 3 * f))
    ops.append({"name": "routed experts", "flops": flops, "bytes": nbytes, "intensity": flops / nbytes})
    return ops


def decode_attention_cost(cfg: ModelConfig, context: int, path: str = "absorbed",
                          bytes_per_element: float = 2) -> dict:
    """FLOPs and bytes of MLA's attention for ONE new token against ``context`` cached positions (one layer, one user).

    Only the work that depends on the context (plus the up-projection weights the path reads) is counted: the
    projections of the new token itself (W^DQ, W^UQ, W^DKV, W^O) cost the same on every path. With
    s = ``context``, h = n_h, d_n = d_h (no-RoPE part), d_r = d_h^R, d_v, d_c:

    - "naive" (latent cache, K and V re-expanded every step): W^UK, W^UV on all s latents,
      2·s·d_c·h·(d_n + d_v) FLOPs, then attention 2·h·s·(d_n + d_r) + 2·h·s·d_v; bytes: the latent cache
      s·(d_c + d_r), the weights d_c·h·(d_n + d_v), the expanded K and V written and read again 2·s·h·(d_n + d_v).
    - "absorbed" (W^UK folded into the query, W^UV applied after the weighted sum): 2·h·d_n·d_c + 2·h·s·(2·d_c + d_r)
      + 2·h·d_c·d_v FLOPs; bytes: the latent cache and the same weights (no per-head K or V ever exists).
    - "expanded" (a per-head K and V cache, MHA-sized): 2·h·s·(d_n + d_r + d_v) FLOPs; bytes: the cache
      s·h·(d_n + d_r + d_v).

    Returns {"flops", "bytes", "intensity"} (bytes at ``bytes_per_element``). The naive path's extra FLOPs grow
    like s·d_c·h·(d_n + d_v): per cached token it redoes what the absorbed path folded into one query.
    """
    where = "decode_attention_cost"
    s = _count("context", context, where)
    b = _pos("bytes_per_element", bytes_per_element, where)
    if cfg.attn != "mla":
        raise ValueError(f"{where}: needs an MLA config (attn='mla'), got attn={cfg.attn!r}")
    h, dn, dr, dv, dc = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    latent, weights = s * (dc + dr), dc * h * (dn + dv)
    if path == "naive":
        flops = 2.0 * s * dc * h * (dn + dv) + 2.0 * h * s * (dn + dr + dv)
        nbytes = b * (latent + weights + 2 * s * h * (dn + dv))
    elif path == "absorbed":
        flops = 2.0 * h * dn * dc + 2.0 * h * s * (2 * dc + dr) + 2.0 * h * dc * dv
        nbytes = b * (latent + weights)
    elif path == "expanded":
        flops = 2.0 * h * s * (dn + dr + dv)
        nbytes = b * s * h * (dn + dr + dv)
    else:
        raise ValueError(f"{where}: path must be 'naive', 'absorbed' or 'expanded', got {path!r}")
    return {"flops": flops, "bytes": nbytes, "intensity": flops / nbytes}


def _per_head(n: int, h: int, k: int, m: int, b: float) -> dict:
    """n rows times h separate k × m matrices (one per head), e.g. W^UK_iᵀ q^C_i in the absorbed path."""
    flops = 2.0 * n * h * k * m
    nbytes = b * (h * k * m + n * h * (k + m))
    return {"flops": flops, "bytes": nbytes, "intensity": flops / nbytes}


def _ffn(n: int, d: int, f: int, b: float) -> dict:
    """SwiGLU d → f → d on n rows: three matrices (w1, w3: d × f; w2: f × d)."""
    flops = 2.0 * n * 3 * d * f
    nbytes = b * (3 * d * f + n * (2 * d + 3 * f))
    return {"flops": flops, "bytes": nbytes, "intensity": flops / nbytes}


def roofline(intensity, peak_flops: float, bandwidth: float):
    """attainable = min(P, I·W) for a number or a tensor of intensities I."""
    _pos("peak_flops", peak_flops, "roofline")
    _pos("bandwidth", bandwidth, "roofline")
    if isinstance(intensity, torch.Tensor):
        return torch.clamp(intensity * bandwidth, max=peak_flops)
    return min(peak_flops, _pos("intensity", intensity, "roofline") * bandwidth)


def ridge_point(peak_flops: float, bandwidth: float) -> float:
    """I* = P / W: the intensity above which an operation is compute-bound."""
    return _pos("peak_flops", peak_flops, "ridge_point") / _pos("bandwidth", bandwidth, "ridge_point")


def tokens_per_expert_for(intensity: float, bytes_per_element: float = 1) -> float:
    """Rows an expert matmul needs for intensity I: I ≈ 2·m / b  →  m = I·b / 2 (weights dominate)."""
    return _pos("intensity", intensity, "tokens_per_expert_for") * _pos(
        "bytes_per_element", bytes_per_element, "tokens_per_expert_for") / 2


def _best_seconds(fn, repeats: int, budget_s: float) -> float:
    """Best (min) wall time of fn() over repeats after one warm-up, stopping early after budget_s."""
    fn()
    best, start = float("inf"), time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return best


def measure_bandwidth(n_bytes: int = 256 * 2 ** 20, repeats: int = 10, budget_s: float = 2.0, device=None) -> dict:
    """Memory bandwidth from the best time of a copy ``dst.copy_(src)`` of n_bytes (read n, write n: 2n bytes).

    A copy larger than the last-level cache measures main memory (DRAM); a small one measures the caches — both
    matter for a model whose weights (11 MB here) may fit in the CPU's cache.
    Returns {"bytes_per_s", "n_bytes", "seconds", "device"}.
    """
    from .runtime import get_device
    n_bytes = _count("n_bytes", n_bytes, "measure_bandwidth", 4096)
    repeats = _count("repeats", repeats, "measure_bandwidth")
    device = torch.device(device) if device is not None else get_device()
    src = torch.ones(n_bytes // 4, device=device)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()

    reps = max(1, (256 * 2 ** 20) // n_bytes)                 # small copies: repeat inside one timing
    sec = _best_seconds(lambda: [copy() for _ in range(reps)], repeats, budget_s) / reps
    return {"bytes_per_s": 2 * src.numel() * 4 / sec, "n_bytes": src.numel() * 4, "seconds": sec,
            "device": str(device)}


def time_linear(weight: torch.Tensor, n_rows: int, repeats: int = 20, budget_s: float = 0.5) -> dict:
    """Best time of F.linear on n_rows random rows with a real weight [m, k]; achieved FLOP/s = 2·n·k·m / t."""
    n = _count("n_rows", n_rows, "time_linear")
    m, k = weight.shape
    x = torch.randn(n, k, generator=torch.Generator().manual_seed(0)).to(weight)

    def run():
        F.linear(x, weight)
        _sync(weight.device)

    with torch.no_grad():
        sec = _best_seconds(run, repeats, budget_s)
    flops = 2.0 * n * k * m
    return {"seconds": sec, "flops": flops, "flops_per_s": flops / sec,
            "intensity": matmul_intensity(n, k, m, weight.element_size())["intensity"]}


# ---- decoding with each cache -----------------------------------------------------------------------------

def _check_mode(mode: str, model, where: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}, got {mode!r}")
    if mode in ("latent", "absorbed") and model.cfg.attn != "mla":
        raise ValueError(f"{where}: mode {mode!r} needs an MLA model (cfg.attn='mla'), this one is {model.cfg.attn!r}; "
                         "use 'none' or 'expanded'")


@contextlib.contextmanager
def decode_mode(model, mode: str):
    """Set the model's attention path for a mode (absorbed → "absorb", others → "naive"), restore it after.

    Yields the cache kind to allocate (None for "none").
    """
    _check_mode(mode, model, "decode_mode")
    old = [m.attn_impl for m in model.modules() if hasattr(m, "attn_impl")]
    if model.cfg.attn == "mla":
        model.set_attn_impl("absorb" if mode == "absorbed" else "naive")
    try:
        yield {"none": None, "expanded": "expanded", "latent": "latent", "absorbed": "latent"}[mode]
    finally:
        for m, impl in zip((m for m in model.modules() if hasattr(m, "attn_impl")), old):
            m.attn_impl = impl


def generate(model, idx: torch.Tensor, max_new_tokens: int, mode: str = "absorbed", **kw) -> torch.Tensor:
    """``model.generate`` with the cache and attention path of ``mode`` (see the module docstring)."""
    with decode_mode(model, mode) as kind:
        return model.generate(idx, max_new_tokens, use_cache=mode != "none", cache_kind=kind, **kw)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(model, where: str, n_tokens: int, batch: int, repeats: int, seed: int, prepare, step) -> float:
    """Shared by the timers: random prompts [batch, n_tokens] (seeded), ``prepare(x)`` untimed, then ``step(x)``
    timed repeats + 1 times (the first is a warm-up); the model is left in its mode with no cache."""
    n_tokens = _count("n_tokens" if where == "prefill_seconds" else "context", n_tokens, where,
                      1 if where == "prefill_seconds" else 2)
    batch = _count("batch", batch, where)
    repeats = _count("repeats", repeats, where)
    if n_tokens > model.cfg.max_seq_len:
        raise ValueError(f"{where}: {n_tokens} positions exceed max_seq_len = {model.cfg.max_seq_len}")
    dev = model.embed.weight.device
    x = torch.randint(0, model.cfg.vocab_size, (batch, n_tokens), generator=torch.Generator().manual_seed(seed)).to(dev)
    was = model.training
    model.eval()
    times = []
    try:
        prepare(x)
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            step(x)
            _sync(dev)
            times.append(time.perf_counter() - t0)
    finally:
        model.clear_cache()
        model.train(was)
    return statistics.median(times[1:])


@torch.no_grad()
def decode_step_seconds(model, context: int, mode: str = "absorbed", batch: int = 1, repeats: int = 5,
                        seed: int = 0) -> float:
    """Median seconds of one decode step (one new token for each of ``batch`` users) at ``context`` positions.

    "none": a forward over all ``context`` tokens (what a cache-less decoder does for every token); cached
    modes: the prompt of context − 1 tokens is prefilled once (not timed), then the step at the last position
    is timed ``repeats`` times (it overwrites the same cache slot, so each repeat does the same work).
    """
    _check_mode(mode, model, "decode_step_seconds")
    with decode_mode(model, mode) as kind:
        def prepare(x):
            if kind is not None:
                model.setup_cache(x.shape[0], x.shape[1], kind=kind)
                model(x[:, :-1])

        def step(x):
            return model(x) if kind is None else model(x[:, -1:], start_pos=x.shape[1] - 1)

        return _median_seconds(model, "decode_step_seconds", context, batch, repeats, seed, prepare, step)


@torch.no_grad()
def prefill_seconds(model, n_tokens: int, batch: int = 1, repeats: int = 3, seed: int = 0) -> float:
    """Median seconds of a prefill forward of ``batch`` prompts of ``n_tokens`` tokens writing a latent cache."""
    return _median_seconds(model, "prefill_seconds", n_tokens, batch, repeats, seed,
                           lambda x: model.setup_cache(x.shape[0], x.shape[1]), lambda x: model(x))


def cache_bytes_per_token(model, mode: str = "absorbed", dtype=torch.float32) -> float:
    """Measured: allocate the mode's cache for one user over max_seq_len positions and divide its bytes.

    Equals cache_elements_per_token(cfg) × element size for the latent modes (checked in tests).
    """
    _check_mode(mode, model, "cache_bytes_per_token")
    if mode == "none":
        return 0.0
    with decode_mode(model, mode) as kind:
        model.setup_cache(1, model.cfg.max_seq_len, dtype=dtype, kind=kind)
        try:
            return model.cache_bytes() / model.cfg.max_seq_len
        finally:
            model.clear_cache()


@torch.no_grad()
def greedy_match(model, a: torch.Tensor, b: torch.Tensor, prompt_len: int, tol: float = 1e-3) -> bool:
    """Are two greedy decodings of the same prompts the same function's output?

    True when the token tensors are equal, or when every row's first difference sits at a near-tie: the model's
    top-2 logits at that position (recomputed without a cache) differ by less than ``tol``. Two computations of the
    same logits (a cache vs none, one token vs two per forward) differ in the last float bits, so an exact tie
    may break either way on another CPU; any other difference is a bug.
    """
    if a.shape != b.shape or not torch.equal(a[:, :prompt_len], b[:, :prompt_len]):
        return False
    for row in range(a.shape[0]):
        diff = (a[row] != b[row]).nonzero()
        if len(diff) == 0:
            continue
        j = int(diff[0])
        top = model(a[row:row + 1, :j])["logits"][0, -1].float().topk(2).values
        if float(top[0] - top[1]) >= tol:
            return False
    return True


def users_per_budget(bytes_per_token: float, context: int, budget_bytes: float) -> int:
    """⌊budget / (bytes per token · context)⌋: users whose whole context fits in a memory budget."""
    bpt = _pos("bytes_per_token", bytes_per_token, "users_per_budget")
    ctx = _count("context", context, "users_per_budget")
    budget = _pos("budget_bytes", budget_bytes, "users_per_budget")
    return int(budget // (bpt * ctx))


def expanded_elements_per_token(cfg: ModelConfig) -> int:
    """Elements of the expanded MLA cache per token: n_h·(d_h + d_h^R + d_v) per layer."""
    return cfg.n_layers * cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)


__all__ += ["expanded_elements_per_token"]


# ---- the latent's rank on a trained model ---------------------------------------------------------------

@torch.no_grad()
def latent_bases(model, idx: torch.Tensor) -> list[torch.Tensor]:
    """Per main-model MLA layer, the principal directions of its cached latent c^KV on the tokens ``idx``.

    Returns [d_c, d_c] matrices U (columns sorted by variance explained, from the SVD of the uncentred latents
    C = U Σ Vᵀ): keeping the first r columns, c ↦ U_r U_rᵀ c is the best rank-r approximation of the cached
    latents in the least-squares sense (Eckart–Young), i.e. what a cache of r + d_h^R numbers per token could hold.
    """
    if model.cfg.attn != "mla":
        raise ValueError(f"latent_bases: needs an MLA model, got attn={model.cfg.attn!r}")
    seen = []
    hooks = [layer.attn.kv_norm.register_forward_hook(lambda m, i, o: seen.append(o.flatten(0, -2).float()))
             for layer in model.layers]
    was = model.training
    model.eval()
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return [torch.linalg.svd(c.T, full_matrices=False)[0] for c in seen]


@contextlib.contextmanager
def truncated_latent(model, bases: list[torch.Tensor], rank: int):
    """Inside the block, every main-model MLA layer's latent c^KV is replaced by U_r U_rᵀ c^KV (see latent_bases)."""
    d_c = model.cfg.kv_lora_rank
    rank = _count("rank", rank, "truncated_latent")
    if rank > d_c:
        raise ValueError(f"truncated_latent: rank {rank} exceeds d_c = {d_c}")
    if len(bases) != len(model.layers):
        raise ValueError(f"truncated_latent: {len(bases)} bases for {len(model.layers)} layers; use latent_bases(model, idx)")
    hooks = []
    for layer, U in zip(model.layers, bases):
        P = (U[:, :rank] @ U[:, :rank].T).to(model.embed.weight)
        hooks.append(layer.attn.kv_norm.register_forward_hook(lambda m, i, o, P=P: o @ P))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


__all__ += ["latent_bases", "truncated_latent"]


# ---- serving one request end to end (chapter 05.5's widget) ----------------------------------------------

def complete(model, tok, prompt: str, max_new_tokens: int = 48, temperature: float = 0.0, top_k: int | None = None,
             mode: str = "absorbed", speculative: bool = False, seed: int = 0) -> dict:
    """Serve one completion request and measure it: the text, time to first token, tokens/s and cache bytes.

    ``mode`` is the cache (see the module docstring); ``speculative`` drafts with the MTP module and verifies with
    the main model (helpers.speculative: greedy only, on the latent cache). A prompt longer than the window keeps
    its last tokens. Time to first token is measured by a separate one-token request; cache bytes are the
    per-token bytes measured by allocation (:func:`cache_bytes_per_token`) times the positions held (plus the MTP
    module's latent when speculative). Returns {"text", "prompt_tokens", "new_tokens", "seconds", "tokens_per_s",
    "ttft_s", "cache_bytes", "acceptance" (nan unless speculative), "main_forwards"}.
    """
    from .speculative import speculative_generate
    where = "complete"
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: prompt must be a non-empty string, got {prompt!r}")
    _check_mode(mode, model, where)
    max_new_tokens = _count("max_new_tokens", max_new_tokens, where)
    if speculative and temperature != 0:
        raise ValueError(f"{where}: speculative decoding here is greedy; set temperature=0 (got {temperature!r}) or "
                         "turn speculative off")
    if speculative and mode not in ("latent", "absorbed"):
        raise ValueError(f"{where}: speculative decoding runs on the latent cache; use mode 'latent' or 'absorbed', "
                         f"got {mode!r}")
    window = model.cfg.max_seq_len - max_new_tokens
    if window < 1:
        raise ValueError(f"{where}: max_new_tokens {max_new_tokens} leaves no room for a prompt in max_seq_len = "
                         f"{model.cfg.max_seq_len}")
    dev = model.embed.weight.device
    ids = tok.encode(prompt)[-window:]
    idx = torch.tensor([ids], dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    t0 = time.perf_counter()
    if speculative:
        with decode_mode(model, mode):
            r = speculative_generate(model, idx, max_new_tokens)
        out, acceptance, forwards = r.tokens, r.acceptance, r.main_forwards
    else:
        out = generate(model, idx, max_new_tokens, mode=mode, temperature=temperature, top_k=top_k, generator=gen)
        acceptance, forwards = float("nan"), max_new_tokens       # prefill + (n - 1) one-token steps
    _sync(dev)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(model, idx, 1, mode=mode, temperature=temperature, top_k=top_k,
             generator=torch.Generator(device=dev).manual_seed(seed))
    _sync(dev)
    ttft = time.perf_counter() - t0
    positions = len(ids) + max_new_tokens
    cache = cache_bytes_per_token(model, mode) * positions
    if speculative:
        cfg = model.cfg
        cache += (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * model.embed.weight.element_size() * positions
    new = out[0, len(ids):].tolist()
    return {"text": tok.decode(new), "prompt_tokens": len(ids), "new_tokens": len(new), "seconds": seconds,
            "tokens_per_s": len(new) / seconds, "ttft_s": ttft, "cache_bytes": int(cache), "acceptance": acceptance,
            "main_forwards": forwards}


__all__ += ["complete"]
