"""Compute: FLOPs per token, GPU-hours, MFU and cost (DeepSeek-V3 §1 Table 1, §4.2).

Training FLOPs per token. A weight matrix W (k × n) that multiplies a token's activation costs k·n
multiply-adds = 2·k·n FLOPs in the forward pass, and twice that in the backward pass (one product for
the input's gradient, one for the weight's). Summed over the N weights a token actually uses (its
*active* matmul parameters: attention projections, the dense FFN or the shared + K_r routed experts and
the router, the output head; not the embedding, which is a table lookup, nor the norm gains):

    C_matmul = 6·N    FLOPs per token                                       ("6N", Kaplan et al. 2020)

Attention adds work that no parameter counts: the scores q·k and the weighted sum of values. Per token,
per layer, against T_avg earlier positions, for MLA with n_h heads of query/key size d_h + d_h^R and
value size d_v (helpers.attention):

    forward  2·n_h·(d_h + d_h^R)·T_avg  +  2·n_h·d_v·T_avg,   backward twice that
    C_attn = 3 · 2·n_h·(d_h + d_h^R + d_v) · T_avg · n_layers

With a causal mask query i sees i keys (1-based), so T_avg = (T + 1)/2 ≈ T/2 on average over a row of T
tokens (``causal=True``); a kernel that computes the full T × T score matrix and masks afterwards does
T_avg = T (``causal=False``). For MHA/GQA, d_h + d_h^R and d_v are both the head size dim / n_h.

    C_train = (6·N + C_attn) · tokens                                       total training FLOPs

Time and money. A GPU with peak throughput P (FLOP/s) running at model-FLOPs utilisation MFU (the share
of the peak that goes into the FLOPs above) needs

    GPU-hours = C_train / (P · MFU · 3600),    wall-clock hours = GPU-hours / n_gpus,
    MFU       = C_train / (GPU-hours · 3600 · P)                            (the inverse)
    cost      = GPU-hours · price per GPU-hour.

The report's Table 1: pre-training 2664K H800 GPU-hours, context extension 119K, post-training 5K,
2788K in all, $5.576M at $2 per GPU-hour; "180K H800 GPU hours per trillion tokens", 3.7 days on its
2048 GPUs. The report gives no MFU; :func:`implied_mfu` recovers the one these numbers imply.
"""
from __future__ import annotations

import math
import numbers

import torch

from .config import ModelConfig
from .model import attention_matmul_params
from .optim import DEEPSEEK_V3_SCHEDULE, deepseek_v3_batch_size, deepseek_v3_lr

__all__ = [
    "H800_BF16_DENSE_FLOPS", "H800_FP8_DENSE_FLOPS", "REPORT_GPU_HOURS", "REPORT_TOTAL_GPU_HOURS",
    "REPORT_PRICE_PER_GPU_HOUR", "REPORT_TOTAL_COST", "REPORT_GPU_HOURS_PER_TRILLION", "REPORT_PRETRAIN_TOKENS",
    "REPORT_ACTIVE_PARAMS", "REPORT_N_GPUS", "REPORT_DAYS_PER_TRILLION", "REPORT_FLOPS_PER_TOKEN",
    "matmul_params", "attention_flops_per_token", "training_flops_per_token", "six_n", "run_flops",
    "gpu_hours", "implied_mfu", "wall_clock_days", "cost_usd", "mfu", "report_table1", "v3_steps_at",
    "v3_progress", "measure_matmul_peak", "deepseek_llm_hparams",
]

# -- peak throughput of the report's GPU ------------------------------------------------------------------
# The H800 is the export version of the H100 SXM: the same SMs, tensor cores and clocks, with its NVLink cut
# (the report's 160 GB/s per GPU, §3.2.2). Its peaks are therefore the H100 SXM5 datasheet's *dense* numbers
# (the datasheet's headline figures, 1979 and 3958 TFLOP/s, assume 2:4 structured sparsity, which training
# does not use).
H800_BF16_DENSE_FLOPS = 989e12      # dense BF16 tensor-core FLOP/s (H100 SXM5 datasheet, without sparsity)
H800_FP8_DENSE_FLOPS = 1979e12      # dense FP8 tensor-core FLOP/s (same datasheet: twice BF16)

