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
PINNED_PYTHON = "3.11.7"  # the standard library the shipped code corpus was read from
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


def step_code(any_python: bool = False) -> None:
    lib = Path(sysconfig.get_paths()["stdlib"])
    version = platform.python_version()
    if version != PINNED_PYTHON and not any_python:
        raise SystemExit(f"the code corpus is pinned to Python {PINNED_PYTHON}'s standard library but this is Python "
                         f"{version}: its files differ, so every later file would change. Run with Python "
                         f"{PINNED_PYTHON}, or pass --any-python to rebuild from this version (and ship the result).")
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
    docs = tokenizer.training_documents()
    t0 = time.perf_counter()
    tok = tokenizer.train_bpe(docs, tokenizer.VOCAB_SIZE, tokenizer.SPECIAL_TOKENS, verbose=True)
    dt = time.perf_counter() - t0
    tok.save(DATA / "tokenizer.json")
    print(f"  trained {len(tok.merges)} merges on {sum(len(t.encode()) for t in docs):,} bytes in {dt:.1f} s")
    write_sums("tokenizer.json")


def step_tokens() -> None:
    tok = tokenizer.Tokenizer.load(DATA / "tokenizer.json")
    arrays, t0, stats = {}, time.perf_counter(), {}
    for d in data.DOMAINS:
        for split, docs in data.split_documents(d).items():
            ids = []
            for doc in docs:
                ids += tok.encode(doc)
                ids.append(tok.eot_id)
            arrays[f"{d}/{split}"] = np.asarray(ids, dtype=np.uint16)
            stats[f"{d}/{split}"] = {"tokens": len(ids), "bytes": sum(len(doc.encode()) for doc in docs), "documents": len(docs)}
    dt = time.perf_counter() - t0
    nbytes = sum(v["bytes"] for v in stats.values())
    print(f"  encoded {nbytes:,} bytes in {dt:.1f} s ({nbytes / dt / 1e6:.2f} MB/s)")
    meta = {"tokenizer_sha256": data.sha256_file(DATA / "tokenizer.json"), "format": 1,
            "eot_id": tok.eot_id, "vocab_size": tok.vocab_size, "stats": stats}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    (DATA / "tokens.npz").write_bytes(_deterministic_npz(arrays))
    write_sums("tokens.npz")


ROLES = {
    "<|endoftext|>": "end of a document; separates packed documents (the token cache puts one after every document)",
    "<|system|>": "chat: starts the system turn (chapter 6)",
    "<|user|>": "chat: starts a user turn",
    "<|assistant|>": "chat: starts an assistant turn",
    "<|end|>": "chat: ends a turn",
    "<|fim_prefix|>": "fill-in-the-middle: the prefix follows (PSM order, §4.1)",
    "<|fim_suffix|>": "fill-in-the-middle: the suffix follows",
    "<|fim_middle|>": "fill-in-the-middle: the middle (the part to predict) follows",
}
FILE_NOTES = {
    "tinyshakespeare.txt": ("shakespeare corpus (public domain; the char-rnn selection)", "`shakespeare` (copies ../shared/data, checks MD5 6fb458f1…)"),
    "code_stdlib.txt": ("code corpus: {n} CPython standard-library modules (PSF License)", "`code`"),
    "arithmetic.txt": ("arithmetic corpus: {n} seeded problems with worked steps", "`arithmetic`"),
    "tokenizer.json": ("byte-level BPE tokenizer (merges, special tokens, pattern)", "`tokenizer`"),
    "tokens.npz": ("token cache: every domain/split encoded once (uint16)", "`tokens`"),
}


