"""Checks on the committed notebooks themselves (their execution is tested by nbval)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import make_environment  # noqa: E402
import make_student  # noqa: E402
import sync_notebooks  # noqa: E402

NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
EXERCISES = [p for p in NOTEBOOKS if p.name == "exercises.ipynb"]
CHAPTERS = sorted(p for p in (ROOT / "notebooks").iterdir() if p.is_dir())


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


def test_seven_chapters_each_with_a_readme():
    assert [c.name[:2] for c in CHAPTERS] == ["01", "02", "03", "04", "05", "06", "07"]
    for c in CHAPTERS:
        assert (c / "README.md").is_file(), f"{c.name} has no README.md"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_executed_top_to_bottom(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c.get("execution_count") for c in code]
    assert None not in counts, "has code cells that were never executed: run python tools/run_notebooks.py"
    assert counts == list(range(1, len(counts) + 1)), "execution counts not 1..n: re-run top to bottom in a fresh kernel"
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"holds an error output: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert "widgets" not in nb.get("metadata", {}), "stores widget state in its metadata (breaks GitHub rendering)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_is_the_colab_setup(path):
    import nbformat
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source == sync_notebooks.colab_cell_source(path), "run python tools/sync_notebooks.py"


def test_colab_cell_installs_only_on_colab():
    src = sync_notebooks.colab_cell_source(ROOT / "notebooks" / "01_foundations" / "x.ipynb")
    lines = src.splitlines()
    guard = lines.index('if "google.colab" in sys.modules:')
    assert all(line.startswith("    ") for line in lines[guard + 1:]), "every install step must sit under the Colab guard"
    assert '"git", "clone"' in src and '"pip", "install"' in src
    cwd = Path.cwd()
    exec(compile(src, "colab-cell", "exec"), {})        # off Colab: does nothing at all
    assert Path.cwd() == cwd


def test_colab_cell_fails_early_with_a_clear_message(tmp_path, monkeypatch):
    """A clone that fails stops the cell with what failed and what to do, before any chdir or install."""
    import types
    src = sync_notebooks.colab_cell_source(ROOT / "notebooks" / "01_foundations" / "x.ipynb")
    url = sync_notebooks.settings()["repository"].rstrip("/")
    bad = (tmp_path / "no-such-repo").as_uri()                 # fails at once, offline
    src = src.replace(url, bad).replace("/content/", f"{tmp_path}/content/")
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    cwd = Path.cwd()
    with pytest.raises(RuntimeError, match=r"(?s)git clone of .*no-such-repo.* failed.*What to do: .*pyproject.toml"):
        exec(compile(src, "colab-cell", "exec"), {})
    assert Path.cwd() == cwd, "the cell must stop before changing directory"
    assert not (tmp_path / "content" / url.rsplit("/", 1)[-1] / ".installed").exists()


def test_readme_chapter_table_in_sync():
    readme = (ROOT / "README.md").read_text()
    assert sync_notebooks.sync_readme(readme) == readme, "run python tools/sync_notebooks.py"


def test_environment_yml_matches_requirements():
    assert make_environment.main(["--check"]) == 0
    pyproject = (ROOT / "pyproject.toml").read_text()
    for req in make_environment.requirements()[:6]:  # the runtime ranges are declared for pip too
        assert f'"{req}"' in pyproject, f"{req} is in requirements.txt but not in pyproject.toml"


@pytest.mark.parametrize("path", EXERCISES, ids=_ids(EXERCISES))
def test_exercises_yield_a_student_version(path, tmp_path):
    src = json.loads(path.read_text())
    graded = [c for c in src["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    solutions = [c for c in src["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    assert 3 <= len(solutions) <= 6, f"a chapter's exercises hold 3-6 exercises (solution cells), found {len(solutions)}"
    assert len(graded) >= len(solutions), "every exercise needs at least one autograded test cell"
    assert any("BEGIN HIDDEN TESTS" in "".join(c["source"]) for c in graded), "some tests should be hidden"

    student = json.loads(make_student.make_student(path, tmp_path).read_text())
    text = "\n".join("".join(c["source"]) for c in student["cells"])
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert "BEGIN HIDDEN TESTS" not in text
    for c in student["cells"]:
        meta = c.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and c["cell_type"] == "code":
            assert "NotImplementedError" in "".join(c["source"]) or "YOUR CODE HERE" in "".join(c["source"])
        if c["cell_type"] == "code":
            assert c.get("outputs", []) == [], "student version must have outputs cleared"
    assert len([c for c in student["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")]) == len(graded)


def test_chapter_readme_times_in_sync():
    for chapter in sorted(p for p in (ROOT / "notebooks").iterdir() if (p / "README.md").exists()):
        text = (chapter / "README.md").read_text()
        assert sync_notebooks.sync_chapter_readme(text, chapter) == text, "run python tools/sync_notebooks.py"


def test_chapter_readme_time_is_rewritten_and_a_missing_row_raises():
    chapter = ROOT / "notebooks" / "01_foundations"
    text = (chapter / "README.md").read_text()
    row = next(line for line in text.split("\n") if line.startswith("| `01_prediction_objective.ipynb` |"))
    stale_row = row.rsplit("|", 2)[0] + "| 999 s |"                     # the same row with a stale time
    fixed = sync_notebooks.sync_chapter_readme(text.replace(row, stale_row), chapter)
    wall = sync_notebooks._timings()["notebooks/01_foundations/01_prediction_objective.ipynb"]["wall_s"]
    assert stale_row.replace("999 s", f"{wall:.0f} s") in fixed.split("\n")
    with pytest.raises(ValueError, match="0 table rows for 01_prediction_objective.ipynb"):
        sync_notebooks.sync_chapter_readme(text.replace("`01_prediction_objective.ipynb`", "`renamed.ipynb`"), chapter)
