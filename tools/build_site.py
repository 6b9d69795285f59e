"""Build the course's static HTML site from the committed, executed notebooks, then check its links.

    python tools/build_site.py                 # writes _site/ (git-ignored); open _site/index.html
    python tools/build_site.py --out DIR       # somewhere else
    python tools/build_site.py --list-external # also print every external link (listed, never fetched)

Needs `pip install -r requirements-site.txt` (Sphinx, myst-nb, sphinx-book-theme, a local MathJax).

Three steps, each of which can fail the command (exit status 1):

1. Stage a Sphinx source tree in a temporary folder: docs/ (conf.py), the landing page made from README.md, each
   chapter's README.md with a toctree of its notebooks (section notebooks in numeric order, then exercises.ipynb),
   the notebooks themselves, and an API page with one autodoc section per `helpers` module. Staging copies the
   files, so git holds each notebook and README once; the page order comes from the folders, so a new notebook or
   module appears without editing a list. README links are made to work in the site: links to notebooks and
   READMEs stay relative (MyST turns them into page links), links to `helpers/<module>.py` become links to the
   module's API section, links to other repository files become links to the repository (pyproject.toml
   [tool.course]), and remote badge images become plain text links (nothing is downloaded, no page needs the
   network to show its images).
2. Run Sphinx with warnings as errors (-W --keep-going, so every warning is reported, not only the first).
   Notebooks are not executed: the pages show the committed outputs.
3. Check every internal link and every local asset reference (href/src) in the generated HTML: the file must exist
   in the output and, for `page.html#id`, the id must exist in that page. External http(s) links are counted and
   listed, not fetched; an external *asset* (an <img>, <script> or <link> the browser would download) is an error,
   since the site must work offline.

Prints the number of pages, of internal references checked, and the wall time.
"""
from __future__ import annotations

import argparse
import ast
import html.parser
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"
HELPERS = ROOT / "helpers"

