"""helpers.evaluate: bootstrap intervals (against the normal approximation and by coverage), paired comparisons,
per-item arithmetic scores with their decoding settings."""
import math
import random

import pytest
import torch

from helpers import evaluate as E
from helpers import posttraining as PT
from helpers.pretraining import arithmetic_accuracy, arithmetic_test_set, load_base
from helpers.tokenizer import load_tokenizer


def test_bootstrap_of_a_constant_is_that_constant():
    assert E.bootstrap_ci([0.25] * 30) == (0.25, 0.25, 0.25)


def test_bootstrap_half_width_matches_the_normal_approximation():
    rng = random.Random(0)
    x = [float(rng.random() < 0.45) for _ in range(400)]
    m, lo, hi = E.bootstrap_ci(x, level=0.9, n_boot=4000)
    normal = 1.6449 * math.sqrt(m * (1 - m) / len(x))
    assert lo < m < hi
    assert abs((hi - lo) / 2 - normal) < 0.15 * normal


def test_bootstrap_interval_covers_the_truth_about_as_often_as_it_says():
    rng = random.Random(1)
    covered = 0
    for k in range(200):
        x = [float(rng.random() < 0.3) for _ in range(100)]
        _, lo, hi = E.bootstrap_ci(x, level=0.9, n_boot=500, seed=k)
        covered += lo <= 0.3 <= hi
    assert 0.82 <= covered / 200 <= 0.97            # nominal 0.90; binomial noise over 200 tests ≈ ± 0.02


def test_bootstrap_is_seeded():
    rng = random.Random(5)
    x = [rng.random() for _ in range(50)]
    assert E.bootstrap_ci(x, seed=3) == E.bootstrap_ci(x, seed=3)
    assert E.bootstrap_ci(x, seed=3) != E.bootstrap_ci(x, seed=4)


def test_paired_bootstrap_sees_a_small_consistent_difference_that_separate_intervals_miss():
    rng = random.Random(2)
    d = [rng.random() for _ in range(200)]                # item difficulty, shared by both models
    a, b = [v + 0.02 for v in d], d
    _, alo, ahi = E.bootstrap_ci(a)
    _, blo, bhi = E.bootstrap_ci(b)
    assert alo < bhi                                       # the separate intervals overlap
    p = E.paired_bootstrap(a, b)
    assert p["real"] and p["diff"] == pytest.approx(0.02) and p["low"] == pytest.approx(0.02)
    same = E.paired_bootstrap(b, b)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "real": False}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        E.bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        E.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        E.bootstrap_ci([1.0], level=90)
    with pytest.raises(ValueError, match="n_boot"):
        E.bootstrap_ci([1.0], n_boot=10)
    with pytest.raises(ValueError, match="same items"):
        E.paired_bootstrap([1.0, 0.0], [1.0])


def test_arithmetic_items_agree_with_the_graded_tests():
    tok = load_tokenizer()
    probs = arithmetic_test_set(3)
    sft = PT.load_sft("cpu")
    greedy = E.arithmetic_items(sft, tok, probs)
    assert greedy["scores"] == [float(x) for x in _chat_ok(sft, tok, probs)]
    assert greedy["settings"] == {"format": "chat", "decoding": "greedy", "samples": 1}
    sampled = E.arithmetic_items(sft, tok, probs, temperature=1.0, samples=4, generator=torch.Generator().manual_seed(0))
    assert all(s in (0, 0.25, 0.5, 0.75, 1) for s in sampled["scores"])
    assert sampled["settings"]["decoding"] == "sampled at T = 1" and len(sampled["replies"][0]) == 4
    base = load_base("cpu")
    own = E.arithmetic_items(base, tok, probs, chat=False)
    assert sum(own["scores"]) / len(probs) == pytest.approx(arithmetic_accuracy(base, tok, probs)["all"])
    with pytest.raises(ValueError, match="greedily only"):
        E.arithmetic_items(base, tok, probs, chat=False, temperature=1.0)
    with pytest.raises(ValueError, match="samples=1"):
        E.arithmetic_items(sft, tok, probs, samples=2)
    with pytest.raises(ValueError, match="no problems"):
        E.arithmetic_items(sft, tok, [])


