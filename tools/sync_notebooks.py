"""Keep the generated parts of the course in step with the one repository-URL setting.

    python tools/sync_notebooks.py          # rewrite Colab setup cells, the README chapter table, chapter times
    python tools/sync_notebooks.py --check  # exit 1 if anything is out of date (used by the tests)

The repository URL and branch live in pyproject.toml under [tool.course]. From them come:
- the Colab setup cell, the first code cell of every notebook (it installs the course only on Colab);
- the chapter table in README.md (between the chapters markers): a link and a Colab badge per
  notebook, and its CPU time from tools/timings.json (written by tools/benchmark.py);
- the time column of each chapter README's notebook table, from the same file.
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "# COLAB SETUP"
MARK = "# Colab setup"
START, END = "<!-- chapters:start -->", "<!-- chapters:end -->"
DATA_START, DATA_END = "<!-- data:start -->", "<!-- data:end -->"
HELPERS_START, HELPERS_END = "<!-- helpers:start -->", "<!-- helpers:end -->"


def settings() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["course"]


def colab_cell_source(nb_path: Path) -> str:
    """The first code cell of every notebook: on Colab, clone and install the course, failing early and clearly.

    Each step runs through ``subprocess`` (not ``!`` shell magics, whose failures the notebook does not see),
    so a failed clone or install stops the cell with what failed and what to do, before anything else runs.
    """
    s = settings()
    url, branch = s["repository"].rstrip("/"), s["branch"]
    name = url.rsplit("/", 1)[-1]
    chapter = nb_path.resolve().parent.relative_to(ROOT).as_posix()
    return (
        f"{MARK}: on Colab, fetch the course (code and data) and install it; elsewhere do nothing.\n"
        "import os, shutil, subprocess, sys\n"
        'if "google.colab" in sys.modules:\n'
        f'    REPO, BRANCH, HOME = "{url}", "{branch}", "/content/{name}"\n'
        "    def _step(cmd, what, fix):\n"
        "        r = subprocess.run(cmd, capture_output=True, text=True)\n"
        "        if r.returncode != 0:\n"
        '            raise RuntimeError(f"Colab setup: {what} failed:\\n{(r.stderr or r.stdout)[-1500:]}\\nWhat to do: {fix}")\n'
        '    if not os.path.isfile(f"{HOME}/helpers/__init__.py"):\n'
        "        shutil.rmtree(HOME, ignore_errors=True)          # a half-finished earlier clone\n"
        '        _step(["git", "clone", "--depth", "1", "--branch", BRANCH, REPO, HOME], f"git clone of {REPO} (branch {BRANCH})",\n'
        '              "check that the runtime is online and that this URL is the published course; a fork sets its own "\n'
        '              "URL in pyproject.toml [tool.course] and runs python tools/sync_notebooks.py (see the README).")\n'
        '    if not os.path.isfile(f"{HOME}/.installed"):\n'
        '        _step([sys.executable, "-m", "pip", "install", "--quiet", "-e", HOME], "pip install of the course",\n'
        '              "re-run this cell; if it fails again, Runtime > Restart session and run it once more.")\n'
        '        open(f"{HOME}/.installed", "w").close()\n'
        "    sys.path.insert(0, HOME)\n"
        f'    os.chdir(f"{{HOME}}/{chapter}")'
    )


def _first_code_cell(nb):
    return next((c for c in nb.cells if c.cell_type == "code"), None)


def sync_colab_cell(nb, nb_path: Path) -> bool:
    """Make the first code cell the canonical Colab cell (replacing the placeholder). True if changed."""
    cell = _first_code_cell(nb)
    want = colab_cell_source(nb_path)
    if cell is None or not (cell.source.startswith(PLACEHOLDER) or cell.source.startswith(MARK)):
        raise ValueError(f"{nb_path}: the first code cell must be the Colab setup cell (or the placeholder '{PLACEHOLDER}')")
    if cell.source == want:
        return False
    cell.source = want
    return True


def colab_url(nb_path: Path) -> str:
    s = settings()
    owner_repo = s["repository"].rstrip("/").split("github.com/", 1)[-1]
    rel = nb_path.resolve().relative_to(ROOT).as_posix()
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{s['branch']}/{rel}"


def _title(nb) -> str:
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("#"):
                    return re.sub(r"^#+\s*", "", line).strip()
    return ""


def _timings() -> dict:
    """tools/timings.json's rows by notebook path (empty when the file is missing)."""
    tf = ROOT / "tools" / "timings.json"
    return {r["notebook"]: r for r in json.loads(tf.read_text())["rows"]} if tf.exists() else {}


