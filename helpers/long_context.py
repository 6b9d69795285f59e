"""Long-context measurements (chapter 04.4, DeepSeek-V3 §4.3): a model at more positions than it was trained on.

What ``scripts/extend_context.py`` records for every model, and what notebook 04.4 calls:

- :func:`rope_fields` / :func:`with_rope`: the same weights with a rotary table for L positions, plain RoPE
  (factor s = 1) or YaRN with scale s over the pre-training length T (``helpers.rope``; RoPE and YaRN have no weights);
- passkey retrieval: :func:`passkey_docs` (``helpers.tasks.passkey_document``), :func:`passkey_scores` (exact match of
  every key token, as ``helpers.pretraining.passkey_accuracy``, and the key's mean NLL
  −(1/|a|) Σ log p(a_i | …)), :func:`passkey_grid` over lengths × depths;
- loss by position: :func:`token_losses`, :func:`loss_profile` (the loss at L is the mean over the first L positions,
  the loss of an L-token window since the model is causal), :func:`long_windows`;
- :func:`evaluate_model` (all of the above for one model), :func:`probe` (the notebook widget's logic) and
  :func:`passkey_table` (a results file's passkey accuracies as text).
"""
from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F

from .batching import eval_batches
from .model import Transformer
from .pretraining import BLOCK_SIZE as T
from .runtime import progress
from .tasks import passkey_document

CHANCE = 1 / 90_000                       # a five-digit key, uniform over 10000 … 99999
LOSS_DOMAINS = ("shakespeare", "code", "arithmetic")


def rope_fields(max_seq_len: int, factor: float = 1.0, original_seq_len: int = T) -> dict:
    """ModelConfig overrides for running at ``max_seq_len`` positions: plain RoPE for ``factor = 1`` (YaRN off),
    YaRN with s = ``factor`` over the pre-training length ``original_seq_len`` otherwise."""
    if not (isinstance(max_seq_len, int) and not isinstance(max_seq_len, bool) and max_seq_len > 0):
        raise ValueError(f"max_seq_len must be a positive int, got {max_seq_len!r}; e.g. 1024")
    if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and math.isfinite(factor)
            and factor >= 1):
        raise ValueError(f"factor (YaRN's s) must be a finite number ≥ 1, got {factor!r}; 1 = plain RoPE, e.g. 4.0")
    if factor == 1:
        return {"max_seq_len": max_seq_len, "original_seq_len": 0, "rope_factor": 1.0}
    return {"max_seq_len": max_seq_len, "original_seq_len": original_seq_len, "rope_factor": float(factor)}


def with_rope(model: Transformer, max_seq_len: int, factor: float = 1.0) -> Transformer:
    """A copy of ``model``'s weights in a model whose rotary table (and YaRN softmax scale) is built for
    ``max_seq_len`` positions with factor s (1 = plain RoPE); eval mode. Nothing else changes: RoPE and YaRN
    have no weights."""
    cfg = model.cfg.replace(**rope_fields(max_seq_len, factor))
    out = Transformer(cfg)
    out.load_state_dict(model.state_dict(), strict=True)
    return out.to(next(model.parameters()).device).eval()



# ---- measurements ---------------------------------------------------------------------------------------

def passkey_docs(tok, n_tokens: int, n: int, seed: int = 0, depth: float | None = None) -> list:
    """The documents ``helpers.pretraining.passkey_accuracy`` scores for the same arguments (same rng order)."""
    rng = random.Random(seed)
    return [passkey_document(tok, n_tokens, rng, depth) for _ in range(n)]


@torch.no_grad()
def passkey_scores(model, docs, batch_size: int = 8) -> dict:
    """Per document: ``hit`` (every key token is the argmax: ``passkey_accuracy``'s exact match) and ``nll``
    (the key tokens' mean negative log-likelihood, nats). Returns lists and their means."""
    if not docs:
        raise ValueError("passkey_scores: no documents given")
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    hits, nlls = [], []
    try:
        for s in range(0, len(docs), batch_size):
            part = docs[s:s + batch_size]
            by_len: dict[int, list] = {}
            for p, a in part:                      # rows of one length go together (no padding)
                by_len.setdefault(len(p) + len(a) - 1, []).append((p, a))
            for group in by_len.values():
                x = torch.tensor([(p + a)[:-1] for p, a in group], device=dev)
                logp = model(x)["logits"].float().log_softmax(-1)
                for row, (p, a) in zip(logp, group):
                    pos = torch.arange(len(p) - 1, len(p) - 1 + len(a), device=dev)
                    ans = torch.tensor(a, device=dev)
                    hits.append(row[pos].argmax(-1).tolist() == a)
                    nlls.append(float(-row[pos, ans].mean()))
    finally:
        model.train(was)
    return {"hit": hits, "nll": nlls, "acc": sum(hits) / len(hits), "mean_nll": sum(nlls) / len(nlls)}


