"""The course's pre-training recipe (DeepSeek-V3 §4.1–4.2): the data mixture, the base checkpoint, and the
tests it is graded by.

The mixture (``PRETRAIN_WEIGHTS``: the share of training rows drawn from each domain):

- ``shakespeare``: the shipped train split.
- ``code``: the shipped code train documents, cut into chunks that fit a window (``helpers.fim.code_chunks``),
  with fill-in-the-middle applied to a fraction ``FIM_RATE`` = 0.1 of them in PSM order, as the report does.
- ``arithmetic``: the shipped train split plus ``N_FRESH_ARITHMETIC`` freshly generated problems with 1–4
  operations (none of them in the held-out test set or the shipped validation split): arithmetic is the skill
  chapter 06 post-trains, and a model cannot sharpen a skill its data never made available.
- ``passkey``: rows of synthetic passkey-retrieval documents (``helpers.tasks.passkey_document``) of random
  lengths, so that the base model can find a key anywhere in its window — the capability chapter 04.4
  stretches past the trained length.

Validation uses the shipped validation splits (code without FIM: left-to-right loss) and held-out passkey
rows. The graded tests: :func:`arithmetic_test_set` / :func:`arithmetic_accuracy` (greedy, exact match of the
final answer) and :func:`passkey_accuracy` (exact match of the key's tokens). Bits per byte, the
tokenizer-independent loss, is

    bpb = (loss in nats per token) / ln 2 × (tokens / bytes).

``scripts/pretrain.py`` trains the base model with exactly these pieces and writes
``data/checkpoints/base.pt`` (weights + config) and ``base.json`` (the training log); :func:`load_base` reads
them, checksum-verified.
"""
from __future__ import annotations

import json
import math
import random

import torch

from .arithmetic import Problem, check_answer, generate_problems, parse_problem
from .batching import eval_batches, load_splits, split_stats
from .config import ModelConfig
from .data import data_path, documents, split_documents
from .fim import code_chunks, fim_rate_stream
from .model import Transformer
from .runtime import get_device
from .tasks import passkey_document
from .tokenizer import load_tokenizer

__all__ = ["BLOCK_SIZE", "PRETRAIN_WEIGHTS", "FIM_RATE", "base_config", "pretraining_splits", "arithmetic_test_set",
           "arithmetic_accuracy", "passkey_rows", "passkey_accuracy", "bits_per_byte", "domain_losses", "load_base",
           "base_log", "BASE_PATH", "BASE_LOG"]

BLOCK_SIZE = 256                 # the trained context length T of the base model
PRETRAIN_WEIGHTS = {"shakespeare": 0.3, "code": 0.3, "arithmetic": 0.3, "passkey": 0.1}
FIM_RATE = 0.1                   # §4.1: FIM applied to 10% of the (code) documents, PSM order
N_FRESH_ARITHMETIC = 60_000
ARITH_TRAIN_SEED, ARITH_TEST_SEED = 4_100, 4_200
N_PASSKEY_ROWS = {"train": 3_000, "val": 64}
PASSKEY_SEEDS = {"train": 4_300, "val": 4_301}
BASE_PATH, BASE_LOG = "checkpoints/base.pt", "checkpoints/base.json"


def base_config(**overrides) -> ModelConfig:
    """The base model: the course model (``ModelConfig.cpu()``: MLA, DeepSeekMoE, MTP D = 1) at T = 256."""
    return ModelConfig.cpu(**{"max_seq_len": BLOCK_SIZE, **overrides})


def _shipped_questions() -> set[str]:
    return {parse_problem(d).question for d in documents("arithmetic")}


def arithmetic_test_set(n_per_ops: int = 100, ops=(1, 2, 3, 4)) -> list[Problem]:
    """The held-out arithmetic test: ``n_per_ops`` problems for each number of operations, seeded, none of
    them in the shipped corpus (and the pre-training problems exclude these)."""
    if not (isinstance(n_per_ops, int) and n_per_ops >= 1):
        raise ValueError(f"n_per_ops must be an int ≥ 1, got {n_per_ops!r}")
    seen, out = _shipped_questions(), []
    for k in ops:
        probs = generate_problems(n_per_ops, ARITH_TEST_SEED + k, min_ops=k, max_ops=k, exclude=seen)
        seen |= {p.question for p in probs}
        out += probs
    return out


