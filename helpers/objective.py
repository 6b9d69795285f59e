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

__all__ = ["bigram_window_losses", "logsumexp", "log_softmax", "softmax", "cross_entropy", "naive_softmax", "naive_cross_entropy",
           "linear_cross_entropy", "perplexity", "entropy", "BigramModel", "temperature_view"]


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
        raise ValueError(f"targets must be integer token ids, got {targets.dtype}; convert with targets.long()")


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean over positions of logsumexp(z) − z_y (positions whose target is ``ignore_index`` are skipped)."""
    _check(logits, targets)
    keep = targets != ignore_index
    z, y = logits[keep], targets[keep].long()
    if y.numel() == 0:
        raise ValueError(f"cross_entropy: no target to average over (every target is ignore_index = {ignore_index}, "
                         "or targets is empty); keep at least one real token id in targets")
    if y.min() < 0 or y.max() >= logits.shape[-1]:
        raise ValueError(f"targets must be in [0, {logits.shape[-1]}) (or {ignore_index} to ignore); check that logits "
                         "and targets come from the same vocabulary")
    return -log_softmax(z).gather(-1, y[:, None]).squeeze(-1).mean()


def naive_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−log(naive_softmax(z)_y), as written: inf or nan for large logits."""
    _check(logits, targets)
    return -naive_softmax(logits).gather(-1, targets.long()[..., None]).squeeze(-1).log().mean()


