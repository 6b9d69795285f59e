"""Expert parallelism (DeepSeek-V3 §3.2.2, §3.1): dispatch and combine with ``torch.distributed`` all-to-all.

W ranks (processes, one GPU each on a cluster). Each rank r holds

- a copy of everything that is not a routed expert (the router's centroids e_i and bias b, the shared expert):
  these are data-parallel, their gradients are summed over ranks (``all_reduce``);
- the routed experts E_r = {r·N_r/W, …, (r+1)·N_r/W − 1} (expert-parallel: N_r/W experts per rank,
  EP64 in the report: 4 of the 256 routed experts per GPU);
- its own tokens x^(r) (a slice of the batch).

One MoE layer, per rank, for its tokens u_t:

    (g_{·,t}, i_{·,t}) = route(u_t)                 routing is local: each rank has the whole router
    dispatch: for each assignment (t, k) send u_t to owner(i_{k,t}) = ⌊i_{k,t} / (N_r/W)⌋    (all-to-all)
    compute:  every rank runs its experts on the rows it received
    combine:  send every result row back to the rank it came from                          (all-to-all)
    h_t = Σ_k g_{k,t} · FFN_{i_{k,t}}(u_t) + FFN^(s)(u_t)

This is exactly the single-process MoE's sum, only computed in other places, so output and gradients
(input, experts, router, shared expert) equal the single-process layer's up to floating-point summation
order. The backward of an all-to-all is the all-to-all with send and receive counts swapped: gradients of
the dispatched rows travel back along the combine's path in reverse, and vice versa.

Bytes on the wire per rank and layer (hidden states only): dispatch sends (rows to other ranks)·d·bytes,
combine sends (rows received from other ranks)·d·bytes. Rows a rank sends to itself cost nothing. The
report dispatches in FP8 (1 byte per element plus scales) and combines in BF16, and sends a token to a node
once, however many of its experts live there (node-limited routing, M ≤ 4 nodes); ``dedup_rows`` counts
what a once-per-(token, rank) dispatch would send.

Running it:
- from a notebook or a test: :func:`run_expert_parallel` spawns W processes (``torch.multiprocessing``,
  start method "spawn", gloo backend on the CPU), hands them the weights through a temporary file, and
  collects every rank's output, gradients and byte counts;
- on GPUs: ``torchrun --nproc_per_node N -m helpers.parallel`` (NCCL when CUDA is present, else gloo). Every
  rank builds the same seeded layer, runs the same :func:`ep_forward_backward`, and checks its slice against
  the single-process layer it also builds.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .config import ModelConfig
from .moe import MoE

__all__ = ["expert_owner", "local_experts", "dispatch_plan", "AllToAll", "all_to_all_rows", "EPMoE",
           "ep_forward_backward", "run_expert_parallel", "reference_forward_backward", "gloo_collectives"]

IMPLS = ("single", "list")


def local_experts(n_experts: int, world_size: int, rank: int) -> range:
    """The routed experts rank ``rank`` holds: a contiguous block of N_r / W."""
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int ≥ 1, got {world_size!r}")
    if n_experts % world_size:
        raise ValueError(f"n_routed_experts = {n_experts} is not divisible by world_size = {world_size}: "
                         "every rank must hold the same number of experts; pick a world size that divides it")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    per = n_experts // world_size
    return range(rank * per, (rank + 1) * per)


def expert_owner(indices: torch.Tensor, n_experts: int, world_size: int) -> torch.Tensor:
    """owner(i) = ⌊i / (N_r / W)⌋: the rank holding routed expert i (same shape as ``indices``)."""
    local_experts(n_experts, world_size, 0)                       # validates
    return torch.div(indices, n_experts // world_size, rounding_mode="floor")


def dispatch_plan(indices: torch.Tensor, n_experts: int, world_size: int) -> dict:
    """Where each (token, slot) assignment goes, in the order the rows are sent.

    indices [n, K] (routed experts per token). Assignments are sorted by expert id (stable), so rows for
    rank 0 come first, then rank 1, …, and inside a rank they are grouped by expert. Returns
    {"token" [n·K], "slot" [n·K], "expert" [n·K] in send order, "send_counts" (list of W ints),
    "dedup_counts" (distinct tokens per destination rank: what a send-once-per-rank dispatch would move)}.
    """
    if indices.dim() != 2:
        raise ValueError(f"indices must be [n_tokens, K], got shape {tuple(indices.shape)}")
    n, k = indices.shape
    flat = indices.reshape(-1)
    order = torch.sort(flat, stable=True)[1]
    owner = expert_owner(flat, n_experts, world_size)
    send_counts = torch.bincount(owner, minlength=world_size).tolist()
    token = torch.arange(n, device=indices.device).repeat_interleave(k)
    pairs = torch.unique(token * world_size + owner)
    dedup = torch.bincount(pairs % world_size, minlength=world_size).tolist()
    return {"token": token[order], "slot": (order % k), "expert": flat[order], "send_counts": send_counts,
            "dedup_counts": dedup}


def _collectives_worker(rank: int, world_size: int, store_dir: str) -> None:
    """Try each all-to-all form with UNEQUAL row counts per destination (as MoE dispatch needs)."""
    dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world_size)
    res = {}
    try:
        send = [1 + (rank + j) % 3 for j in range(world_size)]                 # unequal on purpose
        recv = [1 + (j + rank) % 3 for j in range(world_size)]
        x = torch.arange(sum(send), dtype=torch.float32) + 100 * rank
        tries = {
            "all_to_all_single, equal splits": lambda: dist.all_to_all_single(torch.empty(world_size), torch.ones(world_size)),
            "all_to_all_single, unequal split sizes": lambda: dist.all_to_all_single(torch.empty(sum(recv)), x, recv, send),
            "all_to_all (lists), equal sizes": lambda: dist.all_to_all([torch.empty(2) for _ in range(world_size)],
                                                                       [torch.ones(2) for _ in range(world_size)]),
            "all_to_all (lists), unequal sizes": lambda: dist.all_to_all([torch.empty(c) for c in recv], list(x.split(send))),
        }
        for name, fn in tries.items():
            try:
                fn()
                res[name] = "works"
            except (RuntimeError, NotImplementedError, ValueError) as e:
                res[name] = "fails: " + str(e).splitlines()[0][:90]
            dist.barrier()
        torch.save(res, f"{store_dir}/coll{rank}.pt")
    finally:
        dist.destroy_process_group()


def gloo_collectives(world_size: int = 2) -> dict:
    """Which all-to-all forms this torch's gloo backend runs with unequal row counts, tried in ``world_size``
    spawned processes. Returns {form: "works" | "fails: <error>"} (rank 0's view)."""
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_collectives_worker, args=(world_size, d), nprocs=world_size, join=True,
                           start_method="spawn")
        return torch.load(Path(d) / "coll0.pt", weights_only=False)


