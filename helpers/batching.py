"""From token streams to training batches: splits, random windows, packing, a domain mixture.

A language model learns next-token prediction on windows of ``T + 1`` consecutive tokens: the input
is ``x = w[:-1]`` and the target ``y = w[1:]``, so ``y[i]`` is the token after ``x[i]`` (every
position of every row is a training example; T of them per row).

The three domains are tokenized once by ``scripts/build_data.py tokens`` into ``data/tokens.npz``
(uint16; each document followed by ``<|endoftext|>``), split by whole documents into train and
validation (about 10% of each domain). :func:`load_splits` reads it in a fraction of a second.

Pre-training mixes domains (DeepSeek-V3 §4.1 re-weights its corpus towards maths and code):
:class:`MixtureSampler` draws each row's domain with probability proportional to its weight, then a
random window inside that domain, from its own ``torch.Generator`` — so the batches depend on the
seed only, not on how many random numbers model initialisation consumed.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from helpers.data import DOMAINS, DataFileError, data_path, read_checksums

__all__ = ["load_splits", "split_stats", "random_windows", "pack_documents", "MixtureSampler", "eval_batches", "SPLITS",
           "DEFAULT_WEIGHTS"]

SPLITS = ("train", "val")
# The course's default mixture: about each domain's share of the training tokens (Shakespeare and
# code ~40% each, arithmetic ~20%; see data/README.md), so no domain is repeated much more than another.
DEFAULT_WEIGHTS = {"shakespeare": 0.4, "code": 0.4, "arithmetic": 0.2}
_REBUILD = "rebuild it with `python scripts/build_data.py tokens`"
_cache: dict = {}


def load_splits() -> dict[str, dict[str, torch.Tensor]]:
    """``{domain: {"train": 1-D int64 tensor, "val": ...}}`` from the shipped token cache.

    The file is checksum-verified, and it must have been built with the shipped tokenizer (its
    recorded tokenizer checksum is compared); otherwise :class:`~helpers.data.DataFileError`.
    Each call returns fresh tensors (changing them does not change the next call's).
    """
    arrays, _ = _load_cache()
    return {d: {s: torch.from_numpy(arrays[f"{d}/{s}"].astype(np.int64)) for s in SPLITS} for d in DOMAINS}


def split_stats() -> dict[str, dict[str, dict[str, int]]]:
    """``{domain: {split: {"tokens", "bytes", "documents"}}}`` of the token cache.

    ``tokens`` counts the ``<|endoftext|>`` after each document; ``bytes`` is the UTF-8 size of the
    documents. Bits per byte, the tokenizer-independent loss (chapters 4 and 7), is
    ``mean loss in nats per token / ln 2 · tokens / bytes``.
    """
    _, meta = _load_cache()
    return {d: {s: dict(meta["stats"][f"{d}/{s}"]) for s in SPLITS} for d in DOMAINS}


def _load_cache():
    path = data_path("tokens.npz")
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(arrays.pop("meta").tobytes())
        except (OSError, ValueError, KeyError) as e:
            raise DataFileError(f"{path} cannot be read ({e}): {_REBUILD}") from None
        want = read_checksums(path.parent).get("tokenizer.json")
        if meta.get("tokenizer_sha256") != want:
            raise DataFileError(f"{path} was built with a different tokenizer than data/tokenizer.json: {_REBUILD}")
        missing = [f"{d}/{s}" for d in DOMAINS for s in SPLITS if f"{d}/{s}" not in arrays or f"{d}/{s}" not in meta.get("stats", {})]
        if missing:
            raise DataFileError(f"{path} lacks {missing}: {_REBUILD}")
        _cache.clear()
        _cache[key] = (arrays, meta)
    return _cache[key]


def _check_sizes(batch_size: int, block_size: int) -> None:
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}; e.g. batch_size=16")
    if not (isinstance(block_size, int) and not isinstance(block_size, bool) and block_size >= 1):
        raise ValueError(f"block_size must be a positive int (tokens per row), got {block_size!r}; e.g. block_size=128")


def _check_tokens(tokens: torch.Tensor, block_size: int, what: str = "token stream") -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
        raise ValueError(f"{what} must be a 1-D tensor of token ids; build it with torch.tensor(ids)")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(f"{what} must hold integer token ids, got dtype {tokens.dtype}; "
                         "convert with .long() if they are whole numbers")
    if len(tokens) < block_size + 1:
        raise ValueError(f"{what} has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}: "
                         f"use a block_size below {len(tokens)}")


def _windows(tokens: torch.Tensor, starts: torch.Tensor, block_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = tokens[starts[:, None] + torch.arange(block_size + 1)]   # [B, T+1]
    x, y = rows[:, :-1], rows[:, 1:]
    if device is not None and torch.device(device).type != "cpu":
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.contiguous(), y.contiguous()


def random_windows(tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows at uniform random starts: ``x`` [B, T] and ``y`` [B, T] with ``y[:, i] = x[:, i+1]``
    (and ``y[:, -1]`` the token after the window)."""
    _check_sizes(batch_size, block_size)
    _check_tokens(tokens, block_size)
    starts = torch.randint(0, len(tokens) - block_size, (batch_size,), generator=generator)
    return _windows(tokens.long(), starts, block_size, device)


def pack_documents(docs, block_size: int, eot_id: int) -> torch.Tensor:
    """Concatenate documents, each followed by ``eot_id``, and cut into rows of ``block_size + 1``.

    Returns int64 [n_rows, block_size + 1] (``x = rows[:, :-1]``, ``y = rows[:, 1:]``); the tail
    shorter than a row is dropped. Documents run across row boundaries: no padding, no waste, and
    the ``<|endoftext|>`` token tells the model where one document ends and the next begins.
    """
    _check_sizes(1, block_size)
    if not (isinstance(eot_id, int) and not isinstance(eot_id, bool) and eot_id >= 0):
        raise ValueError(f"pack_documents: eot_id must be an int token id ≥ 0, got {eot_id!r}; use tokenizer.eot_id")
    parts = []
    for i, d in enumerate(docs):
        t = torch.as_tensor(d).reshape(-1)
        if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
            raise ValueError(f"pack_documents: document {i} holds {t.dtype} values, not token ids; "
                             "pass the integer ids from tokenizer.encode")
        parts += [t.long(), torch.tensor([eot_id])]
    if not parts:
        raise ValueError("pack_documents got no documents")
    flat = torch.cat(parts)
    n_rows = len(flat) // (block_size + 1)
    if n_rows == 0:
        raise ValueError(f"the documents hold {len(flat)} tokens (with separators), fewer than one row of "
                         f"block_size + 1 = {block_size + 1}: use a smaller block_size or more documents")
    return flat[: n_rows * (block_size + 1)].view(n_rows, block_size + 1)


class MixtureSampler:
    """Batches whose rows come from several domains in proportions set by ``weights``.

    ``sampler(split)`` draws, for each of the ``batch_size`` rows, a domain ``d`` with probability
    ``w_d / Σ w`` and then a uniformly random window of that domain's ``split``. Train and val draws
    use separate generators (seeded ``seed`` and ``seed + 1``), so evaluating does not change which
    training batches come next. ``last_domains`` holds the domain of each row of the last batch.
    ``aligned`` names domains whose streams are whole rows of ``block_size + 1`` tokens laid back to back
    (e.g. synthetic documents built to fit a window): their windows start only at row boundaries.
    """

    def __init__(self, splits: dict, weights: dict, batch_size: int, block_size: int, seed: int = 1234, device=None,
                 aligned: tuple = ()):
        _check_sizes(batch_size, block_size)
        if isinstance(aligned, str) or any(d not in weights for d in aligned):
            raise ValueError(f"aligned must be a tuple of domains named in weights, got {aligned!r}")
        if not (isinstance(seed, int) and not isinstance(seed, bool)):
            raise ValueError(f"MixtureSampler: seed must be an int, got {seed!r}; e.g. seed=1234")
        if not isinstance(weights, dict) or not weights:
            raise ValueError(f"weights must be a non-empty dict {{domain: weight}}, got {weights!r}")
        unknown = [d for d in weights if d not in splits]
        if unknown:
            raise ValueError(f"unknown domain(s) {unknown} in weights; the splits have {list(splits)}")
        if any(not np.isfinite(w) or w < 0 for w in weights.values()):
            raise ValueError(f"weights must be finite and >= 0, got {weights}")
        if sum(weights.values()) <= 0:
            raise ValueError(f"weights must sum to more than 0, got {weights}")
        self.domains = [d for d in weights if weights[d] > 0]
        total = float(sum(weights.values()))
        self.weights = {d: weights[d] / total for d in self.domains}
        for d in self.domains:
            for s, t in splits[d].items():
                _check_tokens(t, block_size, f"split {d}/{s}")
        self.splits = {d: {s: t.long() for s, t in splits[d].items()} for d in self.domains}
        self.batch_size, self.block_size, self.seed, self.device = batch_size, block_size, seed, device
        self._probs = torch.tensor([self.weights[d] for d in self.domains], dtype=torch.float64)
        self._gens = {s: torch.Generator().manual_seed(seed + k) for k, s in enumerate(SPLITS)}
        self.aligned = tuple(aligned)
        for d in self.aligned:
            for sp, t in self.splits[d].items():
                if len(t) % (block_size + 1):
                    raise ValueError(f"aligned domain {d!r}/{sp} holds {len(t)} tokens, not a whole number of rows "
                                     f"of block_size + 1 = {block_size + 1}; build it as such rows")
        self.last_domains: list[str] = []

    def __call__(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._gens:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        g, B, T = self._gens[split], self.batch_size, self.block_size
        which = torch.multinomial(self._probs, B, replacement=True, generator=g)
        rows = torch.empty(B, T + 1, dtype=torch.long)
        for k, d in enumerate(self.domains):
            idx = (which == k).nonzero().flatten()
            if len(idx):
                tokens = self.splits[d][split]
                if d in self.aligned:       # rows laid out back to back: draw a whole row
                    starts = torch.randint(0, len(tokens) // (T + 1), (len(idx),), generator=g) * (T + 1)
                else:
                    starts = torch.randint(0, len(tokens) - T, (len(idx),), generator=g)
                rows[idx] = tokens[starts[:, None] + torch.arange(T + 1)]
        self.last_domains = [self.domains[k] for k in which.tolist()]
        x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
        if self.device is not None and torch.device(self.device).type != "cpu":
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    def state_dict(self) -> dict:
        """Generator states, to resume the exact batch sequence after a checkpoint."""
        return {s: g.get_state() for s, g in self._gens.items()}

    def load_state_dict(self, state: dict) -> None:
        if not (isinstance(state, dict) and all(s in state for s in self._gens)):
            raise ValueError(f"MixtureSampler.load_state_dict: state must be the dict from state_dict(), with keys "
                             f"{list(self._gens)}; got {type(state).__name__}"
                             + (f" with keys {list(state)}" if isinstance(state, dict) else ""))
        for s, g in self._gens.items():
            g.set_state(state[s])

    def __repr__(self) -> str:
        w = ", ".join(f"{d}={p:.3f}" for d, p in self.weights.items())
        return f"MixtureSampler({w}; batch_size={self.batch_size}, block_size={self.block_size}, seed={self.seed})"


def eval_batches(splits: dict, domain: str, n_batches: int, batch_size: int, block_size: int, device=None,
                 split: str = "val") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed list of ``n_batches`` (x, y) batches from one domain's validation split.

    The ``n_batches · batch_size`` windows start at evenly spaced positions across the split (no
    randomness: every call, every model, every machine sees the same tokens), so validation losses
    are comparable between runs. Windows do not overlap unless the split is too short for that.
    """
    _check_sizes(batch_size, block_size)
    if not (isinstance(n_batches, int) and n_batches >= 1):
        raise ValueError(f"n_batches must be a positive int, got {n_batches!r}")
    if domain not in splits:
        raise ValueError(f"unknown domain {domain!r}; the splits have {list(splits)}")
    if split not in splits[domain]:
        raise ValueError(f"unknown split {split!r}; domain {domain!r} has {list(splits[domain])}")
    tokens = splits[domain][split].long()
    _check_tokens(tokens, block_size, f"split {domain}/{split}")
    n = n_batches * batch_size
    starts = torch.linspace(0, len(tokens) - block_size - 1, n, dtype=torch.float64).round().long()
    return [_windows(tokens, starts[i * batch_size:(i + 1) * batch_size], block_size, device) for i in range(n_batches)]