# -- the report's numbers (§1 Table 1, §4.1-4.2) --------------------------------------------------------------
REPORT_GPU_HOURS = {"pre_training": 2_664_000, "context_extension": 119_000, "post_training": 5_000}
REPORT_TOTAL_GPU_HOURS = 2_788_000              # Table 1 "Total"
REPORT_PRICE_PER_GPU_HOUR = 2                   # dollars per H800 GPU-hour (the report's assumed rental price)
REPORT_TOTAL_COST = 5_576_000                   # dollars (Table 1: $5.576M)
REPORT_GPU_HOURS_PER_TRILLION = 180_000         # "180K H800 GPU hours" per trillion training tokens
REPORT_DAYS_PER_TRILLION = 3.7                  # "3.7 days on our cluster with 2048 H800 GPUs"
REPORT_N_GPUS = 2048
REPORT_PRETRAIN_TOKENS = 14.8e12
REPORT_ACTIVE_PARAMS = 37e9                     # activated parameters per token (671B in total)
REPORT_FLOPS_PER_TOKEN = 250e9                  # training GFLOPs per token, ISCA'25 hardware paper (arXiv 2505.09343)


# -- argument checks ---------------------------------------------------------------------------------------
def _positive(name: str, v, where: str, fix: str = "") -> float:
    if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {v!r}" + (f"; {fix}" if fix else ""))
    return float(v)


def _whole(name: str, v, where: str, lo: int = 1) -> int:
    if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo):
        raise ValueError(f"{where}: {name} must be an int ≥ {lo}, got {v!r}")
    return int(v)


def _cfg(cfg, where: str) -> ModelConfig:
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"{where}: cfg must be a helpers.config.ModelConfig, got {type(cfg).__name__}; "
                        "e.g. ModelConfig.cpu() or helpers.config.deepseek_v3_config()")
    return cfg


# -- FLOPs per token ---------------------------------------------------------------------------------------
def matmul_params(cfg: ModelConfig) -> dict:
    """Weights one token multiplies its activations with (the N of 6N), from the config alone.

    Per block: attention projections (MLA: W^DQ, W^UQ;W^QR, W^DKV;W^KR, W^UK;W^UV, W^O — no norm gains) plus
    the dense SwiGLU (3·dim·inter_dim) or the MoE's active part ((N_s + K_r)·3·dim·moe_inter_dim experts plus
    the N_r·dim router). The output head V·dim; the embedding (a lookup) is not a matmul. An MTP depth adds
    its projection M_k (2·dim·dim), one block, and the shared head once more.

    Returns {"attention", "dense_ffn", "moe_ffn" (per block), "head", "main" (all main-model blocks + head),
    "mtp_module" (one depth, with its use of the head), "mtp" (all depths)}.
    """
    cfg = _cfg(cfg, "matmul_params")
    d = cfg.dim
    attn = attention_matmul_params(cfg)
    dense = 3 * d * cfg.inter_dim
    moe = ((cfg.n_shared_experts + cfg.n_activated_experts) * 3 * d * cfg.moe_inter_dim + cfg.n_routed_experts * d
           if cfg.n_routed_experts else 0)

    def block(layer_id: int) -> int:
        return attn + (moe if cfg.is_moe_layer(layer_id) else dense)

    head = cfg.vocab_size * d
    main = sum(block(i) for i in range(cfg.n_layers)) + head
    mtp_modules = [2 * d * d + block(cfg.n_layers + k) + head for k in range(cfg.mtp_depth)]
    return {"attention": attn, "dense_ffn": dense, "moe_ffn": moe, "head": head, "main": main,
            "mtp_module": mtp_modules[0] if mtp_modules else 0, "mtp": sum(mtp_modules)}


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True, backward: bool = True,
                              n_layers: int | None = None) -> float:
    """Score and value FLOPs per token over ``n_layers`` layers (default: the main model's), training rows of
    ``seq_len`` tokens: (3 if ``backward`` else 1) · 2·n_h·(d_qk + d_v)·T_avg · n_layers, with
    T_avg = (T + 1)/2 under a causal mask (``causal=True``) or T (full score matrix computed, ``causal=False``).
    MLA: d_qk = d_h + d_h^R, d_v = v_head_dim; MHA/GQA: both dim / n_h (see the module docstring)."""
    cfg = _cfg(cfg, "attention_flops_per_token")
    t = _whole("seq_len", seq_len, "attention_flops_per_token")
    layers = cfg.n_layers if n_layers is None else _whole("n_layers", n_layers, "attention_flops_per_token", 0)
    if cfg.attn == "mla":
        dqk, dv = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
    else:
        dqk = dv = cfg.dim // cfg.n_heads
    t_avg = (t + 1) / 2 if causal else t
    return (3 if backward else 1) * 2 * cfg.n_heads * (dqk + dv) * t_avg * layers


