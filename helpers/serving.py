"""Sparse serving (§3.4): routing traces, a hierarchical balancer for redundant experts, prefill/decode pools.

Routing traces of real requests, redundant experts placed by a hierarchical load balancer, and prefill/decode
disaggregation simulated.

**Routing traces.** Serving a DeepSeekMoE model spreads each layer's N_r routed experts over GPUs (expert
parallelism). Which GPU works hardest depends on which experts the *traffic* picks: a routing trace records, for
every token of some real requests and every MoE layer ℓ, the K_r experts the gate chose. The load of expert i is
the number of (token, slot) assignments sent to it, l_i = #{(t, k) : index_{t,k} = i}; Σ_i l_i = K_r · tokens.

**A placement** puts S physical slots on each of the G GPUs (G = nodes × GPUs per node), each slot holding a
copy (*replica*) of one logical expert; every expert has r_i ≥ 1 replicas and Σ_i r_i = G·S, so there are
R = G·S − N_r redundant replicas. The tokens of expert i are shared equally by its replicas, so GPU g carries

    L_g = Σ_i (copies of i on g) / r_i · l_i            (Σ_g L_g = Σ_i l_i: load is conserved)

and the layer's step time is set by max_g L_g (every GPU waits for the slowest). The balance measure is
max_g L_g / mean_g L_g = 1 + MaxVio(L) (helpers.moe.max_violation), 1 when perfectly balanced.

**The hierarchical balancer** (:func:`hierarchical_placement`, our own build of the idea behind DeepSeek's EPLB):

1. *groups → nodes*: the n_groups expert groups (the groups of group-limited routing, so that a token's node
   limit still holds) are packed onto the nodes, the same number per node, balancing the group loads;
2. *replicas inside each node*: the node's R_n = (GPUs per node)·S − (experts on the node) redundant slots go, one
   at a time, to the expert with the highest load per replica l_i / r_i (optimal for min max_i l_i / r_i);
3. *replicas → GPUs*: the replicas (weight l_i / r_i each) are packed onto the node's GPUs, S per GPU, greedily:
   heaviest first onto the least-loaded GPU with a free slot (and, when it can, one that has no copy of the same
   expert yet) — :func:`balanced_packing`.

Steps 2 and 3 are greedy and chosen separately, so on some loads the packing with redundancy ends up *worse*
than the packing without it. The balancer therefore tries, per node, every number r = R_n, R_n − 1, …, 0 of
replicas chosen by step 2; the R_n − r slots left over are filled one at a time with the copy that lowers the
node's peak most (e.g. one more replica of an expert of the node's most loaded GPU). A layer waits for its slowest
GPU, so the balancer finds the lowest peak any node can reach, P* = max_nodes min_r peak(node, r), and then lets
every node keep the largest r whose peak stays ≤ P* (more genuine replicas = more room when the load shifts).
r = 0 is exactly the no-redundancy placement, its leftover slots filled with idle copies of experts that live
only on that GPU (they change no load), so the balancer **never raises the max load** above the no-redundancy
placement of the same load.

**Prefill/decode disaggregation.** Prefill processes a whole prompt at once (compute-bound, long); decode emits
one token per step for a batch of running requests (memory-bound, short). On one pool a prefill stalls every
running decode (a spike in the time between tokens); separate pools (DeepSeek-V3: 32-GPU prefill units and
320-GPU decode units) keep decode steps regular. :func:`simulate_serving` is a small deterministic simulation of
both, reporting time to first token (TTFT) and time per output token (TPOT).
"""
from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .moe import MoE, max_violation

__all__ = ["RoutingTrace", "main_moe_layers", "routing_traces", "domain_loads", "sample_batch_loads", "balanced_packing", "replicate",
           "Placement", "contiguous_placement", "hierarchical_placement", "gpu_loads", "load_ratio",
           "placement_report", "drift_schedule", "replan_stream", "Request", "make_requests", "simulate_serving",
           "percentiles"]


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_int(name: str, v, lo: int = 1, fix: str = "") -> None:
    if not (_is_int(v) and v >= lo):
        raise ValueError(f"{name} must be an int ≥ {lo}, got {v!r}" + (f"; {fix}" if fix else ""))


