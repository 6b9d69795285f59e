"""AdamW, gradient clipping and learning-rate schedules (DeepSeek-V3 §4.2 "Hyper-Parameters").

AdamW (Loshchilov & Hutter), one step t for a parameter θ with gradient g:

    θ ← θ − lr·wd·θ                                  (decoupled weight decay)
    m ← β1·m + (1 − β1)·g                           (first moment)
    v ← β2·v + (1 − β2)·g²                          (second moment)
    θ ← θ − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)

With ``decoupled=False`` the decay is folded into the gradient instead (g ← g + wd·θ: "Adam with L2"),
so it is rescaled by 1/sqrt(v) like the loss gradient: parameters with large gradients are decayed less.
The report trains with β1 = 0.9, β2 = 0.95, weight decay 0.1 and clips the global gradient norm at 1.0.

The report's schedule (§4.2) is a function of tokens seen: linear warm-up 0 → 2.2e-4 over the first 2K
steps, constant to 10T tokens, cosine decay to 2.2e-5 over 4.3T tokens, 2.2e-5 for 333B tokens and
7.3e-6 for the last 167B (14.8T in all). The batch grows from 3072 to 15360 sequences of 4K tokens over
the first 469B tokens; the report does not give the ramp's shape, we take it linear in tokens.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable

import torch

__all__ = ["AdamW", "param_groups", "clip_grad_norm_", "lr_at", "SCHEDULES",
           "deepseek_v3_lr", "deepseek_v3_batch_size", "DEEPSEEK_V3_SCHEDULE"]


def _finite(v) -> bool:
    """A real number (not a bool), neither NaN nor ±inf."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_group(group: dict, where: str) -> None:
    """Raise a clear error for hyper-parameters that would silently damage the weights (NaN, inf, out of range)."""
    lr, betas, eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if not (_finite(lr) and lr >= 0):
        raise ValueError(f"{where}: lr must be a finite number ≥ 0, got {lr!r}; typical values are 1e-4 … 1e-2")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"{where}: betas must be two numbers in [0, 1), got {betas!r}; the report uses (0.9, 0.95)")
    if not (_finite(eps) and eps > 0):
        raise ValueError(f"{where}: eps must be a finite number > 0, got {eps!r}; e.g. 1e-8")
    if not (_finite(wd) and wd >= 0):
        raise ValueError(f"{where}: weight_decay must be a finite number ≥ 0, got {wd!r}; use 0 for no decay")


class AdamW(torch.optim.Optimizer):
    """AdamW written out (see the module docstring); ``decoupled=False`` gives Adam with L2 regularisation.

    Matches ``torch.optim.AdamW`` (same defaults apart from ``betas`` = the report's (0.9, 0.95) and
    ``weight_decay`` = 0.1) to float rounding.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1, decoupled: bool = True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled))
        for group in self.param_groups:       # per-group values (e.g. from param_groups) override the defaults
            _check_group(group, "AdamW")
            group["betas"] = tuple(group["betas"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:       # all groups checked before any parameter changes
            _check_group(group, "AdamW.step")
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise ValueError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if wd != 0:
                    if group["decoupled"]:
                        p.mul_(1 - lr * wd)                      # θ ← θ − lr·wd·θ
                    else:
                        g = g.add(p, alpha=wd)                   # g ← g + wd·θ (L2)
                m.lerp_(g, 1 - b1)                               # m ← β1 m + (1−β1) g
                v.mul_(b2).addcmul_(g, g, value=1 - b2)          # v ← β2 v + (1−β2) g²
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / bc1)
        return loss


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (≥ 2-D: linear and embedding weights) decayed, vectors (norm gains, biases) not."""
    if not (_finite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"param_groups: weight_decay must be a finite number ≥ 0, got {weight_decay!r}; "
                         "use 0 for no decay (the report uses 0.1)")
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients by min(1, max_norm / ‖g‖) where ‖g‖ is the global L2 norm; return ‖g‖ (before clipping).

    ``max_norm = inf`` (or None) measures the norm without clipping.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    if max_norm is None:
        max_norm = math.inf
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be > 0 (or inf for no clipping), got {max_norm}")
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    if math.isfinite(max_norm):
        scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return total


SCHEDULES = ("cosine", "constant", "wsd")


