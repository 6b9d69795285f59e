"""FP8 training as a policy (DeepSeek-V3 §3.3): scales, tiles and blocks, accumulation, an FP8-emulated linear.

Quantisation with a scale (E4M3, max 448, 3 mantissa bits). A group G of values shares one scale

    s_G = max_{x∈G} |x| / 448,    q = cast_E4M3(x / s_G),    x̂ = q · s_G

so the group's largest value lands on 448 and nothing overflows. What a group is decides what an outlier
costs: every other value of its group is divided by the same large s_G and drops towards E4M3's subnormals
(2^-9 … 2^-6) or to zero. The report's groups (§3.3.2):

- activations: 1×128 tiles (one token, 128 consecutive channels);
- weights: 128×128 blocks (128 output × 128 input channels);
- "tensor": one scale for the whole tensor (the usual per-tensor recipe, for comparison).

Accumulation (§3.3.2 "Increasing Accumulation Precision"). An FP8 GEMM sums K products. H800 tensor cores keep
only about 14 bits of the running sum; :func:`limited_dot` models that by rounding the running sum to
``acc_bits`` mantissa bits after every addition, ``mode`` "truncate" (drop the low bits: a one-sided error
that grows with K) or "nearest". The fix: every N_C = 128 products, add the partial sum into an FP32
accumulator (on CUDA cores) and restart; the limited-precision error then only builds up over 128 terms.

:class:`FP8Linear` emulates the report's FP8 GEMMs for training: forward y = x̂ Ŵᵀ with x in 1×128 tiles and
W in 128×128 blocks; backward Dgrad ∂x = ĝ Ŵ with the output gradient g in 1×128 tiles (along the output
channels, the GEMM's K), Wgrad ∂W = ĝᵀ x̂ with g and x re-tiled along the token dimension (the GEMM's K
there). Products are computed in FP32 from the dequantised values (exact FP8 products, FP32 accumulation,
i.e. promotion at every term); master weights and their gradients stay FP32. :func:`swap_linears` puts it in
place of a model's ``nn.Linear`` layers (keeping the same Parameter objects) and :func:`restore_linears`
takes it out again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["E4M3_MAX", "GRANULARITIES", "FP8Tensor", "quantize_fp8", "fake_quant", "quant_error",
           "round_mantissa", "limited_dot", "FP8Linear", "BF16Linear", "swap_linears", "restore_linears",
           "scaled_mm_available", "scaled_mm_fp8", "block_outlier_damage", "PRECISION_ARMS", "train_with_precision",
           "bigram_baseline", "paired_gaps"]

E4M3_MAX = 448.0
GRANULARITIES = ("tensor", "tile", "block")
_MODES = ("truncate", "nearest")


@dataclass
class FP8Tensor:
    """E4M3 codes ``q`` in groups ([n_groups..., group]) and one FP32 ``scale`` per group (broadcastable)."""
    q: torch.Tensor
    scale: torch.Tensor
    shape: tuple
    granularity: str
    tile: int
    dim: int

    def dequantize(self) -> torch.Tensor:
        """x̂ = q · s, back in ``shape`` (FP32)."""
        x = self.q.float() * self.scale
        return _ungroup(x, self.shape, self.granularity, self.tile, self.dim)


def _check(x, granularity, tile):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be an int ≥ 1, got {tile!r}")
    if granularity == "block" and x.dim() != 2:
        raise ValueError(f"block quantisation needs a 2-D matrix [rows, cols], got shape {tuple(x.shape)}; "
                         "reshape it or use granularity='tile'")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension")


def _group(x, granularity, tile, dim):
    """View ``x`` as groups: tensor [1, n]; tile [..., n_tiles, tile] along ``dim``; block [nb0, t, nb1, t].
    Padding with zeros where a size is not a multiple of ``tile`` (a last, partial tile or block)."""
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity == "tile":
        x = x.movedim(dim, -1)
        n = x.shape[-1]
        pad = (-n) % tile
        if pad:
            x = F.pad(x, (0, pad))
        return x.reshape(*x.shape[:-1], -1, tile)
    r, c = x.shape
    x = F.pad(x, (0, (-c) % tile, 0, (-r) % tile))
    return x.reshape(x.shape[0] // tile, tile, x.shape[1] // tile, tile)


def _ungroup(g, shape, granularity, tile, dim):
    if granularity == "tensor":
        return g.reshape(shape)
    if granularity == "tile":
        moved = list(shape)
        moved.append(moved.pop(dim if dim >= 0 else len(shape) + dim))
        x = g.reshape(*g.shape[:-2], -1)[..., :moved[-1]]
        return x.movedim(-1, dim)
    r, c = shape
    return g.reshape(g.shape[0] * tile, g.shape[2] * tile)[:r, :c]


def _amax(g, granularity):
    a = g.abs()
    if granularity == "block":
        return a.amax(dim=(1, 3), keepdim=True)
    return a.amax(dim=-1, keepdim=True)


def quantize_fp8(x: torch.Tensor, granularity: str = "tile", tile: int = 128, dim: int = -1) -> FP8Tensor:
    """E4M3 codes and scales of ``x`` for one scale per tensor, per 1×``tile`` tile along ``dim``, or per
    ``tile``×``tile`` block of a matrix. s = amax/448 per group (1 for an all-zero group); q = (x/s) cast to
    ``torch.float8_e4m3fn`` (round to nearest even; |x/s| ≤ 448 by construction)."""
    _check(x, granularity, tile)
    g = _group(x.detach().float(), granularity, tile, dim)
    amax = _amax(g, granularity)
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    q = (g / scale).to(torch.float8_e4m3fn)
    return FP8Tensor(q, scale, tuple(x.shape), granularity, tile, dim)


def fake_quant(x: torch.Tensor, granularity: str = "tile", tile: int = 128, dim: int = -1) -> torch.Tensor:
    """x̂ = dequantize(quantize_fp8(x)): the FP32 values an FP8 GEMM actually multiplies (no gradient)."""
    return quantize_fp8(x, granularity, tile, dim).dequantize().to(x.dtype)


def quant_error(x: torch.Tensor, granularity: str = "tile", tile: int = 128, dim: int = -1) -> dict:
    """How much ``x`` loses: rel_err = ‖x̂ − x‖/‖x‖, mean_rel_err = mean |x̂ − x|/|x| over x ≠ 0,
    underflow = share of x ≠ 0 that became 0, and the median relative error per row (a token, for activations)."""
    xh = fake_quant(x, granularity, tile, dim).double()
    x = x.detach().double()
    nz = x != 0
    rel = (xh - x).abs()[nz] / x.abs()[nz]
    rows = x.reshape(-1, x.shape[-1])
    row_err = ((xh.reshape(rows.shape) - rows).norm(dim=-1) / rows.norm(dim=-1).clamp_min(1e-300))
    return {"granularity": granularity, "rel_err": float((xh - x).norm() / x.norm().clamp_min(1e-300)),
            "mean_rel_err": float(rel.mean()) if rel.numel() else 0.0,
            "underflow": float((nz & (xh == 0)).sum() / nz.sum().clamp_min(1)),
            "row_err_median": float(row_err.median()), "row_err_max": float(row_err.max())}


# ---- limited-precision accumulation -----------------------------------------------------------------------

def round_mantissa(x: torch.Tensor, bits: int, mode: str = "nearest") -> torch.Tensor:
    """Round float64 ``x`` to ``bits`` mantissa bits (spacing 2^(⌊log2|x|⌋ − bits)), to nearest (ties to even)
    or toward zero ("truncate"). No exponent limits (the accumulator's range is not the issue)."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be an int ≥ 1, got {bits!r}")
    x = x.to(torch.float64)
    a = x.abs()
    step = torch.exp2(torch.floor(torch.log2(torch.where(a > 0, a, torch.ones_like(a)))) - bits)
    y = x / step
    return (torch.round(y) if mode == "nearest" else torch.trunc(y)) * step


def limited_dot(a: torch.Tensor, b: torch.Tensor, acc_bits: int = 14, promote_every: int | None = None,
                mode: str = "truncate", prefixes=None) -> torch.Tensor:
    """Row-wise dot products Σ_k a_{m,k} b_{m,k} with a limited-precision running sum.

    a, b [M, K]. The products are exact (FP8 × FP8 fits in FP32). After each addition the running sum is
    rounded to ``acc_bits`` mantissa bits (``mode``). With ``promote_every`` = N_C, every N_C products the
    partial sum is added into an FP32 total and restarted at 0 (the report's promotion to CUDA cores).
    Returns [M] (FP32 result as float64), or [len(prefixes), M] with the result after the first k products
    for each k in ``prefixes`` (one pass gives the error for every K).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must be matrices of the same shape [M, K], got {tuple(a.shape)} and {tuple(b.shape)}")
    if promote_every is not None and (not isinstance(promote_every, int) or promote_every < 1):
        raise ValueError(f"promote_every (N_C) must be an int ≥ 1 or None, got {promote_every!r}")
    m, k = a.shape
    want = sorted(set(prefixes)) if prefixes is not None else [k]
    if want[0] < 1 or want[-1] > k:
        raise ValueError(f"prefixes must be between 1 and K = {k}, got {list(prefixes)}")
    p = a.double() * b.double()
    acc = torch.zeros(m, dtype=torch.float64)
    total = torch.zeros(m, dtype=torch.float64)
    out = {}
    for i in range(k):
        acc = round_mantissa(acc + p[:, i], acc_bits, mode)
        if promote_every and (i + 1) % promote_every == 0:
            total = (total + acc).float().double()
            acc = torch.zeros_like(acc)
        if i + 1 in want:
            out[i + 1] = (total + acc).float().double()
    res = torch.stack([out[j] for j in want])
    return res if prefixes is not None else res[0]


# ---- the FP8-emulated linear layer ------------------------------------------------------------------------

class _FP8Matmul(torch.autograd.Function):
    """y = x̂ Ŵᵀ; ∂x = ĝ Ŵ; ∂W = ĝᵀ x̂ with the report's groups (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, w, tile, grad_granularity):
        ctx.tile, ctx.grad_granularity = tile, grad_granularity
        x2 = x.reshape(-1, x.shape[-1])
        wq = fake_quant(w, "block", tile)
        ctx.save_for_backward(x2, wq)
        return (fake_quant(x2, "tile", tile) @ wq.t()).view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, g):
        x2, wq = ctx.saved_tensors
        t = ctx.tile
        g2 = g.reshape(-1, g.shape[-1])
        if ctx.grad_granularity == "tile":
            gd = fake_quant(g2, "tile", t)                          # Dgrad: K = output channels
            gw, xw = fake_quant(g2, "tile", t, dim=0), fake_quant(x2, "tile", t, dim=0)   # Wgrad: K = tokens
        else:                                                       # the variant that diverged (§3.3.2)
            gd = gw = fake_quant(g2, "block", t)
            xw = fake_quant(x2, "tile", t, dim=0)
        dx = (gd @ wq).view(*g.shape[:-1], wq.shape[1])
        dw = gw.t() @ xw
        return dx, dw, None, None


