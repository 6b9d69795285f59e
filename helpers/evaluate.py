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

The rest of the harness (chapter 07.2) follows the same shape, a set builder on held-out text and a per-item scorer:
one-line code completion and fill-in-the-middle (:func:`code_line_set`, :func:`code_items`: exact match and
:func:`edit_similarity`, greedy or sampled, :func:`pass_at_k`; :func:`middle_nll`, its likelihood side), passkey
retrieval at a chosen length (:func:`passkey_items`, chance 1/90,000), and cloze multiple choice scored by
log-likelihood (:func:`cloze_set`, :func:`cloze_items`, :func:`cloze_rescore`): the model picks argmax_j ℓ_j / λ_j
with ℓ_j an option's total log-likelihood and λ_j = 1, its tokens or its bytes, a choice that moves the score.
"""
from __future__ import annotations

import random
import re

import torch

from .arithmetic import check_answer
from .fim import fim_prompt_ids
from .posttraining import chat_generate, length_batches
from .pretraining import arithmetic_accuracy
from .tasks import passkey_document

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


# -- the rest of the harness (07.2): code and FIM completion, passkey by length, cloze multiple choice ------------
#
# Each task has a set builder (held-out text in, items out, seeded) and a scorer that returns per-item scores with
# the settings that produced them, as ``arithmetic_items`` does. Generative tasks (code, FIM) decode; likelihood tasks
# (cloze, passkey) read the model's log-probabilities in one teacher-forced pass and decode nothing.

PASSKEY_KEYS = 90_000            # five-digit keys 10000 … 99999 (helpers.tasks.passkey_document): chance 1 / 90,000
NORMALIZATIONS = ("total", "per_token", "per_byte")


def edit_similarity(a: str, b: str) -> float:
    """1 − d(a, b) / max(|a|, |b|), with d the Levenshtein distance in characters (insert, delete, substitute);
    1 for two empty strings. A graded code-completion score between exact match (1) and nothing in common (0)."""
    if not (isinstance(a, str) and isinstance(b, str)):
        raise ValueError(f"edit_similarity: compare two str, got {type(a).__name__} and {type(b).__name__}")
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one item with ``c`` correct among ``n`` samples (Chen et al. 2021):

        pass@k = 1 − C(n − c, k) / C(n, k),

    the probability that k samples drawn without replacement from the n contain at least one correct one."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, c, k)):
        raise ValueError(f"pass_at_k: n, c and k must be ints, got n={n!r}, c={c!r}, k={k!r}")
    if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k: need n ≥ 1 samples, 0 ≤ c ≤ n correct and 1 ≤ k ≤ n, "
                         f"got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_none = 1.0
    for i in range(n - c + 1, n + 1):             # C(n−c, k) / C(n, k) as a product, no big integers
        prob_none *= 1.0 - k / i
    return 1.0 - prob_none


def _check_int(name: str, v, low: int, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{where}: {name} must be an int ≥ {low}, got {v!r}")


def _check_documents(documents, where: str) -> list[str]:
    if isinstance(documents, str) or not all(isinstance(d, str) for d in documents) or not documents:
        raise ValueError(f"{where}: documents must be a non-empty list of str (e.g. "
                         "helpers.data.split_documents('code')['val']), got " + type(documents).__name__)
    return list(documents)


def code_line_set(tok, documents, n: int, *, prefix_tokens: int = 64, suffix_tokens: int = 32,
                  max_line_tokens: int = 16, min_chars: int = 6, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` complete-the-line items ``(prefix, middle, suffix)`` from held-out code ``documents``.

    A line (at least ``min_chars`` non-blank characters, at most ``max_line_tokens`` tokens) is cut at a uniformly
    drawn token boundary inside it: its head ends the prefix and the middle is the rest of the line with its line
    break (never only whitespace), what an editor's completion writes after the cursor. The prefix is the last
    ``prefix_tokens`` tokens up to the cut and the suffix the first ``suffix_tokens`` tokens of the lines after it
    (cut at token boundaries, kept only where the cut text re-encodes to the same tokens), so every prompt of a set
    has the same length and decodes in one batch. Seeded.
    """
    where = "code_line_set"
    documents = _check_documents(documents, where)
    for name, v, low in (("n", n, 1), ("prefix_tokens", prefix_tokens, 1), ("suffix_tokens", suffix_tokens, 0),
                         ("max_line_tokens", max_line_tokens, 2), ("min_chars", min_chars, 1)):
        _check_int(name, v, low, where)
    rng = random.Random(seed)
    lines = [d.splitlines(keepends=True) for d in documents]
    cands = [(i, j) for i, ls in enumerate(lines) for j, ln in enumerate(ls)
             if ln.endswith("\n") and len(ln.strip()) >= min_chars]
    rng.shuffle(cands)
    out = []
    for i, j in cands:
        ls, ids = lines[i], tok.encode(lines[i][j])
        if len(ids) > max_line_tokens:
            continue
        cut = rng.randrange(len(ids))
        middle = tok.decode(ids[cut:])
        if not middle.strip() or tok.encode(middle) != ids[cut:]:
            continue
        # a window of whole lines on each side is enough to cut the token budget from
        before = tok.encode("".join(ls[max(0, j - 4 * prefix_tokens):j])) + ids[:cut]
        after = tok.encode("".join(ls[j + 1:j + 1 + 4 * suffix_tokens]))
        if len(before) < prefix_tokens or len(after) < suffix_tokens:
            continue
        pre, suf = before[len(before) - prefix_tokens:], after[:suffix_tokens]
        p_txt, s_txt = tok.decode(pre), tok.decode(suf)
        if tok.encode(p_txt) != pre or tok.encode(s_txt) != suf:
            continue
        out.append((p_txt, middle, s_txt))
        if len(out) == n:
            return out
    raise ValueError(f"{where}: only {len(out)} of the {n} items asked for fit (lines of ≤ {max_line_tokens} tokens "
                     f"with {prefix_tokens} tokens before the cut and {suffix_tokens} after the line); ask for fewer "
                     "items or shorter contexts")


