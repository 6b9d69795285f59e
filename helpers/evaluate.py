"""Evaluation: per-item scores, bootstrap confidence intervals, paired comparisons (chapter 07).

A benchmark score is a mean over items, s = (1/n) Σ_i x_i. Its uncertainty comes from *which* items the test happened
to draw. The percentile bootstrap estimates it from the test itself: draw n items with replacement B times,
recompute the mean each time, and read the interval between the (1 − level)/2 and (1 + level)/2 quantiles of the B
means. For a 0/1 score the interval's half-width is close to z·sqrt(s(1 − s)/n) (z = 1.645 at 90%).

Two models scored on the *same* items are compared item by item. The paired bootstrap resamples items and recomputes
d = mean(a) − mean(b) on each resample, so item difficulty, shared by both models, cancels. A difference is called
real at that level when its interval excludes 0. Comparing two separate intervals instead is more conservative:
overlapping intervals can still hide a real paired difference.

Scores carry their decoding settings (:func:`arithmetic_items`): a greedy score and a sampled one measure different
things, and a report card prints which one it shows.
"""
from __future__ import annotations

import torch

from .arithmetic import check_answer
from .posttraining import chat_generate
from .pretraining import arithmetic_accuracy

__all__ = ["bootstrap_ci", "paired_bootstrap", "arithmetic_items"]


def _as_tensor(values, name: str) -> torch.Tensor:
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError(f"{name}: needs at least one item score")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: item scores must be finite numbers")
    return x


def _check(level: float, n_boot: int, where: str) -> None:
    if not 0 < level < 1:
        raise ValueError(f"{where}: level must be in (0, 1), e.g. 0.9 for a 90% interval, got {level}")
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"{where}: n_boot must be an int ≥ 100 resamples, got {n_boot!r}")


def _resampled_means(x: torch.Tensor, n_boot: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (n_boot, len(x)), generator=g)
    return x[idx].mean(1)


def bootstrap_ci(values, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the item scores and its percentile-bootstrap interval at ``level``."""
    _check(level, n_boot, "bootstrap_ci")
    x = _as_tensor(values, "bootstrap_ci")
    means = _resampled_means(x, n_boot, seed)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    return float(x.mean()), lo, hi


def paired_bootstrap(a, b, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(a) − mean(b) over the same items, with its paired-bootstrap interval at ``level``.

    Returns ``{"diff", "low", "high", "real"}``; ``real`` is True when the interval excludes 0.
    """
    _check(level, n_boot, "paired_bootstrap")
    x, y = _as_tensor(a, "paired_bootstrap"), _as_tensor(b, "paired_bootstrap")
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap: both models must be scored on the same items, got {len(x)} and {len(y)} "
                         "scores")
    diff, lo, hi = bootstrap_ci(x - y, level, n_boot, seed)
    return {"diff": diff, "low": lo, "high": hi, "real": bool(lo > 0 or hi < 0)}


def arithmetic_items(model, tok, problems, *, chat: bool = True, temperature: float = 0.0, samples: int = 1,
                     generator: torch.Generator | None = None) -> dict:
    """Per-problem scores on arithmetic ``problems``, with the decoding settings that produced them.

    ``chat=True``: through the chat template (``helpers.posttraining.chat_generate``), ``samples`` replies per problem
    at ``temperature`` (0: greedy), each problem's score the share of its replies the verifier accepts.
    ``chat=False``: a base model's own ``Q:/A:`` format, greedy only (``helpers.pretraining.arithmetic_accuracy``).
    Returns ``{"scores": [...], "settings": {...}, "replies": [[...], ...]}``.
    """
    if not problems:
        raise ValueError("arithmetic_items: no problems given")
    if not chat:
        if temperature != 0 or samples != 1:
            raise ValueError("arithmetic_items: the base model's Q:/A: format is scored greedily only; pass "
                             "temperature=0 and samples=1, or chat=True for a chat model")
        res = arithmetic_accuracy(model, tok, problems)
        scores = [float(check_answer(p, t)) for p, t in zip(problems, res["completions"])]
        return {"scores": scores, "settings": {"format": "Q:/A:", "decoding": "greedy", "samples": 1},
                "replies": [[t] for t in res["completions"]]}
    if temperature < 0:
        raise ValueError(f"arithmetic_items: temperature must be ≥ 0 (0 is greedy), got {temperature}")
    if temperature == 0 and samples != 1:
        raise ValueError("arithmetic_items: greedy decoding gives one reply per problem; pass samples=1 or a "
                         "temperature > 0")
    replies = chat_generate(model, tok, problems, temperature=temperature, samples=samples, generator=generator)
    scores = [sum(check_answer(p, r) for r in rs) / len(rs) for p, rs in zip(problems, replies)]
    decoding = "greedy" if temperature == 0 else f"sampled at T = {temperature:g}"
    return {"scores": scores, "settings": {"format": "chat", "decoding": decoding, "samples": samples},
            "replies": replies}