def passkey_grid(model, tok, lengths, depths, n_per_depth: int, seed: int = 0, batch_size: int = 8,
                 show_progress: bool = True) -> dict:
    """Passkey retrieval at each length × depth (``n_per_depth`` documents each, seed ``seed + k`` for the k-th
    depth): ``{L: {"acc", "mean_nll", "n", "by_depth": {depth: acc}}}`` (keys are strings, for JSON)."""
    out = {}
    cells = [(L, k, d) for L in lengths for k, d in enumerate(depths)]
    for L, k, d in progress(cells, desc="passkey", disable=None if show_progress else True):
        bs = max(1, batch_size * 256 // L)               # keep the attention scores of one batch small
        r = passkey_scores(model, passkey_docs(tok, L, n_per_depth, seed + k, d), bs)
        cell = out.setdefault(str(L), {"hits": 0, "nll_sum": 0.0, "n": 0, "by_depth": {}})
        cell["hits"] += sum(r["hit"])
        cell["nll_sum"] += sum(r["nll"])
        cell["n"] += len(r["hit"])
        cell["by_depth"][str(d)] = {"acc": r["acc"], "nll": r["mean_nll"]}
    return {L: {"acc": c["hits"] / c["n"], "mean_nll": c["nll_sum"] / c["n"], "n": c["n"], "by_depth": c["by_depth"]}
            for L, c in out.items()}


@torch.no_grad()
def token_losses(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Next-token loss (nats) at every position of every row: [B, L] (main head, eval mode)."""
    was = model.training
    model.eval()
    try:
        logits = model(x)["logits"].float()
    finally:
        model.train(was)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none")


def loss_profile(model, windows: list, bucket: int, lengths=()) -> dict:
    """Loss by position over ``windows`` (a list of (x, y) batches of one length): ``bucket_loss`` = mean loss
    in consecutive buckets of ``bucket`` positions; ``loss_at[L]`` = mean over positions 0 … L − 1 (the loss of
    L-token windows starting at the same tokens, the model being causal)."""
    per = torch.cat([token_losses(model, x, y) for x, y in windows])            # [n_windows, length]
    n = per.shape[1]
    if n % bucket:
        raise ValueError(f"loss_profile: the window length {n} must be a multiple of bucket = {bucket}")
    return {"bucket_loss": per.view(per.shape[0], -1, bucket).mean((0, 2)).tolist(),
            "loss_at": {str(L): float(per[:, :L].mean()) for L in lengths if L <= n}, "n_windows": per.shape[0]}


def long_windows(splits: dict, n_windows: int, length: int, domains=LOSS_DOMAINS, device=None) -> dict:
    """Fixed, evenly spaced validation windows of ``length`` tokens per domain (helpers.batching.eval_batches)."""
    return {d: eval_batches(splits, d, n_windows, 1, length, device=device) for d in domains}


def evaluate_model(model, tok, windows: dict, lengths, depths, n_per_depth: int, bucket: int,
                   passkey_lengths=None, show_progress: bool = True) -> dict:
    """Everything the results file records for one model: passkey grid and loss profiles."""
    t0 = time.perf_counter()
    pk_lengths = [L for L in (passkey_lengths or lengths) if L <= model.cfg.max_seq_len]
    out = {"passkey": passkey_grid(model, tok, pk_lengths, depths, n_per_depth, show_progress=show_progress),
           "loss": {d: loss_profile(model, w, bucket, lengths) for d, w in windows.items()}}
    out["eval_s"] = time.perf_counter() - t0
    return out


# ---- the widget's logic (pure: model in, numbers out) -----------------------------------------------------

def probe(model, docs, window: tuple | None = None, bucket: int = 128) -> dict:
    """What the notebook's slider shows for one model (one rotary table): passkey hits and key NLL on the fixed
    ``docs``, and the loss by position bucket on one fixed text ``window`` (x, y) when given."""
    r = passkey_scores(model, docs, batch_size=len(docs))
    out = {"acc": r["acc"], "hits": r["hit"], "key_nll": r["mean_nll"]}
    if window is not None:
        out["bucket_loss"] = loss_profile(model, [window], bucket)["bucket_loss"]
    return out


def passkey_table(result: dict) -> str:
    """The passkey accuracies of every model at every length, as a text table."""
    lengths = sorted({int(L) for m in result["models"].values() for L in m["passkey"]})
    head = f"{'model':<16}" + "".join(f"{L:>8}" for L in lengths)
    rows = [head, "-" * len(head)]
    for name, m in result["models"].items():
        rows.append(f"{name:<16}" + "".join(f"{m['passkey'][str(L)]['acc']:>8.2f}" if str(L) in m["passkey"]
                                            else f"{'-':>8}" for L in lengths))
    rows.append(f"(chance ≈ {result['chance']:.1e}; n = {next(iter(result['models'].values()))['passkey'][str(lengths[0])]['n']}"
                " documents per length)")
    return "\n".join(rows)
