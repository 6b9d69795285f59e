"""Where the course runs: device choice, seeding, paths, Colab detection, progress bars.

Determinism. On the CPU, PyTorch gives bit-identical results for the same seed, the same inputs and
the same number of threads. :func:`seed_everything` seeds Python, NumPy and torch and asks torch for
deterministic algorithms, so a notebook prints the same numbers when it runs twice.

Fast path. Every module whose math the course writes out by hand (attention's softmax, the MoE's
per-expert loop, the output head's cross-entropy) also has a fast implementation of the same function:
PyTorch's fused attention, a sorted one-pass MoE dispatch, a chunked head + loss that forms its gradient
on the way. The fast one is the default wherever the course trains; the written-out one stays as the
readable reference that the tests compare against::

    fast_path()                      # True by default (the environment variable COURSE_FAST_PATH=0 flips it)
    use_fast_path(False)             # from now on, the reference path everywhere
    with use_fast_path(False):       # only inside the block; the previous setting comes back after it
        ...

Mixed precision. :func:`training_autocast` is the context a training step runs its forward pass in:
bf16 autocast on CUDA; on the CPU only if a quick probe (:func:`probe_bf16`, once per process, at the
course model's matmul shapes) measures bf16 matmuls faster than fp32 — on CPUs without native bf16
instructions (AVX2 only) they are up to hundreds of times slower, with AVX-512-BF16/AMX several times
faster, so the course measures instead of assuming. Weights, optimizer state and the loss stay fp32.
"""
from __future__ import annotations

import contextlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:  # tqdm.auto picks the notebook bar in Jupyter/Colab and the text bar elsewhere
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - tqdm is a declared dependency
    _tqdm = None

__all__ = [
    "interleaved_medians",
    "get_device", "seed_everything", "repo_root", "data_dir", "on_colab", "progress",
    "DEFAULT_SEED", "fast_path", "use_fast_path", "probe_bf16", "autocast_dtype", "training_autocast",
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


# ---- fast path switch ---------------------------------------------------------------------------------

_fast = os.environ.get("COURSE_FAST_PATH", "1") not in {"0", "false", "False", "no"}


def fast_path() -> bool:
    """True when modules should use their fast implementation (the default), False for the written-out reference."""
    return _fast


class use_fast_path:
    """Switch the fast path on or off: as a call (``use_fast_path(False)``) it stays switched; as a context
    manager (``with use_fast_path(False): ...``) the previous setting is restored when the block ends."""

    def __init__(self, enabled: bool = True):
        global _fast
        self.previous, _fast = _fast, bool(enabled)

    def __enter__(self) -> "use_fast_path":
        return self

    def __exit__(self, *exc) -> None:
        global _fast
        _fast = self.previous

    def __repr__(self) -> str:
        return f"use_fast_path({_fast})"


# ---- bf16 autocast, only where it is measured to pay -----------------------------------------------------

_bf16_probe: dict = {}


def _time_matmul(a: torch.Tensor, b: torch.Tensor, repeats: int, budget_s: float) -> float:
    """Best time of a @ b in ms (stops early once ``budget_s`` is spent)."""
    best, start = float("inf"), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        if a.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return best * 1e3


def probe_bf16(device=None, refresh: bool = False) -> dict:
    """Time fp32 and bf16 matmuls at the course model's shapes on ``device`` (once per process, cached).

    Shapes: 256 token rows × width 128 against a 128 × 384 (FFN) and a 128 × 4096 (output head) matrix.
    Returns {"device", "fp32_ms", "bf16_ms", "ratio" (bf16 time / fp32 time, < 1: bf16 faster), "bf16_faster"}.
    A bf16 run that is already slow is not repeated (the probe takes well under a second either way).
    bf16 is chosen only when it takes less than half the fp32 time: a margin far outside timing noise, so a
    machine where the two are close does not flip between dtypes from one run to the next (determinism).
    """
    device = torch.device(device) if device is not None else get_device()
    key = str(device)
    if key in _bf16_probe and not refresh:
        return dict(_bf16_probe[key])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 128, generator=g).to(device)
    ws = [torch.randn(128, n, generator=g).to(device) for n in (384, 4096)]
    fp32 = bf16 = 0.0
    for w in ws:
        _time_matmul(x, w, 1, 1.0)                                  # warm-up
        fp32 += _time_matmul(x, w, 5, 0.5)
        xb, wb = x.bfloat16(), w.bfloat16()
        first = _time_matmul(xb, wb, 1, 1.0)                        # warm-up; slow bf16 shows here already
        bf16 += first if first > 20 * fp32 else _time_matmul(xb, wb, 5, 0.5)
    r = {"device": key, "fp32_ms": fp32, "bf16_ms": bf16, "ratio": bf16 / fp32, "bf16_faster": bf16 < 0.5 * fp32}
    _bf16_probe[key] = r
    return dict(r)


def autocast_dtype(device=None) -> torch.dtype | None:
    """The autocast dtype a training step should use on ``device``: bf16 on CUDA (fp16 on a GPU without
    bf16); on the CPU bf16 only if :func:`probe_bf16` measured it faster than fp32; else None (stay fp32)."""
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if probe_bf16(device)["bf16_faster"] else None
    return None


def training_autocast(device=None):
    """A context manager for a training step's forward pass: ``torch.autocast`` with :func:`autocast_dtype`,
    or a null context when that is None. Parameters, gradients and optimizer state stay fp32; the losses
    are computed in fp32 (the model casts logits up before the softmax)."""
    device = torch.device(device) if device is not None else get_device()
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def interleaved_medians(fns: dict, repeats: int = 5, warmup: int = 1) -> dict:
    """Median wall time in seconds of each function of ``fns`` (called without arguments), measured interleaved:
    every repeat calls all of them once, in turn, so a slow phase of a shared machine slows all alike and the
    ratio of two medians survives it. ``warmup`` untimed rounds come first; on CUDA each call is followed by a
    synchronize, so the time is the work's, not the launch's. Returns {name: median seconds}."""
    for name, v, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
            raise ValueError(f"interleaved_medians: {name} must be an int ≥ {low}, got {v!r}")
    if not fns:
        raise ValueError("interleaved_medians: fns must name at least one function")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, f in fns.items():
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[k].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}
