"""The course corpora: three domains, shipped in ``data/`` and verified by checksum on every load.

=============  ========================  =====================================================
domain         file                      what it is
=============  ========================  =====================================================
shakespeare    ``tinyshakespeare.txt``   the char-rnn Shakespeare selection (public domain)
code           ``code_stdlib.txt``       a pinned selection of CPython's standard library (PSF)
arithmetic     ``arithmetic.txt``        seeded multi-step arithmetic with worked steps
=============  ========================  =====================================================

``data/SHA256SUMS`` lists every shipped data file with its SHA-256 (the ``sha256sum`` format, so
``cd data && sha256sum -c SHA256SUMS`` checks them from a shell). Loading a file recomputes its hash;
a missing or altered file raises :class:`DataFileError`, which names the file and says how to get it
back. ``scripts/build_data.py`` rebuilds every file from scratch.

A *document* is the unit that is never split between train and validation: one standard-library file
for ``code``, one problem for ``arithmetic``. Shakespeare is one running text, cut once at a blank
line about 90% of the way in (the usual nanoGPT split).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from helpers.runtime import data_dir

__all__ = [
    "DOMAINS", "FILES", "DataFileError", "load_text", "verify_data", "data_path", "sha256_file",
    "read_checksums", "record_checksum", "documents", "split_documents", "VAL_FRACTION", "CODE_HEADER",
]

DOMAINS = ("shakespeare", "code", "arithmetic")
FILES = {"shakespeare": "tinyshakespeare.txt", "code": "code_stdlib.txt", "arithmetic": "arithmetic.txt"}
CHECKSUMS = "SHA256SUMS"
VAL_FRACTION = 0.1

# How each shipped file is rebuilt (quoted in error messages).
_REBUILD = {
    "tinyshakespeare.txt": "python scripts/build_data.py shakespeare",
    "code_stdlib.txt": "python scripts/build_data.py code",
    "arithmetic.txt": "python scripts/build_data.py arithmetic",
    "tokenizer.json": "python scripts/build_data.py tokenizer",
    "tokens.npz": "python scripts/build_data.py tokens",
    "checkpoints/base.pt": "python scripts/pretrain.py",
    "checkpoints/base.json": "python scripts/pretrain.py",
    "checkpoints/sft.pt": "python scripts/post_train.py sft",
    "checkpoints/sft.json": "python scripts/post_train.py sft",
    "checkpoints/rm.pt": "python scripts/post_train.py reward-model",
    "checkpoints/rm.json": "python scripts/post_train.py reward-model",
    "checkpoints/sft_mix.pt": "python scripts/post_train.py sft --style mixed",
    "checkpoints/sft_mix.json": "python scripts/post_train.py sft --style mixed",
    "checkpoints/rl.pt": "python scripts/post_train.py grpo",
    "checkpoints/rl.json": "python scripts/post_train.py grpo",
    "checkpoints/judge.pt": "python scripts/post_train.py judge",
    "checkpoints/judge.json": "python scripts/post_train.py judge",
    "checkpoints/pair_judge.pt": "python scripts/post_train.py pair-judge",
    "checkpoints/pair_judge.json": "python scripts/post_train.py pair-judge",
}

# Every standard-library file in code_stdlib.txt starts with this header line (it stays in the text:
# it reads like a comment, and it tells the model where a new file begins).
CODE_HEADER = "# ---- stdlib file: {path} ----\n"
_CODE_SPLIT = re.compile(r"(?m)^(?=# ---- stdlib file: \S+ ----$)")


class DataFileError(RuntimeError):
    """A shipped data file is missing, unlisted or does not match its recorded checksum."""


def _fix(name: str) -> str:
    how = _REBUILD.get(name)
    fix = f"restore it with `git checkout -- data/{name}`"
    if how:
        fix += f" or rebuild it with `{how}`"
    return fix + " (run from the repository root)"


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file's bytes, as lowercase hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checksums(folder: Path | None = None) -> dict[str, str]:
    """``{file name: sha256}`` from ``data/SHA256SUMS``."""
    folder = Path(folder) if folder is not None else data_dir()
    path = folder / CHECKSUMS
    if not path.is_file():
        raise DataFileError(f"checksum list {path} is missing; restore it with `git checkout -- data/{CHECKSUMS}`")
    sums = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise DataFileError(f"{path} line {n} is malformed ({line!r}); restore it with `git checkout -- data/{CHECKSUMS}`")
        sums[parts[1].lstrip("*")] = parts[0]
    return sums


def record_checksum(name: str, folder: Path | None = None) -> str:
    """Add or update ``name``'s line in ``data/SHA256SUMS`` (for scripts that build a data file)."""
    folder = Path(folder) if folder is not None else data_dir()
    path = folder / CHECKSUMS
    sums = read_checksums(folder) if path.is_file() else {}
    sums[name] = sha256_file(folder / name)
    path.write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    _verified.clear()
    return sums[name]