def all_to_all_rows(x: torch.Tensor, send_counts: list[int], recv_counts: list[int], group=None,
                    impl: str = "single") -> torch.Tensor:
    """Send rows x[Σ_{<j} send_j : Σ_{≤j} send_j] to rank j; return the rows received, concatenated by source rank.

    impl "single": one ``dist.all_to_all_single`` with split sizes. "list": ``dist.all_to_all`` on lists of
    tensors; gloo's list form needs every tensor the same shape, so each chunk is padded to the largest count
    in the group (found with an ``all_reduce(MAX)``) and trimmed after (the padding travels too). No autograd
    here (see :class:`AllToAll`).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    x = x.contiguous()
    out = x.new_empty((sum(recv_counts), *x.shape[1:]))
    if impl == "single":
        dist.all_to_all_single(out, x, output_split_sizes=list(recv_counts), input_split_sizes=list(send_counts),
                               group=group)
    else:
        m = torch.tensor([max(max(send_counts), max(recv_counts))], device=x.device)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        m = int(m.item())
        pad = [torch.cat([c, c.new_zeros((m - len(c), *c.shape[1:]))]) for c in x.split(list(send_counts))]
        outs = [x.new_empty((m, *x.shape[1:])) for _ in recv_counts]
        dist.all_to_all(outs, pad, group=group)
        out = torch.cat([o[:c] for o, c in zip(outs, recv_counts)])
    return out


class AllToAll(torch.autograd.Function):
    """Differentiable all-to-all of rows: forward sends with (send, recv) counts, backward with (recv, send)."""

    @staticmethod
    def forward(ctx, x, send_counts, recv_counts, group, impl):
        ctx.counts, ctx.group, ctx.impl = (list(send_counts), list(recv_counts)), group, impl
        return all_to_all_rows(x, send_counts, recv_counts, group, impl)

    @staticmethod
    def backward(ctx, grad):
        send, recv = ctx.counts
        return all_to_all_rows(grad, recv, send, ctx.group, ctx.impl), None, None, None, None


class EPMoE(nn.Module):
    """The expert-parallel version of a :class:`helpers.moe.MoE`: this rank's experts, a copy of the rest.

    ``EPMoE(moe, rank, world_size)`` copies the router, the shared expert and the routed experts
    ``local_experts(N_r, W, rank)`` out of ``moe`` (the same weights). ``forward(x)`` must be called on every
    rank at the same time (it runs collectives); x is this rank's tokens. After a forward, ``stats`` holds
    the rows and bytes this rank sent, and ``last_load`` this rank's tokens per expert (all experts).
    Balance losses are not computed here (sequence-wise statistics would need the other ranks' tokens).
    """

    def __init__(self, moe: MoE, rank: int, world_size: int, group=None, impl: str = "single"):
        super().__init__()
        if not isinstance(moe, MoE):
            raise TypeError(f"EPMoE splits a helpers.moe.MoE, got {type(moe).__name__}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        import copy
        self.rank, self.world_size, self.group, self.impl = rank, world_size, group, impl
        self.dim, self.n_routed_experts = moe.dim, moe.n_routed_experts
        self.expert_ids = local_experts(moe.n_routed_experts, world_size, rank)
        self.gate = copy.deepcopy(moe.gate)
        self.experts = nn.ModuleList(copy.deepcopy(moe.experts[i]) for i in self.expert_ids)
        self.shared_experts = copy.deepcopy(moe.shared_experts)
        self.stats: dict = {}
        self.last_load = torch.zeros(moe.n_routed_experts)

    def replicated_parameters(self):
        """Parameters every rank holds a copy of (router, shared expert): their gradients must be summed."""
        yield from self.gate.parameters()
        if self.shared_experts is not None:
            yield from self.shared_experts.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xf = x.reshape(-1, self.dim)
        weights, indices, _, _ = self.gate(xf)
        self.last_load = torch.bincount(indices.flatten(), minlength=self.n_routed_experts).float().cpu()
        plan = dispatch_plan(indices, self.n_routed_experts, self.world_size)
        send = plan["send_counts"]
        # 1. tell every rank how many rows to expect (a tiny all-to-all of counts)
        cnt = torch.tensor(send, dtype=torch.long, device=x.device)
        recv = all_to_all_rows(cnt.view(-1, 1), [1] * self.world_size, [1] * self.world_size, self.group,
                               self.impl).view(-1).tolist()
        # 2. dispatch: hidden states (differentiable) and expert ids (integers)
        rows = AllToAll.apply(xf[plan["token"]], send, recv, self.group, self.impl)
        eids = all_to_all_rows(plan["expert"], send, recv, self.group, self.impl)
        # 3. compute: group received rows by local expert
        order = torch.sort(eids, stable=True)[1]
        per_expert = torch.bincount(eids - self.expert_ids.start, minlength=len(self.expert_ids)).tolist()
        outs = [self.experts[j](chunk) for j, chunk in enumerate(rows[order].split(per_expert))]
        computed = torch.cat(outs).index_select(0, torch.argsort(order)) if outs else rows
        # 4. combine: results back to where the rows came from, weighted by the gates, summed per token
        back = AllToAll.apply(computed, recv, send, self.group, self.impl)
        y = torch.zeros_like(xf).index_add(0, plan["token"], back * weights[plan["token"], plan["slot"], None])
        if self.shared_experts is not None:
            y = y + self.shared_experts(xf)
        r, el = self.rank, xf.element_size()
        self.stats = {"send_rows": send, "recv_rows": recv, "dedup_rows": plan["dedup_counts"],
                      "dispatch_bytes": (sum(send) - send[r]) * self.dim * el,
                      "combine_bytes": (sum(recv) - recv[r]) * self.dim * el,
                      "dedup_dispatch_bytes": (sum(plan["dedup_counts"]) - plan["dedup_counts"][r]) * self.dim * el,
                      "local_rows": send[r], "tokens": xf.shape[0], "element_bytes": el}
        return y.view(shape)


# ---- one forward + backward, the same on every rank (spawned or under torchrun) --------------------------

def _split(n: int, world_size: int, rank: int) -> slice:
    per, extra = divmod(n, world_size)
    start = rank * per + min(rank, extra)
    return slice(start, start + per + (rank < extra))


def ep_forward_backward(moe: MoE, x: torch.Tensor, grad_out: torch.Tensor, rank: int, world_size: int,
                        group=None, impl: str = "single") -> dict:
    """Expert-parallel forward and backward of ``moe`` on this rank's share of the tokens.

    x, grad_out [n, dim] are the WHOLE batch (every rank passes the same); rank r takes rows ``_split``.
    Loss = Σ (y ⊙ grad_out), so ∂L/∂y = grad_out and gradients of different ranks' tokens add up.
    Replicated parameters' gradients are summed over ranks (all_reduce), as data parallelism would.
    Returns this rank's rows, output, input gradient, local experts' gradients, replicated gradients, stats.
    """
    sl = _split(x.shape[0], world_size, rank)
    ep = EPMoE(moe, rank, world_size, group, impl).to(x.device)
    xr = x[sl].detach().clone().requires_grad_(True)
    y = ep(xr)
    (y * grad_out[sl]).sum().backward()
    rep = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in
           [(f"gate.{n}", p) for n, p in ep.gate.named_parameters()]
           + ([(f"shared_experts.{n}", p) for n, p in ep.shared_experts.named_parameters()]
              if ep.shared_experts is not None else [])}
    if world_size > 1:
        for g in rep.values():
            dist.all_reduce(g, group=group)
    experts = {f"experts.{i}.{n}": p.grad for i, e in zip(ep.expert_ids, ep.experts)
               for n, p in e.named_parameters()}
    return {"rank": rank, "rows": (sl.start, sl.stop), "y": y.detach(), "x_grad": xr.grad, "expert_grads": experts,
            "replicated_grads": rep, "stats": ep.stats, "load": ep.last_load}


def reference_forward_backward(moe: MoE, x: torch.Tensor, grad_out: torch.Tensor) -> dict:
    """The single-process layer on the whole batch: output, input gradient and every parameter's gradient."""
    moe.zero_grad(set_to_none=True)
    xr = x.detach().clone().requires_grad_(True)
    y = moe(xr)
    (y * grad_out).sum().backward()
    return {"y": y.detach(), "x_grad": xr.grad, "grads": {n: (p.grad if p.grad is not None else torch.zeros_like(p))
                                                         for n, p in moe.named_parameters()}}


def _worker(rank: int, world_size: int, payload_path: str, store_dir: str, impl: str) -> None:
    """Entry of a spawned process: join the gloo group, run :func:`ep_forward_backward`, save the result."""
    torch.set_num_threads(1)
    payload = torch.load(payload_path, weights_only=False)
    dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world_size)
    try:
        moe = MoE(ModelConfig(**payload["cfg"]))
        moe.load_state_dict(payload["state"])
        dist.barrier()
        t0 = time.perf_counter()
        out = ep_forward_backward(moe, payload["x"], payload["grad_out"], rank, world_size, impl=impl)
        out["seconds"] = time.perf_counter() - t0
        torch.save(out, f"{store_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_expert_parallel(moe: MoE, x: torch.Tensor, grad_out: torch.Tensor | None = None, world_size: int = 2,
                        impl: str = "single", seed: int = 0) -> dict:
    """Run ``moe`` expert-parallel over ``world_size`` spawned CPU processes (gloo) and gather the results.

    x [n, dim] (or [B, T, dim]): the whole batch, split over ranks by rows. grad_out: ∂L/∂y (default: seeded
    normal). Returns {"y", "x_grad" (whole batch, reassembled), "grads" (every parameter of ``moe``, named as in
    ``moe.named_parameters()``), "stats" (per rank), "load", "seconds" (wall time of the spawn)}.
    """
    if not isinstance(moe, MoE):
        raise TypeError(f"run_expert_parallel needs a helpers.moe.MoE, got {type(moe).__name__}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int ≥ 1, got {world_size!r}")
    local_experts(moe.n_routed_experts, world_size, 0)
    if x.shape[-1] != moe.dim:
        raise ValueError(f"x has last dimension {x.shape[-1]} but the layer's dim is {moe.dim}")
    xf = x.detach().reshape(-1, moe.dim).float().cpu()
    if xf.shape[0] < world_size:
        raise ValueError(f"{xf.shape[0]} tokens cannot be split over {world_size} ranks; pass at least {world_size}")
    if grad_out is None:
        grad_out = torch.randn(xf.shape, generator=torch.Generator().manual_seed(seed))
    grad_out = grad_out.detach().reshape(-1, moe.dim).float().cpu()
    cfg = _cfg_of(moe)
    import torch.multiprocessing as mp
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "payload.pt")
        torch.save({"cfg": cfg, "state": {k: v.detach().cpu() for k, v in moe.state_dict().items()},
                    "x": xf, "grad_out": grad_out}, path)
        mp.start_processes(_worker, args=(world_size, path, d, impl), nprocs=world_size, join=True,
                           start_method="spawn")
        results = [torch.load(Path(d) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    seconds = time.perf_counter() - t0
    y = torch.cat([r["y"] for r in results])
    x_grad = torch.cat([r["x_grad"] for r in results])
    grads = dict(results[0]["replicated_grads"])
    for r in results:
        grads.update(r["expert_grads"])
    grads = {n: grads[n] for n, _ in moe.named_parameters()}
    return {"y": y.view(x.shape), "x_grad": x_grad.view(x.shape), "grads": grads,
            "stats": [r["stats"] for r in results], "load": torch.stack([r["load"] for r in results]).sum(0),
            "seconds": seconds, "rank_seconds": [r["seconds"] for r in results]}


def _cfg_of(moe: MoE) -> dict:
    """A ModelConfig (as a dict) that rebuilds a layer shaped like ``moe`` (sizes and routing knobs)."""
    g = moe.gate
    n_shared = 0 if moe.shared_experts is None else moe.shared_experts.w1.out_features // moe.experts[0].w1.out_features
    return ModelConfig(dim=moe.dim, moe_inter_dim=moe.experts[0].w1.out_features, n_routed_experts=moe.n_routed_experts,
                       n_shared_experts=n_shared, n_activated_experts=g.topk, n_expert_groups=g.n_groups,
                       n_limited_groups=g.topk_groups, route_scale=g.route_scale, balance="none",
                       q_lora_rank=0, kv_lora_rank=1).to_dict()


def main() -> None:  # pragma: no cover - exercised by hand under torchrun (see the module docstring)
    """``torchrun --nproc_per_node N -m helpers.parallel``: EP forward/backward vs the single-process layer."""
    import argparse
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--topk", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        torch.manual_seed(a.seed)                                    # the same layer and batch on every rank
        moe = MoE(ModelConfig(dim=a.dim, moe_inter_dim=a.dim // 2, n_routed_experts=a.experts,
                              n_activated_experts=a.topk, n_expert_groups=1, n_limited_groups=1, balance="none"))
        for prm in moe.parameters():
            nn.init.normal_(prm, std=0.05)
        moe = moe.to(device)
        x = torch.randn(a.tokens, a.dim, device=device)
        g = torch.randn(a.tokens, a.dim, device=device)
        out = ep_forward_backward(moe, x, g, rank, world)
        ref = reference_forward_backward(moe, x, g)
        lo, hi = out["rows"]
        err = max((out["y"] - ref["y"][lo:hi]).abs().max().item(), (out["x_grad"] - ref["x_grad"][lo:hi]).abs().max().item(),
                  *[(v - ref["grads"][n]).abs().max().item() for n, v in {**out["expert_grads"], **out["replicated_grads"]}.items()])
        s = out["stats"]
        print(f"rank {rank}/{world} on {device}: max |EP − single| = {err:.2e}; sent {s['dispatch_bytes']:,} B dispatch + "
              f"{s['combine_bytes']:,} B combine", flush=True)
        if err > 1e-4:
            raise SystemExit(f"rank {rank}: expert-parallel result differs from the single-process layer by {err:.2e}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    main()
