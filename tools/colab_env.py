"""Build ``.venv-colab``: the course installed on Google Colab's widget stack, to execute the notebooks as Colab does.

Colab's runtime ships old Jupyter packages -- ipywidgets 7.7.1, IPython 7.34.0, ipykernel 6.17.1 -- while the
README's install (``requirements.txt``) resolves to ipywidgets 8, IPython 9, ipykernel 7 in ``.venv``. A notebook
that only ever ran on the new stack can fail on Colab (an API that ipywidgets 7 lacks, a widget value it coerces
differently), so this environment runs the notebooks, controls and all, on Colab's versions::

    python tools/colab_env.py                  # create or update .venv-colab, then print its versions
    source .venv-colab/bin/activate
    COURSE_MOVE_CONTROLS=1 pytest -n 2 --dist loadscope -m "not grading"

(``COURSE_MOVE_CONTROLS=1``: every ``live()`` moves its controls, see ``helpers/widgets.py``. The nbgrader round
trip, ``-m grading``, belongs on the README's stack: nbgrader 0.9 requires IPython >= 8.10, and on 7.34 its
tracebacks lack the ``Cell In[n], line N`` that ``tools/grade_roundtrip.py`` reads. Teachers grade outside Colab.)

Steps, from nothing: ``python3 -m venv``; ``pip install torch==2.13.0`` (the CPU build on this machine's disk: a
plain ``torch`` would pull a multi-GB CUDA build); the README's ``pip install -r requirements.txt -e .``; then
:data:`COLAB_PINS` over it. The pins are a second ``pip install`` because ``requirements.txt`` asks for
``ipykernel>=6.29`` (what ``.venv`` gets), which cannot resolve together with Colab's 6.17.1.

Idempotent and fast: a stamp in the environment records a hash of ``requirements.txt``, ``pyproject.toml`` and the
pins; when it matches, nothing is installed and only the versions are printed (well under a second).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-colab"
STAMP = VENV / ".course-colab-stamp"
TORCH = "torch==2.13.0"

# Colab's widget stack. Nothing else has to be held back for it to install and run: pip brings ipywidgets 7's
# widgetsnbextension 3.6.x and ipython_genutils itself, and ipykernel 6.17.1 runs the notebooks (nbval, real widgets)
# with the newest jupyter_client 8, traitlets 5, pyzmq 27 and tornado 6 that requirements.txt resolves to. The one
# declared conflict left (pip check) is nbgrader's ipython>=8.10: grading is tested on the README's stack instead.
COLAB_PINS = [
    "ipywidgets==7.7.1",
    "ipython==7.34.0",
    "ipykernel==6.17.1",          # older than requirements.txt's >=6.29, hence a second install over the first
]

# Printed at the end: the packages whose versions decide how a notebook kernel and its widgets behave.
SHOWN = ["torch", "numpy", "ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "ipython", "ipykernel",
         "jupyter_client", "jupyter_core", "traitlets", "pyzmq", "tornado", "comm", "nbclient", "nbformat", "nbval",
         "pytest", "pytest-xdist", "jupyterlab", "nbgrader", "matplotlib"]


def _fingerprint() -> str:
    h = hashlib.sha256()
    for f in ("requirements.txt", "pyproject.toml"):
        h.update((ROOT / f).read_bytes())
    h.update(json.dumps([TORCH, COLAB_PINS]).encode())
    return h.hexdigest()


def _pip(*args: str) -> None:
    cmd = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def versions() -> dict[str, str]:
    """The installed version of each package in :data:`SHOWN` (``-`` when absent), read inside the environment."""
    code = ("import json, sys\nfrom importlib.metadata import version, PackageNotFoundError\n"
            "def v(n):\n    try: return version(n)\n    except PackageNotFoundError: return '-'\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", code, *SHOWN], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def build(force: bool = False) -> bool:
    """Create or update the environment; return True when something was installed."""
    fingerprint = _fingerprint()
    if not force and (VENV / "bin" / "python").exists() and STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        return False
    if not (VENV / "bin" / "python").exists():
        print(f"+ {sys.executable} -m venv {VENV.name}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    STAMP.unlink(missing_ok=True)        # a build that stops half-way must not look finished
    _pip("--upgrade", "pip")
    _pip(TORCH)
    _pip("-r", "requirements.txt", "-e", ".")
    _pip(*COLAB_PINS)
    check = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode:
        # Expected: nbgrader declares ipython>=8.10. A notebook kernel does not use it (see the docstring).
        print("pip check (declared requirements that Colab's pins break):\n" + check.stdout.strip(), flush=True)
    STAMP.write_text(fingerprint + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="reinstall even when the stamp says it is up to date")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    built = build(force=args.force)
    print(f"{VENV.name}: {'built' if built else 'up to date'} in {time.perf_counter() - t0:.1f} s")
    for name, version in versions().items():
        print(f"  {name:20s} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