def _table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def step_readme() -> None:
    sums = data.read_checksums(DATA)
    tok = tokenizer.Tokenizer.load(DATA / "tokenizer.json")
    with np.load(DATA / "tokens.npz") as z:
        counts = {k: len(z[k]) for k in z.files if k != "meta"}
    ndocs = {d: {s: len(v) for s, v in data.split_documents(d).items()} for d in data.DOMAINS}
    files = []
    for name, (what, step) in FILE_NOTES.items():
        n = sum(ndocs["code"].values()) if name == "code_stdlib.txt" else sum(ndocs["arithmetic"].values())
        files.append((f"`{name}`", f"{(DATA / name).stat().st_size:,}", what.format(n=n), f"`{sums[name][:12]}…`",
                      f"`python scripts/build_data.py {step.split('`')[1]}`"))
    files.append(("`LICENSE-PSF.txt`", f"{(DATA / 'LICENSE-PSF.txt').stat().st_size:,}", "licence note for the code corpus",
                  "(text, not checked)", "`python scripts/build_data.py code`"))
    files.append(("`SHA256SUMS`", "", "SHA-256 of every data file above", "—", "updated by every step"))
    dom_rows, bpt = [], {}
    n_train = sum(counts[d + "/train"] for d in data.DOMAINS)
    for d in data.DOMAINS:
        sp = data.split_documents(d)
        row = [d]
        for s in ("train", "val"):
            row += [f"{ndocs[d][s]:,}", f"{sum(len(x.encode()) for x in sp[s]):,}", f"{counts[d + '/' + s]:,}"]
        val_bytes = sum(len(x.encode()) for x in sp["val"])
        val_tokens = sum(len(tok.encode(x)) for x in sp["val"])
        bpt[d] = val_bytes / val_tokens
        dom_rows.append(row + [f"{counts[d + '/train'] / n_train:.1%}", f"{bpt[d]:.3f}"])
        print(f"  {d}: {bpt[d]:.3f} bytes/token on validation ({val_bytes:,} bytes, {val_tokens:,} tokens)")
    arith_docs = data.documents("arithmetic")
    paren_share = sum("(" in doc.split("\n")[0] for doc in arith_docs) / len(arith_docs)
    sp_rows = [(f"`{s}`".replace("|", "\\|"), i, ROLES.get(s, "")) for s, i in tok.special_tokens.items()]
    first = ", ".join(f"`{tok.token_str(256 + r)!r}`" for r in range(24))
    wordy = [i for i in range(256, 256 + len(tok.merges)) if any(c.isalpha() for c in tok.token_str(i))]
    longest = sorted(wordy, key=lambda i: (-len(tok.token_bytes(i)), i))[:16]
    longest = ", ".join(f"`{tok.token_str(i)!r}`" for i in longest)
    n_words = sum(tok.token_str(i).strip().isalpha() for i in range(256, 256 + len(tok.merges)))
    n_num = sum(tok.token_str(i).strip().isdigit() for i in range(256, 256 + len(tok.merges)))
    n_space = sum(tok.token_str(i).isspace() for i in range(256, 256 + len(tok.merges)))
    examples = []
    for d in data.DOMAINS:
        doc = data.split_documents(d)["val"][0]
        line = next(l for l in doc.splitlines() if len(l.strip()) > 25 and not l.startswith("#"))[:70]
        pieces = [tok.decode([i]) for i in tok.encode(line)]
        examples.append(f"- {d}: `{'|'.join(pieces)}` ({len(line.encode())} bytes → {len(pieces)} tokens)")
    text = f"""# data/ — corpora, tokenizer and token cache

Everything the course trains on ships here, so nothing is downloaded at run time. Every data file is
listed with its SHA-256 in `SHA256SUMS` and checked when it is loaded (`helpers.data.data_path`,
`load_text`, `helpers.tokenizer.load_tokenizer`, `helpers.batching.load_splits`). A missing or altered
file raises `helpers.data.DataFileError`, which names the file and the fix: `git checkout -- data/<file>`,
or rebuild it. From a shell: `cd data && sha256sum -c SHA256SUMS`.

Everything is rebuilt, deterministically and byte for byte, by one script (a few seconds on a laptop):

```
python scripts/build_data.py            # all steps in order
python scripts/build_data.py tokens     # one step: shakespeare | code | arithmetic | tokenizer | tokens | readme
```

This file is written by the `readme` step: every number below comes from that script.

## Files

{_table(("file", "bytes", "what", "sha256", "rebuilt by"), files)}

## Licences

- `tinyshakespeare.txt`: Shakespeare's plays are in the public domain; this selection is the standard
  small corpus published with Andrej Karpathy's char-rnn.
- `code_stdlib.txt`: unmodified source files of the Python standard library, PSF License Agreement;
  which files, and from which Python version, is in `LICENSE-PSF.txt`. The build refuses to run on
  another Python version than {PINNED_PYTHON} unless told `--any-python` (other versions have other files).
- `arithmetic.txt`, `tokenizer.json`, `tokens.npz`: generated by this project's code (the project's licence).

## Domains, documents and splits

A *document* never straddles train and validation. `code`: one standard-library file (it starts with
the header line `# ---- stdlib file: <path> ----`); files go to validation in a fixed pseudo-random
order (by the SHA-256 of their text) until validation holds 10% of the bytes. `arithmetic`: one problem;
the last 10% of the problems are validation, and the generator never repeats a question, so no
validation question is in train. `shakespeare`: one running text, cut at the first blank line after 90%.
(`helpers.data.split_documents`.) Token counts include one `<|endoftext|>` after every document.
Bytes per token is measured on the validation split (documents encoded without separators).

{_table(("domain", "train docs", "train bytes", "train tokens", "val docs", "val bytes", "val tokens", "share of train tokens", "bytes/token (val)"), dom_rows)}

`helpers.batching.DEFAULT_WEIGHTS` (shakespeare 0.4, code 0.4, arithmetic 0.2) follows the shares of
train tokens, so a mixture sampler with it sees every domain about equally often per token.

The arithmetic corpus: {N_ARITHMETIC:,} problems from `helpers.arithmetic.generate_problems({N_ARITHMETIC}, seed={ARITHMETIC_SEED})`:
two to four `+ - *` operations on small integers, a pair of parentheses in {paren_share:.0%} of them,
every intermediate result within ±999; worked steps, then `#### answer`. For example:

```
{data.split_documents("arithmetic")["train"][0]}
```

## Tokenizer (`tokenizer.json`)

Byte-level BPE (`helpers.tokenizer`), trained by `helpers.tokenizer.train_bpe` on the training
documents of all three domains (`helpers.tokenizer.training_documents()`; validation text is never
seen). **{tok.vocab_size:,} ids** = 256 byte tokens (ids 0–255) + **{len(tok.merges):,} merges** (ids 256–{255 + len(tok.merges)}; merge r
joins the pair `merges[r]` into token 256 + r; ties between equally frequent pairs go to the
smallest pair of ids, so training is deterministic) + **{len(tok.special_tokens)} special tokens**. Of the merged tokens,
{n_words:,} are words (letters, with or without a leading space), {n_num:,} numbers and {n_space:,} pure whitespace.

Pre-tokenisation pattern (Python `re`; merges never cross its pieces):

```
{tok.pattern}
```

Special tokens are produced only when `encode(text, allowed_special=...)` allows them and their literal
text appears; with the default `allowed_special="none"` the text `<|endoftext|>` is ordinary bytes.

{_table(("token", "id", "role"), sp_rows)}

First merges: {first}.

Longest tokens with a letter in them: {longest}.

Token boundaries (`|`) on a line of each validation split:

{chr(10).join(examples)}

File format: JSON with `format` ("{tokenizer.FORMAT}"), `version` ({tokenizer.VERSION}), `vocab_size`,
`pattern`, `special_tokens` (text → id) and `merges` (a list of id pairs in rank order). Loading
checks all of it and the checksum.

## Using it

```python
from helpers.data import load_text, split_documents          # verified text, documents, splits
from helpers.tokenizer import load_tokenizer                  # the shipped BPE
from helpers.batching import load_splits, MixtureSampler, DEFAULT_WEIGHTS, eval_batches

tok = load_tokenizer()
ids = tok.encode("<|user|>What is 2 + 3?<|end|>", allowed_special="all")
splits = load_splits()                                        # {{domain: {{"train", "val"}}}}: int64 tensors
get_batch = MixtureSampler(splits, DEFAULT_WEIGHTS, batch_size=16, block_size=128, seed=1234)
x, y = get_batch("train")                                     # [16, 128] each, y = x shifted by one
val = eval_batches(splits, "code", n_batches=4, batch_size=16, block_size=128)
```

## Token cache (`tokens.npz`)

A NumPy `.npz` (zip) holding one uint16 array per `"<domain>/<split>"` (`shakespeare/train`, …,
`arithmetic/val`) and `meta` (JSON bytes: the SHA-256 of the tokenizer it was built with, `eot_id`,
`vocab_size`, and per split its tokens, text bytes and documents, read by `helpers.batching.split_stats()`). Each document is encoded with `allowed_special="none"` and followed by `<|endoftext|>`.
`helpers.batching.load_splits()` returns `{{domain: {{"train": tensor, "val": tensor}}}}` (int64) and
refuses a cache built with another tokenizer.
""" + _checkpoint_section(sums)
    (DATA / "README.md").write_text(text, encoding="utf-8")