def _as_load(load, name: str = "load", n: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(load, dtype=torch.float64)
    if t.dim() != 1 or len(t) == 0:
        raise ValueError(f"{name} must be a 1-D sequence of per-expert loads, got shape {tuple(t.shape)}; "
                         "pass one layer's loads, e.g. load[layer]")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"{name} must hold finite loads ≥ 0 (token counts), got min {t.min().item()}, "
                         f"max {t.max().item()}")
    if n is not None and len(t) != n:
        raise ValueError(f"{name} has {len(t)} experts but the placement holds {n}; evaluate a placement on "
                         "loads of the same layer shape")
    return t


# ---- routing traces ---------------------------------------------------------------------------------------

@dataclass
class RoutingTrace:
    """The experts chosen for each token: ``indices`` [n_layers, n_tokens, K] (int64), ``domain`` [n_tokens]
    (position in ``domains`` of the token's domain), ``n_experts`` routed experts per layer."""
    indices: torch.Tensor
    domain: torch.Tensor
    domains: tuple[str, ...]
    n_experts: int

    @property
    def n_layers(self) -> int:
        return self.indices.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.indices.shape[1]

    def load(self, domain: str | None = None) -> torch.Tensor:
        """Assignments per expert, [n_layers, n_experts] (float64 counts), over all tokens or one domain's."""
        idx = self.indices
        if domain is not None:
            if domain not in self.domains:
                raise ValueError(f"unknown domain {domain!r}; the trace has {list(self.domains)}")
            idx = idx[:, self.domain == self.domains.index(domain)]
        return _bincount_layers(idx, self.n_experts)


def _bincount_layers(idx: torch.Tensor, n_experts: int) -> torch.Tensor:
    """idx [L, n, K] → counts [L, n_experts] in one bincount (layer ℓ offset by ℓ·n_experts)."""
    n_layers = idx.shape[0]
    off = torch.arange(n_layers).view(-1, 1, 1) * n_experts
    return torch.bincount((idx + off).flatten(), minlength=n_layers * n_experts).view(n_layers, n_experts).double()


def main_moe_layers(model) -> list[MoE]:
    """The MoE layers of the main model only (``model.moe_layers()`` lists the MTP module's after them)."""
    return [layer.ffn for layer in model.layers if isinstance(layer.ffn, MoE)]


@torch.no_grad()
def routing_traces(model, batches: dict) -> RoutingTrace:
    """Run ``model`` over ``batches`` ({domain: LongTensor [rows, T] or a list of them}) and record the gate's
    top-K indices of every token in each MoE layer of the **main** model (forward hooks on ``ffn.gate``).

    The MTP module's MoE layer is left out: a plain forward (no targets) does not run it, and at serving time it
    runs only to draft tokens for speculative decoding.
    """
    if not isinstance(batches, dict) or not batches:
        raise ValueError("routing_traces: batches must be a non-empty dict {domain: LongTensor [rows, T]}, got "
                         f"{type(batches).__name__}; e.g. {{'code': x}} with x a batch of token windows")
    layers = main_moe_layers(model)
    if not layers:
        raise ValueError("routing_traces: the model has no MoE layers in its main stack; use an MoE config")
    parts = {d: (list(b) if isinstance(b, (list, tuple)) else [b]) for d, b in batches.items()}
    for d, xs in parts.items():
        for x in xs:
            if not (isinstance(x, torch.Tensor) and x.dim() == 2 and not x.is_floating_point()):
                raise ValueError(f"routing_traces: batches[{d!r}] must hold LongTensors [rows, T] of token ids, got "
                                 f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    captured: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = [m.gate.register_forward_hook(lambda mod, inp, out, k=k: captured[k].append(out[1].detach().cpu()))
             for k, m in enumerate(layers)]
    was = model.training
    model.eval()
    dom, domains = [], tuple(parts)
    dev = next(model.parameters()).device
    try:
        for j, (d, xs) in enumerate(parts.items()):
            for x in xs:
                model(x.to(dev))
                dom.append(torch.full((x.numel(),), j, dtype=torch.long))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    indices = torch.stack([torch.cat(c) for c in captured]).long()
    return RoutingTrace(indices, torch.cat(dom), domains, layers[0].n_routed_experts)


def domain_loads(trace: RoutingTrace) -> dict[str, torch.Tensor]:
    """{domain: per-token load [n_layers, n_experts]} = assignments per expert / tokens of that domain (each row
    sums to K_r), so domains with different token counts can be mixed: load(w) = Σ_d w_d · load_d."""
    out = {}
    for j, d in enumerate(trace.domains):
        n = int((trace.domain == j).sum())
        out[d] = trace.load(d) / max(n, 1)
    return out


def sample_batch_loads(trace: RoutingTrace, schedule: torch.Tensor, batch_tokens: int, seed: int = 0) -> torch.Tensor:
    """Loads of a stream of batches drawn from real routed tokens: batch t holds ``batch_tokens`` tokens whose
    domains follow the mixture ``schedule[t]`` ([n_batches, n_domains], rows summing to 1; multinomial counts) and
    whose routing is that of randomly drawn traced tokens of those domains (with replacement, seeded).
    Returns [n_batches, n_layers, n_experts] (float64 counts)."""
    schedule = torch.as_tensor(schedule, dtype=torch.float64)
    if schedule.dim() != 2 or schedule.shape[1] != len(trace.domains):
        raise ValueError(f"schedule must be [n_batches, {len(trace.domains)}] (one weight per domain of the trace "
                         f"{list(trace.domains)}), got shape {tuple(schedule.shape)}")
    if (schedule < 0).any() or not torch.allclose(schedule.sum(1), torch.ones(len(schedule), dtype=torch.float64)):
        raise ValueError("schedule rows must be mixture weights ≥ 0 summing to 1; normalise with w / w.sum(1, keepdim=True)")
    _check_int("batch_tokens", batch_tokens, 1, "e.g. batch_tokens=2048")
    g = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(trace.domain == j).flatten() for j in range(len(trace.domains))]
    for j, p in enumerate(pools):
        if len(p) == 0 and (schedule[:, j] > 0).any():
            raise ValueError(f"schedule gives weight to domain {trace.domains[j]!r}, which has no traced tokens")
    out = []
    for w in schedule:
        counts = torch.multinomial(w.float(), batch_tokens, replacement=True, generator=g).bincount(
            minlength=len(pools)).tolist()
        rows = torch.cat([p[torch.randint(len(p), (c,), generator=g)] for p, c in zip(pools, counts) if c])
        out.append(_bincount_layers(trace.indices[:, rows], trace.n_experts))
    return torch.stack(out)


