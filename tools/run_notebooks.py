"""Re-execute notebooks in place, top to bottom, each in a fresh kernel.

    python tools/run_notebooks.py                      # every notebook of the course
    python tools/run_notebooks.py notebooks/01_foundations/03_precision.ipynb ...
    python tools/run_notebooks.py notebooks/02_architecture   # every notebook in a chapter

Before running, the Colab setup cell is synced (tools/sync_notebooks.py). The kernel runs with
COURSE_STATIC=1 (widgets render their initial view as plain output) and COURSE_NO_PROGRESS=1 (no
progress bars stored). After running, widget state is stripped from the metadata, so the committed
notebook renders on GitHub. Prints each notebook's wall time and peak memory (the kernel's max RSS).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import sync_notebooks  # noqa: E402

CELL_TIMEOUT = 600


def course_notebooks(paths: list[str] | None = None) -> list[Path]:
    """Notebooks named by ``paths`` (files or folders); the whole course when empty, in reading order."""
    paths = paths or [str(ROOT / "notebooks")]
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.suffix == ".ipynb" and p.exists():
            found.append(p)
        else:
            raise SystemExit(f"not a notebook or folder: {p}")
    return [f.resolve() for f in found]


def strip_widget_state(nb) -> None:
    """Drop widget state (breaks GitHub rendering) and per-cell execution timestamps (noise in diffs)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def execute_one(path: Path, write: bool) -> dict:
    """Execute one notebook in a fresh kernel (in this process); return wall time and status."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    sync_notebooks.sync_colab_cell(nb, path)
    env_before = {k: os.environ.get(k) for k in ("COURSE_STATIC", "COURSE_NO_PROGRESS")}
    os.environ["COURSE_STATIC"] = "1"
    os.environ["COURSE_NO_PROGRESS"] = "1"
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).splitlines()[-1] if str(e) else repr(e)
    wall = time.perf_counter() - t0
    for k, v in env_before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    strip_widget_state(nb)
    if write:
        nbformat.write(nb, path)
    return {"wall_s": wall, "error": error}


def run(paths: list[Path], write: bool) -> list[dict]:
    """Execute each notebook in its own subprocess, so that peak memory is that notebook's alone."""
    rows = []
    for p in paths:
        cmd = [sys.executable, __file__, "--one", str(p)] + ([] if write else ["--no-write"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        try:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            row = {"wall_s": float("nan"), "peak_mb": float("nan"), "error": (proc.stderr or "no output").strip()[-2000:]}
        row["notebook"] = str(p.relative_to(ROOT))
        rows.append(row)
        status = "ok" if not row.get("error") else f"ERROR: {row['error']}"
        print(f"{row['notebook']:<60} {row['wall_s']:7.1f} s {row['peak_mb']:8.0f} MB  {status}", flush=True)
    return rows


def write_timings(rows: list[dict]) -> None:
    """Save a whole-course run's times to tools/timings.json (the README's chapter table reads it)."""
    import platform
    import torch
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    (ROOT / "tools" / "timings.json").write_text(json.dumps(
        {"machine": machine, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1) + "\n")
    print("wrote tools/timings.json (python tools/sync_notebooks.py puts it into the README table)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="notebooks or folders (default: all of notebooks/)")
    ap.add_argument("--no-write", action="store_true", help="execute but do not save the notebooks")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:  # child process: run one notebook, print a JSON line
        row = execute_one(Path(args.one), write=not args.no_write)
        row["peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(row))
        return 0
    rows = run(course_notebooks(args.paths), write=not args.no_write)
    total = sum(r["wall_s"] for r in rows)
    print(f"{'total':<60} {total:7.1f} s")
    if not args.paths and not any(r.get("error") for r in rows):
        write_timings(rows)
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
