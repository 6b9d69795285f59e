"""Our numbers beside the report's: one table format for every "measure" step of the course."""
from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["side_by_side", "fmt", "seed_runs"]


class _Shown(str):
    """The markdown string of a table already displayed: as a cell's last value it shows nothing more."""

    def _ipython_display_(self):
        pass


def fmt(x, digits: int = 4) -> str:
    """Format a number with ``digits`` significant digits (ints with thousands separators)."""
    if x is None:
        return "—"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if x != x:  # NaN
        return "nan"
    if x == 0:
        return "0"
    a = abs(x)
    if 1e-3 <= a < 1e6:
        return f"{x:.{digits}g}"
    return f"{x:.{max(digits - 1, 1)}e}"


def side_by_side(
    rows: Iterable[Sequence],
    columns: Sequence[str] = ("quantity", "course model", "DeepSeek-V3 report", "note"),
    digits: int = 4,
    display: bool = True,
) -> str:
    """A markdown table of measured numbers beside the report's.

    Each row is a sequence as long as ``columns``; numbers are formatted with :func:`fmt`. In a
    notebook the table is displayed as markdown; the markdown string is returned either way (so
    tests and plain scripts can use it).
    """
    columns = list(columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} cells but the table has {len(columns)} columns {columns}")
        lines.append("| " + " | ".join(fmt(c, digits) for c in row) + " |")
    md = "\n".join(lines)
    if display:
        md = _Shown(md)
        try:
            from IPython import get_ipython
            from IPython.display import Markdown, display as _display
            if get_ipython() is not None:
                _display(Markdown(md))
                return md
        except ImportError:  # pragma: no cover
            pass
        print(md)
    return md


def seed_runs(result: dict, key: str, value, kind: str, kinds: Sequence[str], domain: str, domains: Sequence[str],
              where: str, order=None, source: str = "result") -> list[dict]:
    """The runs of a shipped result file (``result["runs"]``, one per seed and setting) whose ``key`` equals
    ``value``, after checking (errors name the ``source``, e.g. "sweep") the arguments a curve widget passes: ``value`` one of the file's settings (sorted by
    ``order``), ``kind`` one of ``kinds``, and for kind "val" ``domain`` "mean" or one of ``domains``."""
    present = sorted({r[key] for r in result["runs"]}, key=order)
    if value not in present:
        raise ValueError(f"{where}: {key} {value!r} is not in the {source}; choose one of {present}")
    if kind not in kinds:
        raise ValueError(f"{where}: kind must be one of {list(kinds)}, got {kind!r}")
    if kind == "val" and domain not in ("mean", *domains):
        raise ValueError(f"{where}: domain must be 'mean' or one of {tuple(domains)}, got {domain!r}")
    return [r for r in result["runs"] if r[key] == value]