def _post_training_section(sums: dict) -> str:
    """The chapter-06 checkpoints (SFT model, reward model), from their logs (empty until they exist)."""
    parts = []
    for name, what, loader in (("sft", "the SFT model (chapter 06.1)", "helpers.posttraining.load_sft()"),
                               ("rm", "the Bradley–Terry reward model (chapter 06.3)",
                                "helpers.posttraining.load_reward_model()"),
                               ("sft_mix", "SFT on replies half of which give the bare answer (chapter 06.4)",
                                'helpers.posttraining.load_chat_model("checkpoints/sft_mix.pt")'),
                               ("rl", "GRPO from sft_mix with the verifier's reward, seed 0 (chapter 06.4)",
                                'helpers.posttraining.load_chat_model("checkpoints/rl.pt")'),
                               ("judge", "the generative judge with a rationale, from the SFT model, seed 0 (chapter 06.5)",
                                'helpers.posttraining.load_chat_model("checkpoints/judge.pt")'),
                               ("pair_judge", "the pairwise verdict-only judge, from the SFT model, seed 0 (chapter 07.3)",
                                'helpers.posttraining.load_chat_model("checkpoints/pair_judge.pt")')):
        log_path = DATA / "checkpoints" / f"{name}.json"
        if not log_path.is_file():
            continue
        log = json.loads(log_path.read_text())
        size = (DATA / "checkpoints" / f"{name}.pt").stat().st_size
        if name in ("sft", "sft_mix"):
            extra = f"held-out greedy accuracy {log['base']['all']:.3f} (base) → {log['sft']['all']:.3f}"
        elif name == "rl":
            extra = (f"held-out greedy accuracy {log['evals'][0]['all']:.3f} (sft_mix) → {log['evals'][-1]['all']:.3f} "
                     f"after {log['evals'][-1]['step']} steps")
        elif name == "pair_judge":
            h = log["held_out"]
            extra = (f"held-out pairs: right shown first {h['acc_first']:.3f}, shown second {h['acc_second']:.3f}, "
                     f"consistency {h['consistency']:.3f}")
        elif name == "judge":
            extra = (f"agreement with the verifier {log['agreement']['accuracy']:.3f} on held-out candidates, "
                     f"precision {log['agreement']['precision']:.3f}")
        else:
            extra = (f"{log['n_pairs']:,} training pairs, held-out pairwise accuracy "
                     f"{log['held_out_pairwise_accuracy']:.3f}")
        parts.append(f"- `checkpoints/{name}.pt` ({size / 1e6:.1f} MB, sha256 `{sums.get(f'checkpoints/{name}.pt', '?')[:12]}…`): "
                     f"{what}, written by `{log['command']}` ({log['threads']} thread(s) on `{log['device']}`, "
                     f"{log.get('total_wall_s', log.get('wall_s', 0)) / 60:.1f} min; {extra}); loaded by `{loader}`. `{name}.json` is its log.")
    if not parts:
        return ""
    return "\nPost-trained checkpoints, each from its parent with `scripts/post_train.py` (same format and checks):\n\n" + \
        "\n".join(parts) + "\n"