def _check_code_task(mode, examples, where: str) -> None:
    """The checks shared by the code tasks: a known ``mode`` and at least one example."""
    if mode not in ("fim", "l2r"):
        raise ValueError(f"{where}: mode must be 'fim' (prefix and suffix given, PSM order) or 'l2r' (prefix only), "
                         f"got {mode!r}")
    if not examples:
        raise ValueError(f"{where}: no examples given; build them with code_line_set")


def code_items(model, tok, examples, *, mode: str = "fim", temperature: float = 0.0, samples: int = 1,
               max_new_tokens: int = 16, generator: torch.Generator | None = None, batch_size: int = 64) -> dict:
    """Per-item scores of ``model`` writing the missing line of each ``(prefix, line, suffix)`` example.

    ``mode="fim"``: the prompt is ``<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>``
    (``helpers.fim.fim_prompt_ids``, PSM); the completion is what the model writes before ``<|endoftext|>``, and
    it counts only if the model stopped (it wrote the middle and handed back to the suffix).
    ``mode="l2r"``: ordinary code completion, the prompt is the prefix alone; the completion is what the model writes
    up to and including its first line break.
    Each item's ``scores`` entry is the share of its ``samples`` completions that equal the line exactly;
    ``similarity`` the mean :func:`edit_similarity`. ``temperature = 0`` is greedy (one sample).
    Returns ``{"scores", "similarity", "completions", "settings"}``.
    """
    where = "code_items"
    _check_code_task(mode, examples, where)
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise ValueError(f"{where}: temperature must be ≥ 0 (0 is greedy), got {temperature!r}")
    _check_int("samples", samples, 1, where)
    _check_int("max_new_tokens", max_new_tokens, 1, where)
    if temperature == 0 and samples != 1:
        raise ValueError(f"{where}: greedy decoding gives one completion per item; pass samples=1 or a temperature > 0")
    prompts = []
    for p, m, s in examples:
        if mode == "l2r" and not p:
            raise ValueError(f"{where}: left-to-right completion needs a non-empty prefix to continue")
        prompts.append(fim_prompt_ids(tok, p, s) if mode == "fim" else tok.encode(p))
    dev = next(model.parameters()).device
    per = max(1, batch_size // samples)
    texts: list[list[str]] = [[] for _ in examples]
    stopped: list[list[bool]] = [[] for _ in examples]
    for L, part, room in length_batches(prompts, per, max_new_tokens, model.cfg.max_seq_len, where):
        x = torch.tensor([prompts[i] for i in part], device=dev).repeat_interleave(samples, 0)
        with torch.no_grad():
            y = model.generate(x, room, temperature=temperature, generator=generator, stop_id=tok.eot_id,
                               pad_id=tok.eot_id)[:, L:].tolist()
        for r, row in enumerate(y):
            i = part[r // samples]
            end = tok.eot_id in row
            text = tok.decode(row[:row.index(tok.eot_id)] if end else row)
            if mode == "l2r":
                end = "\n" in text
                text = text[:text.index("\n") + 1] if end else text
            texts[i].append(text)
            stopped[i].append(end)
    scores = [sum(e and t == m for t, e in zip(ts, es)) / samples
              for ts, es, (_, m, _) in zip(texts, stopped, examples)]
    sim = [sum(edit_similarity(t, m) for t in ts) / samples for ts, (_, m, _) in zip(texts, examples)]
    task = "FIM, PSM order (prefix and suffix given)" if mode == "fim" else "code completion (prefix only)"
    decoding = "greedy" if temperature == 0 else f"sampled at T = {temperature:g}"
    return {"scores": scores, "similarity": sim, "completions": texts,
            "settings": {"task": task, "decoding": decoding, "samples": samples, "max_new_tokens": max_new_tokens,
                         "stop": "<|endoftext|>" if mode == "fim" else "first line break"}}


def passkey_items(model, tok, n_tokens: int, n: int = 40, *, seed: int = 0, depth: float | None = None,
                  batch_size: int = 8) -> dict:
    """Per-document passkey retrieval at ``n_tokens`` tokens (``helpers.tasks.passkey_document``; the documents
    ``helpers.pretraining.passkey_accuracy`` draws for the same ``n``, ``seed``, ``depth``).

    ``scores``: 1 when every token of the key is the model's top choice given the prompt and the key's earlier
    tokens, i.e. greedy decoding writes the key; ``nll``: the key tokens' mean negative log-likelihood (nats).
    Chance: a uniform guess of the key is right with probability 1 / 90,000 (``PASSKEY_KEYS``).
    """
    where = "passkey_items"
    _check_int("n", n, 1, where)
    _check_int("batch_size", batch_size, 1, where)
    if isinstance(n_tokens, int) and n_tokens > model.cfg.max_seq_len:
        raise ValueError(f"{where}: n_tokens = {n_tokens} exceeds the model's max_seq_len = {model.cfg.max_seq_len}; "
                         "rebuild it with a longer rotary table (e.g. load_base(max_seq_len=...))")
    rng = random.Random(seed)
    docs = [passkey_document(tok, n_tokens, rng, depth) for _ in range(n)]
    out = _continuation_logprobs(model, docs, batch_size, tok.eot_id, where)
    hits, nlls = [float(top) for _, top in out], [float(-lp.mean()) for lp, _ in out]
    return {"scores": hits, "nll": nlls, "chance": 1 / PASSKEY_KEYS,
            "settings": {"task": "passkey", "length": n_tokens, "depth": "uniform" if depth is None else depth,
                         "decoding": "greedy (every key token the argmax, teacher-forced)", "samples": 1}}


_LAST_WORD = re.compile(r"(\s)([A-Za-z_][\w']*)\W*$")


def _blank(line: str, unit: str, min_chars: int) -> tuple[str, str] | None:
    """(head, blank) of one line: what stays in the context and the option text; None if the line has no blank."""
    text = line.rstrip("\n")
    if unit == "line":
        return ("", "\n" + text) if len(text.strip()) >= min_chars else None
    m = _LAST_WORD.search(text)
    if m is None or len(m.group(2)) < min_chars:
        return None
    return text[:m.start()], m.group(1) + m.group(2)


def cloze_set(tok, documents, n: int, k: int = 4, *, unit: str = "line", context_tokens: int = 64,
              max_option_tokens: int = 16, min_chars: int | None = None, min_gap: int = 50,
              seed: int = 0) -> list[dict]:
    """``n`` cloze multiple-choice items from held-out ``documents`` (one domain's validation split).

    Each item blanks the end of one line. ``unit="line"``: the whole line (at least ``min_chars`` = 10 non-blank
    characters); the context is the whole lines before it, its last line break moved into the options, which are
    ``"\\n" + line``. ``unit="word"``: the line's last word (at least ``min_chars`` = 3 characters; trailing
    punctuation dropped), LAMBADA-style; the context is the lines before plus the line up to that word, and the
    options are ``" " + word``. The context holds as many whole earlier lines as fit in ``context_tokens``.
    Distractors are the blanks of ``k − 1`` other lines drawn from other places of the same documents (another
    document, or at least ``min_gap`` lines away), all texts distinct; options come in a seeded random order and
    ``answer`` is the true one's index. Answers are all different and at most ``max_option_tokens`` tokens.
    Returns ``[{"context", "options", "answer"}, ...]``.
    """
    where = "cloze_set"
    documents = _check_documents(documents, where)
    if unit not in ("line", "word"):
        raise ValueError(f"{where}: unit must be 'line' (blank a whole line) or 'word' (its last word), got {unit!r}")
    min_chars = (10 if unit == "line" else 3) if min_chars is None else min_chars
    for name, v, low in (("n", n, 1), ("k", k, 2), ("context_tokens", context_tokens, 1),
                         ("max_option_tokens", max_option_tokens, 1), ("min_chars", min_chars, 1),
                         ("min_gap", min_gap, 0)):
        _check_int(name, v, low, where)
    rng = random.Random(seed)
    lines = [d.splitlines(keepends=True) for d in documents]
    n_tok = [[len(tok.encode(ln)) for ln in ls] for ls in lines]
    blanks = {}
    for i, ls in enumerate(lines):
        for j, ln in enumerate(ls):
            hb = _blank(ln, unit, min_chars) if j >= 1 else None
            if hb is not None and len(tok.encode(hb[1])) <= max_option_tokens:
                blanks[i, j] = hb
    cands = list(blanks)
    if len(cands) < k:
        raise ValueError(f"{where}: only {len(cands)} usable lines, fewer than k = {k} options; lower min_chars or k")
    order = cands[:]
    rng.shuffle(order)
    out, used = [], set()
    for i, j in order:
        head, blank = blanks[i, j]
        if blank in used:
            continue
        a, total = j, 0
        while a > 0 and total + n_tok[i][a - 1] <= context_tokens:
            a -= 1
            total += n_tok[i][a]
        if a == j:
            continue                              # the line before alone is longer than the context budget
        context = "".join(lines[i][a:j])
        context = context[:-1] if unit == "line" else context + head
        if not context:
            continue
        texts, distractors = {blank}, []
        for _ in range(50 * k):
            i2, j2 = cands[rng.randrange(len(cands))]
            t = blanks[i2, j2][1]
            if t in texts or (i2 == i and abs(j2 - j) < min_gap):
                continue
            texts.add(t)
            distractors.append(t)
            if len(distractors) == k - 1:
                break
        if len(distractors) < k - 1:
            continue
        options = [blank] + distractors
        perm = list(range(k))
        rng.shuffle(perm)
        out.append({"context": context, "options": [options[p] for p in perm], "answer": perm.index(0)})
        used.add(blank)
        if len(out) == n:
            return out
    raise ValueError(f"{where}: only {len(out)} of the {n} items asked for could be built; ask for fewer items or "
                     "relax min_chars / max_option_tokens / min_gap")


def _continuation_logprobs(model, rows: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
                           where: str) -> list[tuple[torch.Tensor, bool]]:
    """(log p(c_t | context, c_<t) of every token, whether every c_t is the argmax) of each ``(context_ids,
    continuation_ids)`` row, in one teacher-forced pass per batch. Rows are right-padded with ``pad_id``: attention
    is causal, so padding after a row's last scored token cannot change it."""
    for r, (ctx, cont) in enumerate(rows):
        if not ctx or not cont:
            raise ValueError(f"{where}: row {r} has an empty context or continuation; the first continuation token "
                             "needs a context to condition on")
    limit = getattr(getattr(model, "cfg", None), "max_seq_len", None)
    longest = max(len(c) + len(o) - 1 for c, o in rows)
    if limit is not None and longest > limit:
        raise ValueError(f"{where}: a context + continuation of {longest + 1} tokens exceeds max_seq_len = {limit}; "
                         "use shorter contexts")
    dev = next(model.parameters()).device
    out: list = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]) + len(rows[r][1]))
    for s in range(0, len(order), batch_size):
        part = order[s:s + batch_size]
        T = max(len(rows[r][0]) + len(rows[r][1]) for r in part) - 1
        x = torch.full((len(part), T), pad_id, dtype=torch.long)
        for b, r in enumerate(part):
            seq = (rows[r][0] + rows[r][1])[:-1]
            x[b, :len(seq)] = torch.tensor(seq)
        with torch.no_grad():
            logp = model(x.to(dev))["logits"].float().log_softmax(-1)
        for b, r in enumerate(part):
            c, cont = len(rows[r][0]), rows[r][1]
            pos = torch.arange(c - 1, c - 1 + len(cont), device=dev)
            tgt = torch.tensor(cont, device=dev)
            out[r] = (logp[b, pos, tgt].double().cpu(), bool((logp[b, pos].argmax(-1) == tgt).all()))
    return out


