"""helpers: the course library.

Each module holds one concept from the DeepSeek-V3 report. A component is first built by hand in a
notebook, then kept here so that later chapters import it instead of copying it; the notebook checks
that its own build and the version kept here agree.
"""

__version__ = "0.1.0"
