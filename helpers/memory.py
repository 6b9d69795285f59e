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

__all__ = ["SavedTensors", "saved_bytes", "Recompute", "time_forward_backward", "H800_BYTES", "STATE_BYTES",
           "training_state_bytes_measured", "stage_layout", "activation_items", "memory_budget", "BUDGET_ASSUMPTIONS"]


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


# ---- the per-GPU memory budget of a pipelined, expert-parallel training run (§3.2, §3.3, §3.4) ------------

H800_BYTES = 80e9          # the H800's 80 GB of HBM (decimal GB, as GPU memory is quoted)

# bytes per parameter of each piece of training state (DeepSeek-V3's policy, §3.3; see BUDGET_ASSUMPTIONS)
STATE_BYTES = {"weights": 2, "grads": 4, "master": 4, "adam_m": 2, "adam_v": 2}

BUDGET_ASSUMPTIONS = [
    ("GPUs, pipeline, expert parallel", "2048 H800; PP16, EP64 over 8 nodes, ZeRO-1 DP, no TP", "report §3.2"),
    ("data-parallel size", "DP = GPUs / PP = 128 (every stage replicated 128×); experts: DP/EP = 2 copies", "ours (follows from the above)"),
    ("DualPipe placement", "rank i holds stages i and PP−1−i: twice the parameters of one stage", "report §3.2.1 (2× params)"),
    ("layers per stage", "61 layers + the MTP block split as evenly as possible (4 or 3 per stage)", "ours"),
    ("embedding, head, MTP", "first and last stage on one rank: MTP shares the embedding and head physically", "report §3.2.3"),
    ("weights", "BF16 working copy, 2 B/param (FP8 copies are made per GEMM and not kept)", "ours"),
    ("gradients", "FP32, 4 B/param, not sharded (ZeRO-1 shards optimizer state only)", "FP32: report §3.3; unsharded: ZeRO-1"),
    ("master weights", "FP32, 4 B/param, sharded over DP (ZeRO-1)", "report §3.3 (FP32), ZeRO-1 sharding"),
    ("AdamW moments", "BF16 m and v, 2 + 2 B/param, sharded over DP", "report §3.3.3"),
    ("EMA of the weights", "kept in CPU memory, updated asynchronously: 0 B on the GPU (on the GPU it would be "
     "an FP32 copy of the rank's parameters, unsharded)", "report §3.2.3; the on-GPU size is ours"),
    ("micro-batch", "one 4096-token sequence per micro-batch", "ours (the report gives no micro-batch size)"),
    ("micro-batches in flight", "min(M, PP + 1) on the busiest rank, each through one stage's layers", "report's DualPipe table (PP+1)"),
    ("activations kept per token per layer", "see activation_items(): RMSNorm and MLA up-projections recomputed, "
     "SwiGLU inputs and Linear inputs cached in FP8, attention output in E5M6", "report §3.2.3, §3.3.3; item list ours"),
]


def training_state_bytes_measured(model: torch.nn.Module, optimizer=None) -> dict:
    """Bytes actually held by ``model``'s parameters, their ``.grad`` tensors and the optimizer's state tensors."""
    w = sum(p.numel() * p.element_size() for p in model.parameters())
    g = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    o = 0
    if optimizer is not None:
        for st in optimizer.state.values():
            o += sum(v.numel() * v.element_size() for v in st.values() if isinstance(v, torch.Tensor))
    return {"weights": w, "grads": g, "optimizer": o, "total": w + g + o}


def stage_layout(n_blocks: int, pp: int) -> list[list[int]]:
    """Blocks (0 … n_blocks−1, the MTP block last) per pipeline stage, as even as possible, earlier stages fuller."""
    if not isinstance(pp, int) or pp < 1 or pp > n_blocks:
        raise ValueError(f"pp (pipeline stages) must be an int between 1 and the number of blocks {n_blocks}, got {pp!r}")
    per, extra = divmod(n_blocks, pp)
    out, start = [], 0
    for s in range(pp):
        n = per + (s < extra)
        out.append(list(range(start, start + n)))
        start += n
    return out


def activation_items(cfg, moe: bool = True, policy: str = "report") -> list[tuple[str, float, float]]:
    """What one block keeps for backward per token: (item, elements, bytes per element).

    policy "report": RMSNorm outputs and MLA up-projections (q, k, v) recomputed; block input and the
    mid-block residual in BF16; the latents c^Q, [c^KV; k^R] in BF16 (to recompute from); attention output
    (input of W^O) in E5M6 (1.5 B) plus the softmax log-sum-exp (FP32 per head); router affinities FP32;
    for every routed expert a token visits and for the shared expert(s): the expert's input (FP8) and the
    SwiGLU inputs W1x, W3x (FP8), the SwiGLU output recomputed. Dense blocks: FFN input and SwiGLU inputs in FP8.
    policy "bf16_no_recompute": the same block with every saved tensor in BF16 and q, k, v, the normalised
    inputs and the SwiGLU output kept (what a plain BF16 implementation with a fused attention kernel keeps).
    """
    if policy not in ("report", "bf16_no_recompute"):
        raise ValueError(f"policy must be 'report' or 'bf16_no_recompute', got {policy!r}")
    d, h = cfg.dim, cfg.n_heads
    qk = h * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim)
    ffn_hidden = cfg.moe_inter_dim if moe else cfg.inter_dim
    copies = (cfg.n_activated_experts + cfg.n_shared_experts) if moe else 1
    rep = policy == "report"
    b8, b16 = (1, 2) if rep else (2, 2)
    items = [("block input (residual stream)", d, 2),
             ("c^Q (query latent)", cfg.q_lora_rank, 2),
             ("[c^KV; k^R] (KV latent, RoPE key)", cfg.kv_lora_rank + cfg.qk_rope_head_dim, 2),
             ("attention output (input of W^O)", h * cfg.v_head_dim, 1.5 if rep else 2),
             ("softmax log-sum-exp", h, 4),
             ("residual after attention", d, 2)]
    if not rep:
        items += [("normalised block inputs (2 RMSNorms)", 2 * d, b16), ("q, k, v (up-projections)", 2 * qk + h * cfg.v_head_dim, b16),
                  ("normalised latents c^Q, c^KV", cfg.q_lora_rank + cfg.kv_lora_rank, b16)]
    if moe:
        items.append(("router affinities", cfg.n_routed_experts, 4))
    items += [(f"expert inputs ({copies} expert{'s' if copies > 1 else ''} per token)", copies * d, b8),
              ("SwiGLU inputs W1x, W3x", copies * 2 * ffn_hidden, b8)]
    if not rep:
        items.append(("SwiGLU output (input of W2)", copies * ffn_hidden, b16))
    return items


