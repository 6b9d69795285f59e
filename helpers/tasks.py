"""Small synthetic tasks that put one mechanism on the critical path (COURSE.md, "How a measurement shows its effect").

The real corpora are too easy or too short, at CPU scale, to need a large KV rank or positions past the trained
length: a bigram already explains much of them. Each task here can only be solved by the mechanism under test,
so a model that solves it has measurably used that mechanism, and one that fails measurably has not.

Every task returns ``(x, y)`` int64 tensors [n, T] for :func:`helpers.train.train`: ``y`` holds the target
token where the task grades a prediction and ``IGNORE = -1`` everywhere else, so the loss and the accuracy
count only the positions that need the mechanism. Tokens are drawn from a small task vocabulary (size
:func:`vocab_size`), seeded by a ``torch.Generator``.

- :func:`associative_recall` (multi-query associative recall, MQAR): ``k_1 v_1 … k_P v_P  q_1 a_1 … q_Q a_Q``;
  each query q is one of the keys and its answer a the value stored with it. The model must keep every pair in its
  attention state (the KV cache) until the queries come: the rank d_c of MLA's latent, or the number of KV heads,
  is what limits how many pairs survive.
- :func:`pair_recall`: associative recall with each pair in one token: ``(k_1,v_1) … (k_P,v_P)  q_1 … q_P``; the
  answer to query q is the value stored with key q. One attention layer solves it (no induction step is needed),
  so a one-block model learns it in a few hundred steps; every position's cache entry must carry its key (to be
  found) and its value (to be read): the cleanest probe of how much a rank-d_c latent (or n_g KV heads) can hold.
- :func:`copy_task`: ``s_1 … s_L  SEP  s_1 … s_L``; predict the second copy. Solved by an induction head that
  attends to "the token after the previous occurrence of my predecessor" at offset L + 1: a test of what RoPE
  does at offsets (and absolute positions) never seen in training.
- :func:`induction_copy`: a copy of *distinct* symbols, L varying per row: only an induction head (find the
  current symbol's earlier occurrence, read its successor) solves every row. Trained at L ≤ L_train and graded
  past it, it shows what a model's RoPE attention does at offsets it never saw (chapter 02.2).
- :func:`passkey_document` (passkey retrieval, Mohtashami & Jaggi 2023): a five-digit key hidden at a random depth
  in repetitive filler text, asked for at the end. In real text with the course tokenizer, so the base model can
  learn it during pre-training (a small share of the mixture) and be tested at and past its trained length
  (chapter 04.4): solved only if attention can still find the key across the whole window.
"""
from __future__ import annotations

import random

import torch

__all__ = ["IGNORE", "SEP", "vocab_size", "associative_recall", "pair_recall", "pair_recall_vocab", "copy_task", "induction_copy",
           "task_batches", "masked_accuracy", "train_on_task",
           "PASSKEY_FILLER", "passkey_document", "composed_experts_task", "composed_experts_batch"]

IGNORE = -1
SEP = 0              # separator token; content tokens are 1 … n_symbols


def vocab_size(n_symbols: int) -> int:
    """Task vocabulary: the separator plus ``n_symbols`` content tokens."""
    return n_symbols + 1


