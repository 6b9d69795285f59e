"""The static site (tools/build_site.py): it builds without a warning, every internal link resolves, and it shows the
committed notebooks, chapter READMEs and the whole helpers API.

The build takes about a minute (Sphinx over 48 notebooks, nothing executed), so it runs once per module and every
check reads its output. The link checker and the docstring rewriting are also tested on small inputs, so that a
checker that finds nothing is known to be able to find something.
"""
from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("myst_nb", reason="the site needs pip install -r requirements-site.txt")

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.site


sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "docs" / "_ext")]   # neither folder is a package
import build_site  # noqa: E402
import plain_docstrings  # noqa: E402
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9][0-9]_*/*.ipynb"))
CHAPTERS = sorted(p.parent for p in ROOT.glob("notebooks/[0-9][0-9]_*/README.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_site.build(tmp_path_factory.mktemp("site") / "_site")


def test_builds_without_warnings_or_broken_links(site):
    assert site.warnings == [], "Sphinx warnings:\n" + "\n".join(site.warnings)
    assert site.links.broken == [], "broken links:\n" + "\n".join(site.links.broken)
    assert site.links.remote_assets == [], "assets fetched from the network:\n" + "\n".join(site.links.remote_assets)
    assert site.links.internal > 1000  # the checker looked at the pages (each has dozens of navigation links)
    assert site.ok


def test_one_page_per_notebook_and_chapter(site):
    assert len(NOTEBOOKS) >= 40 and len(CHAPTERS) == 7
    assert sorted(site.notebooks) == NOTEBOOKS
    missing = [nb for nb in NOTEBOOKS if not (site.out / nb.relative_to(ROOT).with_suffix(".html")).is_file()]
    missing += [c for c in CHAPTERS if not (site.out / c.relative_to(ROOT) / "README.html").is_file()]
    assert missing == []
    # The landing page (README.md) links every chapter page and every notebook page.
    index = (site.out / "index.html").read_text()
    for page in [c.relative_to(ROOT) / "README.md" for c in CHAPTERS] + [nb.relative_to(ROOT) for nb in NOTEBOOKS]:
        assert f'href="{page.with_suffix(".html").as_posix()}"' in index, page


def test_chapter_page_lists_its_notebooks_in_course_order(site):
    chapter = ROOT / "notebooks" / "01_foundations"
    page = (site.out / "notebooks" / "01_foundations" / "README.html").read_text()
    order = [nb.stem for nb in build_site.chapter_notebooks(chapter)]
    assert order[-1] == "exercises" and order[:2] == ["01_prediction_objective", "02_optimization"]
    positions = [page.find(f'href="{stem}.html"') for stem in order]
    assert -1 not in positions and positions == sorted(positions)


def test_api_page_has_every_helpers_module(site):
    api = (site.out / "api.html").read_text()
    modules = sorted(f"helpers.{p.stem}" for p in (ROOT / "helpers").glob("*.py") if p.stem != "__init__")
    assert len(modules) >= 30
    assert [m for m in modules if f'id="module-{m}"' not in api] == []


def test_notebook_page_shows_the_committed_outputs(site):
    nb_path = ROOT / "notebooks" / "01_foundations" / "01_prediction_objective.ipynb"
    nb = json.loads(nb_path.read_text())
    printed = [line for cell in nb["cells"] for out in cell.get("outputs", []) if out["output_type"] == "stream"
               for line in "".join(out["text"]).splitlines() if line.strip()]
    figures = sum("image/png" in out.get("data", {}) for cell in nb["cells"] for out in cell.get("outputs", []))
    page = html.unescape((site.out / "notebooks" / "01_foundations" / "01_prediction_objective.html").read_text())
    assert printed and figures
    assert printed[0] in page and printed[-1] in page
    assert page.count('src="../../_images/') >= figures
    # A widget's committed static view (its text fallback; no widget state is stored) is what the page shows.
    grpo = html.unescape((site.out / "notebooks" / "06_post_training" / "04_grpo.html").read_text())
    assert "GRPO live:" in grpo


# ---- the checker and the docstring rewriting on small inputs (no Sphinx) ----

def test_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a><a href="sub/page.html#gone">bad id</a><a href="missing.html">bad</a>'
        '<img src="img.png"><a href="https://example.org">ext</a><script src="https://cdn.example.org/x.js"></script>'
        '<a href="#top" id="top">self</a>')
    (tmp_path / "sub" / "page.html").write_text('<p id="here"><a href="../index.html">up</a></p>')
    report = build_site.check_links(tmp_path)
    assert report.pages == 2 and report.internal == 6
    assert sorted(b.split(" (")[0] for b in report.broken) == [
        "index.html: img.png", "index.html: missing.html", "index.html: sub/page.html#gone"]
    assert report.external == {"https://example.org", "https://cdn.example.org/x.js"}
    assert report.remote_assets == ["index.html: <script> https://cdn.example.org/x.js"]


def test_readme_links_become_site_links():
    readme = ROOT / "README.md"
    text = build_site.rewrite_links(
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.example/x)\n"
        "[ch](notebooks/01_foundations/README.md) [nb](notebooks/01_foundations/exercises.ipynb)\n"
        "[`helpers.rope`](helpers/rope.py) [data](data/README.md)", readme)
    repo, branch = build_site.repository_url()
    assert "[Open In Colab](https://colab.example/x)" in text and "colab-badge.svg" not in text
    assert "[ch](notebooks/01_foundations/README.md) [nb](notebooks/01_foundations/exercises.ipynb)" in text
    assert "{py:mod}`helpers.rope <helpers.rope>`" in text
    assert f"[data]({repo}/blob/{branch}/data/README.md)" in text
    with pytest.raises(ValueError, match="missing file"):
        build_site.rewrite_links("[x](notebooks/no_such.ipynb)", readme)


def test_plain_docstrings_become_valid_rest():
    norm = plain_docstrings.normalise
    # An aligned formula layout under a sentence becomes a literal block, shown as written.
    assert norm(["Warm-up. Then", '  "constant": lr;', "``min_lr`` defaults to lr/10."]) == [
        "::", "", "    Warm-up. Then", '      "constant": lr;', "    min_lr defaults to lr/10."]
    # A list right after a sentence gets its blank line; |set| and a lone * are escaped; glued literals still parse.
    assert norm(["Two ways:", "- naive: |A ∩ B|", "- absorbed: 1×``tile`` and *_main", "After."]) == [
        "Two ways:", "", r"- naive: \|A ∩ B\|", r"- absorbed: 1×\ ``tile`` and \*_main", "", "After."]
    assert norm(["Title (§4.3)", "----------", "Text."]) == [".. rubric:: Title (§4.3)", "", "Text."]
    # Valid reST passes through: emphasis, literals, roles, a '::' block.
    ok = ["See :func:`f` and ``x`` in *this* **case**::", "", "    a  =  b"]
    assert norm(ok) == ok
