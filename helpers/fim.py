"""Fill-in-the-middle (FIM, DeepSeek-V3 §4.1): teach a left-to-right model to complete a middle.

A document is cut at two random places into prefix, middle and suffix, and rewritten in PSM order
(Prefix-Suffix-Middle) with three special tokens::

    <|fim_prefix|> f_pre <|fim_suffix|> f_suf <|fim_middle|> f_middle <|endoftext|>

The model still only predicts the next token, left to right; but in this order the middle comes last,
after the model has read both sides, so next-token prediction on the transformed document *is* filling
the middle. At inference time one gives ``<|fim_prefix|> before <|fim_suffix|> after <|fim_middle|>``
and lets the model write until ``<|endoftext|>``.

The report applies FIM at the document level to a fraction 0.1 of the pre-training documents (as
DeepSeekCoder-V2 did) and says it does not hurt next-token prediction. The course's code documents are
whole standard-library modules, far longer than a 256-token training window, so :func:`code_chunks`
cuts them at blank lines into pieces that fit, and FIM is applied per piece.

Cut points are uniform over characters (Bavarian et al. 2022): two positions drawn uniformly in
``[0, len(text)]``, sorted. Each piece is tokenized on its own, so the tokens at a cut can differ from
the tokens of the untransformed text — the token-boundary effect FIM training has to live with.
"""
from __future__ import annotations

import random

__all__ = ["FIM_PREFIX", "FIM_SUFFIX", "FIM_MIDDLE", "code_chunks", "fim_split", "psm", "encode_psm",
           "fim_prompt_ids", "fim_rate_stream"]

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"


def _check_text(text, where: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{where}: text must be a str, got {type(text).__name__}")


def code_chunks(text: str, max_chars: int = 700) -> list[str]:
    """Cut source code at blank lines into chunks of at most ``max_chars`` characters (a longer block with
    no blank line is cut at line ends; a single longer line is kept whole). ``"".join(chunks) == text``."""
    _check_text(text, "code_chunks")
    if not (isinstance(max_chars, int) and not isinstance(max_chars, bool) and max_chars >= 1):
        raise ValueError(f"code_chunks: max_chars must be an int ≥ 1, got {max_chars!r}; e.g. 700")
    blocks, cur = [], ""
    for line in text.splitlines(keepends=True):
        cur += line
        if line.strip() == "":
            blocks.append(cur)
            cur = ""
    if cur:
        blocks.append(cur)
    chunks, cur = [], ""
    for block in blocks:
        pieces = [block] if len(block) <= max_chars else block.splitlines(keepends=True)
        for piece in pieces:
            if cur and len(cur) + len(piece) > max_chars:
                chunks.append(cur)
                cur = ""
            cur += piece
    if cur:
        chunks.append(cur)
    return chunks


def fim_split(text: str, rng: random.Random) -> tuple[str, str, str]:
    """(prefix, middle, suffix) from two cut points drawn uniformly over the characters of ``text``."""
    _check_text(text, "fim_split")
    if not isinstance(rng, random.Random):
        raise TypeError(f"fim_split: rng must be a random.Random, got {type(rng).__name__}; e.g. random.Random(0)")
    i, j = sorted(rng.randint(0, len(text)) for _ in range(2))
    return text[:i], text[i:j], text[j:]


def psm(prefix: str, middle: str, suffix: str) -> str:
    """The PSM text: ``<|fim_prefix|>prefix<|fim_suffix|>suffix<|fim_middle|>middle``."""
    for name, t in (("prefix", prefix), ("middle", middle), ("suffix", suffix)):
        _check_text(t, f"psm ({name})")
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"


def _special(tok, name: str) -> int:
    ids = tok.encode(name, allowed_special="all")
    if len(ids) != 1:
        raise ValueError(f"the tokenizer has no special token {name}; FIM needs {FIM_PREFIX}, {FIM_SUFFIX}, {FIM_MIDDLE}")
    return ids[0]


def fim_prompt_ids(tok, prefix: str, suffix: str) -> list[int]:
    """Token ids of a FIM query: ``<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>``; the model
    writes the middle next, then ``<|endoftext|>``."""
    return ([_special(tok, FIM_PREFIX)] + tok.encode(prefix) + [_special(tok, FIM_SUFFIX)] + tok.encode(suffix)
            + [_special(tok, FIM_MIDDLE)])


def encode_psm(tok, prefix: str, middle: str, suffix: str) -> list[int]:
    """Token ids of a whole PSM training document (each piece tokenized on its own), ending with
    ``<|endoftext|>``."""
    return fim_prompt_ids(tok, prefix, suffix) + tok.encode(middle) + [tok.eot_id]


def fim_rate_stream(tok, chunks: list[str], rate: float = 0.1, seed: int = 0) -> tuple[list[int], int]:
    """One token stream from code ``chunks``: each chunk, with probability ``rate``, becomes a PSM document
    (``<|endoftext|>`` before and after it, so it stands alone); the others are concatenated as plain text,
    so left-to-right code reads as before. Returns (ids, number of FIM documents). Seeded; ``rate=0`` gives
    the plain encoding of the chunks."""
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate <= 1.0):
        raise ValueError(f"fim_rate_stream: rate must be in [0, 1], got {rate!r}; the report uses 0.1")
    if not isinstance(chunks, (list, tuple)):
        raise TypeError(f"fim_rate_stream: chunks must be a list of str, got {type(chunks).__name__}")
    rng = random.Random(seed)
    ids, n_fim, plain = [], 0, []

    def flush():
        if plain:
            ids.extend(tok.encode("".join(plain)))
            plain.clear()

    for c in chunks:
        _check_text(c, "fim_rate_stream (chunk)")
        if rate > 0 and rng.random() < rate:
            flush()
            if ids and ids[-1] != tok.eot_id:
                ids.append(tok.eot_id)
            ids.extend(encode_psm(tok, *fim_split(c, rng)))
            n_fim += 1
        else:
            plain.append(c)
    flush()
    return ids, n_fim

