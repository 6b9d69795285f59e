"""A byte-level BPE tokenizer: the GPT-2 / tiktoken recipe, which DeepSeek-V3 also uses (§4.1).

Text → UTF-8 bytes → tokens, so there is no unknown token: every string (any script, emoji, NUL)
encodes, and ``decode(encode(s)) == s``. Three layers:

1. **Pre-tokenisation.** A regular expression (:data:`PATTERN`) cuts text into pieces — words with
   their leading space, runs of up to three digits, punctuation runs, whitespace — and merges never
   cross a piece boundary (so ``" the"`` is one token, but never ``"e."``).
2. **Byte-pair merges.** Ids 0–255 are the bytes. Training repeatedly finds the most frequent
   adjacent pair (a, b) over all pieces (weighted by how often each piece occurs) and adds it as the
   new token ``256 + rank``; ties go to the smallest (a, b), so training is deterministic. Encoding
   a piece applies the learned merges in rank order.
3. **Special tokens.** Eight ids after the merges — end of text, chat turns, fill-in-the-middle —
   produced *only* when the caller allows them (``allowed_special``) and the literal text appears.
   With the default ``allowed_special="none"`` the text ``"<|endoftext|>"`` is plain bytes, so a
   document can never forge a control token.

The course tokenizer (``data/tokenizer.json``, 4,096 ids = 256 bytes + 3,832 merges + 8 specials) is
trained by ``scripts/build_data.py tokenizer`` on the training splits of the three domains.
DeepSeek-V3's has 128K ids and a pre-tokenizer that also joins punctuation with line breaks; the
report notes that this creates a token-boundary bias (a prompt without its final line break ends
mid-token) and randomly splits such tokens during training. Our pattern keeps line breaks apart from
punctuation, so that bias does not arise here.
"""
from __future__ import annotations

import heapq
import json
import numbers
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

__all__ = ["Tokenizer", "load_tokenizer", "train_bpe", "training_documents", "PATTERN", "SPECIAL_TOKENS", "VOCAB_SIZE"]

VOCAB_SIZE = 4096
SPECIAL_TOKENS = (
    "<|endoftext|>",   # end of a document (separates packed documents)
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",   # chat turns (chapter 6)
    "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",   # fill-in-the-middle, PSM order (§4.1)
)
# Pre-tokenisation with the standard `re` module (no \p{..} classes there): [^\W\d] is "letters and
# underscore" (so a Python identifier like __init__ stays one piece), \d{1,3} splits numbers into
# chunks of at most three digits, [^\s\w] is punctuation and symbols (emoji, combining marks, ...).
# Unlike GPT-4's pattern, a number keeps its leading space (" 15" like " the"): arithmetic text then
# takes about 30% fewer tokens, at no cost on the other domains.
# Together the alternatives match every character, so the pieces always join back to the text.
PATTERN = (
    r"'(?:[sdmt]|ll|ve|re)"   # English contractions: 's 'd 'm 't 'll 've 're
    r"| ?[^\W\d]+"           # a word with an optional leading space
    r"| ?\d{1,3}"            # a number with an optional leading space, at most three digits per piece
    r"| ?[^\s\w]+"           # punctuation / symbols with an optional leading space
    r"|\s*[\r\n]+"           # line breaks (with the spaces before them)
    r"|\s+(?!\S)"            # spaces, except the last one (it goes to the next word)
    r"|\s+"                  # any remaining whitespace
)
FORMAT, VERSION = "course-byte-bpe", 1
_REBUILD = "python scripts/build_data.py tokenizer"


def _check_id(i, vocab_size: int, where: str) -> None:
    if not isinstance(i, numbers.Integral) or isinstance(i, bool):
        raise ValueError(f"{where}: token id {i!r} is not an int; token ids are whole numbers in [0, {vocab_size}) "
                         "(convert a float tensor with .long())")
    if not 0 <= i < vocab_size:
        raise ValueError(f"{where}: token id {i} out of range [0, {vocab_size}); pass ids from encode() or from a "
                         "model built with this tokenizer's vocab_size")