def _check_count(name: str, v, low: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int ≥ {low}, got {v!r}")


def associative_recall(n: int, n_pairs: int, n_queries: int, n_keys: int = 32, n_values: int = 32,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MQAR sequences: n_pairs distinct keys with random values, then n_queries queries among those keys.

    Keys use tokens 1 … n_keys, values n_keys+1 … n_keys+n_values (so vocab_size(n_keys + n_values)).
    Length T = 2·(n_pairs + n_queries). Graded positions: each query token, whose target is its value
    (the next token of x); chance accuracy is 1 / n_values.
    """
    for name, v in (("n", n), ("n_pairs", n_pairs), ("n_queries", n_queries), ("n_keys", n_keys), ("n_values", n_values)):
        _check_count(name, v)
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs = {n_pairs} distinct keys need n_keys ≥ {n_pairs}, got n_keys = {n_keys}")
    if n_queries > n_pairs:
        raise ValueError(f"n_queries = {n_queries} must be ≤ n_pairs = {n_pairs} (each query asks a different stored key)")
    g = generator or torch.Generator().manual_seed(0)
    keys = torch.rand(n, n_keys, generator=g).argsort(dim=1)[:, :n_pairs] + 1          # distinct keys per row
    values = torch.randint(n_keys + 1, n_keys + n_values + 1, (n, n_pairs), generator=g)
    ask = torch.rand(n, n_pairs, generator=g).argsort(dim=1)[:, :n_queries]            # which pairs are queried
    q, a = keys.gather(1, ask), values.gather(1, ask)
    x = torch.cat([torch.stack([keys, values], 2).flatten(1), torch.stack([q, a], 2).flatten(1)], dim=1)
    y = torch.full_like(x, IGNORE)
    start = 2 * n_pairs
    y[:, start::2] = a                                   # at query position, predict its value
    return x, y


def pair_recall_vocab(n_keys: int, n_values: int) -> int:
    """Vocabulary of :func:`pair_recall`: SEP, the n_keys·n_values pair tokens, the n_keys query tokens, the n_values answers."""
    return 1 + n_keys * n_values + n_keys + n_values


def pair_recall(n: int, n_pairs: int, n_keys: int = 32, n_values: int = 32,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative recall with a pair per token: ``(k_1,v_1) … (k_P,v_P)  q_1 … q_P``, T = 2P.

    Token ids (vocabulary :func:`pair_recall_vocab`): the pair (k, v) is ``1 + k·n_values + v``; the query for
    key k is ``1 + n_keys·n_values + k``; the answer v is ``1 + n_keys·n_values + n_keys + v``. The P keys of a row
    are distinct and every one is queried once, in random order. Graded positions: each query, whose target is
    the answer token (a value the query token itself says nothing about); chance accuracy is 1 / n_values.

    To answer, attention from the query must find the pair token with the same key (a match of keys) and copy
    its value out (through the values): a key/value cache that cannot keep P keys and their values apart fails.
    """
    for name, v in (("n", n), ("n_pairs", n_pairs), ("n_keys", n_keys), ("n_values", n_values)):
        _check_count(name, v)
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs = {n_pairs} distinct keys need n_keys ≥ {n_pairs}, got n_keys = {n_keys}")
    g = generator or torch.Generator().manual_seed(0)
    keys = torch.rand(n, n_keys, generator=g).argsort(dim=1)[:, :n_pairs]
    values = torch.randint(0, n_values, (n, n_pairs), generator=g)
    order = torch.rand(n, n_pairs, generator=g).argsort(dim=1)
    asked = keys.gather(1, order)
    pair_tok = 1 + keys * n_values + values
    query_tok = 1 + n_keys * n_values + asked
    x = torch.cat([pair_tok, query_tok], dim=1)
    y = torch.full_like(x, IGNORE)
    y[:, n_pairs:] = 1 + n_keys * n_values + n_keys + values.gather(1, order)
    return x, y


def copy_task(n: int, length: int, n_symbols: int = 32,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``s_1 … s_L SEP s_1 … s_L`` with s uniform over 1 … n_symbols; graded: every token of the second copy.

    Length T = 2L + 1; x[:, L] is SEP and the targets are y[:, L + i] = s_{i+1} for i = 0 … L − 1 (the last input
    position predicts nothing). The first copy cannot be predicted (it is random): chance there is 1 / n_symbols.
    """
    _check_count("n", n)
    _check_count("length", length)
    _check_count("n_symbols", n_symbols, 2)
    g = generator or torch.Generator().manual_seed(0)
    s = torch.randint(1, n_symbols + 1, (n, length), generator=g)
    x = torch.cat([s, torch.full((n, 1), SEP, dtype=torch.long), s], dim=1)
    y = torch.full_like(x, IGNORE)
    y[:, length:2 * length] = s
    return x, y


def induction_copy(n: int, length: int, n_symbols: int = 512, min_length: int | None = None, prefix: int = 0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy a sequence of *distinct* symbols: ``r_1 … r_P  s_1 … s_L  SEP  s_1 … s_L  SEP …``; graded: s_2 … s_L.

    Every row draws its own L uniformly from ``min_length`` … ``length`` (``min_length = length`` when None) and
    P = ``prefix`` + L distinct symbols from 1 … ``n_symbols``; rows shorter than the longest are padded with SEP
    after their second copy (causal attention never sees the padding). Length T = prefix + 2·length + 1. The target
    at the position of the second copy's s_i is s_{i+1} (i = 1 … L − 1); everything else is IGNORE.

    Because every symbol occurs once in the first copy, the only rule that solves every row is an *induction head*:
    find the earlier occurrence of the current symbol and read the one after it, at offset L (varying per row,
    so a fixed positional offset cannot do it). Training on L ≤ ``length`` and grading at larger L asks what the
    model's attention does at offsets it never saw; ``prefix`` (distinct filler before the task, never graded)
    moves the same offsets to later absolute positions. Chance accuracy: about 1 / (n_symbols − L).
    """
    _check_count("n", n)
    _check_count("length", length, 2)
    _check_count("prefix", prefix, 0)
    lo = length if min_length is None else min_length
    _check_count("min_length", lo, 2)
    if lo > length:
        raise ValueError(f"min_length = {lo} must be ≤ length = {length}")
    if prefix + length > n_symbols:
        raise ValueError(f"prefix + length = {prefix + length} distinct symbols per row need n_symbols ≥ that, "
                         f"got n_symbols = {n_symbols}")
    g = generator or torch.Generator().manual_seed(0)
    Ls = torch.randint(lo, length + 1, (n,), generator=g)
    sym = torch.rand(n, n_symbols, generator=g).argsort(dim=1)[:, :prefix + length] + 1   # distinct per row
    T = prefix + 2 * length + 1
    x = torch.full((n, T), SEP, dtype=torch.long)
    y = torch.full((n, T), IGNORE, dtype=torch.long)
    x[:, :prefix] = sym[:, :prefix]
    for r, L in enumerate(Ls.tolist()):
        s = sym[r, prefix:prefix + L]
        x[r, prefix:prefix + L] = s
        x[r, prefix + L + 1:prefix + 2 * L + 1] = s
        y[r, prefix + L + 1:prefix + 2 * L] = s[1:]
    return x, y


def task_batches(make, batch_size: int, seed: int = 0, **kw):
    """A ``get_batch(split)`` function for :func:`helpers.train.train` drawing fresh task sequences.

    ``make`` is :func:`associative_recall` or :func:`copy_task`, ``kw`` its arguments. "train" and "val" draw
    from two generators seeded differently, so validation sequences are not the training ones.
    """
    _check_count("batch_size", batch_size)
    gens = {"train": torch.Generator().manual_seed(seed), "val": torch.Generator().manual_seed(seed + 10_007)}

    def get_batch(split: str = "train"):
        if split not in gens:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return make(batch_size, generator=gens[split], **kw)
    return get_batch


@torch.no_grad()
def masked_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of graded positions (y ≠ IGNORE) where the argmax of ``logits`` [n, T, V] equals ``y`` [n, T]."""
    if logits.shape[:2] != y.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(y.shape)} must agree on [n, T]")
    graded = y != IGNORE
    if not graded.any():
        raise ValueError("no graded positions in y (every target is IGNORE)")
    return (logits.argmax(-1)[graded] == y[graded]).float().mean().item()


# -- passkey retrieval (text, course tokenizer) --------------------------------------------------------------
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
_PASSKEY_INTRO = "There is a pass key hidden in this text. Find it and remember it. "
_PASSKEY_QUESTION = "What is the pass key? The pass key is"


def passkey_document(tok, n_tokens: int, rng: random.Random, depth: float | None = None) -> tuple[list[int], list[int]]:
    """One passkey-retrieval example of about ``n_tokens`` tokens: ``(prompt_ids, answer_ids)``.

    The prompt is an introduction, filler sentences, ``"The pass key is K. Remember it. K is the pass key. "``
    at relative ``depth`` ∈ [0, 1] of the filler (uniform when None), more filler, and the question
    ``"What is the pass key? The pass key is"``; the answer is ``" K"`` (K a five-digit number, 3 tokens with
    the course tokenizer). Prompt + answer is at most ``n_tokens`` long (the filler is trimmed to fit);
    ``n_tokens`` must leave room for at least the key sentence and the question (≥ 64).
    """
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 64:
        raise ValueError(f"passkey_document: n_tokens must be an int ≥ 64 (room for the key and the question), "
                         f"got {n_tokens!r}")
    if not isinstance(rng, random.Random):
        raise TypeError(f"passkey_document: rng must be a random.Random, got {type(rng).__name__}; e.g. random.Random(0)")
    if depth is not None and not (isinstance(depth, (int, float)) and 0.0 <= depth <= 1.0):
        raise ValueError(f"passkey_document: depth must be in [0, 1] (0 = right after the introduction), got {depth!r}")
    key = rng.randint(10000, 99999)
    depth = rng.random() if depth is None else float(depth)
    intro, question = tok.encode(_PASSKEY_INTRO), tok.encode(_PASSKEY_QUESTION)
    needle = tok.encode(f"The pass key is {key}. Remember it. {key} is the pass key. ")
    answer = tok.encode(f" {key}")
    filler_unit = tok.encode(PASSKEY_FILLER)
    room = n_tokens - len(intro) - len(needle) - len(question) - len(answer)
    if room < 0:
        raise ValueError(f"passkey_document: n_tokens = {n_tokens} is too short for the key and the question "
                         f"({n_tokens - room} tokens); use n_tokens ≥ {n_tokens - room}")
    filler = (filler_unit * (room // len(filler_unit) + 1))[:room]
    cut = int(round(depth * len(filler)))
    # cut at a sentence start so the needle does not split a word of the filler
    starts = [i for i in range(0, len(filler) + 1) if i % len(filler_unit) == 0]
    cut = min(starts, key=lambda i: abs(i - cut))
    prompt = intro + filler[:cut] + needle + filler[cut:] + question
    return prompt, answer


def train_on_task(model, get_batch, steps: int, *, lr: float = 3e-3, warmup_steps: int = 30, eval_every: int = 100,
                  eval_rows: int = 256, seed: int = 0, schedule: str = "constant", show_progress: bool = False) -> list[dict]:
    """Train ``model`` on a task's ``get_batch`` (:func:`task_batches`) and grade it along the way.

    AdamW through :func:`helpers.train.train`, linear warm-up then a constant learning rate by default (so the first
    k steps of a long run are exactly a k-step run: a shipped curve can be checked by rerunning its start), no weight
    decay (fresh task rows every step: nothing to overfit). Every ``eval_every`` steps (and at the end) the model
    is graded on ``eval_rows`` fixed validation rows drawn once from ``get_batch("val")`` before training:
    returns ``[{"step", "acc", "loss"}]`` with the masked accuracy and the cross-entropy over graded positions.
    Deterministic for a given seed, thread count and CPU kernel set.
    """
    from helpers.train import TrainConfig, train        # late import: helpers.train does not need the tasks

    _check_count("steps", steps)
    _check_count("eval_every", eval_every)
    _check_count("eval_rows", eval_rows)
    device = next(model.parameters()).device
    xs, ys = [], []
    while sum(len(x) for x in xs) < eval_rows:
        x, y = get_batch("val")
        xs.append(x), ys.append(y)
    xv, yv = torch.cat(xs)[:eval_rows].to(device), torch.cat(ys)[:eval_rows].to(device)
    records: list[dict] = []

    @torch.no_grad()
    def grade(step: int) -> None:
        was = model.training
        model.eval()
        logits = model(xv)["logits"].float()
        graded = yv != IGNORE
        loss = torch.nn.functional.cross_entropy(logits[graded], yv[graded]).item()
        records.append({"step": step, "acc": masked_accuracy(logits, yv), "loss": loss})
        model.train(was)

    def batches(split="train"):
        x, y = get_batch(split)
        return x.to(device), y.to(device)

    def callback(done: int, _history) -> None:          # train() passes the number of steps done
        if done % eval_every == 0 and done < steps:
            grade(done)

    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(warmup_steps, steps - 1), eval_every=0,
                      weight_decay=0.0, seed=seed, schedule=schedule)
    train(model, batches, cfg, val_data=[(xv[:8], yv[:8])], show_progress=show_progress, callback=callback)
    grade(steps)
    return records


# ---- a regression task whose knowledge is made of shared pieces (expert granularity, notebook 02.4) ----------

def composed_experts_task(n_classes: int = 64, n_atoms: int = 32, atoms_per_class: int = 4, dim: int = 32,
                          atom_width: int = 16, seed: int = 0) -> dict:
    """A teacher whose function is a sum of shared pieces: DeepSeekMoE's fine-grained-expert hypothesis, built in.

    There are ``n_atoms`` random SwiGLU "atoms" f_j(x) = W2_j (SiLU(W1_j x) ⊙ W3_j x) of hidden size ``atom_width``,
    and ``n_classes`` token classes, each with a centre c_k ∈ R^dim and its own set S_k of ``atoms_per_class``
    distinct atoms. A sample of class k is x = c_k + ε (ε ~ N(0, I)) with target

        y = Σ_{j ∈ S_k} f_j(x).

    A routed layer whose experts are as small as one atom can represent the teacher exactly by routing class k to
    the experts of S_k; one with experts ``atoms_per_class`` times larger, top-1, must fit into each expert the
    different sums of every class it receives. Returns the teacher as tensors: {"centres" [C, dim], "subsets"
    [C, S] (atom ids), "w1", "w3" [J, width, dim], "w2" [J, dim, width]}; draw samples with
    :func:`composed_experts_batch`.
    """
    for name, v in (("n_classes", n_classes), ("n_atoms", n_atoms), ("atoms_per_class", atoms_per_class),
                    ("dim", dim), ("atom_width", atom_width)):
        _check_count(name, v)
    if atoms_per_class > n_atoms:
        raise ValueError(f"atoms_per_class = {atoms_per_class} distinct atoms need n_atoms ≥ {atoms_per_class}, "
                         f"got n_atoms = {n_atoms}")
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g)
    subsets = torch.rand(n_classes, n_atoms, generator=g).argsort(dim=1)[:, :atoms_per_class]
    w1 = torch.randn(n_atoms, atom_width, dim, generator=g) / dim ** 0.5
    w3 = torch.randn(n_atoms, atom_width, dim, generator=g) / dim ** 0.5
    w2 = torch.randn(n_atoms, dim, atom_width, generator=g) / atom_width ** 0.5
    return {"centres": centres, "subsets": subsets, "w1": w1, "w3": w3, "w2": w2}


def composed_experts_batch(task: dict, n: int, generator: torch.Generator | None = None):
    """``n`` samples (x [n, dim], y [n, dim], class [n]) of a :func:`composed_experts_task` teacher, classes uniform."""
    _check_count("n", n)
    if not isinstance(task, dict) or not {"centres", "subsets", "w1", "w2", "w3"} <= set(task):
        raise ValueError("task must be the dict returned by composed_experts_task(...)")
    g = generator or torch.Generator().manual_seed(0)
    centres, subsets = task["centres"], task["subsets"]
    k = torch.randint(centres.shape[0], (n,), generator=g)
    x = centres[k] + torch.randn(n, centres.shape[1], generator=g)
    hidden = torch.nn.functional.silu(torch.einsum("jwd,nd->njw", task["w1"], x)) * torch.einsum("jwd,nd->njw", task["w3"], x)
    atoms = torch.einsum("jdw,njw->njd", task["w2"], hidden)                      # every atom's output [n, J, dim]
    chosen = torch.zeros(n, atoms.shape[1]).scatter_(1, subsets[k], 1.0)         # 1 where the atom is in S_k
    return x, (atoms * chosen[..., None]).sum(1), k