def training_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True, mtp: bool = True) -> dict:
    """Training FLOPs per token (forward + backward) of ``cfg`` on rows of ``seq_len`` tokens.

    {"matmul": 6·N_main, "attention": main-model attention, "mtp": the MTP modules' 6·N and attention
    (depth k sees T − k positions of a row of T, so it costs (T − k)/T of a full pass per token; 0 when
    ``mtp=False`` or mtp_depth = 0), "total"}. Ignores the O(dim) work of norms, RoPE, softmax and SwiGLU's
    element-wise product (well under 1% at these widths).
    """
    cfg = _cfg(cfg, "training_flops_per_token")
    t = _whole("seq_len", seq_len, "training_flops_per_token")
    if t > cfg.max_seq_len:
        raise ValueError(f"training_flops_per_token: seq_len = {t} exceeds the model's max_seq_len = "
                         f"{cfg.max_seq_len}; use a shorter row or cfg.replace(max_seq_len={t})")
    p = matmul_params(cfg)
    out = {"matmul": 6.0 * p["main"], "attention": attention_flops_per_token(cfg, t, causal)}
    extra = 0.0
    if mtp:
        for k in range(1, cfg.mtp_depth + 1):
            if t - k < 1:
                continue
            share = (t - k) / t
            extra += share * (6.0 * p["mtp_module"] + attention_flops_per_token(cfg, t - k, causal, n_layers=1))
    out["mtp"] = extra
    out["total"] = out["matmul"] + out["attention"] + extra
    return out


def six_n(n_params: float) -> float:
    """6·N: training FLOPs per token of N active matmul parameters (2N forward, 4N backward)."""
    return 6.0 * _positive("n_params", n_params, "six_n", "the number of active parameters, e.g. 37e9")


def run_flops(cfg: ModelConfig, batch_size: int, seq_len: int, steps: int, causal: bool = True,
              mtp: bool = True) -> dict:
    """FLOPs of a training run: ``steps`` optimizer steps of ``batch_size`` rows of ``seq_len`` tokens.

    {"tokens", "flops_per_token" (the dict of :func:`training_flops_per_token`), "flops" (= tokens · total)}.
    """
    b = _whole("batch_size", batch_size, "run_flops")
    s = _whole("steps", steps, "run_flops")
    fpt = training_flops_per_token(cfg, seq_len, causal, mtp)
    tokens = b * seq_len * s
    return {"tokens": tokens, "flops_per_token": fpt, "flops": tokens * fpt["total"]}


# -- time, utilisation, money --------------------------------------------------------------------------------
def gpu_hours(flops: float, peak_flops: float, mfu: float) -> float:
    """GPU-hours = flops / (peak_flops · mfu · 3600): device time at a share ``mfu`` of the peak."""
    flops = _positive("flops", flops, "gpu_hours", "the run's total training FLOPs")
    peak = _positive("peak_flops", peak_flops, "gpu_hours", "FLOP/s of one device, e.g. H800_BF16_DENSE_FLOPS")
    if not (isinstance(mfu, numbers.Real) and not isinstance(mfu, bool) and 0 < mfu <= 1):
        raise ValueError(f"gpu_hours: mfu must be a fraction in (0, 1], got {mfu!r}; e.g. 0.4 for 40% of the peak")
    return flops / (peak * mfu * 3600.0)