def middle_nll(model, tok, examples, *, mode: str = "fim", batch_size: int = 32) -> dict:
    """Per-item mean negative log-likelihood (nats per token) of each example's true middle, teacher-forced: the
    likelihood side of :func:`code_items`, which shows what a model knows even where greedy decoding never gets the
    whole middle right. ``mode="fim"``: given ``<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>``, and
    ``stop_nll`` is −log p(<|endoftext|> | …, middle), whether the model knows the middle ends there;
    ``mode="l2r"``: given the prefix only (``stop_nll`` is None).
    Returns ``{"scores", "stop_nll", "settings"}``.
    """
    where = "middle_nll"
    _check_code_task(mode, examples, where)
    _check_int("batch_size", batch_size, 1, where)
    rows = []
    for p, m, s in examples:
        ctx = fim_prompt_ids(tok, p, s) if mode == "fim" else tok.encode(p)
        rows.append((ctx, tok.encode(m) + ([tok.eot_id] if mode == "fim" else [])))
    lps = [lp for lp, _ in _continuation_logprobs(model, rows, batch_size, tok.eot_id, where)]
    mid = [float(-lp[:-1].mean()) if mode == "fim" else float(-lp.mean()) for lp in lps]
    stop = [float(-lp[-1]) for lp in lps] if mode == "fim" else None
    task = "FIM, PSM order (prefix and suffix given)" if mode == "fim" else "code completion (prefix only)"
    return {"scores": mid, "stop_nll": stop,
            "settings": {"task": task, "score": "mean NLL of the middle tokens (nats)",
                         "decoding": "none (teacher-forced likelihood)"}}


