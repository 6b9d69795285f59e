"""Grade each chapter's exercises the way a teacher would, with nbgrader, and check that the marks come out right.

    python tools/grade_roundtrip.py                                 # every chapter
    python tools/grade_roundtrip.py notebooks/01_foundations ...   # some chapters
    python tools/grade_roundtrip.py --jobs 2 --keep grading/       # two chapters at a time; keep the course dirs

For each chapter, in a throw-away nbgrader course directory (its own gradebook):

1. ``nbgrader generate_assignment`` releases the student version of ``exercises.ipynb`` (what
   tools/make_student.py hands out: solutions replaced by ``raise NotImplementedError()``, hidden tests removed);
2. three copies of it are submitted and ``nbgrader autograde``d against the source notebook:

   * ``solutions``: every solution cell filled with the source's (matched by nbgrader ``grade_id``) -> full marks;
   * ``blank``: as released -> zero;
   * ``wrong``: the solutions, except a typical learner's mistake in the exercises listed in ``MISTAKES`` ->
     those exercises' test cells score 0, every other test cell full marks;

3. in the graded ``wrong`` copy, each mistaken exercise's test cell must fail *inside its hidden tests* (the
   error's line is below ``### BEGIN HIDDEN TESTS``): its visible tests passed, so the student saw nothing wrong,
   and only the hidden tests caught the mistake, which is what they are for (a mistake marked ``visible=True`` in
   ``MISTAKES`` must instead fail above that line, in the visible tests). With ``--student-run`` the wrong copy
   is also run as released (visible tests only, as the student runs it) and every test cell must pass there: the
   same claim checked directly, at the cost of one more execution per chapter.

Prints a table chapter x variant -> score / max and exits 1 on any mismatch. Scores are read from the gradebook
(``nbgrader.api.Gradebook``). Notebooks execute with one thread (OMP_NUM_THREADS=1) and a 600 s per-cell timeout.
tests/test_grading.py runs the same round trip for every chapter.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "exercises.ipynb"
COURSE_ID = "deepseek-v3-course"
CELL_TIMEOUT = 600                     # seconds per cell: generous, the slowest exercise cell takes a few seconds
VARIANTS = ("solutions", "blank", "wrong")
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer: replace ``old`` (found exactly once in the solution cell) by ``new``.

    ``visible=True`` marks a mistake that the exercise's visible tests already catch (for a chapter where no
    exercise lets a plausible mistake through to the hidden tests): its test cell must then fail above them."""
    old: str
    new: str
    why: str
    visible: bool = False