# ---- the balancer -----------------------------------------------------------------------------------------

def balanced_packing(weights: Sequence[float], n_bins: int, capacity: int,
                     labels: Sequence | None = None, refine: bool = True) -> list[list[int]]:
    """Balanced packing with a slot limit, in two moves:

    1. greedy: items by decreasing weight (ties: lower index first), each onto the bin with the least load among
       those with a free slot (ties: fewer items, then lower index); with ``labels``, bins already holding an item
       of the same label are avoided while another bin has room;
    2. ``refine``: while swapping one item of the heaviest bin with a lighter item of another bin lowers the
       larger of the two loads, make the best such swap (slot counts never change).

    Returns the item indices of each bin. Needs len(weights) ≤ n_bins · capacity. Graham's greedy without a slot
    limit is within 4/3 of the optimal max load; with the exact slot counts there is no such simple guarantee, and
    the tests compare this packing with brute force on small cases.
    """
    _check_int("n_bins", n_bins)
    _check_int("capacity", capacity)
    w = [float(x) for x in weights]
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError(f"weights must be finite and ≥ 0, got {weights!r}")
    if len(w) > n_bins * capacity:
        raise ValueError(f"{len(w)} items do not fit in {n_bins} bins × {capacity} slots; raise capacity or n_bins")
    if labels is not None and len(labels) != len(w):
        raise ValueError(f"labels has {len(labels)} entries for {len(w)} weights; give one label per item")
    loads, bins = [0.0] * n_bins, [[] for _ in range(n_bins)]
    held = [set() for _ in range(n_bins)]
    for i in sorted(range(len(w)), key=lambda i: (-w[i], i)):
        free = [b for b in range(n_bins) if len(bins[b]) < capacity]
        if labels is not None:
            fresh = [b for b in free if labels[i] not in held[b]]
            free = fresh or free
        b = min(free, key=lambda b: (loads[b], len(bins[b]), b))
        bins[b].append(i)
        loads[b] += w[i]
        if labels is not None:
            held[b].add(labels[i])
    for _ in range(4 * len(w) if refine else 0):                 # each swap lowers the sorted loads: it ends
        top = max(range(n_bins), key=lambda b: (loads[b], -b))
        best = None
        for b in range(n_bins):
            if b == top:
                continue
            for x in bins[top]:
                for y in bins[b]:
                    d = w[x] - w[y]
                    if d > 0 and loads[b] + d < loads[top]:
                        key = (max(loads[top] - d, loads[b] + d), b, x, y)
                        best = key if best is None or key < best else best
        if best is None:
            break
        _, b, x, y = best
        bins[top][bins[top].index(x)], bins[b][bins[b].index(y)] = y, x
        d = w[x] - w[y]
        loads[top] -= d
        loads[b] += d
    return bins