def _fresh_arithmetic(tok, n: int) -> list[int]:
    exclude = {p.question for p in arithmetic_test_set()}
    exclude |= {parse_problem(d).question for d in split_documents("arithmetic")["val"]}
    probs = generate_problems(n, ARITH_TRAIN_SEED, min_ops=1, max_ops=4, exclude=exclude)
    ids = []
    for p in probs:
        ids += tok.encode(p.render() + "\n\n") + [tok.eot_id]
    return ids


def passkey_rows(tok, n_rows: int, block_size: int = BLOCK_SIZE, seed: int = 0) -> torch.Tensor:
    """``n_rows`` rows of ``block_size + 1`` tokens, each filled with passkey documents of random lengths
    (64 … block_size + 1 tokens, each followed by ``<|endoftext|>``; the last one cut at the row's end),
    flattened into one stream for an aligned :class:`~helpers.batching.MixtureSampler` domain."""
    rng, rows = random.Random(seed), []
    for _ in range(n_rows):
        row = []
        while len(row) < block_size + 1:
            prompt, answer = passkey_document(tok, rng.randint(64, block_size + 1), rng)
            row += prompt + answer + [tok.eot_id]
        rows.append(row[:block_size + 1])
    return torch.tensor(rows, dtype=torch.long).flatten()


def pretraining_splits(tok=None, block_size: int = BLOCK_SIZE, fim_rate: float = FIM_RATE,
                       n_fresh_arithmetic: int = N_FRESH_ARITHMETIC, seed: int = 0) -> dict:
    """``{domain: {"train", "val"}}`` token streams of the pre-training mixture (see the module docstring).
    Deterministic; about 10 s (tokenizing the FIM code chunks and the fresh arithmetic)."""
    tok = tok or load_tokenizer()
    shipped = load_splits()
    code_train = [c for d in split_documents("code")["train"] for c in code_chunks(d)]
    code_ids, _ = fim_rate_stream(tok, code_train, rate=fim_rate, seed=seed)
    arith = torch.cat([shipped["arithmetic"]["train"],
                       torch.tensor(_fresh_arithmetic(tok, n_fresh_arithmetic), dtype=torch.long)])
    return {
        "shakespeare": shipped["shakespeare"],
        "code": {"train": torch.tensor(code_ids, dtype=torch.long), "val": shipped["code"]["val"]},
        "arithmetic": {"train": arith, "val": shipped["arithmetic"]["val"]},
        "passkey": {s: passkey_rows(tok, N_PASSKEY_ROWS[s], block_size, PASSKEY_SEEDS[s]) for s in ("train", "val")},
    }


def bits_per_byte(nats_per_token: float, tokens: int, n_bytes: int) -> float:
    """Loss in bits per UTF-8 byte: nats/token ÷ ln 2 × tokens/bytes (comparable across tokenizers)."""
    if not (tokens > 0 and n_bytes > 0):
        raise ValueError(f"tokens and n_bytes must be > 0, got {tokens}, {n_bytes}")
    return nats_per_token / math.log(2) * tokens / n_bytes


def bytes_per_token(domain: str, split: str = "val") -> float:
    """Bytes per token of a shipped domain split (from the token cache's statistics)."""
    st = split_stats()[domain][split]
    return st["bytes"] / st["tokens"]


@torch.no_grad()
def domain_losses(model, splits: dict, n_batches: int = 4, batch_size: int = 16, block_size: int = BLOCK_SIZE,
                  split: str = "val") -> dict[str, float]:
    """Mean next-token loss (nats/token, the main head) of ``model`` on fixed evenly spaced windows of each
    domain's ``split`` (helpers.batching.eval_batches)."""
    from .train import evaluate            # train imports model; keep this module importable on its own
    dev = next(model.parameters()).device
    return {d: evaluate(model, eval_batches(splits, d, n_batches, batch_size, block_size, device=dev, split=split))
            for d in splits}