# chapter -> solution cell grade_id -> mistake. Each is one a learner could make, that the exercise's visible test
# lets through and its hidden test catches (checked by the round trip: visible pass, autograde 0).
MISTAKES: dict[str, dict[str, Mistake]] = {
    "01_foundations": {
        "ex1_code": Mistake("/ (tau * keep.sum())", "/ keep.sum()",
                            "the chain rule's 1/tau is forgotten: right at tau = 1 (the visible case), wrong at any other"),
        "ex6_code": Mistake("[[R * n / N for n in c] for c in counts]", "[[n / sum(c) for n in c] for c in counts]",
                            "weights normalised per rank (what helpers.train does on one process): right only when "
                            "every rank holds as many targets (the visible case)"),
    },
    "02_architecture": {
        "ex1_code": Mistake("q = d * qk if cfg.q_lora_rank == 0 else d * cfg.q_lora_rank",
                            "q = d * cfg.q_lora_rank",
                            "the query is always counted as compressed: a config with q_lora_rank = 0 gets no W^Q"),
        "ex3_code": Mistake("sel.topk(per_group, dim=-1)", "sel.topk(2, dim=-1)",
                            "02.5's 'sum of the top 2' kept instead of per_group: right for V3's per_group = 2 only"),
    },
    "03_infrastructure": {
        "ex2_code": Mistake("(1 - math.comb(n_experts - experts_per_node, k) / math.comb(n_experts, k))",
                            "(1 - (1 - experts_per_node / n_experts) ** k)",
                            "experts drawn with replacement instead of without: the same for one expert (visible), "
                            "wrong for k > 1"),
    },
    "04_pretraining": {
        "ex2_code": Mistake("min(max(j, 0), dim - 1)", "min(max(j, 0), dim // 2 - 1)",
                            "the correction range clamped at the last pair (d/2 - 1) instead of V3's d - 1: the same "
                            "unless the range runs past d/2 - 1, which V3's own numbers never do"),
    },
    "05_inference": {
        "ex2_code": Mistake("2 * cfg.kv_heads * (cfg.dim // cfg.n_heads)", "2 * cfg.n_heads * (cfg.dim // cfg.n_heads)",
                            "a KV cache per query head: GQA/MQA's shared KV heads forgotten (the visible tests only "
                            "try MLA)"),
        "ex4_code": Mistake("        alive *= p\n        total += alive", "        total += p",
                            "each draft counted on its own acceptance, not on all earlier ones being accepted: "
                            "the same for D = 1 (visible), too many tokens for D > 1"),
    },
    "06_post_training": {
        "ex4_code": Mistake("value = min(ratio * a, clipped * a)", "value = clipped * a",
                            "the clipped term without the pessimistic min (the visible test checks only the "
                            "advantages and where the gradient flows)"),
    },
    "07_evaluation": {
        "ex2_code": Mistake('w2 = sum(c == "B" for c in r["duel_sft_first"])', 'w2 = sum(c == "A" for c in r["duel_sft_first"])',
                            "RL's win counted as the first position in the swapped duel too, where RL's reply is B"),
    },
}


# ----------------------------------------------------------------------------------------------- notebook surgery

def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solution_sources(source_nb) -> dict[str, str]:
    """grade_id -> the source notebook's solution cell with the BEGIN/END SOLUTION lines dropped: the answer a
    student who got everything right would have typed into the released cell."""
    out = {}
    for cell in source_nb.cells:
        if _meta(cell).get("solution"):
            lines = [ln for ln in cell.source.split("\n") if ln.strip() not in MARKERS]
            out[_meta(cell)["grade_id"]] = "\n".join(lines)
    return out


def graded_cells_of(source_nb) -> dict[str, list[str]]:
    """solution grade_id -> the grade_ids of the autograded cells that test it: those after it, before the next
    solution cell (every exercise is its solution cell(s) followed by its test cell(s))."""
    owner, out = None, {}
    for cell in source_nb.cells:
        m = _meta(cell)
        if m.get("solution"):
            owner = m["grade_id"]
            out.setdefault(owner, [])
        elif m.get("grade") and owner is not None:
            out[owner].append(m["grade_id"])
    return out


def with_mistakes(sources: dict[str, str], mistakes: dict[str, Mistake], chapter: str) -> dict[str, str]:
    """The solutions with each mistake applied; fails loudly if a mistake no longer fits its solution cell."""
    out = dict(sources)
    for gid, m in mistakes.items():
        if gid not in out:
            raise KeyError(f"{chapter}: MISTAKES names {gid!r}, which is not a solution cell of the exercises")
        n = out[gid].count(m.old)
        if n != 1:
            raise ValueError(f"{chapter}/{gid}: the mistake's text {m.old!r} occurs {n} times in the solution "
                             "(expected once): the exercise changed, update MISTAKES in tools/grade_roundtrip.py")
        out[gid] = out[gid].replace(m.old, m.new)
    return out


def fill(student_nb, sources: dict[str, str]):
    """A copy of the released notebook with each solution cell's source replaced by ``sources[grade_id]``."""
    nb = nbformat.reads(nbformat.writes(student_nb), as_version=4)
    for cell in nb.cells:
        gid = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and gid in sources:
            cell.source = sources[gid]
    return nb


# ------------------------------------------------------------------------------------------------ running things

