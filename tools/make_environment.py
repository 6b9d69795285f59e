"""Generate environment.yml from requirements.txt (the single source of the dependency ranges).

    python tools/make_environment.py          # write environment.yml
    python tools/make_environment.py --check  # exit 1 if environment.yml has drifted (a test runs this)
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirements() -> list[str]:
    reqs = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(line)
    return reqs


def environment_yml() -> str:
    lines = [
        "# Generated from requirements.txt by tools/make_environment.py: edit requirements.txt, then re-run it.",
        "# conda env create -f environment.yml && conda activate deepseek-v3-course",
        "name: deepseek-v3-course",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python>=3.11",
        "  - pip",
        "  - pip:",
    ]
    lines += [f'      - "{r}"' for r in requirements()]
    lines.append('      - "-e ."  # the course itself (helpers), from this folder')
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    path = ROOT / "environment.yml"
    want = environment_yml()
    if check:
        if not path.exists() or path.read_text() != want:
            print("environment.yml has drifted from requirements.txt: run python tools/make_environment.py")
            return 1
        return 0
    path.write_text(want)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
