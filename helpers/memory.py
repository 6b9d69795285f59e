"""Activation memory and recomputation (DeepSeek-V3 §3.2.3 "Extremely Memory Saving with Minimal Overhead").

Backward needs some forward values: a linear layer y = x Wᵀ needs x for ∂L/∂W = (∂L/∂y)ᵀ x; SiLU needs
its input; a product a ⊙ b needs both factors. Autograd keeps them ("saved tensors") from the forward until
the backward has used them, so their bytes add up over all layers at the peak of memory.

:class:`SavedTensors` counts them exactly with ``torch.autograd.graph.saved_tensors_hooks``: every tensor
autograd saves passes through the pack hook. Storages are counted once (several ops may save the same
tensor) and parameters are counted apart (they live in memory anyway).

Recomputation (activation checkpointing) keeps only a module's input and recomputes its forward during
backward: fewer saved bytes for one more forward's worth of compute. :class:`Recompute` does it for a whole
module (``torch.utils.checkpoint``). The report is selective (§3.2.3): it recomputes all RMSNorm operations
and the MLA up-projections in backward, and caches the SwiGLU input of MoE in FP8.

Selective recomputation (:class:`SelectiveRecompute`, :class:`SelectiveBlock`). Recomputing a piece y = f(x)
must remove two kinds of stored tensors: the piece's *own* saved tensors (RMSNorm's normalised x before the
gain, its 1/RMS) and its *output* y, which the next op saves (a linear layer saves its input; attention saves
q, k, v). Checkpointing f alone removes only the first kind. So a piece here is an autograd Function that
runs f without a graph and keeps only x; and while the forward runs, a saved-tensor pack hook replaces every
tensor a later op saves that *is* y (or a view of it) by a recipe — "recompute piece p, take output i, view
it this way". In backward the first recipe unpacked re-runs f (with a graph, kept for the piece's own backward,
so each piece is recomputed once), later ones reuse it. What stays stored per MLA block: the block input, the
latents c^Q and [c^KV; k^R] before their norms, what attention keeps besides q, k, v (here the written-out
softmax probabilities; a fused kernel keeps its output and a log-sum-exp instead), the attention output (input
of W^O), the residual after attention, and what the FFN keeps.
"""
from __future__ import annotations

import sys
import time
from collections import Counter

import torch
from torch.utils.checkpoint import checkpoint

from .attention import MLA, attend
from .rope import apply_rotary_emb
from .runtime import use_fast_path

__all__ = ["SavedTensors", "saved_bytes", "Recompute", "SelectiveRecompute", "SelectiveBlock", "selective_block_forward",
           "use_recomputation", "time_forward_backward", "H800_BYTES", "STATE_BYTES",
           "training_state_bytes_measured", "stage_layout", "activation_items", "memory_budget", "BUDGET_ASSUMPTIONS"]


_COUNTERS: list = []          # active SavedTensors blocks, innermost last (SelectiveRecompute counts through them)


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

    def keep(self, t: torch.Tensor) -> torch.Tensor:
        """Count ``t`` as kept for backward (what this block's pack hook does); returns ``t``. For a pack hook of
        your own inside the block (an inner hook replaces this one): hand it the tensors your hook keeps."""
        return self._pack(t)

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        _COUNTERS.append(self)
        return self

    def __exit__(self, *exc):
        _COUNTERS.remove(self)
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


# ---- selective recomputation (§3.2.3): pieces whose internals and outputs are not stored -------------------

class _Piece:
    """One recomputed piece: f, its parameters, and (in backward) the recomputed inputs/outputs with their graph."""
    __slots__ = ("fn", "params", "n_inputs", "single", "recomputed")

    def __init__(self, fn, params, n_inputs):
        self.fn, self.params, self.n_inputs, self.single, self.recomputed = fn, params, n_inputs, True, None

    def recompute(self, node):
        """Run f again from the inputs the node kept, with a graph; cached until the piece's own backward."""
        if self.recomputed is None:
            inputs = node.saved_tensors
            with torch.enable_grad():
                xs = [x.detach().requires_grad_(x.requires_grad) for x in inputs]
                outs = self.fn(*xs)
            self.recomputed = (xs, (outs,) if isinstance(outs, torch.Tensor) else tuple(outs))
        return self.recomputed


