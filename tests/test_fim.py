"""helpers.fim: code chunks, FIM cut points, PSM text and ids, the FIM-rate token stream."""
import random
import re

import pytest
from hypothesis import given, settings, strategies as st

from helpers.data import split_documents
from helpers.fim import (FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, code_chunks, encode_psm, fim_prompt_ids, fim_rate_stream,
                         fim_split, psm)
from helpers.tokenizer import Tokenizer, load_tokenizer

TOK = load_tokenizer()
PRE, SUF, MID = (TOK.special_tokens[s] for s in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE))

code_like = st.lists(st.sampled_from(["def f(x):\n", "    return x\n", "\n", "    y = 1  # c\n", "class A:\n",
                                      "    pass\n", "x" * 90 + "\n", "   \n", "z = 2"]), max_size=60).map("".join)


# -- code_chunks -------------------------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(code_like, st.integers(1, 200))
def test_code_chunks_partition_the_text_at_line_ends(text, max_chars):
    chunks = code_chunks(text, max_chars)
    assert "".join(chunks) == text                                     # nothing lost, nothing added, in order
    assert all(chunks)                                                 # no empty chunk
    for c in chunks[:-1]:
        assert c.endswith("\n")                                        # cuts only at line ends
    for c in chunks:                                                   # over the limit only if it is a single line
        assert len(c) <= max_chars or c.count("\n") <= 1 and not c[:-1].count("\n")


def test_code_chunks_prefer_blank_lines():
    blocks = ["def f():\n    return 1\n\n", "def g():\n    return 2\n\n", "def h():\n    return 3\n"]
    text = "".join(blocks)
    assert code_chunks(text, 30) == blocks                             # each block fits alone: cut between blocks
    assert code_chunks(text, 60) == [blocks[0] + blocks[1], blocks[2]]   # two blocks fit together
    long_block = "".join(f"x{i} = {i}\n" for i in range(20))           # no blank line: cut at line ends
    parts = code_chunks(long_block, 25)
    assert "".join(parts) == long_block and all(len(p) <= 25 for p in parts) and len(parts) > 1


def test_code_chunks_on_the_corpus():
    docs = split_documents("code")["train"]
    chunks = [c for d in docs for c in code_chunks(d)]
    assert "".join(chunks) == "".join(docs)
    over = [c for c in chunks if len(c) > 700]
    assert all(c.count("\n") <= 1 for c in over)                       # only single over-long lines exceed 700
    assert 1500 < len(chunks) < 2500


def test_code_chunks_bad_inputs():
    with pytest.raises(ValueError, match="max_chars must be an int ≥ 1"):
        code_chunks("x", 0)
    with pytest.raises(ValueError, match="max_chars"):
        code_chunks("x", True)
    with pytest.raises(TypeError, match="must be a str"):
        code_chunks(b"x")


# -- fim_split, psm -------------------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80), st.integers(0, 10_000))
def test_fim_split_is_a_partition_and_seeded(text, seed):
    p, m, s = fim_split(text, random.Random(seed))
    assert p + m + s == text
    assert (p, m, s) == fim_split(text, random.Random(seed))


def test_fim_split_cut_points_are_uniform():
    """Two uniform cut points, sorted: E[prefix] = E[suffix] = 1/3 of the text, P[empty middle] = 1/(n+1)."""
    text = "a" * 300
    rng = random.Random(0)
    cuts = [fim_split(text, rng) for _ in range(6000)]
    for share in (sum(len(p) for p, _, _ in cuts), sum(len(s) for _, _, s in cuts), sum(len(m) for _, m, _ in cuts)):
        assert share / (6000 * 300) == pytest.approx(1 / 3, abs=0.015)
    n = 5                                                                # the exact distribution on a short text
    rng = random.Random(1)
    counts = {}
    for _ in range(36_000):
        p, m, _ = fim_split("b" * n, rng)
        counts[(len(p), len(m))] = counts.get((len(p), len(m)), 0) + 1
    for (i, k), c in counts.items():                                    # P(i, i+k) = (2 if k > 0 else 1) / (n+1)^2
        want = (2 if k else 1) / (n + 1) ** 2
        assert c / 36_000 == pytest.approx(want, abs=0.006)


def test_fim_split_bad_inputs():
    with pytest.raises(TypeError, match="random.Random"):
        fim_split("abc", 0)
    with pytest.raises(TypeError, match="must be a str"):
        fim_split(None, random.Random(0))


def test_psm_text():
    assert psm("A", "B", "C") == "<|fim_prefix|>A<|fim_suffix|>C<|fim_middle|>B"
    with pytest.raises(TypeError, match="psm \\(suffix\\)"):
        psm("a", "b", 3)


