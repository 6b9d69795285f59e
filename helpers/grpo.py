"""Group Relative Policy Optimization (GRPO, DeepSeek-V3 §5.2.2; DeepSeekMath §4.1).

For each prompt q the policy π_θold samples a group of G completions o_1 … o_G, a reward function scores
them r_1 … r_G, and each completion's advantage is its reward relative to its group:

    A_i = (r_i − mean(r)) / (std(r) + ε)

No value network: the group is the baseline (a group whose rewards are all equal teaches nothing, A = 0).
Every token t of o_i gets A_i. With the per-token probability ratio ρ_{i,t} = π_θ(o_{i,t} | q, o_{i,<t}) /
π_θold(o_{i,t} | q, o_{i,<t}) the objective to *maximise* is

    J(θ) = 1/G Σ_i 1/|o_i| Σ_t [ min(ρ_{i,t} A_i, clip(ρ_{i,t}, 1 − ε_c, 1 + ε_c) A_i) − β · D_{i,t} ],

    D_{i,t} = π_ref/π_θ − log(π_ref/π_θ) − 1     (the unbiased, always ≥ 0 estimator of KL(π_θ ‖ π_ref))

where π_ref is the frozen model RL starts from (the SFT model). The clip keeps one batch from moving a
token's probability by more than a factor 1 ± ε_c in the direction its advantage pushes; the KL term keeps
the policy near the reference. :func:`grpo_loss` returns −J (to minimise) and its pieces.

Sampling stops a completion at its first ``stop_id`` (``<|end|>``); the mask of a completion covers its
tokens up to and including that stop token, so padding after it is never trained.
"""
from __future__ import annotations

import torch

__all__ = ["group_advantages", "kl_k3", "completion_mask", "grpo_loss", "sample_completions",
           "completion_logprobs"]


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A = (r − mean) / (std + eps) within each group; ``rewards`` is [P, G] (P prompts, G completions each).
    std is the sample standard deviation (n − 1), as in DeepSeekMath's implementation."""
    if not torch.is_tensor(rewards) or rewards.dim() != 2:
        raise ValueError(f"group_advantages: rewards must be a [prompts, group] tensor, got "
                         f"{tuple(rewards.shape) if torch.is_tensor(rewards) else type(rewards).__name__}")
    if rewards.shape[1] < 2:
        raise ValueError(f"group_advantages: a group needs at least 2 completions to have a baseline, got "
                         f"G = {rewards.shape[1]}")
    r = rewards.float()
    return (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from log-probabilities of tokens sampled from π_θ:
    exp(ref − logp) − (ref − logp) − 1 ≥ 0 (zero exactly where the two agree)."""
    d = ref_logp - logp
    return d.exp() - d - 1


def completion_mask(completions: torch.Tensor, stop_id: int) -> torch.Tensor:
    """[B, n] bool: True on each completion's tokens up to and including its first ``stop_id``."""
    is_stop = (completions == stop_id).long()
    after = (is_stop.cumsum(1) - is_stop) > 0           # strictly after the first stop
    return ~after


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.04) -> tuple[torch.Tensor, dict]:
    """−J(θ) of the module docstring and its pieces.

    logp, old_logp, ref_logp: [B, n] log-probabilities of the sampled completion tokens under π_θ (with
    gradient), π_θold and π_ref (``ref_logp=None`` or ``beta=0``: no KL term); advantages: [B] (one per
    completion); mask: [B, n] (True on completion tokens). Each completion's terms are averaged over its
    own tokens, then over completions (the 1/G Σ 1/|o_i| Σ_t of the formula).
    Returns ``(loss, {"kl", "clip_frac", "ratio_mean"})`` (stats are detached floats over masked tokens).
    """
    if not (logp.shape == old_logp.shape == mask.shape and advantages.shape == logp.shape[:1]):
        raise ValueError(f"grpo_loss: logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
                         f"{tuple(mask.shape)} must be [B, n] and advantages {tuple(advantages.shape)} must be [B]")
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError(f"grpo_loss: ref_logp {tuple(ref_logp.shape)} must have logp's shape {tuple(logp.shape)}")
    if not 0 < clip_eps < 1:
        raise ValueError(f"grpo_loss: clip_eps must be in (0, 1), got {clip_eps}; the usual value is 0.2")
    if beta < 0:
        raise ValueError(f"grpo_loss: beta must be ≥ 0, got {beta}")
    m = mask.float()
    ratio = (logp - old_logp.detach()).exp()
    adv = advantages.detach()[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    per_token = surrogate
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta > 0:
        kl = kl_k3(logp, ref_logp.detach())
        per_token = surrogate - beta * kl
    n_tok = m.sum(1).clamp(min=1)
    objective = ((per_token * m).sum(1) / n_tok).mean()
    with torch.no_grad():
        total = m.sum().clamp(min=1)
        clipped = ((ratio - ratio.clamp(1 - clip_eps, 1 + clip_eps)).abs() > 0).float()
        stats = {"kl": float((kl * m).sum() / total), "clip_frac": float((clipped * m).sum() / total),
                 "ratio_mean": float((ratio * m).sum() / total)}
    return -objective, stats


def sample_completions(model, prompts: torch.Tensor, max_new_tokens: int, stop_id: int, pad_id: int,
                       temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample completions of equal-length ``prompts`` [B, L] with the model's inference cache
    (``Transformer.generate``); each row stops at its first ``stop_id`` (later positions hold ``pad_id``) and
    sampling ends when every row has stopped. ``temperature = 0``: greedy. Returns [B, n ≤ max_new_tokens]
    completion ids (the prompt is not included)."""
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"sample_completions: max_new_tokens must be an int ≥ 1, got {max_new_tokens!r}")
    if prompts.shape[1] + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(f"sample_completions: prompt length {prompts.shape[1]} + {max_new_tokens} new tokens exceed "
                         f"max_seq_len = {model.cfg.max_seq_len}")
    out = model.generate(prompts, max_new_tokens, temperature=temperature, generator=generator, stop_id=stop_id,
                         pad_id=pad_id)
    return out[:, prompts.shape[1]:]


def completion_logprobs(model, prompts: torch.Tensor, completions: torch.Tensor, temperature: float = 1.0
                        ) -> torch.Tensor:
    """log π(o_t | q, o_<t) of every completion token, [B, n], from one forward pass over prompt + completion
    (with gradient when grad is enabled). ``temperature`` divides the logits, as sampling did."""
    if prompts.shape[0] != completions.shape[0]:
        raise ValueError(f"completion_logprobs: {prompts.shape[0]} prompts but {completions.shape[0]} completions")
    full = torch.cat([prompts, completions], 1)
    n = prompts.shape[1]
    logits = model(full[:, :-1])["logits"][:, n - 1:].float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, completions[..., None])[..., 0]