class _PieceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, piece, *args):
        inputs = args[:piece.n_inputs]
        outs = piece.fn(*inputs)                       # autograd records nothing inside a Function's forward
        piece.single = isinstance(outs, torch.Tensor)
        outs = (outs,) if piece.single else tuple(outs)
        for i, o in enumerate(outs):
            if not (isinstance(o, torch.Tensor) and o.is_contiguous() and o.storage_offset() == 0
                    and o.untyped_storage().nbytes() == o.numel() * o.element_size()):
                raise ValueError(f"SelectiveRecompute: output {i} of a piece must be a fresh contiguous tensor (not a "
                                 "view or a slice); return t.contiguous(), or return the whole tensor and slice it "
                                 "outside the piece")
        ctx.piece = piece
        ctx.save_for_backward(*inputs)                 # the only tensors the piece keeps (through the pack hooks)
        return outs[0] if piece.single else outs

    @staticmethod
    def backward(ctx, *grads):
        piece = ctx.piece
        xs, outs = piece.recompute(ctx)
        piece.recomputed = None                        # free the recomputed graph after this backward
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        wrt = [x for x in xs if x.requires_grad] + [p for p in piece.params if p.requires_grad]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
                   if pairs and wrt else [None] * len(wrt))
        gx = [next(got) if x.requires_grad else None for x in xs]
        gp = [next(got) if p.requires_grad else None for p in piece.params]
        return (None, *gx, *gp)


class _Recipe:
    """What a later op keeps instead of a piece's output: the piece's node, the output index and the view."""
    __slots__ = ("node", "index", "size", "stride", "offset", "dtype")

    def __init__(self, node, index, t):
        self.node, self.index = node, index
        self.size, self.stride, self.offset, self.dtype = t.size(), t.stride(), t.storage_offset(), t.dtype

    def materialize(self) -> torch.Tensor:
        _, outs = self.node.piece.recompute(self.node)
        y = outs[self.index].detach()
        if y.dtype != self.dtype:
            y = y.view(self.dtype)
        return y.as_strided(self.size, self.stride, self.offset)


class SelectiveRecompute:
    """Recompute chosen pieces of a forward pass in backward, storing neither their internals nor their outputs.

        with SelectiveRecompute() as sr:
            n = sr(block.attn_norm, x)                 # RMSNorm: only x is kept
            q = sr(up_q, c_q, params=[...])            # any function of tensors; its parameters listed
            ...                                        # later ops that save n or q (or views) keep a recipe

    ``sr(fn, *inputs, params=None)``: ``fn`` an ``nn.Module`` (its parameters are used) or a function of the
    tensor ``inputs`` (then ``params`` lists every parameter it reads; a missing one would get no gradient).
    Outputs must be fresh contiguous tensors (one, or a tuple). Inside a :class:`SavedTensors` block the kept
    tensors are counted there; recipes count as nothing (``n_recipes`` counts them). Gradients equal those of
    the plain forward: the pieces are recomputed from the same inputs with the same weights.
    """

    def __init__(self):
        self._ctx = None
        self.n_pieces = self.n_recipes = 0

    def __call__(self, fn, *inputs, params=None):
        if self._ctx is None:
            raise RuntimeError("SelectiveRecompute: call pieces inside `with SelectiveRecompute() as sr:`")
        if params is None:
            if not isinstance(fn, torch.nn.Module):
                raise TypeError("SelectiveRecompute: a plain function needs params=[...] (every parameter it reads), "
                                "or pass an nn.Module")
            params = list(fn.parameters())
        params = list(params)
        if not all(isinstance(x, torch.Tensor) for x in inputs):
            raise TypeError("SelectiveRecompute: inputs must be tensors; capture constants (e.g. a RoPE table) in fn")
        if not torch.is_grad_enabled():
            return fn(*inputs)
        self.n_pieces += 1
        return _PieceFunction.apply(_Piece(fn, params, len(inputs)), *inputs, *params)

    def _pack(self, t):
        base = t if t._base is None else t._base
        node = base.grad_fn
        if node is not None and isinstance(getattr(node, "piece", None), _Piece):
            self.n_recipes += 1
            return _Recipe(node, base.output_nr, t)
        return _COUNTERS[-1].keep(t) if _COUNTERS else t

    @staticmethod
    def _unpack(obj):
        return obj.materialize() if isinstance(obj, _Recipe) else obj

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        self._ctx = None
        return False


