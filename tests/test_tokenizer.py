"""helpers.tokenizer: round trips, special tokens, speed, determinism, a brute-force BPE reference."""
import json
import re
import time
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import tokenizer as T
from helpers.data import DataFileError, load_text, record_checksum
from helpers.runtime import repo_root

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
            "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]


@pytest.fixture(scope="module")
def tok():
    return T.load_tokenizer()


def test_shipped_vocabulary(tok):
    assert tok.vocab_size == len(tok) == 4096
    assert len(tok.merges) == 4096 - 256 - 8
    assert list(tok.special_tokens) == SPECIALS
    assert list(tok.special_tokens.values()) == list(range(4088, 4096))
    assert tok.eot_id == tok.special_tokens["<|endoftext|>"] == 4088
    assert [tok.token_bytes(i) for i in range(256)] == [bytes([i]) for i in range(256)]
    for r, (a, b) in enumerate(tok.merges):
        assert tok.token_bytes(256 + r) == tok.token_bytes(a) + tok.token_bytes(b)
    assert tok.token_bytes(4090) == b"<|user|>"
    with pytest.raises(ValueError, match="out of range"):
        tok.token_bytes(4096)


HARD = [
    "", " ", "\x00", "a\x00b", "\r\n\r\n", "\t\t x", "    \n", "e\u0301\u0302 n\u0303", "👩‍👩‍👧‍👦 🇫🇷 👍🏽",
    "日本語のテキスト", "مرحبا بالعالم", "Ελληνικά 123456789", "x²³ ½ ٣٤٥", "it's we'll THEY'RE", "__init__(self)",
    "\ufeffBOM", "\U0010ffff\ue000", "a" * 5000, " " * 1000 + "x", "\u2028\u2029\x0b\x0c\x1c",
]


@pytest.mark.parametrize("text", HARD)
def test_round_trip_hard_cases(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < 4088 for i in ids)


@settings(max_examples=300, deadline=None)
@given(st.text())  # any Unicode except lone surrogates: emoji, combining marks, NUL, RTL, ...
def test_round_trip_any_text(text):
    tok = T.load_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(SPECIALS)), max_size=8))
def test_special_tokens_only_when_allowed(parts):
    tok = T.load_tokenizer()
    text = "".join(parts)
    plain = tok.encode(text)  # default: allowed_special="none"
    assert not set(plain) & set(tok.special_tokens.values())
    assert tok.decode(plain) == text
    ids = tok.encode(text, allowed_special="all")
    assert tok.decode(ids) == text
    for s, i in tok.special_tokens.items():
        assert ids.count(i) == text.count(s)
    only = tok.encode(text, allowed_special={"<|end|>"})
    assert set(only) & set(tok.special_tokens.values()) <= {tok.special_tokens["<|end|>"]}
    assert only.count(tok.special_tokens["<|end|>"]) == text.count("<|end|>")