def memory_budget(cfg=None, pp: int = 16, ep: int = 64, dp: int = 128, micro_batches: int = 32,
                  micro_batch_tokens: int = 4096, dualpipe: bool = True, share_embedding: bool = True,
                  ema_on_gpu: bool = False, policy: str = "report", state_bytes: dict | None = None) -> dict:
    """Per-GPU memory of DeepSeek-V3 training on the busiest rank (the one holding the embedding, the output
    head and the MTP module), under PP × DP GPUs, experts spread over EP of the DP ranks, ZeRO-1.

    Parameters are counted from ``cfg`` (default ``deepseek_v3_config()``) with the formulas of
    ``helpers.model.count_params``. Non-expert parameters of a stage are replicated over DP ranks; routed
    experts are split over EP ranks (N_r/EP per layer) and replicated DP/EP times. ZeRO-1 shards master weights
    and moments over the replicas; weights and gradients stay whole. Activations: ``activation_items`` per token
    per layer × tokens per micro-batch × layers per stage × micro-batches in flight (min(M, PP + 1) with
    DualPipe, min(M, PP) with 1F1B). Returns {"rows": [(item, bytes)], "total", "fits" (≤ 80 GB), "params",
    "layers", ...}. Every assumption is listed in ``BUDGET_ASSUMPTIONS``.
    """
    from .config import deepseek_v3_config
    from .model import count_params
    cfg = cfg or deepseek_v3_config()
    for name, v in (("pp", pp), ("ep", ep), ("dp", dp), ("micro_batches", micro_batches),
                    ("micro_batch_tokens", micro_batch_tokens)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int ≥ 1, got {v!r}")
    if dp % ep:
        raise ValueError(f"ep = {ep} must divide dp = {dp}: the EP group is made of data-parallel ranks "
                         "(each holds a different slice of the experts); pick ep among the divisors of dp")
    if cfg.n_routed_experts % ep:
        raise ValueError(f"ep = {ep} must divide the {cfg.n_routed_experts} routed experts")
    sb = {**STATE_BYTES, **(state_bytes or {})}
    c = count_params(cfg)
    d = cfg.dim
    expert = 3 * d * cfg.moe_inter_dim
    n_blocks = cfg.n_layers + cfg.mtp_depth
    stages = stage_layout(n_blocks, pp)
    mine = stages[0] + (stages[-1] if dualpipe and pp > 1 else [])
    routed, other = 0, 0
    for b in mine:
        is_moe = cfg.is_moe_layer(b)
        other += c["attention_per_layer"] + 2 * d
        if is_moe:
            routed += cfg.n_routed_experts * expert // ep
            other += cfg.n_shared_experts * expert + cfg.n_routed_experts * d
        else:
            other += c["dense_ffn"]
        if b >= cfg.n_layers:                       # MTP block: its norms and projection M_k
            other += 2 * d + 2 * d * d
    holds_last = dualpipe or pp == 1
    other += c["embedding"] + (c["head"] if holds_last else 0) + (d if holds_last else 0)
    if not share_embedding and cfg.mtp_depth:
        other += cfg.mtp_depth * (c["embedding"] + c["head"])     # MTP with its own copies
    edp = dp // ep
    opt = sb["master"] + sb["adam_m"] + sb["adam_v"]
    rows = [("weights (non-expert)", other * sb["weights"]), ("weights (routed experts)", routed * sb["weights"]),
            ("gradients", (other + routed) * sb["grads"]),
            ("master weights + moments (ZeRO-1 sharded)", other * opt / dp + routed * opt / edp)]
    act_block = {m: sum(e * b for _, e, b in activation_items(cfg, m, policy)) for m in (True, False)}
    per_stage = max(len(s) for s in stages)
    layers_one_stage = stages[0][:per_stage]
    per_mb = micro_batch_tokens * sum(act_block[cfg.is_moe_layer(b)] for b in layers_one_stage)
    in_flight = min(micro_batches, pp + 1 if dualpipe else pp)
    rows.append((f"activations ({in_flight} micro-batches in flight × {len(layers_one_stage)} layers)", in_flight * per_mb))
    ema = (other + routed) * 4                      # FP32 EMA of every parameter this rank holds (not sharded)
    rows.append(("EMA of the weights (FP32)", ema if ema_on_gpu else 0))
    total = sum(b for _, b in rows)
    return {"rows": rows, "total": total, "fits": total <= H800_BYTES, "params_on_gpu": other + routed,
            "params_non_expert": other, "params_routed": routed, "blocks": mine, "stages": stages,
            "activation_per_token_layer": act_block, "in_flight": in_flight, "ema_host_bytes": 0 if ema_on_gpu else ema,
            "gpus": pp * dp, "expert_replicas": edp}
