"""The prediction objective (DeepSeek-V3 §2, §4): next-token cross-entropy, built from a stable softmax.

For logits z ∈ R^V over the vocabulary and the true next token y:

    logsumexp(z) = m + log Σ_j exp(z_j − m),   m = max_j z_j      (no exp of a large number: no overflow)
    log softmax(z)_i = z_i − logsumexp(z)
    loss = −log softmax(z)_y = logsumexp(z) − z_y                    (nats per token)
    perplexity = exp(mean loss)                                        (an "effective number of choices")

A model that knows nothing predicts uniformly: loss ln V, perplexity V. The first model that knows
something is the count-based bigram model P(b | a) = (c(a, b) + k) / (c(a) + k·V) (add-k smoothing).
"""
from __future__ import annotations

import math

import torch

__all__ = ["logsumexp", "log_softmax", "softmax", "cross_entropy", "naive_softmax", "naive_cross_entropy",
           "perplexity", "entropy", "BigramModel", "temperature_view"]


def logsumexp(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """m + log Σ exp(z − m) along ``dim``, m the maximum (−inf rows give −inf)."""
    m = z.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return (m + (z - m).exp().sum(dim=dim, keepdim=True).log()).squeeze(dim)


def log_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """z − logsumexp(z) = (z − m) − log Σ exp(z − m): stable for any finite logits (shifting first keeps the
    precision of small differences between large logits)."""
    s = z - z.amax(dim=dim, keepdim=True)
    return s - s.exp().sum(dim=dim, keepdim=True).log()


def softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(z − m) / Σ exp(z − m): the same probabilities as exp(z)/Σexp(z), without overflow."""
    e = (z - z.amax(dim=dim, keepdim=True)).exp()
    return e / e.sum(dim=dim, keepdim=True)


def naive_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(z)/Σexp(z) as written: overflows (inf/inf = nan) once a logit passes ~88.7 in float32."""
    e = z.exp()
    return e / e.sum(dim=dim, keepdim=True)


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} plus a vocabulary "
                         "dimension (logits [..., V], targets [...])")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be integer token ids, got {targets.dtype}")


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean over positions of logsumexp(z) − z_y (positions whose target is ``ignore_index`` are skipped)."""
    _check(logits, targets)
    keep = targets != ignore_index
    z, y = logits[keep], targets[keep].long()
    if y.numel() and (y.min() < 0 or y.max() >= logits.shape[-1]):
        raise ValueError(f"targets must be in [0, {logits.shape[-1]}) (or {ignore_index} to ignore)")
    return -log_softmax(z).gather(-1, y[:, None]).squeeze(-1).mean()


def naive_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−log(naive_softmax(z)_y), as written: inf or nan for large logits."""
    _check(logits, targets)
    return -naive_softmax(logits).gather(-1, targets.long()[..., None]).squeeze(-1).log().mean()


def perplexity(loss) -> float:
    """exp(loss) for a mean loss in nats."""
    return math.exp(float(loss))


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """−Σ p log p in nats (0·log 0 = 0)."""
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim)


class BigramModel:
    """Count-based next-token model: P(b | a) = (c(a, b) + k) / (c(a) + k·V), fitted by counting pairs.

    ``fit(tokens)`` counts consecutive pairs of a 1-D token stream (float32 counts, V×V: exact below 2^24). Evaluation is the
    mean −log P(t_{i+1} | t_i) over a stream: the same quantity as a neural model's cross-entropy.
    """

    def __init__(self, vocab_size: int, k: float = 0.1):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be ≥ 1, got {vocab_size}")
        if not k > 0:
            raise ValueError(f"add-k smoothing needs k > 0 (k = 0 gives log 0 for unseen pairs), got {k}")
        self.V, self.k = vocab_size, float(k)
        self.counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float32)   # exact up to 2^24 per pair

    def _stream(self, tokens) -> torch.Tensor:
        t = torch.as_tensor(tokens).long().flatten()
        if t.numel() < 2:
            raise ValueError("need a stream of at least 2 tokens")
        if t.min() < 0 or t.max() >= self.V:
            raise ValueError(f"token ids must be in [0, {self.V}), got [{int(t.min())}, {int(t.max())}]")
        return t

    def fit(self, tokens) -> "BigramModel":
        t = self._stream(tokens)
        self.counts += torch.bincount(t[:-1] * self.V + t[1:], minlength=self.V * self.V).view(self.V, self.V).double()
        return self

    def log_probs(self, prev: torch.Tensor | None = None) -> torch.Tensor:
        """log P(· | a) for every a (V×V) or for the given previous tokens ``prev`` ([..., V])."""
        c = self.counts if prev is None else self.counts[torch.as_tensor(prev).long()]
        return (c + self.k).log() - (c.sum(-1, keepdim=True, dtype=torch.float64) + self.k * self.V).log().float()

    def logits(self, prev: torch.Tensor) -> torch.Tensor:
        """Log-probabilities used as logits (softmax of them gives back the bigram probabilities)."""
        return self.log_probs(prev)

    def loss(self, tokens) -> float:
        """Mean −log P(t_{i+1} | t_i) over the stream, in nats."""
        t = self._stream(tokens)
        row = self.counts.sum(-1, dtype=torch.float64)               # c(a)
        lp = (self.counts[t[:-1], t[1:]].double() + self.k).log() - (row[t[:-1]] + self.k * self.V).log()
        return float(-lp.mean())


def temperature_view(logits: torch.Tensor, temperature: float, target: int | None = None, top: int = 8) -> dict:
    """The widget's logic: softmax(z / T) for one next-token distribution.

    Returns probs (V), top (list of (token id, p) for the ``top`` most likely), entropy (nats), and, when a
    true ``target`` is given, its probability, loss = −log p(target) and rank.
    """
    if logits.dim() != 1:
        raise ValueError(f"temperature_view takes one distribution's logits [V], got shape {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits.double() / temperature
    p = softmax(z)
    pv, ids = p.topk(min(top, p.numel()))
    out = dict(probs=p, top=list(zip(ids.tolist(), pv.tolist())), entropy=float(entropy(p)),
               perplexity=math.exp(float(entropy(p))))
    if target is not None:
        if not 0 <= target < p.numel():
            raise ValueError(f"target must be in [0, {p.numel()}), got {target}")
        out.update(target_p=float(p[target]), loss=float(-log_softmax(z)[target]), rank=int((p > p[target]).sum()) + 1)
    return out