def test_allowed_special_examples(tok):
    text = "<|user|>hi<|end|><|assistant|>hello<|endoftext|>"
    ids = tok.encode(text, allowed_special="all")
    assert ids[0] == 4090 and ids[-1] == 4088 and tok.decode(ids) == text
    assert tok.encode(text, allowed_special=set()) == tok.encode(text)
    assert tok.encode("<|endoftext|>") == tok.encode("<|endoftext|>", allowed_special={"<|end|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text, allowed_special="<|endoftext|>")
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode(text, allowed_special={"<|bos|>"})


def test_decode_inputs_and_errors(tok):
    ids = tok.encode("Hello, world!")
    assert tok.decode(torch.tensor(ids)) == "Hello, world!"
    assert tok.decode(bytes("é", "utf-8")[:1]) == "\ufffd"  # half a character: replacement char
    with pytest.raises(UnicodeDecodeError):
        tok.decode([0xC3], errors="strict")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([5, 4096])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="surrogate"):
        tok.encode("a\ud800b")
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


def test_pre_tokenisation_covers_every_character():
    pat = re.compile(T.PATTERN)
    for text in HARD + [load_text("code")[:20000]]:
        assert "".join(pat.findall(text)) == text
    assert pat.findall("x = 123456 + foo_bar") == ["x", " =", " 123", "456", " +", " foo_bar"]


def test_encode_a_megabyte_in_seconds():
    text = (load_text("shakespeare") + load_text("code"))[:1_000_000]
    fresh = T.Tokenizer.load(repo_root() / "data" / "tokenizer.json")  # empty cache
    t0 = time.perf_counter()
    ids = fresh.encode(text)
    dt = time.perf_counter() - t0
    assert dt < 10.0, f"encoding 1 MB took {dt:.1f} s"
    assert fresh.decode(ids) == text
    assert 2.0 < len(text.encode()) / len(ids) < 5.0


# -- training -------------------------------------------------------------------------------------

def _reference_bpe(texts, n_merges, pattern=T.PATTERN):
    """Brute force: recount every pair over every piece occurrence after each merge."""
    words = [list(p.encode()) for t in texts for p in re.findall(pattern, t)]
    merges = []
    for r in range(n_merges):
        counts = Counter(p for w in words for p in zip(w, w[1:]))
        if not counts:
            break
        best = max(counts.values())
        pair = min(p for p, c in counts.items() if c == best)  # tie: smallest pair
        merges.append(pair)
        new = 256 + r
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


def _reference_encode(merges, piece: bytes):
    """Apply every merge in rank order to the whole piece (the definition of BPE encoding)."""
    ids = list(piece)
    for r, pair in enumerate(merges):
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(256 + r)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


SMALL = [load_text("shakespeare")[:6000], load_text("code")[:6000], load_text("arithmetic")[:3000]]


def test_training_matches_brute_force_reference():
    tok = T.train_bpe(SMALL, vocab_size=256 + 150 + 8)
    assert tok.merges == _reference_bpe(SMALL, 150)


def test_training_is_deterministic_and_stops_when_out_of_pairs():
    a = T.train_bpe(SMALL, vocab_size=700)
    b = T.train_bpe(list(SMALL), vocab_size=700)
    assert a.merges == b.merges and a.to_json() == b.to_json()
    tiny = T.train_bpe("abab", vocab_size=1000)
    assert tiny.merges == [(97, 98), (256, 256)] and tiny.vocab_size == 256 + 2 + 8
    with pytest.raises(ValueError, match="too small"):
        T.train_bpe("abc", vocab_size=260)


def test_encoding_equals_definition(tok):
    text = load_text("arithmetic")[:400] + load_text("shakespeare")[5000:5600] + load_text("code")[9000:9600]
    for piece in sorted(set(re.findall(T.PATTERN, text)))[:120]:
        assert tok.encode(piece) == _reference_encode(tok.merges, piece.encode())


def test_shipped_tokenizer_is_reproduced_by_training():
    t0 = time.perf_counter()
    tok = T.train_bpe(T.training_documents(), T.VOCAB_SIZE, T.SPECIAL_TOKENS)
    assert time.perf_counter() - t0 < 120
    assert tok.to_json() == (repo_root() / "data" / "tokenizer.json").read_text()


# -- the file -------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    tok = T.train_bpe(SMALL, vocab_size=400)
    tok.save(tmp_path / "t.json")
    back = T.Tokenizer.load(tmp_path / "t.json")
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(SMALL[0]) == tok.encode(SMALL[0])


@pytest.mark.parametrize("damage, match", [
    (lambda d: d.update(vocab_size=5000), "vocab_size"),
    (lambda d: d.update(merges=d["merges"][:-1]), "special token ids must be"),
    (lambda d: d["merges"].append(d["merges"][0]), "duplicate"),
    (lambda d: d["merges"].__setitem__(3, [4000, 1]), "does not exist yet"),
    (lambda d: d["merges"].__setitem__(3, [1, "x"]), "pair of integer"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.pop("pattern"), "pattern"),
    (lambda d: d["special_tokens"].update({"<|end|>": 5}), "special token ids"),
])
def test_damaged_tokenizer_file_gives_clear_error(tmp_path, damage, match):
    d = json.loads((repo_root() / "data" / "tokenizer.json").read_text())
    damage(d)
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(d))
    with pytest.raises(DataFileError, match=match) as e:
        T.Tokenizer.load(p)
    p.write_text(json.dumps(d)[:-3])
    with pytest.raises(DataFileError, match="damaged"):
        T.Tokenizer.load(p)
    assert "build_data.py tokenizer" in str(e.value)


def test_shipped_file_checked_by_checksum(tmp_path, monkeypatch):
    import shutil

    d = tmp_path / "data"
    shutil.copytree(repo_root() / "data", d)
    monkeypatch.setenv("COURSE_DATA", str(d))
    p = d / "tokenizer.json"
    p.write_text(p.read_text()[:-50])  # truncated
    with pytest.raises(DataFileError, match=r"tokenizer\.json was altered"):
        T.load_tokenizer()
    record_checksum("tokenizer.json", d)  # checksum now agrees, but the JSON is broken
    with pytest.raises(DataFileError, match="damaged"):
        T.load_tokenizer()