def _greedy_groups(model, prompts: list[list[int]], max_new_tokens: int, batch_size: int):
    """Greedy continuations of many prompts: equal-length prompts decode together (no padding needed)."""
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    out = [None] * len(prompts)
    dev = next(model.parameters()).device
    for n, idx in sorted(by_len.items()):
        for s in range(0, len(idx), batch_size):
            part = idx[s:s + batch_size]
            x = torch.tensor([prompts[i] for i in part], device=dev)
            y = model.generate(x, max_new_tokens, temperature=0.0)[:, n:].tolist()
            for i, row in zip(part, y):
                out[i] = row
    return out


def arithmetic_accuracy(model, tok=None, problems: list[Problem] | None = None, max_new_tokens: int = 64,
                        batch_size: int = 64) -> dict:
    """Greedy exact-match accuracy on ``problems`` (default :func:`arithmetic_test_set`): the model continues
    ``"Q: …\\nA:"``; correct when the integer after the first ``####`` equals the answer.

    Returns ``{"all": acc, "by_ops": {k: acc}, "n": count, "completions": [...]}``.
    """
    tok = tok or load_tokenizer()
    problems = arithmetic_test_set() if problems is None else problems
    if not problems:
        raise ValueError("arithmetic_accuracy: no problems given")
    prompts = [tok.encode(p.prompt()) for p in problems]
    room = model.cfg.max_seq_len - max(len(p) for p in prompts)
    gens = _greedy_groups(model, prompts, min(max_new_tokens, room), batch_size)
    texts = []
    for g in gens:
        g = g[:g.index(tok.eot_id)] if tok.eot_id in g else g
        texts.append(tok.decode(g).split("\n\n")[0])
    ok = [check_answer(p, t) for p, t in zip(problems, texts)]
    by_ops: dict[int, list[bool]] = {}
    for p, c in zip(problems, ok):
        by_ops.setdefault(len(p.steps), []).append(c)
    return {"all": sum(ok) / len(ok), "n": len(ok),
            "by_ops": {k: sum(v) / len(v) for k, v in sorted(by_ops.items())}, "completions": texts}


@torch.no_grad()
def passkey_accuracy(model, tok=None, n_tokens: int = BLOCK_SIZE, n: int = 40, seed: int = 0,
                     depth: float | None = None, batch_size: int = 8) -> float:
    """Share of ``n`` passkey documents of ``n_tokens`` tokens whose key the model reproduces exactly
    (greedy: every answer token is the argmax given the prompt and the answer's earlier tokens)."""
    tok = tok or load_tokenizer()
    if n_tokens > model.cfg.max_seq_len:
        raise ValueError(f"passkey_accuracy: n_tokens = {n_tokens} exceeds the model's max_seq_len = "
                         f"{model.cfg.max_seq_len}; build it with max_seq_len ≥ {n_tokens} (e.g. "
                         "load_base(max_seq_len=...))")
    rng = random.Random(seed)
    docs = [passkey_document(tok, n_tokens, rng, depth) for _ in range(n)]
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    hits = 0
    try:
        for s in range(0, n, batch_size):
            part = docs[s:s + batch_size]
            x = torch.tensor([(p + a)[:-1] for p, a in part], device=dev)
            pred = model(x)["logits"].argmax(-1)
            for row, (p, a) in zip(pred, part):
                hits += row[len(p) - 1:].tolist() == a
    finally:
        model.train(was)
    return hits / n


def load_base(device=None, **overrides):
    """The shipped base model in eval mode (checksum-verified), e.g. ``load_base(max_seq_len=1024)`` to run it
    on longer inputs (positions and YaRN fields may differ from training; everything else must match)."""
    from .train import checkpoint_config, load_checkpoint
    path = data_path(BASE_PATH)
    cfg = ModelConfig(**{**checkpoint_config(path), **overrides})
    model = Transformer(cfg)
    load_checkpoint(path, model)
    return model.to(device or get_device()).eval()


def base_log() -> dict:
    """The base run's log (``data/checkpoints/base.json``): command, config, curves, final evaluations."""
    return json.loads(data_path(BASE_LOG).read_text())
