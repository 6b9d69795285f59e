"""Where the course runs: device choice, seeding, paths, Colab detection, progress bars.

Determinism. On the CPU, PyTorch gives bit-identical results for the same seed, the same inputs and
the same number of threads. :func:`seed_everything` seeds Python, NumPy and torch and asks torch for
deterministic algorithms, so a notebook prints the same numbers when it runs twice.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

try:  # tqdm.auto picks the notebook bar in Jupyter/Colab and the text bar elsewhere
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - tqdm is a declared dependency
    _tqdm = None

__all__ = [
    "get_device", "seed_everything", "repo_root", "data_dir", "on_colab", "progress",
    "DEFAULT_SEED",
]

DEFAULT_SEED = 1234


def get_device(prefer: str | None = None) -> torch.device:
    """The device the course computes on.

    CUDA when a CUDA GPU is present, else the CPU. Apple's MPS is used only when asked for
    (``prefer="mps"``): some ops the course uses are missing or non-deterministic there.
    ``prefer`` may also force ``"cpu"`` or ``"cuda"``; the environment variable ``COURSE_DEVICE``
    does the same for every notebook at once.
    """
    prefer = prefer or os.environ.get("COURSE_DEVICE") or None
    if prefer is not None:
        prefer = prefer.lower()
        if prefer not in {"cpu", "cuda", "mps"}:
            raise ValueError(f"unknown device {prefer!r}: use 'cpu', 'cuda' or 'mps' (or None for automatic)")
        if prefer == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA GPU; use None for automatic")
        if prefer == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError("device 'mps' was asked for but this torch has no MPS backend available")
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = DEFAULT_SEED, deterministic: bool = True) -> torch.Generator:
    """Seed ``random``, NumPy and torch (CPU and CUDA); return a fresh ``torch.Generator``.

    With ``deterministic=True`` torch is asked for deterministic kernels (``warn_only`` so an op
    without one still runs) and cuDNN autotuning is switched off. The returned generator, seeded
    with ``seed``, is what data sampling should draw from, so that sampling does not depend on how
    many random numbers model initialisation consumed.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def repo_root() -> Path:
    """The course's root folder (the one holding ``data/`` and ``notebooks/``)."""
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The folder of shipped data: ``$COURSE_DATA`` if set, else ``<repo>/data``.

    Raises ``FileNotFoundError`` with the fix when the folder is missing (for example when only the
    ``helpers`` package was pip-installed without the repository around it).
    """
    env = os.environ.get("COURSE_DATA")
    d = Path(env) if env else repo_root() / "data"
    if not d.is_dir():
        raise FileNotFoundError(
            f"course data folder not found at {d}. The data ships with the repository, not with the "
            "pip package: clone the repository (git clone <repo>) and `pip install -e .` from it, or "
            "point the COURSE_DATA environment variable at a copy of its data/ folder."
        )
    return d


def on_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def progress(iterable=None, *, desc: str | None = None, total: int | None = None, disable: bool | None = None, **kw):
    """A progress bar (``tqdm.auto``) for long loops; a plain iterator when tqdm is missing.

    Bars are switched off when ``COURSE_NO_PROGRESS=1`` (the test runs set it, so that committed
    notebooks do not store thousands of bar updates).
    """
    if disable is None:
        disable = os.environ.get("COURSE_NO_PROGRESS", "") not in {"", "0"}
    if _tqdm is None:
        return iterable if iterable is not None else range(total or 0)
    return _tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, **kw)