def _env() -> dict:
    """The environment of nbgrader and of every kernel it starts: one thread (the grading runs beside other work,
    and one thread gives the same results on any machine's core count), no widgets or progress bars, and this
    interpreter's scripts first on PATH (nbgrader calls `alembic` by name; the kernel spec calls `python`)."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COURSE_STATIC="1", COURSE_NO_PROGRESS="1",
                PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def _start(cmd: list[str], cwd: Path, log: Path) -> tuple[subprocess.Popen, Path]:
    """Start a command with its output going to ``log`` (a file: a pipe nobody reads could fill and stall it)."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT), log


def _nbgrader(root: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}",
           f"--CourseDirectory.course_id={COURSE_ID}", f"--CourseDirectory.db_url=sqlite:///{root / 'gradebook.db'}"]
    return _start(cmd, root, root / f"nbgrader_{args[0]}.log")


def _execute(path: Path) -> tuple[subprocess.Popen, Path]:
    """Run a notebook top to bottom as a student would (errors recorded, not fatal), in place."""
    cmd = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", "--inplace", "--allow-errors",
           f"--ExecutePreprocessor.timeout={CELL_TIMEOUT}", "--ExecutePreprocessor.kernel_name=python3", str(path)]
    return _start(cmd, path.parent, path.with_suffix(".log"))


def _wait(started: tuple[subprocess.Popen, Path], what: str) -> None:
    proc, log = started
    if proc.wait() != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); the end of {log}:\n{log.read_text()[-4000:]}")


# ------------------------------------------------------------------------------------------------- the round trip

@dataclass
class ChapterResult:
    chapter: str
    scores: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)   # variant -> test id -> (score, max)
    expected: dict[str, dict[str, float]] = field(default_factory=dict)              # variant -> test id -> score
    misplaced: dict[str, str] = field(default_factory=dict)   # mistaken test id -> how it failed, if not as expected
    student_errors: dict[str, str] | None = None   # test id -> error in the wrong copy run as released (--student-run)
    visible_catches: set[str] = field(default_factory=set)        # test ids of mistakes marked visible=True
    n_exercises: int = 0
    seconds: float = 0.0

    def mismatches(self) -> list[str]:
        bad = []
        for variant, want in self.expected.items():
            got = self.scores.get(variant, {})
            for tid, w in want.items():
                if tid not in got:
                    bad.append(f"{self.chapter} {variant}: no grade for {tid} in the gradebook")
                elif abs(got[tid][0] - w) > 1e-9:
                    bad.append(f"{self.chapter} {variant}: {tid} scored {got[tid][0]:g} / {got[tid][1]:g}, expected {w:g}")
        for tid, how in self.misplaced.items():
            bad.append(f"{self.chapter} wrong: {tid} did not fail where MISTAKES says it should ({how})")
        for tid, err in (self.student_errors or {}).items():
            bad.append(f"{self.chapter} wrong, run as released: visible test {tid} failed ({err})")
        return bad

    def total(self, variant: str) -> tuple[float, float]:
        s = self.scores.get(variant, {})
        return sum(v[0] for v in s.values()), sum(v[1] for v in s.values())


def _gradebook_scores(root: Path, chapter: str) -> dict[str, dict[str, tuple[float, float]]]:
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for variant in VARIANTS:
            nb = gb.find_submission_notebook(Path(NOTEBOOK).stem, chapter, variant)
            out[variant] = {g.name: (float(g.score), float(g.max_score)) for g in nb.grades}
    return out


def _errors(path: Path) -> dict[str, dict]:
    """grade_id -> the first error output of that cell in an executed notebook."""
    nb = nbformat.read(path, as_version=4)
    out = {}
    for c in nb.cells:
        errs = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errs and _meta(c).get("grade_id"):
            out[_meta(c)["grade_id"]] = errs[0]
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failing_line(error: dict) -> int | None:
    """The line of the test cell whose statement raised (IPython's ``Cell In[n], line N``), or None if not found."""
    for entry in error.get("traceback", []):
        m = re.search(r"Cell In\[\d+\], line (\d+)", _ANSI.sub("", entry))
        if m:
            return int(m.group(1))
    return None


