"""The widgets as a learner sees them: JupyterLab in headless Chromium, every control moved (tools/browser_check.py).

nbval runs the notebooks without a front end, and tests/test_widgets.py checks what ``live`` hands to ``display``;
neither sees a widget drawn twice, "Error displaying widget", a pile of figures growing at every move, a blank
figure, or a JavaScript error. These tests open notebooks in a real JupyterLab, Run All, move each control of each
``live(...)`` widget and back, and check the output under it each time.

By default the quick set (``browser_check.QUICK``: every kind of control the course uses, about 2-3 minutes);
``BROWSER_ALL=1`` checks every notebook with a ``live(`` call (about 30 minutes). Needs
``pip install -r requirements-browser.txt`` and Debian's ``chromium`` (or $BROWSER_CHROMIUM); skipped otherwise.
Failure screenshots go to $BROWSER_SCREENSHOTS, else to pytest's tmp_path. Select or deselect with ``-m browser``.

The first test runs the checker on a notebook made to be broken, in every way the checker claims to catch, so
that a pass of the real notebooks means something.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.browser


sys.path.insert(0, str(ROOT / "tools"))          # tools/ is no package: the same import as tests/test_grading.py
import browser_check  # noqa: E402

_missing = browser_check.missing_requirements()
if _missing:
    pytest.skip(f"browser tests skipped: {_missing}", allow_module_level=True)

ALL = os.environ.get("BROWSER_ALL", "") not in {"", "0"}
NOTEBOOKS = browser_check.widget_notebooks() if ALL else browser_check.QUICK


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    shots = Path(os.environ.get("BROWSER_SCREENSHOTS") or tmp_path_factory.mktemp("browser-screenshots"))
    with browser_check.Checker(shots) as c:
        yield c


def _broken_notebook(path: Path) -> Path:
    """A notebook with one good widget and one of each fault the checker must report (cell index: fault)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        '''from types import SimpleNamespace
import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display, Javascript
from helpers.widgets import live, int_slider, dropdown, checkbox

def box_of(controls, out):                     # the layout live() builds: VBox([VBox(controls), output])
    return w.VBox([w.VBox(list(controls.values())), out])

def twice_live(fn, **controls):                # the historical bug: displayed, then returned (shown again)
    box = box_of(controls, w.interactive_output(fn, controls))
    display(box)
    return box

def pile_live(fn, **controls):                 # an output never cleared: one more figure at every move
    out = w.Output()
    def redraw(_=None):
        with out:
            fn(**{k: c.value for k, c in controls.items()})
    for c in controls.values():
        c.observe(redraw, "value")
    redraw()
    display(box_of(controls, out))

def curve(n, flag=False):
    plt.figure(figsize=(3, 2)); plt.plot(range(n + 2)); plt.title(f"{n} {flag}"); plt.show()

def fails_when_moved(n):
    if n != 2:
        raise RuntimeError("broken view")
    print("n =", n)

def blank_when_moved(n):
    plt.figure(figsize=(3, 2))
    if n == 2:
        plt.plot([0, 1])
    else:
        plt.axis("off")
    plt.show()

def ignores_its_control(n):
    print("always the same")

twice, pile = SimpleNamespace(live=twice_live), SimpleNamespace(live=pile_live)''',
        'live(curve, n=int_slider(2, 1, 5, 1, "good"), flag=checkbox(False, "good flag"))',   # 1: fine
        'twice.live(curve, n=int_slider(2, 1, 5, 1, "twice"))',                               # 2: shown twice
        'pile.live(curve, n=dropdown([2, 3], 2, "pile"))',                                    # 3: figures pile up
        'live(fails_when_moved, n=int_slider(2, 1, 5, 1, "error"))',                          # 4: traceback
        'live(blank_when_moved, n=int_slider(2, 1, 5, 1, "blank"))',                          # 5: blank figure
        'live(ignores_its_control, n=int_slider(2, 1, 5, 1, "inert"))',                       # 6: no change
        'display(Javascript("console.error(\'selftest: a console error\')"))',                # 7: console error
    ]]
    nbformat.write(nb, path)
    return path


def test_checker_reports_each_kind_of_broken_widget(checker, tmp_path):
    res = checker.check(_broken_notebook(tmp_path / "broken_widgets.ipynb"), move_timeout_s=8)
    report = "\n".join(res.problems)

    def about(cell: int) -> str:
        return "\n".join(p for p in res.problems if p.startswith(f"cell {cell}:") or p.startswith(f"cell {cell},"))

    assert about(1) == "", f"the good widget was reported:\n{about(1)}"
    assert "slider 'good': ArrowRight" in res.moves[0] and "checkbox 'good flag'" in res.moves[1], res.moves
    assert "2 live() widget boxes shown for 1" in about(2), report
    assert "1 figure(s) before, 2 after" in about(3), report
    assert "error output under the widget" in about(4) and "broken view" in about(4), report
    assert "figure(s) blank" in about(5), report
    assert "did not change" in about(6), report
    assert any("console error: selftest: a console error" in p for p in res.problems), report
    assert res.screenshots, "a failing notebook must leave screenshots"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda n: Path(n).stem)
def test_widgets_redraw_in_place(checker, notebook):
    res = checker.check(ROOT / notebook)
    n_live = sum(browser_check.live_cells(ROOT / notebook).values())
    assert not res.problems, (f"{res.line()}\n" + "\n".join(f"  {p}" for p in res.problems)
                              + "".join(f"\n  screenshot: {s}" for s in res.screenshots))
    assert res.controls_moved >= n_live, f"{res.line()}: fewer controls moved than the {n_live} live() widgets"
    print(res.line())