def chapter_table() -> str:
    import nbformat
    timings = _timings()
    lines = ["| chapter | notebook | Colab | CPU time | peak memory |", "|---|---|---|---|---|"]
    for chapter in sorted(p for p in (ROOT / "notebooks").iterdir() if p.is_dir()):
        nbs = sorted(chapter.glob("*.ipynb"))
        ch = f"[{chapter.name}](notebooks/{chapter.name}/README.md)"
        if not nbs:
            lines.append(f"| {ch} | *not written yet* | | | |")
            continue
        for i, p in enumerate(nbs):
            rel = p.relative_to(ROOT).as_posix()
            title = _title(nbformat.read(p, as_version=4)) or p.stem
            badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(p)})"
            t = timings.get(rel)
            tt = f"{t['wall_s']:.0f} s" if t else "—"
            mm = f"{t['peak_mb']:.0f} MB" if t else "—"
            lines.append(f"| {ch if i == 0 else ''} | [{title}]({rel}) | {badge} | {tt} | {mm} |")
    if timings:
        total = sum(r["wall_s"] for r in timings.values())
        lines.append(f"| **all** | | | **{total / 60:.1f} min** | |")
    return "\n".join(lines)


def data_table() -> str:
    """Tokens and bytes per token per domain, measured with the shipped tokenizer on each split."""
    sys.path.insert(0, str(ROOT))
    from helpers.data import DOMAINS, split_documents
    from helpers.tokenizer import load_tokenizer

    tok = load_tokenizer()
    lines = [f"Tokenizer: byte-level BPE, {tok.vocab_size:,} ids ({len(tok.special_tokens)} special: "
             + ", ".join(f"`{t}`" for t in tok.special_tokens) + ").", "",
             "| domain | train tokens | val tokens | bytes per token (val) |", "|---|---|---|---|"]
    for d in DOMAINS:
        docs = split_documents(d)
        n = {k: sum(len(tok.encode(x)) for x in v) for k, v in docs.items()}
        nbytes = sum(len(x.encode("utf-8")) for x in docs["val"])
        lines.append(f"| {d} | {n['train']:,} | {n['val']:,} | {nbytes / n['val']:.3f} |")
    return "\n".join(lines)


def helpers_table() -> str:
    """One line per helpers module: the first line of its docstring."""
    import ast
    lines = ["| module | what it holds |", "|---|---|"]
    for p in sorted((ROOT / "helpers").glob("*.py")):
        if p.name == "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        lines.append(f"| [`helpers.{p.stem}`](helpers/{p.name}) | {doc.splitlines()[0] if doc else ''} |")
    return "\n".join(lines)


def sync_chapter_readme(text: str, chapter: Path) -> str:
    """A chapter README with each notebook row's last cell (`| `name.ipynb` | ... | 12 s |`) set from timings.json.

    Every notebook of the chapter must have a row: a missing one raises, so a new notebook cannot go unlisted.
    """
    timings = _timings()
    lines = text.split("\n")
    for p in sorted(chapter.glob("*.ipynb")):
        prefix = f"| `{p.name}` |"
        rows = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        if len(rows) != 1:
            raise ValueError(f"{chapter.name}/README.md has {len(rows)} table rows for {p.name}; it needs one")
        t = timings.get(p.relative_to(ROOT).as_posix())
        if t:
            head = lines[rows[0]].rstrip().rstrip("|").rsplit("|", 1)[0]
            lines[rows[0]] = f"{head}| {t['wall_s']:.0f} s |"
    return "\n".join(lines)


def _replace(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise ValueError(f"README.md lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def sync_readme(text: str) -> str:
    text = _replace(text, START, END, chapter_table())
    text = _replace(text, HELPERS_START, HELPERS_END, helpers_table())
    return _replace(text, DATA_START, DATA_END, data_table())


def main(argv=None) -> int:
    import nbformat
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for p in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in p.parts:
            continue
        nb = nbformat.read(p, as_version=4)
        if sync_colab_cell(nb, p):
            stale.append(str(p.relative_to(ROOT)))
            if not check:
                nbformat.write(nb, p)
    chapters = sorted(p for p in (ROOT / "notebooks").iterdir() if (p / "README.md").exists())
    for readme, sync in [(ROOT / "README.md", sync_readme)] + [
            (c / "README.md", lambda text, c=c: sync_chapter_readme(text, c)) for c in chapters]:
        new = sync(readme.read_text())
        if new != readme.read_text():
            stale.append(str(readme.relative_to(ROOT)))
            if not check:
                readme.write_text(new)
    if check and stale:
        print("out of date (run python tools/sync_notebooks.py):\n  " + "\n  ".join(stale))
        return 1
    print("\n".join(f"updated {s}" for s in stale) or "everything in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