class Tokenizer:
    """Byte-level BPE: ``merges[r] = (a, b)`` makes token ``256 + r``; specials follow the merges."""

    def __init__(self, merges, special_tokens=SPECIAL_TOKENS, pattern: str = PATTERN):
        self.merges = [tuple(int(x) for x in m) for m in merges]
        self.pattern = pattern
        self._pat = re.compile(pattern)
        vocab = [bytes([i]) for i in range(256)]
        for r, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + r and 0 <= b < 256 + r):
                raise ValueError(f"merge {r} = ({a}, {b}) refers to a token that does not exist yet (ids < {256 + r})")
            vocab.append(vocab[a] + vocab[b])
        self._ranks = {m: r for r, m in enumerate(self.merges)}
        if len(self._ranks) != len(self.merges):
            raise ValueError("merges contain a duplicate pair")
        n = len(vocab)
        if isinstance(special_tokens, dict):
            names = sorted(special_tokens, key=special_tokens.get)
            if [special_tokens[s] for s in names] != list(range(n, n + len(names))):
                raise ValueError(f"special token ids must be {n}..{n + len(names) - 1} (right after the merges), got {special_tokens}")
        else:
            names = list(special_tokens)
        if len(set(names)) != len(names) or not all(isinstance(s, str) and s for s in names):
            raise ValueError(f"special tokens must be distinct non-empty strings, got {names}")
        self.special_tokens: dict[str, int] = {s: n + i for i, s in enumerate(names)}
        self._bytes = vocab + [s.encode("utf-8") for s in names]
        self.vocab_size = len(self._bytes)
        self._cache: dict[str, list[int]] = {}

    # -- basic properties -------------------------------------------------------------------
    @property
    def eot_id(self) -> int:
        """Id of ``<|endoftext|>``, the document separator."""
        return self.special_tokens["<|endoftext|>"]

    def token_bytes(self, i: int) -> bytes:
        """The bytes token ``i`` stands for (a special token: its literal UTF-8 text)."""
        _check_id(i, self.vocab_size, "token_bytes")
        return self._bytes[i]

    def token_str(self, i: int) -> str:
        """Token ``i`` as readable text (bytes that are not valid UTF-8 on their own shown as ``\\xNN``)."""
        return self.token_bytes(i).decode("utf-8", errors="backslashreplace")

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={len(self.special_tokens)})"

    # -- encoding ---------------------------------------------------------------------------
    def _bpe(self, piece: bytes) -> list[int]:
        ids = list(piece)
        ranks = self._ranks
        while len(ids) > 1:
            best, best_rank = None, None
            for p in zip(ids, ids[1:]):
                r = ranks.get(p)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = p, r
            if best is None:
                break
            new, out, i, n = 256 + best_rank, [], 0, len(ids)
            while i < n:
                if i < n - 1 and ids[i] == best[0] and ids[i + 1] == best[1]:
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` with no special tokens at all (their literal text becomes ordinary bytes)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        out, cache = [], self._cache
        if len(cache) > 500_000:
            cache.clear()
        for piece in self._pat.findall(text):
            ids = cache.get(piece)
            if ids is None:
                try:
                    ids = cache[piece] = self._bpe(piece.encode("utf-8"))
                except UnicodeEncodeError as e:
                    raise ValueError(f"text contains a lone surrogate ({e}); it is not valid Unicode text and has no UTF-8 bytes") from None
            out += ids
        return out

    def encode(self, text: str, allowed_special="none") -> list[int]:
        """Token ids of ``text``.

        ``allowed_special``: ``"none"`` (default: special-token text is encoded as ordinary bytes),
        ``"all"``, or a set of special-token strings that may be produced where their literal text
        appears.
        """
        if allowed_special == "none":
            return self.encode_ordinary(text)
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif isinstance(allowed_special, (set, frozenset, list, tuple)):
            allowed = set(allowed_special)
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise ValueError(f"unknown special tokens {sorted(unknown)}; this tokenizer has {list(self.special_tokens)}")
        else:
            raise ValueError(f"allowed_special must be 'none', 'all' or a set of special tokens, got {allowed_special!r}"
                             " (for one token write {'<|endoftext|>'})")
        if not allowed:
            return self.encode_ordinary(text)
        splitter = "(" + "|".join(re.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        out = []
        for k, part in enumerate(re.split(splitter, text)):
            if k % 2:
                out.append(self.special_tokens[part])
            elif part:
                out += self.encode_ordinary(part)
        return out

    def decode(self, ids, errors: str = "replace") -> str:
        """Text of ``ids`` (a list, tensor or array). Byte sequences that are not valid UTF-8 (a cut in
        the middle of a character) become U+FFFD unless ``errors="strict"``."""
        if errors not in ("strict", "replace", "ignore", "backslashreplace"):
            raise ValueError(f"decode: errors must be 'replace', 'strict', 'ignore' or 'backslashreplace', got {errors!r}")
        if isinstance(ids, str) or not hasattr(ids, "__iter__"):
            raise TypeError(f"decode: ids must be a list (or 1-D tensor/array) of token ids, got {type(ids).__name__}; "
                            "for one id write decode([i])")
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = list(ids)
        for i in ids:
            if isinstance(i, (list, tuple)):
                raise ValueError("decode: ids must be one sequence of token ids, got a nested list (a batch?); "
                                 "decode each row: [tok.decode(row) for row in ids]")
            _check_id(i, self.vocab_size, "decode")
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors=errors)

    # -- files ------------------------------------------------------------------------------
    def to_json(self) -> str:
        head = {"format": FORMAT, "version": VERSION, "vocab_size": self.vocab_size, "pattern": self.pattern,
                "special_tokens": self.special_tokens}
        lines = ",\n".join(f"    [{a}, {b}]" for a, b in self.merges)
        body = json.dumps(head, indent=2, ensure_ascii=True)[:-2]
        return body + ',\n  "merges": [\n' + lines + "\n  ]\n}\n"

    def save(self, path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8", newline="\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        """Build from the parsed JSON; raises ``ValueError`` saying what is wrong."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} tokenizer file (format field is {d.get('format') if isinstance(d, dict) else None!r})")
        if d.get("version") != VERSION:
            raise ValueError(f"tokenizer format version {d.get('version')!r}; this code reads version {VERSION}")
        for key in ("merges", "special_tokens", "pattern", "vocab_size"):
            if key not in d:
                raise ValueError(f"tokenizer file has no {key!r} field")
        if not all(isinstance(m, list) and len(m) == 2 and all(isinstance(x, int) for x in m) for m in d["merges"]):
            raise ValueError("every merge must be a pair of integer ids")
        tok = cls(d["merges"], d["special_tokens"], d["pattern"])
        if tok.vocab_size != d["vocab_size"]:
            raise ValueError(f"vocab_size field says {d['vocab_size']} but merges and specials give {tok.vocab_size}")
        return tok

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Read a tokenizer file; a damaged file raises ``helpers.data.DataFileError`` with the fix."""
        from helpers.data import DataFileError

        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise DataFileError(f"tokenizer file {path} is missing: restore it with `git checkout -- data/tokenizer.json` "
                                f"or rebuild it with `{_REBUILD}`") from None
        except (ValueError, UnicodeDecodeError, re.error) as e:  # JSONDecodeError is a ValueError
            raise DataFileError(f"tokenizer file {path} is damaged ({e}): restore it with `git checkout -- data/tokenizer.json` "
                                f"or rebuild it with `{_REBUILD}`") from None


_loaded: dict = {}


def load_tokenizer() -> Tokenizer:
    """The course tokenizer, ``data/tokenizer.json`` (checksum-verified; cached after the first call)."""
    from helpers.data import data_path

    path = data_path("tokenizer.json")
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = Tokenizer.load(path)
    return _loaded[key]


def training_documents() -> list[str]:
    """What the course tokenizer is trained on: every training-split document of the three domains."""
    from helpers.data import DOMAINS, split_documents

    return [doc for d in DOMAINS for doc in split_documents(d)["train"]]


def train_bpe(text, vocab_size: int = VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, pattern: str = PATTERN,
              verbose: bool = False) -> Tokenizer:
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

    ``text`` is a string, or a list/dict of strings (pieces never span two of them). Each step adds
    the most frequent adjacent pair, counted over the *distinct* pre-tokenised pieces weighted by
    their counts; ties go to the smallest pair ``(a, b)``. Pair counts are kept up to date
    incrementally (only the pieces containing the merged pair are touched) and the best pair comes
    from a heap with lazy deletion, so a few MB train in about a minute of pure Python. Stops early
    (a smaller vocabulary) if no pair is left.
    """
    special_tokens = list(special_tokens)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ValueError(f"train_bpe: vocab_size must be an int, got {vocab_size!r}; e.g. vocab_size=4096")
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} is too small: it must hold 256 bytes + {len(special_tokens)} special tokens")
    texts = [text] if isinstance(text, str) else list(text.values()) if isinstance(text, dict) else list(text)
    if not all(isinstance(t, str) for t in texts):
        bad = next(t for t in texts if not isinstance(t, str))
        raise TypeError(f"train_bpe: text must be a str or a list/dict of str, found a {type(bad).__name__}; "
                        "decode or str() it first")
    pat = re.compile(pattern)
    counts: Counter = Counter()
    for t in texts:
        counts.update(pat.findall(t))
    words = [list(p.encode("utf-8")) for p in counts]
    freqs = list(counts.values())
    pair_counts: defaultdict = defaultdict(int)
    where: defaultdict = defaultdict(set)
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for p in zip(w, w[1:]):
            pair_counts[p] += f
            where[p].add(wi)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges, t0 = [], time.perf_counter()
    for r in range(n_merges):
        while heap:  # pop until an entry is current (counts change after it was pushed → stale)
            negc, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) == -negc and negc < 0:
                break
        else:
            break
        new = 256 + r
        merges.append(pair)
        a, b = pair
        for wi in where.pop(pair):
            w, f = words[wi], freqs[wi]
            out, i, n = [], 0, len(w)
            while i < n:
                if i < n - 1 and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            if len(out) == n:
                continue
            old_pairs, new_pairs = Counter(zip(w, w[1:])), Counter(zip(out, out[1:]))
            words[wi] = out
            for p in old_pairs.keys() | new_pairs.keys():
                delta = new_pairs[p] - old_pairs[p]
                if delta:
                    c = pair_counts[p] = pair_counts[p] + delta * f
                    if c > 0:
                        heapq.heappush(heap, (-c, p))
                    else:
                        del pair_counts[p]
                if new_pairs[p]:
                    where[p].add(wi)
        pair_counts.pop(pair, None)
        if verbose and (r + 1) % 500 == 0:
            print(f"  merge {r + 1}/{n_merges}: count {-negc}, {time.perf_counter() - t0:.1f} s")
    return Tokenizer(merges, special_tokens, pattern)