# -- ids ------------------------------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=40))
def test_encode_psm_layout(p, m, s):
    ids = encode_psm(TOK, p, m, s)
    want = [PRE] + TOK.encode(p) + [SUF] + TOK.encode(s) + [MID] + TOK.encode(m) + [TOK.eot_id]
    assert ids == want
    prompt = fim_prompt_ids(TOK, p, s)
    assert ids[:len(prompt)] == prompt and prompt[-1] == MID
    assert TOK.decode(ids) == psm(p, m, s) + "<|endoftext|>"


def test_special_token_text_in_code_stays_plain_bytes():
    code = 'TAG = "<|fim_middle|>"  # <|endoftext|>\n'
    ids = encode_psm(TOK, code, code, code)
    assert ids.count(MID) == 1 and ids.count(TOK.eot_id) == 1 and ids.count(PRE) == 1 and ids.count(SUF) == 1


def test_tokenizer_without_fim_tokens_is_refused():
    bare = Tokenizer([], special_tokens=("<|endoftext|>",))
    with pytest.raises(ValueError, match="no special token <\\|fim_prefix\\|>"):
        fim_prompt_ids(bare, "a", "b")


# -- fim_rate_stream -----------------------------------------------------------------------------------------------------------
CHUNKS = code_chunks(split_documents("code")["val"][0], 300)


def _psm_docs(ids):
    """(start, end) of every PSM document in a stream: from <|fim_prefix|> to its <|endoftext|> inclusive."""
    out, start = [], None
    for k, t in enumerate(ids):
        if t == PRE:
            start = k
        elif t == TOK.eot_id and start is not None:
            out.append((start, k + 1))
            start = None
    return out


def test_rate_zero_is_the_plain_encoding():
    ids, n = fim_rate_stream(TOK, CHUNKS, rate=0.0, seed=5)
    assert n == 0 and ids == TOK.encode("".join(CHUNKS))


def test_rate_one_rewrites_every_chunk_and_loses_nothing():
    ids, n = fim_rate_stream(TOK, CHUNKS, rate=1.0, seed=3)
    docs = _psm_docs(ids)
    assert n == len(CHUNKS) == len(docs) and ids.count(TOK.eot_id) == len(CHUNKS)
    assert docs[0][0] == 0 and all(a == b for (_, b), (a, _) in zip(docs, docs[1:]))     # back to back
    rng = random.Random(3)
    for (a, b), chunk in zip(docs, CHUNKS):                           # each document is its chunk, cut as seeded
        rng.random()                                                  # the rate draw comes first
        p, m, s = fim_split(chunk, rng)
        assert ids[a:b] == encode_psm(TOK, p, m, s)
        text = TOK.decode(ids[a:b])
        got = re.fullmatch(r"<\|fim_prefix\|>(.*)<\|fim_suffix\|>(.*)<\|fim_middle\|>(.*)<\|endoftext\|>", text, re.S)
        assert got.group(1) + got.group(3) + got.group(2) == chunk    # prefix + middle + suffix


def test_rate_point_one_share_and_separators():
    chunks = [c for d in split_documents("code")["train"][:12] for c in code_chunks(d)]
    ids, n = fim_rate_stream(TOK, chunks, rate=0.1, seed=0)
    sd = (0.1 * 0.9 / len(chunks)) ** 0.5
    assert abs(n / len(chunks) - 0.1) < 4 * sd
    docs = _psm_docs(ids)
    assert len(docs) == n
    for a, _ in docs:                                                 # every PSM document stands alone
        assert a == 0 or ids[a - 1] == TOK.eot_id
    plain = [t for k, t in enumerate(ids) if not any(a <= k < b for a, b in docs) and t != TOK.eot_id]
    assert PRE not in plain and SUF not in plain and MID not in plain
    assert fim_rate_stream(TOK, chunks, 0.1, seed=0) == (ids, n)      # seeded
    assert fim_rate_stream(TOK, chunks, 0.1, seed=1)[0] != ids


def test_fim_rate_stream_bad_inputs():
    with pytest.raises(ValueError, match="rate must be in \\[0, 1\\]"):
        fim_rate_stream(TOK, CHUNKS, rate=1.5)
    with pytest.raises(ValueError, match="rate"):
        fim_rate_stream(TOK, CHUNKS, rate=float("nan"))
    with pytest.raises(TypeError, match="list of str"):
        fim_rate_stream(TOK, "one string", rate=0.1)
    with pytest.raises(TypeError, match="must be a str"):
        fim_rate_stream(TOK, ["ok", 3], rate=0.0)
