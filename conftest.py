"""Test-session settings shared by the unit tests and the notebooks (nbval).

With pytest-xdist (``pytest -n 2``, the README's test command) several workers share the machine's cores. Each
worker, and every notebook kernel it starts (kernels inherit the worker's environment), then computes on one
thread unless ``OMP_NUM_THREADS`` was set by the caller: two workers with two threads each on a 2-core machine
would fight for the cores and run slower than one at a time. The notebooks' checks hold at any thread count
(their tolerances are for other CPUs' kernels, which differ more than thread counts do).
"""
import os

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
