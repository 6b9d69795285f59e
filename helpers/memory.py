"""Activation memory and recomputation (DeepSeek-V3 §3.2.3 "Extremely Memory Saving with Minimal Overhead").

Backward needs some forward values: a linear layer y = x Wᵀ needs x for ∂L/∂W = (∂L/∂y)ᵀ x; SiLU needs
its input; a product a ⊙ b needs both factors. Autograd keeps them ("saved tensors") from the forward until
the backward has used them, so their bytes add up over all layers at the peak of memory.

:class:`SavedTensors` counts them exactly with ``torch.autograd.graph.saved_tensors_hooks``: every tensor
autograd saves passes through the pack hook. Storages are counted once (several ops may save the same
tensor) and parameters are counted apart (they live in memory anyway).

Recomputation (activation checkpointing) keeps only a module's input and recomputes its forward during
backward: fewer saved bytes for one more forward's worth of compute. The report recomputes all RMSNorm
operations and MLA up-projections in backward, and caches the SwiGLU input of MoE in FP8.
"""
from __future__ import annotations

import sys
import time
from collections import Counter

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["SavedTensors", "saved_bytes", "Recompute", "time_forward_backward"]


class SavedTensors:
    """``with SavedTensors(params=model.parameters()) as s: loss = f(x)`` → s.activation_bytes, s.param_bytes, s.records.

    records: one dict per tensor that is still held for backward when the block ends (shape, dtype, bytes of its
    storage, whether it is a parameter, whether its storage was already counted). Tensors saved by graph branches
    that were discarded during the forward (their result unused) are not counted: they are freed before backward.
    While the block runs every saved tensor is kept alive, so no freed storage can be reused under a counted address.
    """

    def __init__(self, params=()):
        self._param_ptrs = {p.untyped_storage().data_ptr() for p in params}
        self.records: list[dict] = []
        self._held: list[torch.Tensor] = []
        self._ctx = None

    def _pack(self, t: torch.Tensor):
        self._held.append(t)
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        seen = set()
        for t in self._held:
            if sys.getrefcount(t) <= 3:          # held only by this list, the loop variable and the call: discarded
                continue
            st = t.untyped_storage()
            ptr = st.data_ptr()
            self.records.append(dict(shape=tuple(t.shape), dtype=t.dtype, bytes=st.nbytes(),
                                     param=ptr in self._param_ptrs, duplicate=ptr in seen))
            seen.add(ptr)
        self._held = []
        return False

    @property
    def activation_bytes(self) -> int:
        return sum(r["bytes"] for r in self.records if not r["param"] and not r["duplicate"])

    @property
    def param_bytes(self) -> int:
        return sum(r["bytes"] for r in self.records if r["param"] and not r["duplicate"])

    def by_shape(self) -> Counter:
        """Counts of (shape, dtype) over the unique non-parameter saved tensors."""
        return Counter((r["shape"], str(r["dtype"]).replace("torch.", "")) for r in self.records
                       if not r["param"] and not r["duplicate"])

def saved_bytes(module: torch.nn.Module, *inputs, **kwargs) -> dict:
    """Run ``module(*inputs)`` under :class:`SavedTensors`; return counts (activation/param bytes, n tensors)
    and the output. Inputs that require grad are not copied: their storage counts as saved if an op saves it."""
    with SavedTensors(params=module.parameters()) as s:
        out = module(*inputs, **kwargs)
    return dict(activation_bytes=s.activation_bytes, param_bytes=s.param_bytes,
                n_saved=sum(not r["duplicate"] for r in s.records), records=s.records, by_shape=s.by_shape(),
                output=out)


class Recompute(torch.nn.Module):
    """Wrap a module so that its forward is recomputed in backward (``torch.utils.checkpoint``, non-reentrant).

    Same outputs and gradients as the wrapped module; only the inputs are kept from the forward.
    """

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"Recompute wraps an nn.Module, got {type(module).__name__}")
        self.module = module

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.module(*args, **kwargs)
        return checkpoint(self.module, *args, use_reentrant=False, **kwargs)


def time_forward_backward(fn, *inputs, repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``fn(*inputs).float().pow(2).mean().backward()`` (forward + backward) over ``repeats`` runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    times = []
    for i in range(warmup + repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*inputs).float().pow(2).mean().backward()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