_verified: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) of the last version that passed


def data_path(name: str, verify: bool = True) -> Path:
    """Path of the shipped file ``data/<name>``, checked against ``SHA256SUMS`` first.

    Raises :class:`DataFileError` (naming the file and the fix) when the file is missing, has no
    checksum line, or its bytes changed. A file that passed is not re-hashed until it changes on disk.
    """
    folder = data_dir()
    path = folder / name
    if not path.is_file():
        raise DataFileError(f"data file {path} is missing: {_fix(name)}")
    if not verify:
        return path
    st = path.stat()
    if _verified.get(path) == (st.st_size, st.st_mtime_ns):
        return path
    sums = read_checksums(folder)
    if name not in sums:
        raise DataFileError(f"data file {path} has no line in {folder / CHECKSUMS}: {_fix(name)}")
    got = sha256_file(path)
    if got != sums[name]:
        raise DataFileError(
            f"data file {path} was altered or corrupted (sha256 {got[:12]}…, expected {sums[name][:12]}…): {_fix(name)}"
        )
    _verified[path] = (st.st_size, st.st_mtime_ns)
    return path


def _check_domain(domain: str) -> None:
    if domain not in FILES:
        raise ValueError(f"unknown domain {domain!r}; choose one of {DOMAINS}")


def load_text(domain: str) -> str:
    """The full text of one domain (``"shakespeare"``, ``"code"`` or ``"arithmetic"``), verified."""
    _check_domain(domain)
    return data_path(FILES[domain]).read_text(encoding="utf-8")


def verify_data(names: list[str] | None = None) -> dict[str, str]:
    """Check every file listed in ``SHA256SUMS`` (or only ``names``); return ``{name: sha256}``.

    Raises one :class:`DataFileError` listing every problem found, each with its fix.
    """
    sums = read_checksums()
    names = sorted(sums) if names is None else list(names)
    problems = []
    for name in names:
        try:
            data_path(name)
        except DataFileError as e:
            problems.append(str(e))
    if problems:
        raise DataFileError("\n".join(problems))
    return {n: sums[n] for n in names}


def documents(domain: str, text: str | None = None) -> list[str]:
    """Split a domain's text into documents (the unit never shared between train and validation).

    code: one standard-library file each (header line included); arithmetic: one problem each
    (blocks separated by a blank line); shakespeare: the whole text is one document.
    """
    _check_domain(domain)
    text = load_text(domain) if text is None else text
    if domain == "code":
        return [d for d in _CODE_SPLIT.split(text) if d.strip()]
    if domain == "arithmetic":
        return [d.strip("\n") for d in text.split("\n\n") if d.strip()]
    return [text]


def _stable_key(doc: str) -> str:
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


def split_documents(domain: str, text: str | None = None, val_fraction: float = VAL_FRACTION) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` documents, about ``val_fraction`` of the bytes in val.

    - shakespeare: the text is cut at the first blank line after ``1 - val_fraction`` of it.
    - code: whole files; files are visited in the order of the SHA-256 of their content (a fixed,
      arbitrary order) and go to val until val holds ``val_fraction`` of the bytes.
    - arithmetic: whole problems; the last ``val_fraction`` of the problems (the generator makes every
      question unique, so no validation question appears in train).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    docs = documents(domain, text)
    if domain == "shakespeare":
        (t,) = docs
        cut = t.find("\n\n", int(len(t) * (1 - val_fraction)))
        cut = len(t) * 9 // 10 if cut < 0 else cut + 2
        return {"train": [t[:cut]], "val": [t[cut:]]}
    if domain == "arithmetic":
        n_val = max(1, round(len(docs) * val_fraction))
        return {"train": docs[:-n_val], "val": docs[-n_val:]}
    total = sum(len(d) for d in docs)
    val_ids, size = set(), 0
    for i in sorted(range(len(docs)), key=lambda i: _stable_key(docs[i])):
        if size >= val_fraction * total:
            break
        val_ids.add(i)
        size += len(docs[i])
    return {"train": [d for i, d in enumerate(docs) if i not in val_ids],
            "val": [d for i, d in enumerate(docs) if i in val_ids]}