CHAPTER_RE = re.compile(r"^\d\d_")
SECTION_RE = re.compile(r"^\d\d_.*\.ipynb$")
# [![alt](https://…/badge.svg)](https://target) → [alt](https://target): the link stays, the remote image goes.
BADGE_RE = re.compile(r"\[!\[([^\]]*)\]\((https?://[^)\s]+)\)\]\(([^)\s]+)\)")
# Any other remote image ![alt](https://…) becomes a link to it, for the same reason.
REMOTE_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\((https?://[^)\s]+)\)")
LINK_RE = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")


# --------------------------------------------------------------------------------------------- staging ---

def chapters() -> list[Path]:
    """Chapter folders in course order (their names start with the chapter number)."""
    return sorted(p for p in NOTEBOOKS.iterdir() if p.is_dir() and CHAPTER_RE.match(p.name))


def chapter_notebooks(chapter: Path) -> list[Path]:
    """A chapter's notebooks in reading order: NN_*.ipynb by number, then exercises.ipynb, then any other."""
    nbs = [p for p in chapter.glob("*.ipynb")]
    sections = sorted(p for p in nbs if SECTION_RE.match(p.name))
    exercises = [p for p in nbs if p.name == "exercises.ipynb"]
    # A notebook of neither kind is still staged and listed, so it is never silently left out of the site.
    others = sorted(set(nbs) - set(sections) - set(exercises))
    return sections + exercises + others


def helpers_modules() -> list[str]:
    """Every public module of the helpers package, by name (helpers/_private.py would be left out)."""
    return sorted(f"helpers.{p.stem}" for p in HELPERS.glob("*.py") if not p.name.startswith("_"))


def repository_url() -> tuple[str, str]:
    """The course repository and branch from pyproject.toml [tool.course] (the one URL setting, see README)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        course = tomllib.load(f)["tool"]["course"]
    return course["repository"].rstrip("/"), course.get("branch", "main")


def rewrite_links(text: str, source: Path) -> str:
    """Make a README's links work in the site (see the module docstring); ``source`` is its path in the repo.

    Raises ValueError for a relative link whose target does not exist in the repository: a broken README link
    should fail the build, not become a broken page link.
    """
    repo, branch = repository_url()
    pages = {p.resolve() for c in chapters() for p in [c / "README.md", *chapter_notebooks(c)]}
    text = BADGE_RE.sub(lambda m: f"[{m.group(1)}]({m.group(3)})", text)
    text = REMOTE_IMAGE_RE.sub(lambda m: f"[{m.group(1) or m.group(2)}]({m.group(2)})", text)

    def fix(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if urlsplit(target).scheme or target.startswith("#"):
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / unquote(path)).resolve()
        try:
            rel = resolved.relative_to(ROOT)
        except ValueError:
            raise ValueError(f"{source.relative_to(ROOT)}: link {target!r} points outside the repository") from None
        if not resolved.exists():
            raise ValueError(f"{source.relative_to(ROOT)}: link {target!r} points to a missing file {rel}")
        if resolved in pages:
            return m.group(0)  # a page of the site: MyST resolves the relative .ipynb / README.md link
        if rel.parts[:1] == ("helpers",) and resolved.suffix == ".py":
            module = "helpers" if resolved.stem == "__init__" else f"helpers.{resolved.stem}"
            return f"{{py:mod}}`{label.strip('`') or module} <{module}>`"
        kind = "tree" if resolved.is_dir() else "blob"
        return f"[{label}]({repo}/{kind}/{branch}/{rel.as_posix()}{'#' + anchor if anchor else ''})"

    return LINK_RE.sub(fix, text)


def toctree(entries: list[str], caption: str | None = None, hidden: bool = True) -> str:
    """A MyST toctree block listing ``entries`` (document names relative to the page)."""
    opts = [":maxdepth: 1"] + ([":hidden:"] if hidden else []) + ([f":caption: {caption}"] if caption else [])
    return "\n\n```{toctree}\n" + "\n".join(opts + [""] + entries) + "\n```\n"


def reexports(module: str) -> dict[str, str]:
    """Names a module lists in ``__all__`` but imports from a sibling module: {name: home module}.

    Read from the source (no import), so that the API page documents each object once, in its home module, and
    says where a re-exported name lives (two entries for one object would also make references ambiguous).
    """
    tree = ast.parse((HELPERS / f"{module.split('.')[-1]}.py").read_text())
    exported: set[str] = set()
    imported: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            exported = set(ast.literal_eval(node.value))
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = f"helpers.{node.module}"
    return {name: home for name, home in sorted(imported.items()) if name in exported}


def api_page() -> str:
    """The API page: the package docstring, then one section per helpers module, each an automodule."""
    lines = ["API: the ``helpers`` library", "=" * 30, "", ".. automodule:: helpers", "   :no-members:", ""]
    for module in helpers_modules():
        lines += [f"``{module}``", "-" * (len(module) + 4), "", f".. automodule:: {module}"]
        again = reexports(module)
        if again:
            lines += [f"   :exclude-members: {', '.join(again)}", "",
                      "   Also exports " + ", ".join(f":py:obj:`~{home}.{name}`" for name, home in again.items())
                      + " (documented in its own module)."]
        lines.append("")
    return "\n".join(lines)


def stage(src: Path) -> list[Path]:
    """Write the Sphinx source tree into ``src``; return the notebooks staged (each becomes one page)."""
    shutil.copytree(DOCS, src, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "_build"))
    (src / ".repo-root").write_text(str(ROOT))
    staged: list[Path] = []
    chapter_pages = []
    for chapter in chapters():
        dest = src / "notebooks" / chapter.name
        dest.mkdir(parents=True)
        nbs = chapter_notebooks(chapter)
        for nb in nbs:
            shutil.copy2(nb, dest / nb.name)
        staged += nbs
        readme = chapter / "README.md"
        if not readme.exists():
            raise ValueError(f"{chapter.relative_to(ROOT)} has no README.md: every chapter page is made from one")
        (dest / "README.md").write_text(rewrite_links(readme.read_text(), readme)
                                        + toctree([nb.stem for nb in nbs]))
        chapter_pages.append(f"notebooks/{chapter.name}/README")
    readme = ROOT / "README.md"
    (src / "index.md").write_text(rewrite_links(readme.read_text(), readme)
                                  + toctree(chapter_pages, caption="Chapters") + toctree(["api"], caption="Reference"))
    (src / "api.rst").write_text(api_page())
    return staged


# ------------------------------------------------------------------------------------------ link check ---

class _Refs(html.parser.HTMLParser):
    """Collects the ids a page defines and the href/src values it references."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (tag, value)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.refs.append((tag, a[key]))


@dataclass
class LinkReport:
    pages: int = 0  # HTML files in the output
    internal: int = 0  # internal references checked (links, images, scripts, stylesheets)
    broken: list[str] = field(default_factory=list)  # "page: reference (why)"
    external: set[str] = field(default_factory=set)  # links to other sites (listed, not fetched)
    remote_assets: list[str] = field(default_factory=list)  # "page: url": images/scripts/styles a reader must fetch


def check_links(out: Path) -> LinkReport:
    """Check that every local href/src in out/**/*.html resolves to a file in ``out`` (and to an id, if it has one)."""
    out = out.resolve()
    parsed: dict[Path, _Refs] = {}
    # The themes copy Jinja macro files (*.html) into _static/: templates, not pages of the site.
    for page in sorted(q for q in out.rglob("*.html") if q.relative_to(out).parts[0] != "_static"):
        p = _Refs()
        p.feed(page.read_text(encoding="utf-8"))
        parsed[page] = p
    report = LinkReport(pages=len(parsed))

    def ids_of(page: Path) -> set[str]:
        if page not in parsed:
            p = _Refs()
            p.feed(page.read_text(encoding="utf-8"))
            parsed[page] = p
        return parsed[page].ids

    for page, p in parsed.items():
        where = page.relative_to(out).as_posix()
        for tag, ref in p.refs:
            parts = urlsplit(ref.strip())
            if parts.scheme in ("http", "https") or ref.startswith("//"):
                report.external.add(ref)
                if tag != "a":  # an <img>/<script>/<link> from the network: the site would not work offline
                    report.remote_assets.append(f"{where}: <{tag}> {ref}")
                continue
            if parts.scheme or not ref.strip():  # mailto:, javascript:, data: ..., empty
                continue
            report.internal += 1
            if not parts.path:  # "#id" on this page; "#" alone is a script hook of the theme
                if parts.fragment and unquote(parts.fragment) not in p.ids:
                    report.broken.append(f"{where}: {ref} (no id {parts.fragment!r} on this page)")
                continue
            target = Path(posixpath.normpath(posixpath.join(page.parent.as_posix(), unquote(parts.path))))
            if parts.path.endswith("/") or target.is_dir():
                target = target / "index.html"
            if out not in target.parents:
                report.broken.append(f"{where}: {ref} (outside the site)")
            elif not target.is_file():
                report.broken.append(f"{where}: {ref} (no file {target.relative_to(out).as_posix()})")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in ids_of(target):
                report.broken.append(f"{where}: {ref} (no id {parts.fragment!r} in {target.name})")
    return report


# ----------------------------------------------------------------------------------------------- build ---

@dataclass
class SiteResult:
    out: Path
    notebooks: list[Path]  # repository notebooks that were staged (one page each)
    warnings: list[str]
    links: LinkReport
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.warnings and not self.links.broken and not self.links.remote_assets


def build(out: Path, quiet: bool = True) -> SiteResult:
    """Stage, build (warnings as errors) and link-check the site into ``out`` (replaced if it exists)."""
    t0 = time.perf_counter()
    out = out.resolve()
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="course-site-") as tmp:
        src, warnfile = Path(tmp) / "src", Path(tmp) / "warnings.txt"
        try:
            notebooks = stage(src)
        except ValueError as e:  # a README link to a missing file, a chapter without README: report it as a warning
            return SiteResult(out, [], [str(e)], LinkReport(), time.perf_counter() - t0)
        # Sphinx writes into the temporary folder, then the HTML moves to ``out``: myst-nb puts its image folder
        # (jupyter_execute/) beside the output folder, which must not litter the folder that holds ``out``.
        html_dir = Path(tmp) / "html"
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-w", str(warnfile),
               "-d", str(Path(tmp) / "doctrees"), str(src), str(html_dir)] + (["-q"] if quiet else [])
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=quiet, text=True)
        warnings = [w for w in warnfile.read_text().splitlines() if w.strip()] if warnfile.exists() else []
        if proc.returncode != 0 and not warnings:  # Sphinx failed before it could warn (e.g. conf.py raised)
            warnings = [f"sphinx-build exited {proc.returncode}: " + (proc.stderr or "").strip()[-2000:]]
        # Report paths in the repository, not in the temporary staging folder.
        warnings = [w.replace(str(src) + "/", "") for w in warnings]
        if html_dir.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(html_dir, out)
    links = check_links(out) if out.exists() else LinkReport(broken=["no output was written"])
    return SiteResult(out, notebooks, warnings, links, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "_site", help="output folder (default: _site/, replaced)")
    ap.add_argument("--list-external", action="store_true", help="print every external link (none is fetched)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show Sphinx's progress output")
    args = ap.parse_args(argv)
    r = build(args.out, quiet=not args.verbose)
    for w in r.warnings:
        print("WARNING:", w)
    for b in r.links.broken:
        print("BROKEN:", b)
    for b in r.links.remote_assets:
        print("REMOTE ASSET (the site must work offline):", b)
    if args.list_external:
        print("\n".join(sorted(r.links.external)))
    print(f"{r.links.pages} pages ({len(r.notebooks)} notebooks), {r.links.internal} internal links checked, "
          f"{len(r.links.broken)} broken, {len(r.links.remote_assets)} remote assets, "
          f"{len(r.links.external)} external links listed (not fetched), {len(r.warnings)} warnings; "
          f"{r.seconds:.1f} s -> {r.out}")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
