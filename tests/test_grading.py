"""The round trip a teacher relies on, for every chapter's exercises (tools/grade_roundtrip.py).

Release the student version with nbgrader, then autograde three submissions against the source notebook: the
solutions filled in (full marks), the released notebook left blank (zero), and a typical learner's mistake in some
exercises (those score 0, the rest full marks, and each fails inside its hidden tests: the visible tests let it
through). Each chapter's course directory and gradebook live in a pytest temporary directory.

The round trip executes each chapter's exercises three times (about 4 CPU-minutes for the seven chapters; run
alone, the chapters are graded as many at a time as there are cores): it is marked ``grading`` so that ``pytest -m "not grading"`` leaves it out.
The checks of the tool's own logic below it run in milliseconds and are not marked.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import grade_roundtrip as GR  # noqa: E402

CHAPTERS = GR.chapters_with_exercises()


@pytest.fixture(scope="module")
def graded(request, tmp_path_factory):
    """chapter name -> the future of its round trip (each in its own course directory).

    Run without xdist, the session starts every selected chapter at once, as many at a time as there are cores
    (each chapter grades its notebooks one after the other, one thread each), and the tests wait for theirs in
    order. Under xdist another worker shares the cores and may be given some of these tests, so each test grades
    its own chapter when it comes."""
    alone = "PYTEST_XDIST_WORKER" not in os.environ
    pool = ThreadPoolExecutor((os.cpu_count() or 1) if alone else 1)
    futures = {}

    def start(chapter):
        if chapter.name not in futures:
            futures[chapter.name] = pool.submit(GR.roundtrip, chapter, tmp_path_factory.mktemp(chapter.name) / "course")
        return futures[chapter.name]

    if alone:
        for item in request.session.items:
            if getattr(item, "originalname", "") == "test_grading_round_trip" and hasattr(item, "callspec"):
                start(item.callspec.params["chapter"])
    try:
        yield start
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.grading
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.name for c in CHAPTERS])
def test_grading_round_trip(chapter, graded):
    result = graded(chapter).result()
    bad = result.mismatches()
    assert not bad, "\n".join(bad)
    got, full = result.total("solutions")
    assert got == full > 0, "the solutions must earn every point"
    assert result.total("blank") == (0, full)
    wrong, _ = result.total("wrong")
    assert 0 < wrong < full, "a mistake in some exercises costs their points, and only theirs"
    assert len(result.scores["wrong"]) == len(result.expected["wrong"]) >= result.n_exercises
    print(f"{chapter.name}: {GR.table([result]).splitlines()[-1]}")


def test_every_chapter_has_a_wrong_answer():
    assert [c.name for c in CHAPTERS] == sorted(GR.MISTAKES), "one MISTAKES entry per chapter with exercises"
    for chapter in CHAPTERS:
        source = nbformat.read(chapter / GR.NOTEBOOK, as_version=4)
        sols = GR.solution_sources(source)
        wrong = GR.with_mistakes(sols, GR.MISTAKES[chapter.name], chapter.name)   # raises if a mistake went stale
        owners = GR.graded_cells_of(source)
        for gid in GR.MISTAKES[chapter.name]:
            assert wrong[gid] != sols[gid] and owners[gid], f"{chapter.name}/{gid}: no change, or no test cell"
        assert all("BEGIN SOLUTION" not in s and "END SOLUTION" not in s for s in sols.values())


def _toy():
    nb = nbformat.v4.new_notebook()
    meta = lambda gid, **kw: {"nbgrader": {"grade_id": gid, "locked": False, "schema_version": 3, "solution": False,
                                           "grade": False, "task": False, **kw}}
    nb.cells = [nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                                          metadata=meta("a_code", solution=True)),
                nbformat.v4.new_code_cell("assert f(0) == 0", metadata=meta("a_test", grade=True, points=1)),
                nbformat.v4.new_code_cell("def g(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION",
                                          metadata=meta("b_code", solution=True)),
                nbformat.v4.new_code_cell("assert g(1) == 2", metadata=meta("b_test", grade=True, points=2)),
                nbformat.v4.new_code_cell("assert g(2) == 3", metadata=meta("b_test2", grade=True, points=1))]
    return nb


def test_fill_takes_each_solution_by_grade_id():
    src = _toy()
    sols = GR.solution_sources(src)
    assert sols == {"a_code": "def f(x):\n    return 2 * x", "b_code": "def g(x):\n    return x + 1"}
    released = _toy()
    for c in released.cells:
        if c.metadata["nbgrader"]["solution"]:
            c.source = "raise NotImplementedError()"
    filled = GR.fill(released, {"b_code": sols["b_code"]})
    assert [c.source for c in filled.cells][:3] == ["raise NotImplementedError()", "assert f(0) == 0", sols["b_code"]]
    assert released.cells[2].source == "raise NotImplementedError()", "fill must not change the released notebook"
    assert GR.graded_cells_of(src) == {"a_code": ["a_test"], "b_code": ["b_test", "b_test2"]}


def test_a_stale_mistake_fails_loudly():
    sols = GR.solution_sources(_toy())
    ok = GR.with_mistakes(sols, {"a_code": GR.Mistake("2 * x", "x", "factor lost")}, "toy")
    assert ok["a_code"] == "def f(x):\n    return x" and ok["b_code"] == sols["b_code"]
    with pytest.raises(ValueError, match="occurs 0 times"):
        GR.with_mistakes(sols, {"a_code": GR.Mistake("3 * x", "x", "")}, "toy")
    with pytest.raises(KeyError, match="not a solution cell"):
        GR.with_mistakes(sols, {"c_code": GR.Mistake("x", "y", "")}, "toy")


def test_mismatches_report_every_kind_of_failure():
    r = GR.ChapterResult("toy", n_exercises=2)
    r.expected = {"solutions": {"a_test": 1.0, "b_test": 2.0}, "blank": {"a_test": 0.0, "b_test": 0.0},
                  "wrong": {"a_test": 0.0, "b_test": 2.0}}
    r.scores = {"solutions": {"a_test": (1.0, 1.0), "b_test": (2.0, 2.0)},
                "blank": {"a_test": (0.0, 1.0), "b_test": (0.0, 2.0)},
                "wrong": {"a_test": (0.0, 1.0), "b_test": (2.0, 2.0)}}
    assert r.mismatches() == [] and r.total("solutions") == (3.0, 3.0)
    r.scores["wrong"]["a_test"] = (1.0, 1.0)                   # the hidden tests let the mistake through
    del r.scores["blank"]["b_test"]                            # a test cell missing from the gradebook
    r.misplaced = {"a_test": "line 1, above the hidden tests at line 2"}   # caught by the visible tests
    r.student_errors = {"b_test": "NameError: g"}                # the released copy failed where it should pass
    bad = r.mismatches()
    assert len(bad) == 4
    assert any("wrong: a_test scored 1 / 1, expected 0" in m for m in bad)
    assert any("no grade for b_test" in m for m in bad)
    assert any("a_test did not fail where MISTAKES says" in m for m in bad) and any("visible test b_test" in m for m in bad)


def test_where_it_failed_reads_the_failing_line():
    cell = "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(5) == 10\n### END HIDDEN TESTS"

    def error(line):       # the traceback as IPython writes it, colours included
        return {"ename": "AssertionError", "evalue": "", "traceback": [
            "\x1b[0;31m----\x1b[0m", f"Cell \x1b[0;32mIn[7], line {line}\x1b[0m\n\x1b[1;32m----> {line}\x1b[0m assert"]}

    assert GR.failing_line(error(3)) == 3
    assert GR.where_it_failed(cell, error(3)) is None                  # visible passed, hidden failed
    assert "above the hidden tests" in GR.where_it_failed(cell, error(1))
    assert GR.where_it_failed(cell, error(1), visible=True) is None    # a mistake marked as caught by the visible tests
    assert "in the hidden tests" in GR.where_it_failed(cell, error(3), visible=True)
    assert GR.where_it_failed(cell, None) == "it raised nothing"
    assert "no hidden tests" in GR.where_it_failed("assert f(1) == 2", error(1))
    assert "could not find" in GR.where_it_failed(cell, {"ename": "X", "evalue": "", "traceback": ["odd"]})