def _chat_ok(model, tok, probs):
    from helpers.arithmetic import check_answer
    return [check_answer(p, r) for p, r in zip(probs, PT.chat_accuracy(model, tok, probs)["replies"])]


# -- the rest of the harness (07.2) ------------------------------------------------------------------------------
import itertools  # noqa: E402
import types  # noqa: E402

from helpers.data import split_documents  # noqa: E402
from helpers.fim import fim_prompt_ids  # noqa: E402
from helpers.pretraining import passkey_accuracy  # noqa: E402


class RowLM(torch.nn.Module):
    """A stand-in language model whose next-token logits are one fixed row, whatever the input, so every
    log-likelihood is known exactly: log p(t) = log_softmax(row)[t] at every position. ``script`` maps a prompt
    (tuple of ids) to the tokens ``generate`` writes after it."""

    def __init__(self, row: torch.Tensor, max_seq_len: int = 512, script: dict | None = None):
        super().__init__()
        self.row = torch.nn.Parameter(row.float(), requires_grad=False)
        self.cfg = types.SimpleNamespace(max_seq_len=max_seq_len)
        self.script = script or {}

    def forward(self, idx):
        return {"logits": self.row.expand(*idx.shape, -1)}

    def generate(self, idx, max_new_tokens, temperature=0.0, generator=None, stop_id=None, pad_id=0, **kw):
        rows = []
        for r in idx.tolist():
            cont = list(self.script[tuple(r)])[:max_new_tokens]
            rows.append(r + cont + [pad_id] * (max_new_tokens - len(cont)))
        return torch.tensor(rows)


def _levenshtein(a: str, b: str) -> int:                 # the textbook recursion, memoised: an independent reference
    from functools import lru_cache

    @lru_cache(None)
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def test_edit_similarity_is_one_minus_the_normalised_levenshtein_distance():
    assert E.edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert E.edit_similarity("", "") == 1.0 and E.edit_similarity("abc", "") == 0.0
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("ab(): ") for _ in range(rng.randint(0, 8)))
        b = "".join(rng.choice("ab(): ") for _ in range(rng.randint(0, 8)))
        want = 1.0 if not a and not b else 1 - _levenshtein(a, b) / max(len(a), len(b))
        assert E.edit_similarity(a, b) == pytest.approx(want)
        assert E.edit_similarity(a, b) == pytest.approx(E.edit_similarity(b, a))
    with pytest.raises(ValueError, match="two str"):
        E.edit_similarity("a", None)


def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_correct_sample():
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                draws = list(itertools.combinations([1] * c + [0] * (n - c), k))
                assert E.pass_at_k(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws), abs=1e-12)
        assert all(E.pass_at_k(n, c, 1) == pytest.approx(c / n) for c in range(n + 1))
    for bad in ((0, 0, 1), (4, 5, 1), (4, 1, 5), (4, 1, 0), (4.0, 1, 1)):
        with pytest.raises(ValueError, match="pass_at_k"):
            E.pass_at_k(*bad)


def _uniform_row(tok):
    return torch.zeros(tok.vocab_size)


def _favour_row(tok, token: int, logit: float = 5.0):
    row = torch.zeros(tok.vocab_size)
    row[token] = logit
    return row


def test_cloze_scores_are_the_known_log_likelihoods_and_normalisation_changes_the_pick():
    tok = load_tokenizer()
    the, also = tok.encode(" the")[0], tok.encode(" and")
    assert tok.encode(" the the the") == [the] * 3 and len(also) == 1
    model = RowLM(_favour_row(tok, the))
    logp = torch.log_softmax(model.row.double(), -1)
    item = {"context": "Once upon a time", "options": [" and", " the the the"], "answer": 0}
    res = E.cloze_items(model, tok, [item], normalize="total")
    assert res["loglik"][0] == pytest.approx([logp[also[0]].item(), 3 * logp[the].item()], rel=1e-6)
    assert res["n_tokens"] == [[1, 3]] and res["n_bytes"] == [[4, 12]]
    # total: one unlikely token (≈ −8.3) beats three likely ones (3 × ≈ −3.4); per token or per byte it loses
    assert res["scores"] == [1.0] and E.cloze_rescore(res, "per_token") == [0.0]
    assert E.cloze_rescore(res, "per_byte") == [0.0]
    assert E.cloze_items(model, tok, [item], normalize="per_token")["scores"] == [0.0]
    assert res["chance"] == 0.5 and res["settings"]["scoring"] == "total log-likelihood"