class FP8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` (no bias) computing with E4M3-quantised GEMM inputs, FP32 master weight.

    ``grad_granularity`` "tile" (the report) or "block" (128×128 blocks for the output gradients too).
    """

    def __init__(self, linear: nn.Linear, tile: int = 128, grad_granularity: str = "tile"):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"FP8Linear wraps an nn.Linear, got {type(linear).__name__}")
        if linear.bias is not None:
            raise ValueError("FP8Linear emulates the course model's bias-free linears; this one has a bias")
        if grad_granularity not in ("tile", "block"):
            raise ValueError(f"grad_granularity must be 'tile' or 'block', got {grad_granularity!r}")
        self.weight, self.in_features, self.out_features = linear.weight, linear.in_features, linear.out_features
        self.tile, self.grad_granularity, self.original = tile, grad_granularity, [linear]

    def forward(self, x):
        return _FP8Matmul.apply(x, self.weight, self.tile, self.grad_granularity)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, E4M3 x:1x{self.tile} W:{self.tile}x{self.tile} dY:{self.grad_granularity}"


class _BF16Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        xb, wb = x.bfloat16().float(), w.bfloat16().float()
        ctx.save_for_backward(xb, wb)
        return xb @ wb.t()

    @staticmethod
    def backward(ctx, g):
        xb, wb = ctx.saved_tensors
        gb = g.bfloat16().float()
        return gb @ wb, (gb.reshape(-1, gb.shape[-1]).t() @ xb.reshape(-1, xb.shape[-1]))


class BF16Linear(FP8Linear):
    """BF16 GEMM inputs emulated by rounding x, W and ∂y to BF16 (FP32 products and sums): the report's
    baseline precision without BF16 matmuls, which are hundreds of times slower on AVX2-only CPUs."""

    def forward(self, x):
        return _BF16Matmul.apply(x, self.weight)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, BF16-rounded inputs"


def swap_linears(model: nn.Module, kind: str = "fp8", skip=("head",), **kw) -> list[str]:
    """Replace every bias-free ``nn.Linear`` of ``model`` (in place) by :class:`FP8Linear` (``kind="fp8"``) or
    :class:`BF16Linear` (``kind="bf16"``), sharing the same weight Parameter. Modules whose name ends with an
    entry of ``skip`` stay as they are (the report keeps the output head in higher precision; the embedding,
    router and norms are not linears here). Returns the names swapped."""
    cls = {"fp8": FP8Linear, "bf16": BF16Linear}.get(kind)
    if cls is None:
        raise ValueError(f"kind must be 'fp8' or 'bf16', got {kind!r}")
    swapped = []
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            full = f"{name}.{cname}" if name else cname
            if isinstance(child, nn.Linear) and child.bias is None and not any(full.endswith(s) for s in skip):
                setattr(mod, cname, cls(child, **kw))
                swapped.append(full)
    return swapped


def restore_linears(model: nn.Module) -> int:
    """Undo :func:`swap_linears`: put the original ``nn.Linear`` modules (same Parameters) back; return how many."""
    n = 0
    for _, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, FP8Linear):
                setattr(mod, cname, child.original[0])
                n += 1
    return n


# ---- real FP8 GEMMs -------------------------------------------------------------------------------------

def scaled_mm_available(device="cpu") -> bool | str:
    """True if ``torch._scaled_mm`` runs an E4M3 × E4M3 GEMM on ``device`` in this torch, else the error text."""
    try:
        a = torch.ones(16, 16, device=device).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
        return True
    except (RuntimeError, AttributeError, NotImplementedError, TypeError) as e:
        return str(e).splitlines()[0][:160]


def scaled_mm_fp8(x: torch.Tensor, w: torch.Tensor, rowwise: bool = True) -> torch.Tensor:
    """y ≈ x wᵀ through ``torch._scaled_mm`` with E4M3 inputs: per-row scales of x and of w (one per token and
    per output channel) when ``rowwise``, else one scale per tensor. x [M, K], w [N, K]; FP32 output."""
    g = "tile" if rowwise else "tensor"
    k = x.shape[1]
    qx, qw = quantize_fp8(x, g, tile=k), quantize_fp8(w, g, tile=k)
    sx = qx.scale.reshape(-1, 1) if rowwise else qx.scale.reshape(())
    sw = qw.scale.reshape(1, -1) if rowwise else qw.scale.reshape(())
    return torch._scaled_mm(qx.q.reshape(x.shape), qw.q.reshape(w.shape).t(), scale_a=sx.float(), scale_b=sw.float(),
                            out_dtype=torch.float32)


def block_outlier_damage(grad: torch.Tensor, tile: int = 128) -> dict:
    """Per token (row) of an activation gradient [tokens, channels]: relative error under 1×``tile`` tiles and
    under ``tile``×``tile`` blocks, and the share of the token's entries flushed to zero. In a block, a token with
    a large gradient sets the scale for the ``tile``−1 tokens beside it."""
    g = grad.detach().float()
    out = {"token_norm": g.norm(dim=1)}
    for gran in ("tile", "block"):
        gh = fake_quant(g, gran, tile)
        out[f"{gran}_err"] = (gh - g).norm(dim=1) / g.norm(dim=1).clamp_min(1e-30)
        out[f"{gran}_zeroed"] = ((gh == 0) & (g != 0)).float().mean(dim=1)
    return out


# ---- FP8 vs baseline training (the report's < 0.25% relative loss gap) ------------------------------------

PRECISION_ARMS = ("fp32", "bf16", "fp8")


def _precision_val_windows(splits, block_size: int, eval_batches: int) -> dict:
    """The fixed validation windows every arm (and the bigram baseline) is measured on: per domain,
    ``eval_batches`` batches of 16 windows of ``block_size`` tokens (helpers.batching.eval_batches)."""
    from .batching import eval_batches as _eval
    return {d: _eval(splits, d, eval_batches, 16, block_size) for d in ("shakespeare", "code", "arithmetic")}


def _check_run_args(steps, batch_size, block_size, n_layers, eval_batches, lr):
    for name, v in (("steps", steps), ("batch_size", batch_size), ("block_size", block_size), ("n_layers", n_layers),
                    ("eval_batches", eval_batches)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"{name} must be an int ≥ 1, got {v!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ValueError(f"lr must be a number in (0, 1), got {lr!r}; e.g. 3e-3")


def bigram_baseline(block_size: int = 64, eval_batches: int = 2) -> dict:
    """The count-based bigram (helpers.objective.BigramModel, add-0.1, fitted on the three domains' training
    splits) on exactly the validation windows of :func:`train_with_precision`: {"val_loss" (mean over the
    3 domains, as the model's val_loss), "val_losses" (per domain)}. A model above this number has not yet
    learned more than which token follows which."""
    from .batching import load_splits
    from .objective import BigramModel
    _check_run_args(1, 1, block_size, 1, eval_batches, 1e-3)
    splits = load_splits()
    from .config import ModelConfig
    bigram = BigramModel(ModelConfig.cpu().vocab_size)
    for d in splits:                                              # one stream per domain: no pair across domains
        bigram.fit(splits[d]["train"])
    lp = bigram.log_probs()
    per = {}
    for d, batches in _precision_val_windows(splits, block_size, eval_batches).items():
        per[d] = float(torch.cat([-lp[x.flatten(), y.flatten()] for x, y in batches]).double().mean())
    return {"val_loss": sum(per.values()) / len(per), "val_losses": per}


def train_with_precision(kind: str, seed: int, steps: int = 150, batch_size: int = 8, block_size: int = 64,
                         n_layers: int = 2, lr: float = 3e-3, eval_batches: int = 2, show_progress: bool = False,
                         **model_overrides) -> dict:
    """Train a small course model (``ModelConfig.cpu(n_layers=..., **model_overrides)``) for ``steps`` steps with
    its linears in ``kind`` ("fp32": unchanged; "bf16": :class:`BF16Linear`; "fp8": :class:`FP8Linear`; output
    head kept as is). Cosine schedule from ``lr`` to ``lr``/10 after min(10, steps) warm-up steps.

    Same seed → same initial weights and the same batches for every ``kind`` (a paired comparison). Returns
    {"kind", "seed", "steps", "train_loss" [steps], "val_loss" (main loss, mean over 3 domains of
    ``eval_batches`` fixed batches each: the windows of :func:`bigram_baseline`), "val_losses", "seconds"}.
    """
    from .batching import DEFAULT_WEIGHTS, MixtureSampler, load_splits
    from .config import ModelConfig
    from .model import Transformer
    from .runtime import seed_everything
    from .train import TrainConfig, train
    if kind not in PRECISION_ARMS:
        raise ValueError(f"kind must be one of {PRECISION_ARMS}, got {kind!r}")
    _check_run_args(steps, batch_size, block_size, n_layers, eval_batches, lr)
    splits = load_splits()
    seed_everything(seed)
    model = Transformer(ModelConfig.cpu(**{"n_layers": n_layers, "max_seq_len": max(block_size, 64), **model_overrides}))
    if kind != "fp32":
        swap_linears(model, kind)
    sampler = MixtureSampler(splits, DEFAULT_WEIGHTS, batch_size=batch_size, block_size=block_size, seed=seed)
    val = _precision_val_windows(splits, block_size, eval_batches)
    tcfg = TrainConfig(steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=min(10, steps), schedule="cosine",
                       eval_every=0, seed=seed)
    hist = train(model, sampler, tcfg, val_data=val, show_progress=show_progress)
    return {"kind": kind, "seed": seed, "steps": steps, "train_loss": [float(v) for v in hist.train_loss],
            "val_loss": float(hist.val_loss[-1]), "val_losses": {k: float(v[-1]) for k, v in hist.val_losses.items()},
            "seconds": float(hist.wall_time)}


#: two-sided 95% quantiles of Student's t for 1 … 10 degrees of freedom (beyond: 1.96 + 2.4/df, within 1%)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired_gaps(arm_losses, base_losses, claim: float = 0.0025) -> dict:
    """Paired relative gaps g_s = (L_arm,s − L_base,s) / L_base,s over seeds s (same initial weights and batches),
    their mean ḡ, sample standard deviation sd, and the 95% interval ḡ ± t·sd/√n (Student's t, n − 1 degrees of
    freedom): the resolution the seeds allow. Verdict against a claimed bound |gap| < ``claim``:
    "reproduced" when the whole interval lies below ``claim`` (and above −``claim``), "contradicted" when it
    lies wholly beyond it, else "not resolved" (the interval straddles the bound: more seeds or steps needed).
    ``measurable`` says whether the interval excludes 0 (a real difference between the arms at this resolution).
    """
    a, b = [float(v) for v in arm_losses], [float(v) for v in base_losses]
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need the same number (≥ 2) of arm and baseline losses, one per seed; got {len(a)} and {len(b)}")
    if any(not math.isfinite(v) or v <= 0 for v in a + b):
        raise ValueError(f"losses must be finite and > 0, got {a} and {b}")
    if not (isinstance(claim, (int, float)) and claim > 0):
        raise ValueError(f"claim must be a relative bound > 0 (e.g. 0.0025 for 0.25%), got {claim!r}")
    g = [(x - y) / y for x, y in zip(a, b)]
    n = len(g)
    mean = sum(g) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in g) / (n - 1))
    t = _T975.get(n - 1, 1.96 + 2.4 / (n - 1))
    half = t * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if -claim < lo and hi < claim:
        verdict = "reproduced"
    elif lo >= claim or hi <= -claim:
        verdict = "contradicted"
    else:
        verdict = "not resolved"
    return {"per_seed": g, "mean": mean, "std": sd, "n": n, "ci95_half_width": half, "ci95": [lo, hi],
            "measurable": not (lo <= 0 <= hi), "claim": claim, "verdict": verdict}
