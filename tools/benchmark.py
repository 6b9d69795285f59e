"""Benchmark the course against its budgets: execute every notebook (without saving it) and print
a table of wall time and peak memory per notebook and in total.

    python tools/benchmark.py                 # the whole course
    python tools/benchmark.py notebooks/01_foundations

Budgets (COURSE.md): ≤ 4 min per notebook, ≤ 25 min in all, ≤ 3 GB peak memory, on a 2-core CPU.
Results are written to tools/timings.json, from which tools/sync_notebooks.py fills in the
README's chapter table. A benchmark, not a test: it reports, it does not fail on a slow machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import run_notebooks  # noqa: E402

BUDGET_NOTEBOOK_S, BUDGET_TOTAL_S, BUDGET_MB = 240, 25 * 60, 3072


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = run_notebooks.course_notebooks(args)
    rows = run_notebooks.run(paths, write=False)
    total = sum(r["wall_s"] for r in rows)
    peak = max((r["peak_mb"] for r in rows), default=0)
    print()
    print("| notebook | wall time (s) | peak memory (MB) | within budget |")
    print("|---|---|---|---|")
    for r in rows:
        ok = r["wall_s"] <= BUDGET_NOTEBOOK_S and r["peak_mb"] <= BUDGET_MB and not r.get("error")
        print(f"| {r['notebook']} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | {'yes' if ok else 'NO'} |")
    print(f"| **total** | **{total:.1f}** ({total / 60:.1f} min) | max {peak:.0f} | "
          f"{'yes' if total <= BUDGET_TOTAL_S else 'NO'} |")
    if not args:  # only a whole-course run updates the README's timings
        run_notebooks.write_timings(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