def where_it_failed(cell_source: str, error: dict | None, visible: bool = False) -> str | None:
    """None if the test cell failed below its ``### BEGIN HIDDEN TESTS`` line (visible tests passed, a hidden one
    failed), or above it if ``visible``; otherwise where it failed, in words."""
    if error is None:
        return "it raised nothing"
    lines = cell_source.split("\n")
    hidden = next((i + 1 for i, ln in enumerate(lines) if ln.strip() == "### BEGIN HIDDEN TESTS"), None)
    line = failing_line(error)
    what = f"{error.get('ename')}: {str(error.get('evalue'))[:200]}"
    if line is None:
        return f"could not find the failing line in the traceback; {what}"
    in_hidden = hidden is not None and line > hidden
    if in_hidden and visible:
        return f"line {line}, in the hidden tests (from line {hidden}), but MISTAKES says the visible tests catch it"
    if not in_hidden and not visible:
        where = f"above the hidden tests at line {hidden}" if hidden else "the cell has no hidden tests"
        return (f"line {line}, {where}, so the visible tests caught it; {what}. Pick a mistake the visible tests let "
                "through, or mark it visible=True in MISTAKES if the chapter has none")
    return None


def roundtrip(chapter_dir: Path, workdir: Path, mistakes: dict[str, Mistake] | None = None,
              student_run: bool = False) -> ChapterResult:
    """Release, fill, submit and autograde one chapter's exercises in ``workdir`` (a new nbgrader course root).

    Returns the gradebook's scores per variant and test cell beside the expected ones; ``mismatches()`` lists
    what is wrong. ``mistakes`` defaults to ``MISTAKES[chapter]``. ``student_run``: also execute the wrong copy as
    released (visible tests only) beside the grading and require every test cell to pass there."""
    t0 = time.perf_counter()
    chapter_dir = Path(chapter_dir).resolve()
    chapter = chapter_dir.name
    source_path = chapter_dir / NOTEBOOK
    if not source_path.is_file():
        raise FileNotFoundError(f"no {NOTEBOOK} in {chapter_dir}")
    mistakes = MISTAKES.get(chapter, {}) if mistakes is None else mistakes
    if not mistakes:
        raise ValueError(f"{chapter}: no wrong answer in MISTAKES; every chapter needs at least one")

    root = Path(workdir).resolve()
    (root / "source" / chapter).mkdir(parents=True, exist_ok=True)
    shutil.copy(source_path, root / "source" / chapter / NOTEBOOK)
    _wait(_nbgrader(root, "generate_assignment", chapter, "--force"), f"nbgrader generate_assignment {chapter}")
    released = nbformat.read(root / "release" / chapter / NOTEBOOK, as_version=4)

    source_nb = nbformat.read(source_path, as_version=4)
    solutions = solution_sources(source_nb)
    owners = graded_cells_of(source_nb)
    wrong_tests = {tid for gid in mistakes for tid in owners.get(gid, [])}
    if not wrong_tests:
        raise ValueError(f"{chapter}: the mistakes {sorted(mistakes)} have no test cells after them")
    copies = {"solutions": fill(released, solutions), "blank": released,
              "wrong": fill(released, with_mistakes(solutions, mistakes, chapter))}
    for variant, nb in copies.items():
        dest = root / "submitted" / variant / chapter / NOTEBOOK
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dest)

    grading = _nbgrader(root, "autograde", chapter, "--force", f"--Execute.timeout={CELL_TIMEOUT}")
    if student_run:                         # the student's own run goes beside the grading
        as_released = root / "as_released" / chapter / NOTEBOOK
        as_released.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(copies["wrong"], as_released)
        _wait(_execute(as_released), f"executing the released {chapter} exercises with the wrong answers")
    _wait(grading, f"nbgrader autograde {chapter}")

    maxima = {_meta(c)["grade_id"]: float(_meta(c)["points"]) for c in source_nb.cells if _meta(c).get("grade")}
    result = ChapterResult(chapter, n_exercises=len(owners))
    result.scores = _gradebook_scores(root, chapter)
    result.expected = {"solutions": dict(maxima), "blank": {t: 0.0 for t in maxima},
                       "wrong": {t: (0.0 if t in wrong_tests else m) for t, m in maxima.items()}}
    result.visible_catches = {t for gid, m in mistakes.items() if m.visible for t in owners[gid]}
    graded_errors = _errors(root / "autograded" / "wrong" / chapter / NOTEBOOK)
    sources = {_meta(c).get("grade_id"): c.source for c in source_nb.cells}
    for gid, mistake in mistakes.items():
        for tid in owners[gid]:
            why = where_it_failed(sources[tid], graded_errors.get(tid), mistake.visible)
            if why is not None:
                result.misplaced[tid] = why
    if student_run:                         # every visible test passes, but those of mistakes marked visible
        errors = _errors(as_released)
        ran = {_meta(c).get("grade_id") for c in nbformat.read(as_released, as_version=4).cells
               if c.get("execution_count") is not None}
        caught = result.visible_catches
        result.student_errors = {t: (f"{errors[t].get('ename')}: {errors[t].get('evalue')}"[:300] if t in errors
                                     else "not executed") for t in maxima
                                 if t not in caught and (t in errors or t not in ran)}
    result.seconds = time.perf_counter() - t0
    return result