def implied_mfu(flops: float, gpu_hours_spent: float, peak_flops: float) -> float:
    """The MFU a reported device-time implies: flops / (gpu_hours · 3600 · peak_flops) (inverse of :func:`gpu_hours`).

    May exceed 1 when the FLOP count or the peak is wrong: the caller should look at it, not clip it."""
    flops = _positive("flops", flops, "implied_mfu", "the run's total training FLOPs")
    h = _positive("gpu_hours_spent", gpu_hours_spent, "implied_mfu", "device-hours, e.g. 2_664_000")
    peak = _positive("peak_flops", peak_flops, "implied_mfu", "FLOP/s of one device, e.g. H800_BF16_DENSE_FLOPS")
    return flops / (h * 3600.0 * peak)


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Measured model-FLOPs utilisation of one device: flops / seconds / peak_flops."""
    flops = _positive("flops", flops, "mfu", "the FLOPs the timed work did")
    sec = _positive("seconds", seconds, "mfu", "the measured wall time")
    peak = _positive("peak_flops", peak_flops, "mfu", "e.g. measure_matmul_peak()['flops_per_s']")
    return flops / sec / peak


def wall_clock_days(gpu_hours_spent: float, n_gpus: int) -> float:
    """Days of wall-clock time for ``gpu_hours_spent`` spread over ``n_gpus`` devices working at once."""
    h = _positive("gpu_hours_spent", gpu_hours_spent, "wall_clock_days", "device-hours, e.g. 180_000")
    n = _whole("n_gpus", n_gpus, "wall_clock_days")
    return h / n / 24.0


def cost_usd(gpu_hours_spent: float, price_per_gpu_hour: float = REPORT_PRICE_PER_GPU_HOUR) -> float:
    """Rental cost: GPU-hours · price (the report assumes $2 per H800 GPU-hour). Integers stay exact."""
    if not (isinstance(gpu_hours_spent, numbers.Real) and not isinstance(gpu_hours_spent, bool)
            and math.isfinite(gpu_hours_spent) and gpu_hours_spent >= 0):
        raise ValueError(f"cost_usd: gpu_hours_spent must be a finite number ≥ 0, got {gpu_hours_spent!r}")
    _positive("price_per_gpu_hour", price_per_gpu_hour, "cost_usd", "dollars per GPU-hour, e.g. 2")
    return gpu_hours_spent * price_per_gpu_hour


def report_table1(price_per_gpu_hour: float = REPORT_PRICE_PER_GPU_HOUR) -> dict:
    """The report's Table 1 recomputed from its three stages (integer GPU-hours, so the sums are exact).

    {"rows": {stage: {"gpu_hours", "cost"}}, "total_gpu_hours", "total_cost", "pretrain_from_rate" (180K per
    trillion tokens × 14.8T), "days_per_trillion" (180K / 2048 GPUs / 24), "pretrain_days" (on 2048 GPUs)}.
    """
    rows = {k: {"gpu_hours": h, "cost": cost_usd(h, price_per_gpu_hour)} for k, h in REPORT_GPU_HOURS.items()}
    total = sum(REPORT_GPU_HOURS.values())
    return {"rows": rows, "total_gpu_hours": total, "total_cost": cost_usd(total, price_per_gpu_hour),
            "pretrain_from_rate": REPORT_GPU_HOURS_PER_TRILLION * REPORT_PRETRAIN_TOKENS / 1e12,
            "days_per_trillion": wall_clock_days(REPORT_GPU_HOURS_PER_TRILLION, REPORT_N_GPUS),
            "pretrain_days": wall_clock_days(REPORT_GPU_HOURS["pre_training"], REPORT_N_GPUS)}


# -- the report's run, as a function of tokens seen ------------------------------------------------------------
def v3_steps_at(tokens: float) -> float:
    """Optimizer steps after ``tokens`` tokens under the report's batch ramp (closed form, continuous).

    Batch B(t) = B_0 + (B_1 − B_0)·t/R sequences of L tokens for t ≤ R (linear ramp: our assumption, see
    helpers.optim), so dsteps/dt = 1/(L·B(t)) and steps(t) = R / (L·(B_1 − B_0)) · ln(B(t)/B_0); after the
    ramp every step takes L·B_1 tokens."""
    s = DEEPSEEK_V3_SCHEDULE
    if not (isinstance(tokens, numbers.Real) and not isinstance(tokens, bool) and math.isfinite(tokens)
            and 0 <= tokens <= s["total_tokens"] * (1 + 1e-9)):
        raise ValueError(f"v3_steps_at: tokens must be a number in [0, {s['total_tokens']:.3g}] (tokens seen in the "
                         f"report's pre-training), got {tokens!r}")
    b0, b1, r, L = s["batch_start"], s["batch_end"], s["batch_ramp_tokens"], s["seq_len"]
    t = min(tokens, r)
    steps = r / (L * (b1 - b0)) * math.log((b0 + (b1 - b0) * t / r) / b0)
    return steps + max(tokens - r, 0.0) / (L * b1)


def v3_progress(tokens: float) -> dict:
    """Where the report's pre-training stands after ``tokens`` tokens (the schedule widget's logic).

    {"tokens", "share" (of 14.8T), "lr" (helpers.optim.deepseek_v3_lr), "batch" (sequences,
    deepseek_v3_batch_size), "steps" (:func:`v3_steps_at`), "gpu_hours" (at the report's 180K per trillion
    tokens), "cost" (at $2), "days" (on 2048 GPUs)}."""
    lr = deepseek_v3_lr(tokens)                       # validates tokens
    h = REPORT_GPU_HOURS_PER_TRILLION * tokens / 1e12
    return {"tokens": float(tokens), "share": tokens / REPORT_PRETRAIN_TOKENS, "lr": lr,
            "batch": deepseek_v3_batch_size(tokens), "steps": v3_steps_at(tokens), "gpu_hours": h,
            "cost": cost_usd(h), "days": h / REPORT_N_GPUS / 24.0}


# -- hyper-parameters as a function of compute (DeepSeek LLM, arXiv 2401.02954, §3.1) ---------------------------
def deepseek_llm_hparams(compute_flops: float) -> dict:
    """DeepSeek's own power-law fits of the near-optimal peak learning rate and batch size against the compute
    budget C (DeepSeek LLM, arXiv 2401.02954, §3.1; fitted on dense models at 1e17-3e20 FLOPs):

        η_opt = 0.3118 · C^(−0.1250),      B_opt = 0.2920 · C^(0.3271) tokens,

    with C = M·D, M the non-embedding training FLOPs per token (attention included, output head excluded) and D
    the training tokens. Larger budgets want a smaller learning rate and a larger batch. Outside the fitted range
    (a MoE at 3.6e24, a CPU model at 1e12) it is an extrapolation: a cross-check, not a measurement."""
    c = _positive("compute_flops", compute_flops, "deepseek_llm_hparams",
                  "C = M·D, non-embedding training FLOPs per token times tokens")
    return {"lr": 0.3118 * c ** -0.125, "batch_tokens": 0.2920 * c ** 0.3271}


# -- measuring a peak ----------------------------------------------------------------------------------------
def measure_matmul_peak(n: int = 1024, dtype: torch.dtype = torch.float32, repeats: int = 10,
                        budget_s: float = 2.0, device=None) -> dict:
    """The best FLOP/s of an n × n @ n × n matmul (2·n³ FLOPs) on ``device`` with the current thread count:
    the practical peak a model's MFU is measured against (a vendor's peak is not published for a laptop CPU).

    Best of ``repeats`` timings after one warm-up, stopping early after ``budget_s`` seconds
    (helpers.runtime._time_matmul). Returns {"flops_per_s", "ms", "n", "dtype", "threads", "device"}.
    """
    from .runtime import _time_matmul, get_device
    n = _whole("n", n, "measure_matmul_peak", 16)
    repeats = _whole("repeats", repeats, "measure_matmul_peak")
    _positive("budget_s", budget_s, "measure_matmul_peak", "seconds, e.g. 2.0")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"measure_matmul_peak: dtype must be a floating torch.dtype, got {dtype!r}; e.g. torch.float32")
    device = torch.device(device) if device is not None else get_device()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    _time_matmul(a, b, 1, budget_s)                                     # warm-up (allocations, kernel choice)
    ms = _time_matmul(a, b, repeats, budget_s)
    return {"flops_per_s": 2.0 * n ** 3 / (ms / 1e3), "ms": ms, "n": n, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), "device": str(device)}