def replicate(load: Sequence[float], n_replicas: int) -> list[int]:
    """Replica counts r_i ≥ 1 with Σ r_i = ``n_replicas`` minimising max_i l_i / r_i: one replica each, then each
    extra replica to the expert with the highest load per replica (ties: lower index). Greedy is optimal here:
    the largest l_i / r_i can only fall by giving expert i another replica."""
    l = _as_load(load).tolist()
    _check_int("n_replicas", n_replicas, len(l), "every expert needs at least one replica")
    r = [1] * len(l)
    for _ in range(n_replicas - len(l)):
        i = max(range(len(l)), key=lambda i: (l[i] / r[i], -i))
        r[i] += 1
    return r


@dataclass(frozen=True)
class Placement:
    """Which logical expert each GPU slot holds: ``gpus[g]`` = the experts of GPU g's slots (GPU g is on node
    g // gpus_per_node)."""
    gpus: tuple[tuple[int, ...], ...]
    gpus_per_node: int
    n_experts: int

    @property
    def n_gpus(self) -> int:
        return len(self.gpus)

    @property
    def n_nodes(self) -> int:
        return self.n_gpus // self.gpus_per_node

    @property
    def slots_per_gpu(self) -> int:
        return len(self.gpus[0])

    def replicas(self) -> list[int]:
        """r_i: copies of each logical expert over all GPUs."""
        r = [0] * self.n_experts
        for slots in self.gpus:
            for e in slots:
                r[e] += 1
        return r

    def idle_copies(self) -> int:
        """Slots that share no load: extra copies of an expert whose copies all sit on one GPU."""
        where: dict[int, set[int]] = {}
        for g, slots in enumerate(self.gpus):
            for e in slots:
                where.setdefault(e, set()).add(g)
        return sum(r - 1 for e, r in enumerate(self.replicas()) if r > 1 and len(where[e]) == 1)

    def node_of_expert(self) -> list[set[int]]:
        """The set of nodes holding a copy of each expert."""
        out = [set() for _ in range(self.n_experts)]
        for g, slots in enumerate(self.gpus):
            for e in slots:
                out[e].add(g // self.gpus_per_node)
        return out


def gpu_loads(placement: Placement, load) -> torch.Tensor:
    """L_g = Σ_i (copies of i on g)/r_i · l_i for every GPU, float64 [n_gpus]; ``load`` may come from another
    workload than the one the placement was planned on."""
    l = _as_load(load, n=placement.n_experts).tolist()
    r = placement.replicas()
    out = []
    for slots in placement.gpus:
        copies: dict[int, int] = {}
        for e in slots:
            copies[e] = copies.get(e, 0) + 1
        out.append(sum(l[e] * (k / r[e]) for e, k in sorted(copies.items())))
    return torch.tensor(out, dtype=torch.float64)


def load_ratio(placement: Placement, load) -> float:
    """max_g L_g / mean_g L_g = 1 + MaxVio of the GPU loads (1 = perfectly balanced)."""
    return 1.0 + max_violation(gpu_loads(placement, load))


def _check_cluster(n_experts: int, n_nodes, gpus_per_node, slots_per_gpu, n_groups) -> None:
    _check_int("n_nodes", n_nodes)
    _check_int("gpus_per_node", gpus_per_node)
    _check_int("slots_per_gpu", slots_per_gpu)
    _check_int("n_groups", n_groups)
    if n_experts % n_groups:
        raise ValueError(f"n_groups = {n_groups} does not divide the {n_experts} experts; use the model's "
                         "n_expert_groups (or 1)")
    if n_groups % n_nodes:
        raise ValueError(f"n_groups = {n_groups} groups cannot be spread evenly over n_nodes = {n_nodes}; use a "
                         "number of nodes that divides the groups (or n_nodes=1 for one global pool)")
    per_node = n_experts // n_nodes
    if gpus_per_node * slots_per_gpu < per_node:
        raise ValueError(f"slots_per_gpu = {slots_per_gpu} × gpus_per_node = {gpus_per_node} cannot hold the "
                         f"{per_node} experts of a node; need slots_per_gpu ≥ {math.ceil(per_node / gpus_per_node)}")


def contiguous_placement(n_experts: int, n_nodes: int, gpus_per_node: int) -> Placement:
    """Plain expert parallelism, blind to load: expert i on GPU i // (N / G), no redundancy."""
    _check_int("n_experts", n_experts)
    _check_int("n_nodes", n_nodes)
    _check_int("gpus_per_node", gpus_per_node)
    g = n_nodes * gpus_per_node
    if n_experts % g:
        raise ValueError(f"{n_experts} experts cannot be split evenly over {g} GPUs; use a GPU count that divides it")
    s = n_experts // g
    return Placement(tuple(tuple(range(k * s, (k + 1) * s)) for k in range(g)), gpus_per_node, n_experts)


def _node_loads(node: list[list[int]], l: list[float]) -> list[float]:
    """GPU loads of one node's slots (copies counted inside the node; summed as in :func:`gpu_loads`)."""
    r: dict[int, int] = {}
    for b in node:
        for e in b:
            r[e] = r.get(e, 0) + 1
    return [sum(l[e] * (b.count(e) / r[e]) for e in sorted(set(b))) for b in node]


def _peak(node: list[list[int]], l: list[float]) -> float:
    return max(_node_loads(node, l))


def _node_candidate(l: list[float], experts: list[int], gpus: int, slots: int, extra: int):
    """Steps 2–3 on one node with ``extra`` redundant replicas chosen by :func:`replicate`; the slots left over are
    then filled one at a time with the copy that lowers (or raises least) the node's peak, among the GPU's own
    experts, the experts of the node's most loaded GPU and the node's lightest expert. With ``extra = 0`` every expert has one replica, and the leftover slots get copies of
    the GPU's own experts, which change no load: exactly the no-redundancy packing."""
    e_n = len(experts)
    counts = replicate([l[e] for e in experts], e_n + extra)
    items = [(experts[j], l[experts[j]] / counts[j]) for j in range(e_n) for _ in range(counts[j])]
    cap = math.ceil(len(items) / gpus)
    bins = balanced_packing([w for _, w in items], gpus, cap, labels=[e for e, _ in items])
    node = [[items[i][0] for i in b] for b in bins]
    lightest = min(experts, key=lambda e: (l[e], e))
    for b in node:
        while len(b) < slots:
            if extra == 0:                      # the no-redundancy packing: only free copies (each expert is here alone)
                b.append(b[0])
                continue
            loads = _node_loads(node, l)
            top = node[max(range(len(node)), key=lambda g: (loads[g], -g))]
            options = sorted(set(b) | {lightest} | set(top))
            b.append(min(options, key=lambda e: (_peak([x + [e] if x is b else x for x in node], l), e)))
    return node


def hierarchical_placement(load, n_nodes: int, gpus_per_node: int, slots_per_gpu: int,
                           n_groups: int = 1) -> Placement:
    """Place the experts of one MoE layer with loads ``load`` [N] on n_nodes × gpus_per_node GPUs with
    ``slots_per_gpu`` slots each (R = G·S − N redundant replicas): groups → nodes, replicas inside each node,
    replicas → GPUs (see the module docstring). Deterministic; never worse on ``load`` than the same procedure
    with no redundancy (slots_per_gpu = N / G)."""
    l_t = _as_load(load)
    n = len(l_t)
    _check_cluster(n, n_nodes, gpus_per_node, slots_per_gpu, n_groups)
    l = l_t.tolist()
    size = n // n_groups
    group_load = [sum(l[k * size:(k + 1) * size]) for k in range(n_groups)]
    node_groups = balanced_packing(group_load, n_nodes, n_groups // n_nodes)
    candidates = []                                                  # per node: [(peak, extra, GPUs' experts)]
    for groups in node_groups:
        experts = sorted(e for k in groups for e in range(k * size, (k + 1) * size))
        room = gpus_per_node * slots_per_gpu - len(experts)
        mine = []
        for extra in range(room, -1, -1):                            # most redundancy first
            if len(experts) + extra < gpus_per_node:
                break                                                # some GPU would hold nothing at all
            node = _node_candidate(l, experts, gpus_per_node, slots_per_gpu, extra)
            mine.append((_peak(node, l), extra, node))
        candidates.append(mine)
    # the layer waits for its slowest GPU: find the lowest reachable max, then let every node keep the most
    # redundancy that stays under it (more replicas = more room when the load shifts)
    bottleneck = max(min(c[0] for c in mine) for mine in candidates)
    gpus = []
    for mine in candidates:
        pick = next(c for c in mine if c[0] <= bottleneck)
        gpus += [tuple(b) for b in pick[2]]
    return Placement(tuple(gpus), gpus_per_node, n)


def placement_report(plan_load, serve_load, n_nodes: int, gpus_per_node: int, redundant_per_gpu: int,
                     n_groups: int = 1) -> dict:
    """Plan on ``plan_load``, serve ``serve_load`` (both [N] for one layer, or [L, N] for several layers, each
    planned separately). Three placements, each with its per-GPU loads and max/mean ratio on the served load:
    "contiguous" (plain EP), "balanced" (the balancer, no redundancy: N/G slots) and "redundant" (N/G +
    ``redundant_per_gpu`` slots). Ratios of several layers are averaged; gpu_loads are stacked [L, G]."""
    plan = torch.as_tensor(plan_load, dtype=torch.float64)
    serve = torch.as_tensor(serve_load, dtype=torch.float64)
    if plan.shape != serve.shape or plan.dim() not in (1, 2):
        raise ValueError(f"plan_load {tuple(plan.shape)} and serve_load {tuple(serve.shape)} must have the same "
                         "shape, [N] or [L, N]")
    _check_int("redundant_per_gpu", redundant_per_gpu, 0, "use 0 for no redundant experts")
    _check_int("n_nodes", n_nodes)
    _check_int("gpus_per_node", gpus_per_node)
    if plan.dim() == 1:
        plan, serve = plan[None], serve[None]
    n, g = plan.shape[1], n_nodes * gpus_per_node
    if n % g:
        raise ValueError(f"{n} experts cannot be split evenly over {g} GPUs; use a GPU count that divides it")
    base = n // g
    out = {name: {"gpu_loads": [], "ratio": 0.0, "placements": []} for name in ("contiguous", "balanced", "redundant")}
    for p_l, s_l in zip(plan, serve):
        pls = {"contiguous": contiguous_placement(n, n_nodes, gpus_per_node),
               "balanced": hierarchical_placement(p_l, n_nodes, gpus_per_node, base, n_groups),
               "redundant": hierarchical_placement(p_l, n_nodes, gpus_per_node, base + redundant_per_gpu, n_groups)}
        for name, p in pls.items():
            out[name]["gpu_loads"].append(gpu_loads(p, s_l))
            out[name]["ratio"] += load_ratio(p, s_l) / len(plan)
            out[name]["placements"].append(p)
    for v in out.values():
        v["gpu_loads"] = torch.stack(v["gpu_loads"])
    return out


# ---- drifting traffic and re-planning ---------------------------------------------------------------------

def drift_schedule(n_batches: int, n_domains: int, period: float, sharpness: float = 2.0) -> torch.Tensor:
    """A mixture that drifts through the domains and comes back every ``period`` batches:
    w_d(t) ∝ exp(κ cos(2π (t/period − d/n_domains))), κ = ``sharpness`` (0 = a constant uniform mix).
    Returns [n_batches, n_domains], rows summing to 1."""
    _check_int("n_batches", n_batches)
    _check_int("n_domains", n_domains)
    if not (isinstance(period, numbers.Real) and period > 0):
        raise ValueError(f"period must be a number of batches > 0, got {period!r}")
    if not (isinstance(sharpness, numbers.Real) and math.isfinite(sharpness) and sharpness >= 0):
        raise ValueError(f"sharpness must be a finite number ≥ 0 (0 = no drift), got {sharpness!r}")
    t = torch.arange(n_batches, dtype=torch.float64)[:, None]
    d = torch.arange(n_domains, dtype=torch.float64)[None]
    return torch.softmax(sharpness * torch.cos(2 * math.pi * (t / period - d / n_domains)), dim=1)


def replan_stream(batch_loads: torch.Tensor, replan_every: int, n_nodes: int, gpus_per_node: int,
                  slots_per_gpu: int, n_groups: int = 1, warmup: int = 1) -> dict:
    """Serve a stream of batches (``batch_loads`` [T, L, N], e.g. from :func:`sample_batch_loads`) with placements
    re-planned every ``replan_every`` batches from the loads seen since the previous plan (the first plan, at
    t = ``warmup``, from batches [0, warmup)); ``replan_every = 0`` is the oracle that plans on the very batch it
    serves. Batches t ≥ warmup are scored. Returns {"ratio": [T − warmup] mean over layers of max/mean GPU load,
    "mean": their mean, "plans": number of plans made}."""
    loads = torch.as_tensor(batch_loads, dtype=torch.float64)
    if loads.dim() != 3:
        raise ValueError(f"batch_loads must be [n_batches, n_layers, n_experts], got {tuple(loads.shape)}")
    _check_int("replan_every", replan_every, 0, "use 0 for the oracle, 1 to re-plan before every batch")
    _check_int("warmup", warmup, 1, "the first plan needs at least one batch of history")
    if warmup >= len(loads):
        raise ValueError(f"warmup = {warmup} leaves no batch to score out of {len(loads)}; use fewer warm-up batches")
    ratios, plans, start, current = [], 0, 0, None
    for t in range(warmup, len(loads)):
        basis = None
        if replan_every == 0:
            basis = loads[t]
        elif current is None or t - start >= replan_every:
            basis, start = loads[start:t].sum(0), t                   # everything seen since the previous plan
        if basis is not None:
            current = [hierarchical_placement(b, n_nodes, gpus_per_node, slots_per_gpu, n_groups) for b in basis]
            plans += 1
        ratios.append(sum(load_ratio(p, l) for p, l in zip(current, loads[t])) / len(current))
    return {"ratio": ratios, "mean": sum(ratios) / len(ratios), "plans": plans}


# ---- prefill/decode disaggregation ------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """A request arriving at ``arrival_ms`` with a ``prompt``-token prompt and ``output`` tokens to generate."""
    arrival_ms: float
    prompt: int
    output: int


def make_requests(n: int, rate_per_s: float, prompt_range: tuple[int, int] = (64, 256),
                  output_range: tuple[int, int] = (16, 128), seed: int = 0) -> list[Request]:
    """``n`` requests with Poisson arrivals at ``rate_per_s`` and prompt/output lengths uniform in the given
    inclusive ranges (seeded, pure Python)."""
    _check_int("n", n)
    if not (isinstance(rate_per_s, numbers.Real) and math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a finite number > 0 (requests per second), got {rate_per_s!r}")
    for name, (lo, hi) in (("prompt_range", prompt_range), ("output_range", output_range)):
        if not (_is_int(lo) and _is_int(hi) and 1 <= lo <= hi):
            raise ValueError(f"{name} must be (lo, hi) ints with 1 ≤ lo ≤ hi, got {(lo, hi)!r}")
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate_per_s) * 1000.0
        out.append(Request(t, rng.randint(*prompt_range), rng.randint(*output_range)))
    return out


def _decode_fn(decode_ms) -> Callable[[int], float]:
    if callable(decode_ms):
        return decode_ms
    if (isinstance(decode_ms, (tuple, list)) and len(decode_ms) == 2
            and all(isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0 for v in decode_ms)
            and decode_ms[0] + decode_ms[1] > 0):
        a, b = float(decode_ms[0]), float(decode_ms[1])
        return lambda batch: a + b * batch
    raise ValueError(f"decode_ms must be (fixed_ms, ms_per_sequence) ≥ 0, not both 0, or a function of the batch "
                     f"size, got {decode_ms!r}")


def _decode_worker(ready: list[tuple[float, int, int]], step: Callable[[int], float], times: list[list[float]]) -> None:
    """Continuous batching: at every step boundary admit the requests that are ready, run one decode step for all."""
    ready = sorted(ready)
    t, i, active = 0.0, 0, []                                        # active: [request id, tokens still to emit]
    while i < len(ready) or active:
        while i < len(ready) and ready[i][0] <= t:
            active.append([ready[i][1], ready[i][2]])
            i += 1
        if not active:
            t = ready[i][0]
            continue
        t += step(len(active))
        for a in active:
            times[a[0]].append(t)
            a[1] -= 1
        active = [a for a in active if a[1] > 0]


def simulate_serving(requests: Sequence[Request], prefill_ms_per_token: float, decode_ms, n_workers: int = 2,
                     n_prefill: int | None = None, transfer_ms: float = 0.0) -> dict:
    """Deterministic simulation of serving ``requests`` on ``n_workers`` identical workers.

    - ``n_prefill=None`` (one pool): requests go round-robin to workers that do both; a worker runs a waiting
      prefill (prompt × ``prefill_ms_per_token``, emitting the first token) before its next decode step, so a
      prefill stalls every running decode of that worker.
    - ``n_prefill=p`` (disaggregated): p workers only prefill (FIFO, earliest free worker), the other
      n_workers − p only decode; a prefilled request joins a decode worker (round-robin) ``transfer_ms`` later.

    A decode step over b running requests takes ``decode_ms`` = (a, c) → a + c·b ms (or a function of b) and emits
    one token for each. Returns per-request "ttft" (first token − arrival), "tpot" ((last − first)/(output − 1),
    for outputs > 1), "max_gap" (longest pause between two tokens), "token_times", and "tokens_per_s".
    """
    reqs = list(requests)
    if not reqs or not all(isinstance(r, Request) for r in reqs):
        raise ValueError("requests must be a non-empty list of Request (see make_requests)")
    if not (isinstance(prefill_ms_per_token, numbers.Real) and math.isfinite(prefill_ms_per_token)
            and prefill_ms_per_token > 0):
        raise ValueError(f"prefill_ms_per_token must be a finite number > 0, got {prefill_ms_per_token!r}")
    step = _decode_fn(decode_ms)
    _check_int("n_workers", n_workers)
    if n_prefill is not None and not (_is_int(n_prefill) and 1 <= n_prefill < n_workers):
        raise ValueError(f"n_prefill must be None (one pool) or an int in [1, n_workers − 1 = {n_workers - 1}] so "
                         f"that both pools have a worker, got {n_prefill!r}")
    if not (isinstance(transfer_ms, numbers.Real) and math.isfinite(transfer_ms) and transfer_ms >= 0):
        raise ValueError(f"transfer_ms must be a finite number ≥ 0, got {transfer_ms!r}")
    order = sorted(range(len(reqs)), key=lambda i: (reqs[i].arrival_ms, i))
    times: list[list[float]] = [[] for _ in reqs]
    if n_prefill is None:
        for w in range(n_workers):
            mine = order[w::n_workers]
            t, j, active = 0.0, 0, []
            while j < len(mine) or active:
                if j < len(mine) and reqs[mine[j]].arrival_ms <= t:      # a waiting prefill goes first
                    r = mine[j]
                    j += 1
                    t += reqs[r].prompt * prefill_ms_per_token
                    times[r].append(t)
                    if reqs[r].output > 1:
                        active.append([r, reqs[r].output - 1])
                elif active:
                    t += step(len(active))
                    for a in active:
                        times[a[0]].append(t)
                        a[1] -= 1
                    active = [a for a in active if a[1] > 0]
                else:
                    t = reqs[mine[j]].arrival_ms
    else:
        free = [0.0] * n_prefill
        ready = []
        for r in order:
            w = min(range(n_prefill), key=lambda k: (free[k], k))
            free[w] = max(free[w], reqs[r].arrival_ms) + reqs[r].prompt * prefill_ms_per_token
            times[r].append(free[w])
            if reqs[r].output > 1:
                ready.append((free[w] + transfer_ms, r, reqs[r].output - 1))
        n_dec = n_workers - n_prefill
        ready.sort()
        for w in range(n_dec):
            _decode_worker(ready[w::n_dec], step, times)
    ttft = [times[i][0] - reqs[i].arrival_ms for i in range(len(reqs))]
    tpot = [(times[i][-1] - times[i][0]) / (reqs[i].output - 1) for i in range(len(reqs)) if reqs[i].output > 1]
    gaps = [max(b - a for a, b in zip(ts, ts[1:])) for ts in times if len(ts) > 1]
    span = max(ts[-1] for ts in times) - min(r.arrival_ms for r in reqs)
    return {"ttft": ttft, "tpot": tpot, "max_gap": gaps, "token_times": times,
            "tokens_per_s": sum(r.output for r in reqs) / span * 1000.0}


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict:
    """{q: q-th percentile} of ``values`` (linear interpolation between order statistics, as numpy's default)."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.dim() != 1 or len(v) == 0:
        raise ValueError("percentiles: values must be a non-empty 1-D sequence of numbers")
    if not all(isinstance(q, numbers.Real) and 0 <= q <= 100 for q in qs):
        raise ValueError(f"qs must be percentiles in [0, 100], got {qs!r}")
    return {q: torch.quantile(v, q / 100).item() for q in qs}