def cloze_rescore(result: dict, normalize: str = "total", k: int | None = None) -> list[float]:
    """Per-item multiple-choice scores from a :func:`cloze_items` result, without running the model again.

    The model picks argmax_j ℓ_j / λ_j, with ℓ_j the option's total log-likelihood and λ_j = 1 (``"total"``), its
    number of tokens (``"per_token"``) or of UTF-8 bytes (``"per_byte"``). ``k``: keep only the true option and
    the first k − 1 others (chance 1 / k). Ties share the credit: 1 / (number of options tied at the top) when the
    true one is among them."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"cloze_rescore: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    out = []
    for q, (ll, ans) in enumerate(zip(result["loglik"], result["answer"])):
        K = len(ll)
        kk = K if k is None else k
        if isinstance(kk, bool) or not isinstance(kk, int) or not 2 <= kk <= K:
            raise ValueError(f"cloze_rescore: k must be an int in [2, {K}] (the options each item has), got {k!r}")
        keep = [ans] + [j for j in range(K) if j != ans][:kk - 1]
        lam = {"total": [1] * K, "per_token": result["n_tokens"][q], "per_byte": result["n_bytes"][q]}[normalize]
        val = [ll[j] / lam[j] for j in keep]
        top = max(val)
        tied = [v == top for v in val]
        out.append(1.0 / sum(tied) if tied[0] else 0.0)
    return out


def cloze_items(model, tok, items, *, normalize: str = "total", batch_size: int = 32) -> dict:
    """Per-item accuracy of ``model`` on cloze multiple-choice ``items`` (:func:`cloze_set`), scored by
    log-likelihood: ℓ_j = Σ_t log p(option_j token t | context, earlier option tokens), no decoding.

    ``normalize`` is the harness decision of :func:`cloze_rescore` (total, per token or per byte); the result keeps
    every ℓ_j and length, so the other choices (and fewer options) are re-scored from it for free.
    Returns ``{"scores", "loglik", "n_tokens", "n_bytes", "answer", "chance", "settings"}``.
    """
    where = "cloze_items"
    if not items:
        raise ValueError(f"{where}: no items given; build them with cloze_set")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"{where}: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    _check_int("batch_size", batch_size, 1, where)
    for q, it in enumerate(items):
        if not (isinstance(it, dict) and {"context", "options", "answer"} <= set(it)):
            raise ValueError(f"{where}: item {q} must be a dict with 'context', 'options' and 'answer'")
        if not it["context"] or not all(it["options"]):
            raise ValueError(f"{where}: item {q} has an empty context or an empty option; the first option token "
                             "needs a context to condition on")
        if len(it["options"]) < 2 or not (isinstance(it["answer"], int) and 0 <= it["answer"] < len(it["options"])):
            raise ValueError(f"{where}: item {q} needs ≥ 2 options and an answer index among them, got "
                             f"{len(it['options'])} options and answer {it['answer']!r}")
    rows, owner = [], []
    for q, it in enumerate(items):
        ctx = tok.encode(it["context"])
        for o, opt in enumerate(it["options"]):
            rows.append((ctx, tok.encode(opt)))
            owner.append((q, o))
    lps = [lp for lp, _ in _continuation_logprobs(model, rows, batch_size, tok.eot_id, where)]
    ll = [[0.0] * len(it["options"]) for it in items]
    nt = [[0] * len(it["options"]) for it in items]
    for (q, o), lp in zip(owner, lps):
        ll[q][o], nt[q][o] = float(lp.sum()), len(lp)
    nb = [[len(o.encode("utf-8")) for o in it["options"]] for it in items]
    res = {"loglik": ll, "n_tokens": nt, "n_bytes": nb, "answer": [it["answer"] for it in items]}
    res["scores"] = cloze_rescore(res, normalize)
    ks = sorted({len(it["options"]) for it in items})
    res["chance"] = sum(1 / len(it["options"]) for it in items) / len(items)
    res["settings"] = {"task": "cloze multiple choice", "options": ks[0] if len(ks) == 1 else ks,
                       "scoring": {"total": "total log-likelihood", "per_token": "log-likelihood per token",
                                   "per_byte": "log-likelihood per byte"}[normalize],
                       "decoding": "none (likelihood of each option)"}
    return res


__all__ += ["PASSKEY_KEYS", "NORMALIZATIONS", "edit_similarity", "pass_at_k", "code_line_set", "code_items",
            "middle_nll", "passkey_items", "cloze_set", "cloze_items", "cloze_rescore"]
