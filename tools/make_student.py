"""Make the student version of a chapter's exercises with nbgrader.

    python tools/make_student.py notebooks/01_foundations/exercises.ipynb OUT_DIR

Runs `nbgrader generate_assignment` in a throw-away course directory and copies the released
notebook to OUT_DIR/<chapter>/exercises.ipynb: solutions replaced by `raise NotImplementedError()`,
hidden tests removed, outputs cleared, grading cells locked. Teachers hand that file out; the
source notebook (with solutions) stays the grading key.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def make_student(source: Path, out_dir: Path) -> Path:
    source = Path(source).resolve()
    if not source.exists():
        raise FileNotFoundError(f"no exercises notebook at {source}")
    assignment = source.parent.name  # the chapter folder names the assignment
    out_dir = Path(out_dir).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "source" / assignment).mkdir(parents=True)
        shutil.copy(source, root / "source" / assignment / source.name)
        cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force",
               f"--CourseDirectory.root={root}", "--CourseDirectory.course_id=deepseek-v3-course",
               f"--CourseDirectory.db_url=sqlite:///{root / 'gradebook.db'}"]
        # nbgrader calls `alembic` by name: put this interpreter's scripts folder on PATH
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
        released = root / "release" / assignment / source.name
        if proc.returncode != 0 or not released.exists():
            raise RuntimeError(f"nbgrader generate_assignment failed for {source}:\n{proc.stdout}\n{proc.stderr}")
        dest = out_dir / assignment / source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(released, dest)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(make_student(Path(sys.argv[1]), Path(sys.argv[2])))