def _checkpoint_section(sums: dict) -> str:
    """data/README's section on the shipped checkpoints, from their logs (empty until they exist)."""
    log_path = DATA / "checkpoints" / "base.json"
    if not log_path.is_file():
        return ""
    log = json.loads(log_path.read_text())
    f, a = log.get("final", {}), log["args"]
    size = (DATA / "checkpoints" / "base.pt").stat().st_size
    tokens = a["steps"] * a["batch"] * a["block"]
    rows = [(d, f"{w:.2f}", f"{log['train_tokens'][d]:,}", f"{w * tokens / log['train_tokens'][d]:.1f}",
             f"{f['val_loss'][d]:.3f}" if f else "", f"{f['bigram_val_loss'][d]:.3f}" if f else "")
            for d, w in log["weights"].items()]
    return f"""
## Checkpoints (`checkpoints/`)

`checkpoints/base.pt` ({size / 1e6:.1f} MB, sha256 `{sums.get('checkpoints/base.pt', '?')[:12]}…`) is the course's
base model (chapter 04.3), written by `{log['command']}` with `helpers.train.save_checkpoint` (weights and
`ModelConfig`; it loads with `torch.load(weights_only=True)`, or `helpers.pretraining.load_base()`, which checks the
checksum and the config). `checkpoints/base.json` is its log: command, config, curves, per-domain losses, the graded
tests. Not rebuilt by `build_data.py`: re-running `python scripts/pretrain.py` (deterministic for a given seed,
device and thread count: this one used {log['threads']} thread(s) on `{log['device']}`, torch {log['torch']})
reproduces it and rewrites both checksum lines.

The pre-training mixture (`helpers.pretraining`) grows two domains from the same sources as the shipped files:
arithmetic gets {a['n_fresh_arithmetic']:,} freshly generated problems (1–4 operations; none in the held-out test or the
validation split), and code is cut into chunks at blank lines with fill-in-the-middle applied to 10% of them; a
synthetic passkey domain (filler text with a hidden five-digit key) teaches retrieval across the window. Nothing of it
is stored: it is rebuilt from the shipped files in about ten seconds. {tokens:,} training tokens in all:

{_table(("domain", "weight", "train tokens", "epochs in the run", "val loss", "bigram val loss"), rows)}
{_post_training_section(sums)}"""
    print("  wrote data/README.md")


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
    ap.add_argument("steps", nargs="*", help="any of: " + " ".join(steps) + " (default: all)")
    ap.add_argument("--any-python", action="store_true", help="build the code corpus from this Python's stdlib even if it is not the pinned version")
    ap.add_argument("--shakespeare", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
                    help="where to copy tinyshakespeare.txt from")
    args = ap.parse_args()
    bad = [s for s in args.steps if s not in steps + ["all"]]
    if bad:
        ap.error(f"unknown step(s) {bad}; choose from {steps + ['all']}")
    todo = steps if not args.steps or "all" in args.steps else [s for s in steps if s in args.steps]
    DATA.mkdir(exist_ok=True)
    for s in todo:
        print(f"[{s}]")
        if s == "shakespeare":
            step_shakespeare(args.shakespeare)
        elif s == "code":
            step_code(args.any_python)
        else:
            globals()[f"step_{s}"]()


if __name__ == "__main__":
    main()
