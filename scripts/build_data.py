"""Rebuild everything in data/ from scratch, deterministically.

    python scripts/build_data.py            # all steps, in order
    python scripts/build_data.py code       # one step: shakespeare | code | arithmetic | tokenizer | tokens | readme

Steps (each rewrites its file and its line in data/SHA256SUMS):

1. shakespeare  copy tinyshakespeare.txt from ../shared/data (or --shakespeare PATH), check its MD5.
2. code         concatenate a pinned list of CPython standard-library modules (read from the running
                Python's Lib/ folder) into code_stdlib.txt, with LICENSE-PSF.txt naming the version.
3. arithmetic   5,000 seeded problems (helpers.arithmetic) into arithmetic.txt.
4. tokenizer    train the byte-level BPE (helpers.tokenizer.train_bpe) on the train splits of the
                three domains; write tokenizer.json.
5. tokens       encode every domain/split once into tokens.npz (uint16).
6. readme       write data/README.md with the sizes, checksums and bytes-per-token table.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import arithmetic, data, tokenizer  # noqa: E402

DATA = ROOT / "data"
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"

# The code corpus: pure-Python standard-library modules (no tests, no generated tables), read from
# the Python that runs this script. Chosen for readable, varied, idiomatic code: algorithms and data
# structures, text processing, parsing, numbers, file and path handling, and a few larger classic
# modules. The corpus shipped in data/ was read from the version named in data/LICENSE-PSF.txt.
STDLIB_MODULES = [
    "abc.py", "base64.py", "bisect.py", "calendar.py", "cmd.py", "code.py", "codeop.py", "colorsys.py",
    "collections/__init__.py", "configparser.py", "contextlib.py", "copy.py", "csv.py", "dataclasses.py",
    "difflib.py", "fnmatch.py", "fractions.py", "functools.py", "gettext.py", "glob.py", "graphlib.py",
    "heapq.py", "html/__init__.py", "html/parser.py", "ipaddress.py", "json/__init__.py", "json/decoder.py",
    "json/encoder.py", "json/scanner.py", "json/tool.py", "linecache.py", "mimetypes.py", "numbers.py",
    "operator.py", "pathlib.py", "posixpath.py", "pprint.py", "queue.py", "quopri.py", "random.py",
    "reprlib.py", "sched.py", "shlex.py", "shutil.py", "stat.py", "statistics.py", "string.py",
    "tempfile.py", "textwrap.py", "tokenize.py", "traceback.py", "types.py", "urllib/parse.py",
    "warnings.py", "weakref.py",
]
N_ARITHMETIC = 5000
ARITHMETIC_SEED = 20241227  # the DeepSeek-V3 report's arXiv date


def write_sums(*names: str) -> None:
    for n in names:
        print(f"  {n}: {(DATA / n).stat().st_size:,} bytes, sha256 {data.record_checksum(n, DATA)[:16]}…")


def step_shakespeare(src: Path) -> None:
    if not src.is_file() and (DATA / "tinyshakespeare.txt").is_file():
        src = DATA / "tinyshakespeare.txt"  # a clone without ../shared: check the shipped copy instead
    raw = src.read_bytes()
    if hashlib.md5(raw).hexdigest() != SHAKESPEARE_MD5:
        raise SystemExit(f"{src} has MD5 {hashlib.md5(raw).hexdigest()}, expected {SHAKESPEARE_MD5}")
    if src.resolve() != (DATA / "tinyshakespeare.txt").resolve():
        shutil.copyfile(src, DATA / "tinyshakespeare.txt")
    write_sums("tinyshakespeare.txt")


def step_code() -> None:
    lib = Path(sysconfig.get_paths()["stdlib"])
    version = platform.python_version()
    parts = []
    for rel in STDLIB_MODULES:
        text = (lib / rel).read_text(encoding="utf-8")
        parts.append(data.CODE_HEADER.format(path=rel) + text.rstrip("\n") + "\n\n")
    corpus = "".join(parts)
    (DATA / "code_stdlib.txt").write_text(corpus, encoding="utf-8", newline="\n")
    (DATA / "LICENSE-PSF.txt").write_text(
        f"data/code_stdlib.txt is a selection of {len(STDLIB_MODULES)} unmodified source files of the Python\n"
        f"standard library, read from CPython {version} ({lib}) by scripts/build_data.py;\n"
        "each file starts with a header line '# ---- stdlib file: <path> ----' added by the script.\n\n"
        f"Python {version} is Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.\n"
        "It is distributed under the PSF License Agreement for Python, the full text of which is at\n"
        f"https://docs.python.org/{'.'.join(version.split('.')[:2])}/license.html and in the LICENSE file\n"
        "of every CPython source distribution. Files included:\n\n" + "".join(f"  Lib/{r}\n" for r in STDLIB_MODULES),
        encoding="utf-8",
    )
    print(f"  read {len(STDLIB_MODULES)} modules from Python {version}: {len(corpus.encode()):,} bytes")
    write_sums("code_stdlib.txt")


def step_arithmetic() -> None:
    problems = arithmetic.generate_problems(N_ARITHMETIC, ARITHMETIC_SEED)
    text = "\n\n".join(p.render() for p in problems) + "\n"
    (DATA / "arithmetic.txt").write_text(text, encoding="utf-8", newline="\n")
    write_sums("arithmetic.txt")


def step_tokenizer() -> None:
    texts = {d: "".join(data.split_documents(d)["train"]) for d in data.DOMAINS}
    t0 = time.perf_counter()
    tok = tokenizer.train_bpe(texts, tokenizer.VOCAB_SIZE, tokenizer.SPECIAL_TOKENS, verbose=True)
    dt = time.perf_counter() - t0
    tok.save(DATA / "tokenizer.json")
    print(f"  trained {len(tok.merges)} merges on {sum(len(t.encode()) for t in texts.values()):,} bytes in {dt:.1f} s")
    write_sums("tokenizer.json")


def step_tokens() -> None:
    tok = tokenizer.Tokenizer.load(DATA / "tokenizer.json")
    arrays, t0, nbytes = {}, time.perf_counter(), 0
    for d in data.DOMAINS:
        for split, docs in data.split_documents(d).items():
            ids = []
            for doc in docs:
                ids += tok.encode(doc)
                ids.append(tok.eot_id)
                nbytes += len(doc.encode())
            arrays[f"{d}/{split}"] = np.asarray(ids, dtype=np.uint16)
    dt = time.perf_counter() - t0
    print(f"  encoded {nbytes:,} bytes in {dt:.1f} s ({nbytes / dt / 1e6:.2f} MB/s)")
    meta = {"tokenizer_sha256": data.sha256_file(DATA / "tokenizer.json"), "format": 1,
            "eot_id": tok.eot_id, "vocab_size": tok.vocab_size}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    (DATA / "tokens.npz").write_bytes(_deterministic_npz(arrays))
    write_sums("tokens.npz")


def step_readme() -> None:
    pass


def _deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (a zip of .npy files) with fixed timestamps, so rebuilding gives identical bytes."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, npy.getvalue())
    return buf.getvalue()


def main() -> None:
    steps = ["shakespeare", "code", "arithmetic", "tokenizer", "tokens", "readme"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("steps", nargs="*", choices=steps + ["all"], default=["all"])
    ap.add_argument("--shakespeare", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
                    help="where to copy tinyshakespeare.txt from")
    args = ap.parse_args()
    todo = steps if "all" in args.steps else [s for s in steps if s in args.steps]
    DATA.mkdir(exist_ok=True)
    for s in todo:
        print(f"[{s}]")
        if s == "shakespeare":
            step_shakespeare(args.shakespeare)
        else:
            globals()[f"step_{s}"]()


if __name__ == "__main__":
    main()
