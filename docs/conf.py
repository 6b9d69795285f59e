"""Sphinx configuration of the course's static site (built by ``python tools/build_site.py``).

The source tree Sphinx reads is staged by ``tools/build_site.py`` (this file, the landing page made from README.md,
one page per chapter README and per notebook, and the generated API page), so no notebook or README is duplicated
in git. Three rules keep the site offline and faithful to the repository:

- notebooks are never executed (``nb_execution_mode = "off"``): each page shows the committed outputs;
- nothing is fetched at build time (no intersphinx, remote badge images are turned into plain links when staged);
- MathJax is served from the site itself (copied from the ``django-static-mathjax`` wheel, see
  ``requirements-site.txt``), so the notebooks' math renders without a network connection.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent
# The staged tree records where the repository is, so autodoc imports the checkout's helpers, not an installed copy.
REPO = Path((SRC / ".repo-root").read_text().strip()) if (SRC / ".repo-root").exists() else SRC.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SRC / "_ext"))

project = "DeepSeek-V3, built small"
author = "the course authors"
copyright = "the course authors, MIT License"

extensions = ["myst_nb", "sphinx.ext.autodoc", "plain_docstrings"]  # _ext/plain_docstrings.py: see its docstring
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", ".repo-root"]

# --- notebooks (myst-nb) -----------------------------------------------------------------------------------
nb_execution_mode = "off"  # render the committed outputs; never run a lesson notebook to build the site
nb_merge_streams = True  # consecutive prints of a cell read as one block, as in JupyterLab
nb_render_markdown_format = "myst"  # helpers.report prints its tables as markdown: render them as tables
# No widget state is stored in the committed notebooks (tools/run_notebooks.py strips it), so a widget view could
# only show an empty box: let its static fallback (text/plain, e.g. a tqdm bar's last line) stand instead.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
myst_enable_extensions = ["dollarmath", "amsmath"]
# No digit just outside $…$ (pandoc's rule), so prices read as prices: "$5.576M at $2 per GPU-hour" in 04.2 would
# otherwise typeset "5.576M at" as math. (Spaces inside stay allowed: 03's exercises write "$= 1 - $".)
myst_dmath_allow_digits = False
myst_heading_anchors = 3

# --- API page (autodoc) ------------------------------------------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"  # long tensor signatures read better as a field list than in one line
autodoc_preserve_defaults = True  # show ``seed=0``-style defaults as written, not as repr() of evaluated objects
add_module_names = False
# Only the course's own docstrings: an undocumented override (e.g. an autograd Function's forward) would otherwise
# show torch's docstring, whose cross-references point into torch's documentation and warn here.
autodoc_inherit_docstrings = False

# --- HTML -----------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": False,  # the download button links .ipynb sources that the site does not ship
}
html_static_path = ["_static"]
html_show_sourcelink = False
html_copy_source = False


def _local_mathjax() -> str:
    """Copy MathJax 3 (the files tex-chtml.js loads) from the django-static-mathjax wheel into _static/mathjax.

    Why a wheel: it is the one PyPI distribution of the unmodified MathJax 3 build, so CI installs it with pip like
    every other dependency, and the site then renders math with no CDN. Without it the build stops, rather than
    silently producing a site whose math needs the network.
    """
    spec = importlib.util.find_spec("mathjax")
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if es5 is None or not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError("MathJax not found: pip install -r requirements-site.txt (it installs django-static-mathjax,"
                           " whose files the site serves so that math renders offline)")
    dest = SRC / "_static" / "mathjax"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-chtml.js", dest / "tex-chtml.js")
    # Fonts, the right-click menu and the TeX extensions MathJax autoloads (e.g. \boldsymbol); not the 13 MB speech
    # engine (a11y explorer, off unless a reader turns it on in the menu).
    for sub in ("output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y"):
        shutil.copytree(es5 / sub, dest / sub, dirs_exist_ok=True)
    return "mathjax/tex-chtml.js"


mathjax_path = _local_mathjax()