def test_cloze_under_a_uniform_model_picks_the_fewest_tokens_and_shares_ties():
    tok = load_tokenizer()
    model = RowLM(_uniform_row(tok))
    short_right = {"context": "x", "options": [" the the", " x", " the the the"], "answer": 1}
    long_right = {"context": "x", "options": [" the the", " x", " the the the"], "answer": 2}
    tie = {"context": "x", "options": [" x", " y", " z", " a"], "answer": 3}
    res = E.cloze_items(model, tok, [short_right, long_right, tie])
    assert res["scores"] == [1.0, 0.0, 0.25]                 # four one-token options tie: the answer gets 1/4
    assert res["chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 4) / 3)
    # k keeps the answer and the first k − 1 others: for long_right, k = 2 keeps options 2 and 0 (3 vs 2 tokens)
    assert E.cloze_rescore(res, "total", k=2) == [1.0, 0.0, 0.5]


def test_cloze_items_batching_does_not_change_a_real_models_log_likelihoods():
    tok = load_tokenizer()
    base = load_base("cpu")
    items = E.cloze_set(tok, split_documents("code")["val"], 6, k=4, seed=3)
    one, many = E.cloze_items(base, tok, items, batch_size=1), E.cloze_items(base, tok, items, batch_size=64)
    for a, b in zip(one["loglik"], many["loglik"]):
        assert a == pytest.approx(b, abs=2e-3)
    it = items[0]                                            # and by hand: a full forward of context + option
    ctx, ids = tok.encode(it["context"]), tok.encode(it["options"][1])
    with torch.no_grad():
        logp = base(torch.tensor([ctx + ids[:-1]]))["logits"][0].float().log_softmax(-1)
    want = sum(logp[len(ctx) - 1 + t, ids[t]].item() for t in range(len(ids)))
    assert one["loglik"][0][1] == pytest.approx(want, abs=1e-3)


def test_cloze_set_blanks_the_true_continuation_among_distinct_options():
    tok = load_tokenizer()
    docs = split_documents("code")["val"]
    for unit in ("word", "line"):
        items = E.cloze_set(tok, docs, 20, k=5, unit=unit, context_tokens=40, seed=1)
        assert items == E.cloze_set(tok, docs, 20, k=5, unit=unit, context_tokens=40, seed=1)
        assert len(items) == 20 and len({it["options"][it["answer"]] for it in items}) == 20
        for it in items:
            assert len(it["options"]) == len(set(it["options"])) == 5
            assert any(it["context"] + it["options"][it["answer"]] in d for d in docs)
            lead = " " if unit == "word" else "\n"
            assert all(o.startswith(lead) or (unit == "word" and o[:1].isspace()) for o in it["options"])
            earlier = it["context"] + "\n" if unit == "line" else it["context"][:it["context"].rfind("\n") + 1]
            assert sum(len(tok.encode(ln)) for ln in earlier.splitlines(keepends=True)) <= 40   # the line budget
    with pytest.raises(ValueError, match="unit"):
        E.cloze_set(tok, docs, 5, unit="sentence")
    with pytest.raises(ValueError, match="k must be"):
        E.cloze_set(tok, docs, 5, k=1)
    with pytest.raises(ValueError, match="list of str"):
        E.cloze_set(tok, "def f(): pass", 5)
    with pytest.raises(ValueError, match="could be built"):
        E.cloze_set(tok, ["a\nbb ccc ddd eee\n"] * 2, 5, k=2)


def test_cloze_bad_inputs_are_refused():
    tok = load_tokenizer()
    model = RowLM(_uniform_row(tok), max_seq_len=8)
    with pytest.raises(ValueError, match="no items"):
        E.cloze_items(model, tok, [])
    with pytest.raises(ValueError, match="normalize"):
        E.cloze_items(model, tok, [{"context": "x", "options": [" a", " b"], "answer": 0}], normalize="mean")
    with pytest.raises(ValueError, match="answer index"):
        E.cloze_items(model, tok, [{"context": "x", "options": [" a", " b"], "answer": 2}])
    with pytest.raises(ValueError, match="empty context"):
        E.cloze_items(model, tok, [{"context": "", "options": [" a", " b"], "answer": 0}])
    with pytest.raises(ValueError, match="max_seq_len"):
        E.cloze_items(model, tok, [{"context": "x " * 20, "options": [" a", " b"], "answer": 0}])
    res = E.cloze_items(model, tok, [{"context": "x", "options": [" a", " b"], "answer": 0}])
    with pytest.raises(ValueError, match="k must be"):
        E.cloze_rescore(res, k=3)


def test_code_line_set_items_are_a_line_tail_between_fixed_token_contexts():
    tok = load_tokenizer()
    docs = split_documents("code")["val"]
    items = E.code_line_set(tok, docs, 25, prefix_tokens=40, suffix_tokens=20, seed=2)
    assert items == E.code_line_set(tok, docs, 25, prefix_tokens=40, suffix_tokens=20, seed=2)
    for p, m, s in items:
        assert len(tok.encode(p)) == 40 and len(tok.encode(s)) == 20
        assert m.endswith("\n") and "\n" not in m[:-1] and m.strip() and len(tok.encode(m)) <= 16
        assert any(p + m + s in d for d in docs)
    with pytest.raises(ValueError, match="only 0 of the 3"):
        E.code_line_set(tok, ["x = 1\n" * 5], 3)
    with pytest.raises(ValueError, match="prefix_tokens"):
        E.code_line_set(tok, docs, 3, prefix_tokens=0)


def test_code_items_reads_a_hand_scripted_completion_exactly():
    tok = load_tokenizer()
    p, m, s = "def f(x):\n    return", " x + 1\n", "\n\nprint(f(2))\n"
    fim_prompt = tuple(fim_prompt_ids(tok, p, s))
    l2r_prompt = tuple(tok.encode(p))
    right, eot = tok.encode(m), tok.eot_id
    script = {fim_prompt: right + [eot], l2r_prompt: right + tok.encode("print(1)\n")}
    model = RowLM(_uniform_row(tok), script=script)
    fim = E.code_items(model, tok, [(p, m, s)], mode="fim")
    assert fim["scores"] == [1.0] and fim["similarity"] == [1.0] and fim["completions"] == [[m]]
    assert fim["settings"] == {"task": "FIM, PSM order (prefix and suffix given)", "decoding": "greedy", "samples": 1,
                               "max_new_tokens": 16, "stop": "<|endoftext|>"}
    l2r = E.code_items(model, tok, [(p, m, s)], mode="l2r")   # cut at the first line break: the extra line is dropped
    assert l2r["scores"] == [1.0] and l2r["completions"] == [[m]]
    # FIM that writes the right middle but never stops does not count; a near miss scores by edit similarity
    model.script[fim_prompt] = right + tok.encode("y")
    assert E.code_items(model, tok, [(p, m, s)], mode="fim")["scores"] == [0.0]
    model.script[fim_prompt] = tok.encode(" x + 2\n") + [eot]
    miss = E.code_items(model, tok, [(p, m, s)], mode="fim")
    assert miss["scores"] == [0.0] and miss["similarity"] == [pytest.approx(1 - 1 / 7)]


def test_code_items_greedy_exact_match_agrees_with_teacher_forced_argmax_on_the_base_model():
    tok = load_tokenizer()
    base = load_base("cpu")
    items = E.code_line_set(tok, split_documents("code")["val"], 40, seed=5)
    got = E.code_items(base, tok, items, mode="l2r")["scores"]
    forced = []
    with torch.no_grad():
        for p, m, s in items:
            ctx, ids = tok.encode(p), tok.encode(m)
            logits = base(torch.tensor([ctx + ids[:-1]]))["logits"][0]
            forced.append(float(logits[len(ctx) - 1:].argmax(-1).tolist() == ids))
    # every middle the model ranks first token by token is written by greedy decoding (the converse can fail only
    # when greedy writes the same text with other tokens)
    assert all(g >= f for g, f in zip(got, forced)) and sum(forced) >= 1
    g1 = E.code_items(base, tok, items[:8], mode="l2r", temperature=1.0, samples=3,
                      generator=torch.Generator().manual_seed(0))
    g2 = E.code_items(base, tok, items[:8], mode="l2r", temperature=1.0, samples=3,
                      generator=torch.Generator().manual_seed(0))
    assert g1["completions"] == g2["completions"] and all(len(c) == 3 for c in g1["completions"])
    assert all(s in (0, 1 / 3, 2 / 3, 1) for s in g1["scores"])
    assert g1["settings"]["decoding"] == "sampled at T = 1" and g1["settings"]["samples"] == 3


def test_code_items_bad_inputs_are_refused():
    tok = load_tokenizer()
    model = RowLM(_uniform_row(tok), max_seq_len=16)
    ex = [("x = ", "1\n", "")]
    with pytest.raises(ValueError, match="mode"):
        E.code_items(model, tok, ex, mode="psm")
    with pytest.raises(ValueError, match="no examples"):
        E.code_items(model, tok, [])
    with pytest.raises(ValueError, match="samples=1"):
        E.code_items(model, tok, ex, samples=2)
    with pytest.raises(ValueError, match="temperature"):
        E.code_items(model, tok, ex, temperature=-1.0)
    with pytest.raises(ValueError, match="non-empty prefix"):
        E.code_items(model, tok, [("", "1\n", "")], mode="l2r")
    with pytest.raises(ValueError, match="no room"):
        E.code_items(model, tok, [("x " * 20, "1\n", "")], mode="l2r")
    with pytest.raises(ValueError, match="mode"):
        E.middle_nll(model, tok, ex, mode="psm")
    with pytest.raises(ValueError, match="no examples"):
        E.middle_nll(model, tok, [])


def test_middle_nll_is_the_known_per_token_loss_and_stop_loss():
    tok = load_tokenizer()
    the = tok.encode(" the")[0]
    model = RowLM(_favour_row(tok, the))
    logp = torch.log_softmax(model.row.double(), -1)
    ex = [("a = b", " the the\n", "c = d\n")]
    mid = tok.encode(" the the\n")
    want = -sum(logp[t].item() for t in mid) / len(mid)
    fim, l2r = E.middle_nll(model, tok, ex, mode="fim"), E.middle_nll(model, tok, ex, mode="l2r")
    assert fim["scores"] == [pytest.approx(want, rel=1e-6)] and l2r["scores"] == [pytest.approx(want, rel=1e-6)]
    assert fim["stop_nll"] == [pytest.approx(-logp[tok.eot_id].item(), rel=1e-6)] and l2r["stop_nll"] is None


def test_passkey_items_agree_with_passkey_accuracy():
    tok = load_tokenizer()
    base = load_base("cpu")
    res = E.passkey_items(base, tok, 128, 12, seed=4)
    assert sum(res["scores"]) / 12 == pytest.approx(passkey_accuracy(base, tok, 128, n=12, seed=4))
    assert all(v >= 0 for v in res["nll"]) and res["chance"] == 1 / 90_000
    assert res["settings"]["length"] == 128 and res["settings"]["decoding"].startswith("greedy")
    with pytest.raises(ValueError, match="max_seq_len"):
        E.passkey_items(base, tok, 512, 4)
    with pytest.raises(ValueError, match="n must be"):
        E.passkey_items(base, tok, 128, 0)
