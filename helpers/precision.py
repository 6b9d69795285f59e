"""Number formats (DeepSeek-V3 §3.3 "FP8 Training"): bits → range, spacing, rounding; the training precision map.

A binary floating-point format with e exponent bits and m mantissa bits stores sign s, biased exponent E
and fraction f; bias = 2^(e−1) − 1. A normal number is (−1)^s · 2^(E − bias) · (1 + f/2^m), E = 1 … E_max;
E = 0 gives subnormals (−1)^s · 2^(1 − bias) · (f/2^m). From the bit counts alone:

    machine epsilon (spacing just above 1)   ε = 2^(−m)
    smallest normal                          2^(1 − bias)
    smallest subnormal                       2^(1 − bias − m)
    largest finite (IEEE: E = 2^e − 1 is inf/NaN)      (2 − 2^(−m)) · 2^(2^e − 2 − bias)
    largest finite (E4M3FN: no inf, only S.1111.111 is NaN)   (2 − 2·2^(−m)) · 2^(2^e − 1 − bias) = 448

Rounding to nearest (ties to even) at the spacing of x's binade 2^(⌊log2|x|⌋ − m) (at least the subnormal
spacing) is what a cast does. A value beyond the largest finite overflows (to inf, or NaN for E4M3FN;
``saturate=True`` clamps instead, as scaled FP8 kernels do); a value below half the smallest subnormal
underflows to 0.

The report's map (§3.3): GEMM inputs in FP8 E4M3 with fine-grained scales (activations 1×128 tiles, weights
128×128 blocks), GEMM accumulation promoted to FP32 every N_C = 128 elements; master weights, weight
gradients FP32; AdamW moments BF16; a few sensitive parts (embedding, output head, MoE gating, norms,
attention) kept in BF16/FP32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["FloatFormat", "FORMATS", "get_format", "quantize", "representable_values", "precision_report",
           "format_table", "PRECISION_MAP", "POLICIES", "bytes_per_param", "training_state_bytes",
           "accumulate_updates"]


@dataclass(frozen=True)
class FloatFormat:
    name: str
    exp_bits: int
    man_bits: int
    ieee: bool = True              # False: E4M3FN-style (top exponent holds finite values, no inf)
    torch_dtype: str | None = None

    def __post_init__(self):
        # quantize() computes in float64, so a format can have at most float64's 11 exponent and 52 mantissa bits
        if not (isinstance(self.exp_bits, int) and not isinstance(self.exp_bits, bool) and 2 <= self.exp_bits <= 11):
            raise ValueError(f"FloatFormat {self.name!r}: exp_bits must be an int in [2, 11], got {self.exp_bits!r}; "
                             "a float needs at least 2 exponent bits (FP8 E4M3 has 4, bf16 8, float64 11)")
        low = 0 if self.ieee else 1      # E4M3FN-style: the top binade's last code is NaN, so it needs a mantissa bit
        if not (isinstance(self.man_bits, int) and not isinstance(self.man_bits, bool) and low <= self.man_bits <= 52):
            raise ValueError(f"FloatFormat {self.name!r}: man_bits must be an int in [{low}, 52], got {self.man_bits!r}; "
                             "e.g. 3 for E4M3, 7 for bf16, 23 for fp32")

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def eps(self) -> float:
        return 2.0 ** -self.man_bits

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.man_bits)

    @property
    def max(self) -> float:
        if self.ieee:
            return (2 - 2.0 ** -self.man_bits) * 2.0 ** (2 ** self.exp_bits - 2 - self.bias)
        return (2 - 2 * 2.0 ** -self.man_bits) * 2.0 ** (2 ** self.exp_bits - 1 - self.bias)

    @property
    def has_inf(self) -> bool:
        return self.ieee

    @property
    def dtype(self) -> torch.dtype | None:
        return getattr(torch, self.torch_dtype) if self.torch_dtype and hasattr(torch, self.torch_dtype) else None

    def spacing(self, x: float) -> float:
        """Distance from |x| to the next representable number above it (the unit in the last place)."""
        a = abs(float(x))
        if not math.isfinite(a):
            raise ValueError(f"spacing: x must be a finite number, got {x!r}; the spacing of inf or NaN is undefined")
        e = max(math.floor(math.log2(a)), 1 - self.bias) if a > 0 else 1 - self.bias
        return 2.0 ** (e - self.man_bits)


FORMATS = {
    "fp32": FloatFormat("fp32", 8, 23, torch_dtype="float32"),
    "bf16": FloatFormat("bf16", 8, 7, torch_dtype="bfloat16"),
    "fp16": FloatFormat("fp16", 5, 10, torch_dtype="float16"),
    "fp8_e4m3": FloatFormat("fp8_e4m3", 4, 3, ieee=False, torch_dtype="float8_e4m3fn"),
    "fp8_e5m2": FloatFormat("fp8_e5m2", 5, 2, torch_dtype="float8_e5m2"),
    "e5m6": FloatFormat("e5m6", 5, 6),          # the report's format for inputs of the linear after attention
}


def get_format(fmt) -> FloatFormat:
    """A FloatFormat from itself or its name (case-insensitive; "e4m3"/"e5m2" accepted for the FP8 ones)."""
    if isinstance(fmt, FloatFormat):
        return fmt
    key = str(fmt).lower().replace("-", "_")
    key = {"e4m3": "fp8_e4m3", "e5m2": "fp8_e5m2", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown number format {fmt!r}: choose one of {list(FORMATS)}")
    return FORMATS[key]


def quantize(x: torch.Tensor, fmt, saturate: bool = False) -> torch.Tensor:
    """Round ``x`` to the nearest value of ``fmt`` (ties to even), computed from the bit counts alone.

    Returns float64. Overflow gives ±inf (IEEE formats) or NaN (E4M3FN), or ±max with ``saturate=True``.
    """
    f = get_format(fmt)
    x = torch.as_tensor(x).detach().to(torch.float64)
    a = x.abs()
    e = torch.floor(torch.log2(torch.where(a > 0, a, torch.ones_like(a)))).clamp(min=1 - f.bias)
    step = torch.exp2(e - f.man_bits)
    q = torch.round(x / step) * step                 # exact: step is a power of two; round() is half-to-even
    over = q.abs() > f.max
    if saturate:
        q = torch.where(over, q.sign() * f.max, q)
    else:
        q = torch.where(over, torch.full_like(q, math.inf).copysign(x) if f.has_inf else torch.full_like(q, math.nan), q)
    return torch.where(torch.isfinite(x), q, x)


def representable_values(fmt, lo: float = 0.0, hi: float | None = None, max_count: int = 100_000) -> torch.Tensor:
    """All non-negative finite values of ``fmt`` in [lo, hi] (float64, ascending), enumerated by exponent and fraction."""
    f = get_format(fmt)
    hi = f.max if hi is None else hi
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"representable_values: need finite 0 ≤ lo ≤ hi, got lo={lo}, hi={hi}; "
                         f"e.g. lo=0, hi=None (up to {f.name}'s max {f.max:g})")
    if not (isinstance(max_count, int) and not isinstance(max_count, bool) and max_count >= 1):
        raise ValueError(f"representable_values: max_count must be an int ≥ 1, got {max_count!r}")
    vals = []
    frac = torch.arange(2 ** f.man_bits, dtype=torch.float64) / 2 ** f.man_bits
    top = 2 ** f.exp_bits - (2 if f.ieee else 1)
    for E in range(0, top + 1):
        if E == 0:
            v = frac * 2.0 ** (1 - f.bias)
        else:
            if 2.0 ** (E - f.bias + 1) <= lo or 2.0 ** (E - f.bias) > hi:
                continue
            v = (1 + frac) * 2.0 ** (E - f.bias)
        v = v[(v >= lo) & (v <= min(hi, f.max))]
        vals.append(v)
        if sum(len(t) for t in vals) > max_count:
            raise ValueError(f"more than {max_count} values of {f.name} in [{lo}, {hi}]: narrow the range")
    return torch.unique(torch.cat(vals))


def precision_report(fmt, scale: float, x: torch.Tensor, saturate: bool = False) -> dict:
    """What ``x`` loses when stored in ``fmt`` after multiplying by ``scale`` (and dividing back).

    Keys: format, scale, n, overflow (|scale·x| beyond max), underflow (x ≠ 0 rounded to 0), subnormal
    (nonzero results below the smallest normal), max_rel_err and mean_rel_err over the finite nonzero
    elements that neither overflowed nor underflowed, rel_err_norm = ‖q − x‖/‖x‖ over finite results,
    max_abs_scaled = max |scale·x|, and the format's max/min_normal/eps for reference.
    """
    f = get_format(fmt)
    if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    x = torch.as_tensor(x).detach().to(torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("precision_report: x is empty; pass the tensor whose storage you want to measure")
    xs = x * scale
    q = quantize(xs, f, saturate=saturate)
    over = xs.abs() > f.max if saturate else ~torch.isfinite(q)
    under = (x != 0) & (q == 0)
    sub = (q != 0) & (q.abs() < f.min_normal) & torch.isfinite(q)
    ok = (x != 0) & ~over & ~under
    rel = ((q[ok] - xs[ok]) / xs[ok]).abs()
    fin = torch.isfinite(q)
    return dict(format=f.name, scale=float(scale), n=x.numel(), overflow=int(over.sum()), underflow=int(under.sum()),
                subnormal=int(sub.sum()), max_rel_err=float(rel.max()) if rel.numel() else 0.0,
                mean_rel_err=float(rel.mean()) if rel.numel() else 0.0,
                rel_err_norm=float((q[fin] - xs[fin]).norm() / xs[fin].norm().clamp_min(1e-300)),
                max_abs_scaled=float(xs.abs().max()), max=f.max, min_normal=f.min_normal, eps=f.eps)


def format_table(names=("fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2")) -> list[dict]:
    """One row per format: bits, exponent/mantissa bits, bias, max, smallest normal/subnormal, ε, all from the bit counts."""
    rows = []
    for n in names:
        f = get_format(n)
        rows.append(dict(format=f.name, bits=f.bits, exp_bits=f.exp_bits, man_bits=f.man_bits, bias=f.bias, max=f.max,
                         min_normal=f.min_normal, min_subnormal=f.min_subnormal, eps=f.eps))
    return rows


# -- the report's precision map and memory policies ---------------------------------------------------------
PRECISION_MAP = [
    ("GEMM inputs: activations (Fprop, Dgrad, Wgrad)", "FP8 E4M3, 1×128 tile scales",
     "E4M3's extra mantissa bit beats E5M2's range once fine-grained scales absorb outliers"),
    ("GEMM inputs: weights", "FP8 E4M3, 128×128 block scales", "same; a block shares one scale"),
    ("GEMM accumulation", "FP32 (promoted from tensor cores every N_C = 128)",
     "tensor-core FP8 accumulation keeps ~14 bits: ~2% error at K = 4096"),
    ("inputs of the linear after attention", "E5M6, power-of-2 scales", "sensitive; also re-read in backward"),
    ("SwiGLU input in MoE (cached for backward)", "FP8 E4M3", "activation memory; output recomputed"),
    ("master weights", "FP32", "small updates must not vanish (see the BF16 stall)"),
    ("weight gradients (accumulated)", "FP32", "summed over micro-batches"),
    ("AdamW moments m, v", "BF16", "no observable loss change; halves optimizer memory"),
    ("embedding, output head, MoE gating, normalisation, attention", "BF16 / FP32", "low cost, high sensitivity"),
    ("dispatched activations (communication)", "FP8", "halves all-to-all traffic"),
]

# bytes per parameter for each piece of training state
POLICIES = {
    "fp32 Adam": dict(weights=4, grads=4, master=0, m=4, v=4),
    "bf16 mixed + fp32 master": dict(weights=2, grads=2, master=4, m=4, v=4),
    "pure bf16 (no master)": dict(weights=2, grads=2, master=0, m=2, v=2),
    "DeepSeek-V3 (FP8 GEMMs)": dict(weights=0, grads=4, master=4, m=2, v=2),
}
POLICY_NOTES = {
    "fp32 Adam": "everything FP32",
    "bf16 mixed + fp32 master": "BF16 compute copy and gradients, FP32 master weights and moments",
    "pure bf16 (no master)": "small updates stall (see the measurement)",
    "DeepSeek-V3 (FP8 GEMMs)": "FP32 master weights and gradients, BF16 moments; FP8 weight copies are made "
                               "per GEMM and not kept (§3.3)",
}


def bytes_per_param(policy: str) -> int:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: choose one of {list(POLICIES)}")
    return sum(POLICIES[policy].values())


def training_state_bytes(n_params: int, policy: str) -> dict:
    """Bytes of weights, gradients, master weights and moments for ``n_params`` parameters (no activations)."""
    if not (isinstance(n_params, int) and not isinstance(n_params, bool) and n_params >= 0):
        raise ValueError(f"training_state_bytes: n_params must be an int ≥ 0, got {n_params!r}; "
                         "e.g. sum(p.numel() for p in model.parameters())")
    per = POLICIES[policy] if policy in POLICIES else bytes_per_param(policy)
    out = {k: v * n_params for k, v in per.items()}
    out["total"] = sum(out.values())
    return out


def accumulate_updates(w0, update, n: int, fmt, every: int = 0):
    """Apply w ← round_fmt(w + u) ``n`` times, the master weights w kept in ``fmt``; return the final w (float64).

    ``w0`` and ``update`` are tensors (or numbers) of the same shape; u = round_fmt(update) is added each step.
    An update smaller than half the spacing at |w| (about ε·|w|/2) rounds away every time: the weight stalls.
    With ``every`` > 0 also returns the trajectory [n // every + 1, ...] sampled every ``every`` steps.
    """
    f = get_format(fmt)
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise ValueError(f"accumulate_updates: n must be an int ≥ 0 (the number of updates), got {n!r}")
    if not (isinstance(every, int) and not isinstance(every, bool) and every >= 0):
        raise ValueError(f"accumulate_updates: every must be an int ≥ 0 (0 = no trajectory), got {every!r}")
    w = quantize(torch.as_tensor(w0, dtype=torch.float64), f)
    u = torch.as_tensor(update, dtype=torch.float64)
    if u.shape != w.shape and u.numel() != 1:
        raise ValueError(f"update shape {tuple(u.shape)} does not match the weights' shape {tuple(w.shape)}")
    u = quantize(u, f)
    traj = [w.clone()]
    for i in range(n):
        w = quantize(w + u, f)
        if every and (i + 1) % every == 0:
            traj.append(w.clone())
    return (w, torch.stack(traj)) if every else w