def lr_at(step: int, *, lr: float, steps: int, warmup_steps: int = 0, min_lr: float | None = None,
          schedule: str = "cosine", decay_frac: float = 0.2) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``steps``.

    Warm-up: lr·(step + 1)/warmup_steps for step < warmup_steps. Then
      "constant": lr;
      "cosine":   min_lr + (lr − min_lr)·(1 + cos(π·p))/2, p from 0 to 1 over the remaining steps;
      "wsd":      warm-up, stable at lr, then a cosine decay to min_lr over the last ``decay_frac`` of the
                  steps (the shape of the report's schedule: long constant phase, late decay).
    ``min_lr`` defaults to lr/10 (the report decays 2.2e-4 → 2.2e-5).
    """
    def whole(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if schedule not in SCHEDULES:
        raise ValueError(f"lr_at: unknown schedule {schedule!r}: choose one of {SCHEDULES}")
    if not (whole(steps) and steps > 0 and whole(warmup_steps) and 0 <= warmup_steps <= steps):
        raise ValueError(f"lr_at: need ints steps > 0 and 0 ≤ warmup_steps ≤ steps, got steps={steps!r}, "
                         f"warmup_steps={warmup_steps!r}; shorten the warm-up or train longer")
    if not (_finite(step) and step >= 0):
        raise ValueError(f"lr_at: step must be a number ≥ 0 (the 0-based optimizer step), got {step!r}")
    if not (_finite(lr) and lr >= 0):
        raise ValueError(f"lr_at: lr must be a finite number ≥ 0, got {lr!r}; typical values are 1e-4 … 1e-2")
    if not (min_lr is None or (_finite(min_lr) and 0 <= min_lr <= lr)):
        raise ValueError(f"lr_at: min_lr must be in [0, lr = {lr}] (or None for lr / 10), got {min_lr!r}")
    if not (_finite(decay_frac) and 0 < decay_frac <= 1):
        raise ValueError(f"lr_at: decay_frac must be in (0, 1], got {decay_frac!r}; e.g. 0.2")
    min_lr = lr / 10 if min_lr is None else min_lr
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    start = warmup_steps if schedule == "cosine" else max(warmup_steps, steps - round(decay_frac * steps))
    if step < start:
        return lr
    p = min(1.0, (step - start) / max(1, steps - 1 - start))
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


# -- the report's schedule, as functions of tokens seen (§4.2) ---------------------------------------------
DEEPSEEK_V3_SCHEDULE = dict(
    peak_lr=2.2e-4, warmup_steps=2000, constant_until=10e12, cosine_tokens=4.3e12, cosine_to=2.2e-5,
    tail1_tokens=333e9, tail1_lr=2.2e-5, tail2_tokens=167e9, tail2_lr=7.3e-6, total_tokens=14.8e12,
    seq_len=4096, batch_start=3072, batch_end=15360, batch_ramp_tokens=469e9,
)


def deepseek_v3_batch_size(tokens: float) -> int:
    """Sequences per batch after ``tokens`` tokens: 3072 → 15360 over the first 469B tokens (linear: our assumption)."""
    s = DEEPSEEK_V3_SCHEDULE
    if not (_finite(tokens) and tokens >= 0):
        raise ValueError(f"deepseek_v3_batch_size: tokens must be a finite number ≥ 0 (tokens seen), got {tokens!r}")
    f = min(tokens / s["batch_ramp_tokens"], 1.0)
    return int(round(s["batch_start"] + f * (s["batch_end"] - s["batch_start"])))


def _warmup_tokens() -> float:
    """Tokens consumed by the 2K warm-up steps while the batch ramps (steps summed one by one)."""
    s, tok = DEEPSEEK_V3_SCHEDULE, 0.0
    for _ in range(s["warmup_steps"]):
        tok += deepseek_v3_batch_size(tok) * s["seq_len"]
    return tok


WARMUP_TOKENS = _warmup_tokens()


def deepseek_v3_lr(tokens: float) -> float:
    """The report's learning rate after ``tokens`` tokens of pre-training (warm-up measured in tokens via the ramp)."""
    s = DEEPSEEK_V3_SCHEDULE
    if not (_finite(tokens) and 0 <= tokens <= s["total_tokens"] * (1 + 1e-9)):
        raise ValueError(f"deepseek_v3_lr: tokens must be a number in [0, {s['total_tokens']:.3g}] (the report's "
                         f"14.8T pre-training tokens), got {tokens!r}")
    if tokens < WARMUP_TOKENS:
        return s["peak_lr"] * tokens / WARMUP_TOKENS
    if tokens < s["constant_until"]:
        return s["peak_lr"]
    cos_end = s["constant_until"] + s["cosine_tokens"]
    if tokens < cos_end:
        p = (tokens - s["constant_until"]) / s["cosine_tokens"]
        return s["cosine_to"] + (s["peak_lr"] - s["cosine_to"]) * 0.5 * (1 + math.cos(math.pi * p))
    if tokens < cos_end + s["tail1_tokens"]:
        return s["tail1_lr"]
    return s["tail2_lr"]
