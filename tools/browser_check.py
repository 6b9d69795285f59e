"""Open widget notebooks in a real JupyterLab in headless Chromium, move every control, check the output.

The unit tests (tests/test_widgets.py) check what ``helpers.widgets.live`` hands to ``display``; nbval runs the
notebooks without a front end. Neither sees what a learner sees: a widget drawn twice, "Error displaying widget",
an output area that piles up a new figure at every move instead of redrawing one, or a JavaScript error. This
tool does what a learner does: JupyterLab (token-less, 127.0.0.1, a free port) over a scratch copy of the
notebooks, Run > Run All Cells, wait for the kernel, then for each control of each ``live(...)`` widget: move it
(slider: focus the handle, press ArrowRight, or Home when already at the end; dropdown: pick another option;
checkbox: click; text box: type and press Enter), check that the output under that widget was redrawn in place
(changed, the same number of figures, none blank), move it back and check again. Also: each live( call shows
exactly one widget box, no error output anywhere in the notebook, no browser console error.

    python tools/browser_check.py                   # the quick set (QUICK below), about 2-3 minutes
    python tools/browser_check.py --all             # every notebook with a live( call (40; ~35 min)
    python tools/browser_check.py notebooks/01_foundations/03_precision.ipynb

Needs ``pip install -r requirements-browser.txt`` (Playwright for Python) and a Chromium binary: Debian's
``apt-get install chromium`` (/usr/bin/chromium), or $BROWSER_CHROMIUM. Playwright's own browser download is not
used. Screenshots of failures go to $BROWSER_SCREENSHOTS (default: a temporary folder, printed).
tests/test_browser.py runs the same check under pytest (``-m browser``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The default set: together these use every kind of control helpers.widgets builds (slider, log_slider,
# int_slider, dropdown, checkbox, text_box), and the first three once showed their widget twice.
QUICK = [
    "notebooks/01_foundations/01_prediction_objective.ipynb",   # log_slider, int_slider, dropdown (~13 s)
    "notebooks/01_foundations/03_precision.ipynb",              # slider, dropdown (~7 s)
    "notebooks/02_architecture/04_sparse_experts.ipynb",        # int_slider x4, dropdown; two live() cells (~41 s)
    "notebooks/05_inference/05_serving_explorer.ipynb",         # text_box, checkbox, slider, int_slider, dropdown (~35 s)
]

# Browser console errors that are not the course's fault. Each needs a reason; keep the list short.
HARMLESS_CONSOLE = [
    # (none yet)
]

LIVE_CALL = re.compile(r"^[^#\n]*\blive\(", re.M)     # a live( call not commented out

# JupyterLab 4 / ipywidgets 8 DOM (what a learner's browser shows):
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"      # the notebook on show (the lab may hold others)
CELL = f"{PANEL} .jp-Notebook .jp-Cell"
CODE_PROMPT = ".jp-InputArea-prompt"            # "[7]:", "[*]:" while queued or running, "[ ]:" never run
LIVE_BOX = ".widget-vbox:has(> .widget-vbox):has(> .widget-output)"   # live(): VBox([VBox(controls), Output])
CONTROL = ".widget-slider, .widget-dropdown, .widget-checkbox, .widget-text"
BLANK_COLOURS = 16                              # a figure drawn with fewer colours is blank or nearly (no text, no curve)
STDERR = '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'


def find_chromium() -> str | None:
    """The Chromium to drive: $BROWSER_CHROMIUM, else Debian's /usr/bin/chromium (or one on PATH)."""
    env = os.environ.get("BROWSER_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_requirements() -> str | None:
    """Why the check cannot run here (None when it can): Playwright or Chromium absent."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed: pip install -r requirements-browser.txt"
    if find_chromium() is None:
        return "no Chromium found: apt-get install -y chromium (or set BROWSER_CHROMIUM to a Chrome/Chromium binary)"
    return None


def live_cells(notebook: Path) -> dict[int, int]:
    """{code cell index: number of live( calls in it}: each call must show exactly one widget box."""
    nb = json.loads(notebook.read_text())
    counts = {}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            n = len(LIVE_CALL.findall("".join(cell["source"])))
            if n:
                counts[i] = n
    return counts


def widget_notebooks() -> list[str]:
    """Every lesson notebook with a live( call, in course order (the --all set), relative to the repository."""
    return [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("notebooks/*/*.ipynb")) if live_cells(p)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A token-less JupyterLab on 127.0.0.1 over a scratch copy of notebooks/, with its own settings.

    Kernels inherit this environment: one thread (OMP_NUM_THREADS=1, the machine is shared), no progress
    bars, and never COURSE_STATIC (static mode shows no widget at all) or COURSE_MOVE_CONTROLS (the kernel
    would move the controls itself). The settings switch off JupyterLab's
    news and update checks, whose notification would cover the notebook, and the notebook's windowing.
    """

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Lab":
        shutil.copytree(ROOT / "notebooks", self.scratch / "notebooks",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        settings = self.scratch / ".lab" / "settings"
        (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
        (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        # every cell in the DOM, in notebook order (the default windowing may leave far cells unattached)
        (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
        (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))
        env = {k: v for k, v in os.environ.items() if k not in {"COURSE_STATIC", "COURSE_MOVE_CONTROLS"}}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COURSE_NO_PROGRESS="1",
                   JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(self.scratch / ".lab" / "ws"))
        self.log = open(self.scratch / "jupyterlab.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
             "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={self.scratch}",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=self.scratch, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = (self.scratch / "jupyterlab.log").read_text()[-2000:]
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; its log ends:\n{tail}")
            try:
                urllib.request.urlopen(f"{self.url}/api/status", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not answer on {self.url} within 60 s; see {self.scratch / 'jupyterlab.log'}")

    def path(self, notebook: Path) -> str:
        """Where ``notebook`` is inside the lab (a URL path); one from outside notebooks/ is copied to extra/."""
        notebook = Path(notebook).resolve()
        if notebook.is_relative_to(ROOT / "notebooks"):
            return str(notebook.relative_to(ROOT))
        (self.scratch / "extra").mkdir(exist_ok=True)
        if not (self.scratch / "extra" / notebook.name).exists():
            shutil.copy(notebook, self.scratch / "extra" / notebook.name)
        return f"extra/{notebook.name}"

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@dataclass
class Result:
    notebook: str
    controls_moved: int = 0
    outputs_checked: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)

    def line(self) -> str:
        status = "ok" if not self.problems else f"FAILED ({len(self.problems)} problems)"
        return (f"{self.notebook}: {self.controls_moved} controls moved, {self.outputs_checked} outputs checked, "
                f"{self.seconds:.1f} s: {status}")


def _wait_for_idle(page, timeout_s: float, ran_all: bool = False) -> None:
    """Until the kernel is idle and no code cell is queued or running ("[*]:").

    With ``ran_all`` (after Clear Outputs + Run All) also until every code cell has a new execution count, or an
    error stopped the run: a positive sign that the run happened, not only that nothing is running yet.
    """
    page.wait_for_function(
        """([panel, prompt, stderr, ranAll]) => {
            const p = document.querySelector(panel);
            if (!p) return false;
            const status = document.querySelector('#jp-main-statusbar');     // "Python 3 (ipykernel) | Idle"
            if (status && !/\|\\s*Idle/.test(status.textContent)) return false;
            const prompts = [...p.querySelectorAll(prompt)].map(e => e.textContent);
            if (prompts.some(t => t.includes('*'))) return false;
            if (!ranAll) return true;
            return prompts.every(t => /\\[\\d+\\]/.test(t)) || !!p.querySelector(stderr);
        }""", arg=[PANEL, f".jp-CodeCell {CODE_PROMPT}", STDERR, ran_all], timeout=timeout_s * 1000, polling=250)


def _menu(page, menu: str, item: str) -> None:
    """Click ``menu`` > ``item`` in JupyterLab's menu bar."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def _output_state(box) -> dict:
    """What the output area under a live() widget shows: its text, its figures, and how many colours each has.

    A figure of fewer than BLANK_COLOURS colours is blank or nearly (the kernel sent an empty PNG, or one drawn at
    a wrong scale): the count (up to 64) is taken by drawing the image on a canvas, as the learner's screen would.
    """
    return box.evaluate("""async (b, stderr) => {
        const out = b.querySelector(':scope > .widget-output');
        const imgs = [...out.querySelectorAll('img')];
        const colours = [];
        for (const img of imgs) {
            try { await img.decode(); } catch (e) { colours.push(0); continue; }
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
            const d = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
            for (let i = 0; i < d.length && seen.size < 64; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            colours.push(seen.size);
        }
        const errors = [...out.querySelectorAll(stderr)].map(e => e.innerText)
            .filter(t => t.includes('Traceback') || /Error/.test(t.split('\\n')[0]));
        return {images: imgs.length, srcs: imgs.map(i => i.src.length + ':' + i.src.slice(-64)),
                colours, errors, text: out.innerText, html_len: out.innerHTML.length};
    }""", STDERR)


def _label(control) -> str:
    """The control's description (a checkbox's first label is an empty placeholder: take the first non-empty)."""
    for text in control.locator(".widget-label, .widget-label-basic").all_inner_texts():
        if text.strip("\u200b \n"):
            return text.strip()
    return "?"


def _move(control, page):
    """Move one control the way a learner would. Return (what was done, a function that moves it back)."""
    classes = control.get_attribute("class") or ""
    label = _label(control)
    if "widget-slider" in classes:
        handle = control.locator(".noUi-handle").first
        before = handle.get_attribute("aria-valuenow")
        at_end = before == handle.get_attribute("aria-valuemax")
        key, back = ("Home", "End") if at_end else ("ArrowRight", "ArrowLeft")
        handle.focus()
        page.keyboard.press(key)
        return f"slider {label!r}: {key} from {before}", lambda: (handle.focus(), page.keyboard.press(back))
    if "widget-dropdown" in classes:
        select = control.locator("select")
        current = select.input_value()
        other = next(v for v in select.locator("option").evaluate_all("os => os.map(o => o.value)") if v != current)
        select.select_option(value=other)
        return f"dropdown {label!r}: {current!r} -> {other!r}", lambda: select.select_option(value=current)
    if "widget-checkbox" in classes:
        box = control.locator("input[type=checkbox]")
        box.click()
        return f"checkbox {label!r}: clicked", box.click
    if "widget-text" in classes:
        box = control.locator("input, textarea").first
        current = box.input_value()
        box.fill(current + " and")
        box.press("Enter")
        return f"text box {label!r}: typed ' and' + Enter", lambda: (box.fill(current), box.press("Enter"))
    raise AssertionError(f"unknown control with classes {classes!r}")


def _redrawn(page, box, before: dict, timeout_s: float) -> dict | None:
    """The output under ``box`` once it differs from ``before`` and the kernel is idle (None: it never changed).

    A first change may not be the redraw: the front end can touch the output's HTML before the kernel has even
    received the widget's message (so the status bar still says Idle). So it waits, up to ``timeout_s`` in all,
    until the output has settled (kernel idle) on text or figures different from ``before``.
    """
    deadline = time.monotonic() + timeout_s
    try:
        page.wait_for_function(
            """([b, old]) => { const out = b.querySelector(':scope > .widget-output');
                return out.innerHTML.length !== old.html_len || out.innerText !== old.text
                       || [...out.querySelectorAll('img')].map(i => i.src.length + ':' + i.src.slice(-64)).join()
                          !== old.srcs.join(); }""",
            arg=[box.element_handle(), before], timeout=timeout_s * 1000, polling=200)
        while True:
            _wait_for_idle(page, max(1.0, deadline - time.monotonic()))
            after = _output_state(box)
            # a redraw passes through an empty output (clear_output(wait=True)): compare with what it settled on
            if (after["text"], after["srcs"]) != (before["text"], before["srcs"]):
                return after
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)
    except Exception:
        return None


def _error_line(traceback: str) -> str:
    """The line of a rendered traceback that says what went wrong (its last), and how long the traceback is."""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    return f"{lines[-1][:300]} (a traceback of {len(lines)} lines)" if lines else "(empty)"


def _check_redraw(before: dict, after: dict | None, where: str, timeout_s: float) -> list[str]:
    """The problems with one redraw: no change, figures piling up or vanishing, blank figures."""
    if after is None:
        return [f"{where}: the output under the widget did not change within {timeout_s:.0f} s"]
    problems = [f"{where}: error output under the widget: {_error_line(e)}" for e in after["errors"]]
    if after["images"] != before["images"]:
        problems.append(f"{where}: {before['images']} figure(s) before, {after['images']} after (the output must be "
                        "redrawn in place, one figure replacing the other)")
    blank = [n for n in after["colours"] if n < BLANK_COLOURS]
    if blank:
        problems.append(f"{where}: {len(blank)} of {after['images']} figure(s) blank (an image of {blank[0]} colour(s))")
    return problems


def _snap(element, folder: Path, name: str) -> str:
    """A screenshot of ``element`` in ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    try:
        element.screenshot(path=str(path))
    except Exception as e:                      # a screenshot is evidence, never the reason a check fails
        return f"(no screenshot {path}: {e})"
    return str(path)


def check_notebook(page, lab: Lab, notebook: Path, screenshots: Path, run_timeout_s: float = 600,
                   move_timeout_s: float = 120, screenshot_always: bool = False) -> Result:
    """Open ``notebook`` in ``lab``, Run All, move every control of every live() widget; return what was seen.

    Each control is moved, checked, and moved back (checked again) before the next one: each move starts from
    the notebook's own settings, so one control's move cannot leave the view in a state (an invalid
    combination, say) where the next control's move legitimately changes nothing.
    """
    res = Result(lab.path(notebook))
    t0 = time.monotonic()
    console: list[str] = []

    def on_console(msg):
        if msg.type == "error" and not any(h in msg.text for h in HARMLESS_CONSOLE):
            console.append(f"console error: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda err: console.append(f"page error: {err}"))
    expected = live_cells(notebook)
    try:
        # a workspace of its own, reset: only this notebook open, no session restored from an earlier page
        page.goto(f"{lab.url}/lab/workspaces/check-{Path(notebook).stem}/tree/{lab.path(notebook)}?reset")
        page.locator(CELL).first.wait_for(timeout=60_000)
        _wait_for_idle(page, 60)
        # the committed outputs away (so that what is checked below is this run's), then Run All, from the
        # menu bar as a learner would
        _menu(page, "Edit", "Clear Outputs of All Cells")
        _menu(page, "Run", "Run All Cells")
        _wait_for_idle(page, run_timeout_s, ran_all=True)

        cells = page.locator(CELL)
        for idx, n_live in expected.items():
            cell = cells.nth(idx)
            cell.scroll_into_view_if_needed()
            boxes = cell.locator(f".jp-OutputArea {LIVE_BOX}")
            if boxes.count() != n_live:
                res.problems.append(f"cell {idx}: {boxes.count()} live() widget boxes shown for {n_live} live( "
                                    "call(s) (each widget must show once)")
                continue
            for b in range(n_live):
                box = boxes.nth(b)
                controls = box.locator(f":scope > .widget-vbox > :is({CONTROL})")
                if controls.count() == 0:
                    res.problems.append(f"cell {idx}: a live() widget box with no control")
                initial = _output_state(box)
                blank = [n for n in initial["colours"] if n < BLANK_COLOURS]
                if blank:
                    res.problems.append(f"cell {idx}: {len(blank)} of {initial['images']} figure(s) blank before any move")
                res.problems += [f"cell {idx}: error output under the widget before any move: {_error_line(e)}"
                                 for e in initial["errors"]]
                for c in range(controls.count()):
                    control = controls.nth(c)
                    control.scroll_into_view_if_needed()
                    before = _output_state(box)
                    what, move_back = _move(control, page)
                    res.controls_moved += 1
                    res.moves.append(f"cell {idx}: {what}")
                    moved = _redrawn(page, box, before, move_timeout_s)
                    found = _check_redraw(before, moved, f"cell {idx}, {what}", move_timeout_s)
                    res.outputs_checked += 1
                    if moved is not None:
                        if found:      # a picture of the widget as it is now, before moving it back
                            res.screenshots.append(_snap(box, screenshots, f"{Path(notebook).stem}-cell{idx}-move{res.controls_moved}"))
                        move_back()
                        back = _redrawn(page, box, moved, move_timeout_s)
                        more = _check_redraw(moved, back, f"cell {idx}, {what}, moved back", move_timeout_s)
                        res.outputs_checked += 1
                        if more:
                            res.screenshots.append(_snap(box, screenshots, f"{Path(notebook).stem}-cell{idx}-move{res.controls_moved}-back"))
                        found += more
                    res.problems += found
    except Exception as e:                      # a timeout or a missing element: report it with a screenshot
        res.problems.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    # errors anywhere in the notebook (not only under the widgets)
    try:
        for err in page.locator(f"{PANEL} {STDERR}").all():
            text = err.inner_text()
            if "Traceback" in text or "Error" in text.split("\n", 1)[0]:
                res.problems.append(f"error output in the notebook: {_error_line(text)}")
        for err in page.get_by_text("Error displaying widget").all():
            res.problems.append(f"widget failed to render: {err.inner_text()[:200]}")
    except Exception as e:
        res.problems.append(f"could not scan for errors: {e}")
    res.problems += console
    res.seconds = time.monotonic() - t0
    if res.problems or screenshot_always:
        screenshots.mkdir(parents=True, exist_ok=True)
        shot = screenshots / (Path(notebook).stem + ".png")
        try:
            page.screenshot(path=str(shot), full_page=True)
            res.screenshots.append(str(shot))
        except Exception:
            pass
    return res


class Checker:
    """One JupyterLab and one headless Chromium, shared by the notebooks checked with :meth:`check`.

        with Checker(screenshots) as checker:
            result = checker.check(ROOT / "notebooks/01_foundations/03_precision.ipynb")
    """

    def __init__(self, screenshots: Path):
        self.screenshots = Path(screenshots)

    def __enter__(self) -> "Checker":
        from playwright.sync_api import sync_playwright

        self._tmp = tempfile.TemporaryDirectory(prefix="browser-check-")
        try:
            self.lab = Lab(Path(self._tmp.name)).__enter__()
            self._pw = sync_playwright().start()
            self.browser = self._pw.chromium.launch(executable_path=find_chromium(), headless=True,
                                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        except BaseException:
            self.__exit__()
            raise
        return self

    def check(self, notebook: Path, **kwargs) -> Result:
        """Check one notebook in a fresh page; its kernel is shut down afterwards (CPU and memory for the next)."""
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            return check_notebook(context.new_page(), self.lab, Path(notebook), self.screenshots, **kwargs)
        finally:
            context.close()
            for s in json.loads(urllib.request.urlopen(f"{self.lab.url}/api/sessions").read()):
                urllib.request.urlopen(urllib.request.Request(f"{self.lab.url}/api/sessions/{s['id']}", method="DELETE"))

    def __exit__(self, *exc):
        for close in (lambda: self.browser.close(), lambda: self._pw.stop(), lambda: self.lab.__exit__(),
                      self._tmp.cleanup):
            try:
                close()
            except Exception:           # a part that never started, or one already gone
                pass


def run_checks(notebooks: list[Path], screenshots: Path, verbose: int = 1, **kwargs) -> list[Result]:
    """Check each notebook (printing a line per notebook when ``verbose``); return the results."""
    results = []
    with Checker(screenshots) as checker:
        for nb in notebooks:
            res = checker.check(nb, **kwargs)
            results.append(res)
            if verbose:
                print(res.line(), flush=True)
                for m in res.moves if verbose > 1 else ():
                    print(f"    moved {m}", flush=True)
                for p in res.problems:
                    print(f"    {p}", flush=True)
                for s in res.screenshots:
                    print(f"    screenshot: {s}", flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to check (default: the quick set)")
    ap.add_argument("--all", action="store_true", help="every notebook with a live( call (about 40 min)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every move")
    ap.add_argument("--screenshots", action="store_true", help="a screenshot of every notebook, not only of failures")
    args = ap.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"browser_check: {why}", file=sys.stderr)
        return 2
    notebooks = [Path(n) if Path(n).exists() else ROOT / n
                 for n in args.notebooks or (widget_notebooks() if args.all else QUICK)]
    shots = Path(os.environ.get("BROWSER_SCREENSHOTS") or tempfile.mkdtemp(prefix="browser-screenshots-"))
    t0 = time.monotonic()
    results = run_checks(notebooks, shots, verbose=1 + args.verbose, screenshot_always=args.screenshots)
    failed = [r for r in results if r.problems]
    print(f"{len(results)} notebooks, {sum(r.controls_moved for r in results)} controls moved, "
          f"{sum(r.outputs_checked for r in results)} outputs checked, {time.monotonic() - t0:.0f} s; "
          f"{len(failed)} failed" + (f" (screenshots in {shots})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
