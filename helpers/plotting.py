"""Plotting defaults shared by every notebook, so figures look the same across chapters."""
from __future__ import annotations

import matplotlib

__all__ = ["setup", "COLORS"]

#: One colour per recurring idea, so a reader can follow it from chapter to chapter.
COLORS = {
    "course": "#1f77b4",    # our measured numbers
    "report": "#d62728",    # the DeepSeek-V3 report's numbers
    "baseline": "#7f7f7f",  # uniform / bigram baselines
    "train": "#2ca02c",
    "val": "#ff7f0e",
}


def setup(dpi: int = 100, figsize: tuple[float, float] = (7.0, 3.6)) -> None:
    """Apply the course's matplotlib defaults (size, grid, no top/right spines, readable fonts)."""
    matplotlib.rcParams.update({
        "figure.dpi": dpi,
        "figure.figsize": figsize,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "figure.autolayout": True,
    })