def chapters_with_exercises() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "notebooks").glob(f"*/{NOTEBOOK}"))


def table(results: list[ChapterResult]) -> str:
    head = (f"{'chapter':20s} {'ex.':>3s}  " + "  ".join(f"{v:>10s}" for v in VARIANTS)
            + "    time  wrong answers caught as expected")
    lines = [head, "-" * (len(head) + 10)]
    for r in results:
        cols = "  ".join(f"{'%g / %g' % r.total(v):>10s}" for v in VARIANTS)
        wrong = sorted(t for t, w in r.expected.get("wrong", {}).items() if w == 0)
        hidden = ", ".join(t + (" (by its visible tests)" if t in r.visible_catches else "")
                           for t in wrong if t not in r.misplaced) or "-"
        if r.student_errors is not None:
            hidden += "; released run: " + ("FAILS" if r.student_errors else "visible tests pass")
        lines.append(f"{r.chapter:20s} {r.n_exercises:3d}  {cols}  {r.seconds:4.0f} s  {hidden}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*", type=Path, help="chapter folders (default: every chapter with exercises)")
    ap.add_argument("--jobs", type=int, default=1, help="chapters graded at once")
    ap.add_argument("--student-run", action="store_true",
                    help="also run the wrong copy as released (visible tests only): every test cell must pass")
    ap.add_argument("--keep", type=Path, help="keep the course directories here (default: a temporary folder)")
    args = ap.parse_args(argv)
    chapters = args.chapters or chapters_with_exercises()
    missing = [str(c) for c in chapters if not (Path(c) / NOTEBOOK).is_file()]
    if missing:
        ap.error(f"no {NOTEBOOK} in: {', '.join(missing)}")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep.resolve() if args.keep else Path(tmp)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda c: roundtrip(c, base / Path(c).resolve().name, student_run=args.student_run),
                                    chapters))
    print(table(results))
    bad = [m for r in results for m in r.mismatches()]
    n_tests = sum(len(r.expected["solutions"]) for r in results)
    print(f"\n{len(results)} chapters, {sum(r.n_exercises for r in results)} exercises, {n_tests} test cells "
          f"x {len(VARIANTS)} variants; {sum(len(MISTAKES.get(r.chapter, {})) for r in results)} wrong answers; "
          f"{time.perf_counter() - t0:.0f} s")
    for m in bad:
        print("MISMATCH", m)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