def _mla_q(attn: MLA, c_q: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Query up-projection: [q^C; RoPE(q^R)] = [W^UQ; W^QR] RMSNorm(c^Q) per head, as [b, n_h, t, d_h + d_h^R]."""
    b, t, _ = c_q.shape
    dn, dr = attn.qk_nope_head_dim, attn.qk_rope_head_dim
    q_nope, q_pe = attn.wq_b(attn.q_norm(c_q)).view(b, t, attn.n_heads, dn + dr).split([dn, dr], dim=-1)
    return torch.cat([q_nope, apply_rotary_emb(q_pe, freqs_cis)], dim=-1).transpose(1, 2).contiguous()


def _mla_kv(attn: MLA, kv_pe: torch.Tensor, freqs_cis: torch.Tensor):
    """Key/value up-projection from [c^KV (pre-norm); k^R (pre-RoPE)]: k = [W^UK c^KV; RoPE(k^R)], v = W^UV c^KV
    with c^KV normalised, as [b, n_h, t, ·] (the layout attention multiplies in, so it keeps views of them)."""
    b, t, _ = kv_pe.shape
    h, dn, dr, dv = attn.n_heads, attn.qk_nope_head_dim, attn.qk_rope_head_dim, attn.v_head_dim
    kv, k_pe = kv_pe.split([attn.kv_lora_rank, dr], dim=-1)
    k_nope, v = attn.wkv_b(attn.kv_norm(kv)).view(b, t, h, dn + dv).split([dn, dv], dim=-1)
    k_pe = apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis).squeeze(2)
    k = torch.cat([k_nope, k_pe.unsqueeze(2).expand(b, t, h, dr)], dim=-1)
    return k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()


def selective_block_forward(block, x: torch.Tensor, freqs_cis: torch.Tensor, sr: SelectiveRecompute) -> torch.Tensor:
    """``block(x, freqs_cis)`` (a course-model Block with MLA, query compression on, no cache) with its two
    RMSNorms and the MLA up-projections (q_norm + W^UQ;W^QR + RoPE, kv_norm + W^UK;W^UV + RoPE of k^R) as
    pieces of ``sr``: the same function, computed with the same weights; only what is kept differs.

    Attention is the written-out formula of :func:`helpers.attention.attend` (its reference path) on q, k, v in
    [b, n_h, t, ·] layout, so what it keeps are views of the pieces' outputs, which the recipes replace. (A fused
    kernel such as ``scaled_dot_product_attention`` keeps copies of its own, e.g. pre-scaled q and k.)"""
    a = block.attn
    if not isinstance(a, MLA) or a.q_lora_rank == 0:
        raise ValueError("selective_block_forward needs a block with MLA and query compression (q_lora_rank > 0)")
    if a.kv_cache is not None or a.k_cache is not None:
        raise ValueError("selective_block_forward is for training: clear the model's cache first (model.clear_cache())")
    h = sr(block.attn_norm, x)                                         # RMSNorm(x): recomputed
    c_q, kv_pe = a.wq_a(h), a.wkv_a(h)                                  # the latents: kept
    q = sr(lambda c: _mla_q(a, c, freqs_cis), c_q, params=[a.q_norm.weight, a.wq_b.weight])
    k, v = sr(lambda c: _mla_kv(a, c, freqs_cis), kv_pe, params=[a.kv_norm.weight, a.wkv_b.weight])
    with use_fast_path(False):                                          # written out: it keeps q, k, v as views
        o = attend(q, k, v, a.softmax_scale, causal=True)               # [b, n_h, t, d_v]
    u = x + a.wo(o.transpose(1, 2).flatten(2))
    return u + block.ffn(sr(block.ffn_norm, u))                         # RMSNorm(u): recomputed


class SelectiveBlock(torch.nn.Module):
    """Wrap a course-model Block so that training forwards recompute its RMSNorms and MLA up-projections in
    backward (:func:`selective_block_forward`); without grad, or with a cache, it is the plain block."""

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        a = getattr(block, "attn", None)
        if not isinstance(a, MLA) or a.q_lora_rank == 0:
            raise TypeError("SelectiveBlock wraps a course-model Block with MLA and q_lora_rank > 0, got "
                            f"{type(block).__name__}" + (f" with {type(a).__name__}" if a is not None else ""))
        self.block = block

    def forward(self, x, freqs_cis, start_pos: int = 0):
        a = self.block.attn
        if not torch.is_grad_enabled() or start_pos != 0 or a.kv_cache is not None or a.k_cache is not None:
            return self.block(x, freqs_cis, start_pos)
        with SelectiveRecompute() as sr:
            return selective_block_forward(self.block, x, freqs_cis, sr)


def use_recomputation(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Wrap every Transformer block of a course model (main and MTP) in place: mode "none" (unwrap),
    "selective" (:class:`SelectiveBlock`) or "block" (:class:`Recompute`, whole-block checkpointing). Returns model."""
    wrap = {"none": lambda b: b, "selective": SelectiveBlock, "block": Recompute}
    if mode not in wrap:
        raise ValueError(f"use_recomputation: mode must be one of {sorted(wrap)}, got {mode!r}")

    def inner(b):
        return b.block if isinstance(b, SelectiveBlock) else b.module if isinstance(b, Recompute) else b
    for i, b in enumerate(model.layers):
        model.layers[i] = wrap[mode](inner(b))
    for m in model.mtp:
        m.block = wrap[mode](inner(m.block))
    return model


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