class _LinearCrossEntropy(torch.autograd.Function):
    """Output head + cross-entropy over row chunks, the gradients computed on the way (see linear_cross_entropy)."""

    @staticmethod
    def forward(ctx, x, weight, targets, chunk, return_logits, grad_enabled):
        n, v = x.shape[0], weight.shape[0]
        # needs_input_grad is True under torch.no_grad() too (it only sees requires_grad): ask the caller's mode
        want_grad = grad_enabled and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        count = (targets != -1).sum()
        logits = gx = gw = None
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for s in range(0, n, chunk):
            xc, yc = x[s:s + chunk], targets[s:s + chunk]
            z = xc @ weight.t()                                          # logits of this chunk
            if return_logits:
                logits = z.new_empty(n, v) if logits is None else logits
                logits[s:s + chunk] = z
            logp = torch.log_softmax(z.float(), dim=-1)
            keep = yc != -1
            rows = torch.arange(len(yc), device=x.device)[keep]
            total -= logp[rows, yc[keep]].sum()                          # Σ −log p_y
            if want_grad:
                dz = logp.exp_()                                          # ∂L/∂z = (softmax(z) − onehot(y)) / count
                dz[rows, yc[keep]] -= 1
                if len(rows) < len(yc):
                    dz[~keep] = 0                                         # ignored positions: no gradient
                dz = dz.div_(count).to(z.dtype)
                gx = torch.empty_like(x) if gx is None else gx
                gx[s:s + chunk] = dz @ weight
                if gw is None:                                            # ∂L/∂W accumulates in fp32: under
                    gw = (dz.t() @ xc).float()                            # bf16 autocast the product is bf16
                elif dz.dtype == xc.dtype == gw.dtype:
                    gw.addmm_(dz.t(), xc)
                else:
                    gw += (dz.t() @ xc).float()
        ctx.save_for_backward(x, weight, gx, gw)
        ctx.set_materialize_grads(False)
        return total / count, logits

    @staticmethod
    def backward(ctx, g_loss, g_logits):
        x, weight, gx, gw = ctx.saved_tensors
        dx = dw = None
        if g_loss is not None:
            dx, dw = gx * g_loss, (gw * g_loss).to(weight.dtype)
        if g_logits is not None:                       # someone also differentiated the returned logits
            g_logits = g_logits.to(weight.dtype)
            dx = g_logits @ weight if dx is None else dx + g_logits @ weight
            dw = g_logits.t() @ x if dw is None else dw + g_logits.t() @ x
        return dx, dw, None, None, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 256,
                         return_logits: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean cross-entropy, logits) of the output head z = x Wᵀ, computed ``chunk`` rows at a time.

    The same numbers as ``F.cross_entropy(x @ W.T, targets, ignore_index=-1)``, faster on a CPU: while the
    forward pass holds each chunk's logits it also forms their gradient ∂L/∂z = (softmax(z) − onehot(y)) / n
    and from it ∂L/∂x = (∂L/∂z) W and ∂L/∂W = (∂L/∂z)ᵀ x, so the backward pass only scales those by the
    incoming gradient. No [n, V] softmax or gradient buffer is ever allocated (one chunk's stays in cache).
    x [n, d], weight [V, d], targets [n] (−1 = ignored). The logits [n, V] are returned as well (values and
    gradients both correct if used); with ``return_logits=False`` they are not kept (None).
    """
    if x.dim() != 2 or targets.shape != x.shape[:1]:
        raise ValueError(f"linear_cross_entropy: x must be [n, d] and targets [n], got {tuple(x.shape)}, "
                         f"{tuple(targets.shape)}")
    return _LinearCrossEntropy.apply(x, weight, targets, chunk, return_logits, torch.is_grad_enabled())


def perplexity(loss) -> float:
    """exp(loss) for a mean loss in nats (inf once the loss passes ~709, where exp overflows a float)."""
    loss = float(loss)
    if math.isnan(loss):
        raise ValueError("perplexity: the loss is NaN (training diverged or no target was counted); "
                         "check the loss before converting it")
    return math.exp(loss) if loss < 709 else math.inf


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """−Σ p log p in nats (0·log 0 = 0)."""
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim)


class BigramModel:
    """Count-based next-token model: P(b | a) = (c(a, b) + k) / (c(a) + k·V), fitted by counting pairs.

    ``fit(tokens)`` counts consecutive pairs of a 1-D token stream (float32 counts, V×V: exact below 2^24). Evaluation is the
    mean −log P(t_{i+1} | t_i) over a stream: the same quantity as a neural model's cross-entropy.
    """

    def __init__(self, vocab_size: int, k: float = 0.1):
        if not (isinstance(vocab_size, int) and not isinstance(vocab_size, bool) and vocab_size >= 1):
            raise ValueError(f"BigramModel: vocab_size must be an int ≥ 1, got {vocab_size!r}; use the tokenizer's vocab_size")
        if not (isinstance(k, (int, float)) and 0 < k < math.inf):
            raise ValueError(f"BigramModel: add-k smoothing needs a finite k > 0 (k = 0 gives log 0 for unseen pairs), "
                             f"got {k!r}; e.g. k=0.1")
        self.V, self.k = vocab_size, float(k)
        self.counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float32)   # exact up to 2^24 per pair

    def _stream(self, tokens) -> torch.Tensor:
        t = torch.as_tensor(tokens)
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"BigramModel: tokens must be integer ids, got dtype {t.dtype}; convert with .long() "
                             "only if they are whole numbers")
        t = t.long().flatten()
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
        if prev is not None:
            prev = torch.as_tensor(prev)
            if prev.dtype.is_floating_point or (prev.numel() and (prev.min() < 0 or prev.max() >= self.V)):
                raise ValueError(f"BigramModel: prev must be integer token ids in [0, {self.V}), got dtype {prev.dtype}"
                                 + (f" and values in [{prev.min().item()}, {prev.max().item()}]" if prev.numel() else ""))
        c = self.counts if prev is None else self.counts[prev.long()]
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
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; T → 0 approaches greedy, "
                         "so use a small value such as 0.05 for nearly greedy")
    if not (isinstance(top, int) and not isinstance(top, bool) and top >= 1):
        raise ValueError(f"temperature_view: top must be an int ≥ 1 (how many tokens to list), got {top!r}")
    z = logits.double() / temperature
    p = softmax(z)
    pv, ids = p.topk(min(top, p.numel()))
    out = dict(probs=p, top=list(zip(ids.tolist(), pv.tolist())), entropy=float(entropy(p)),
               perplexity=math.exp(float(entropy(p))))
    if target is not None:
        if not (isinstance(target, int) and not isinstance(target, bool) and 0 <= target < p.numel()):
            raise ValueError(f"target must be an int token id in [0, {p.numel()}), got {target!r}")
        out.update(target_p=float(p[target]), loss=float(-log_softmax(z)[target]), rank=int((p > p[target]).sum()) + 1)
    return out


def bigram_window_losses(splits: dict, windows: dict, vocab_size: int, domains) -> dict:
    """The count-based bigram baseline on exactly a run's validation windows: one add-0.1 BigramModel fitted on each
    domain's training stream in turn (no pair across domains), scored on ``windows[d]`` (a list of (x, y)) per
    domain. Returns {"val_loss" (mean over domains, like a run's val_loss), "val_losses" (per domain)}."""
    bigram = BigramModel(vocab_size)
    for d in domains:
        bigram.fit(splits[d]["train"])
    lp = bigram.log_probs()
    per = {d: float(torch.cat([-lp[x.flatten(), y.flatten()] for x, y in windows[d]]).double().mean()) for d in domains}
    return {"val_loss": sum(per.values()) / len(per), "val_losses": per}
