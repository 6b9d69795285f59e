"""The training cluster as a cost model (§3.1, §3.2.2): where a token's hidden state travels and what it costs.

DeepSeek-V3 trains on 2,048 H800 GPUs, 8 per node. Inside a node GPUs talk over NVLink (160 GB/s per GPU);
between nodes over InfiniBand (50 GB/s per GPU). With expert parallelism (EP64 over 8 nodes) each routed
expert lives on one GPU; a token whose top-K experts lie on n distinct nodes is sent over IB **once per
destination node** and then forwarded over NVLink to the experts on that node (§3.2.2). So

    IB bytes per token and MoE layer = n · d · (b_dispatch + b_combine)

with d the hidden size, b_dispatch = 1 byte (FP8, plus one FP32 scale per 128 values) and b_combine =
2 bytes (BF16). Node-limited routing caps n at M = 4. While one copy crosses IB (time d·b/IB), NVLink can
carry NVLink/IB = 3.2 copies inside the node, so a token could use up to 3.2 experts per node — 4 × 3.2 ≈ 13
experts — for the IB cost of 4.

Placement here is contiguous: expert e sits on node e // experts_per_node (what group-limited routing with
one group per node assumes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Cluster", "H800_CLUSTER", "nodes_per_token", "node_histogram", "ib_bytes_per_token", "experts_per_node_used",
           "max_experts_at_ib_cost", "transfer_seconds", "dispatch_time", "affinity_mass", "sm_partition",
           "overlap_pays_above", "routing_traffic", "DISPATCH_BYTES", "COMBINE_BYTES"]

#: bytes per hidden value sent for dispatch (FP8 E4M3 + one FP32 scale per 1×128 tile) and combine (BF16)
DISPATCH_BYTES = 1 + 4 / 128
COMBINE_BYTES = 2.0


@dataclass(frozen=True)
class Cluster:
    """GPUs, their grouping into nodes and the two links (GB/s per GPU, 1 GB = 1e9 bytes); SMs per GPU."""
    n_gpus: int = 2048
    gpus_per_node: int = 8
    nvlink_GBps: float = 160.0
    ib_GBps: float = 50.0
    sms: int = 132
    comm_sms: int = 20

    def __post_init__(self):
        for name in ("n_gpus", "gpus_per_node", "sms"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"Cluster: {name} must be an int ≥ 1, got {v!r}")
        if self.n_gpus % self.gpus_per_node:
            raise ValueError(f"Cluster: n_gpus = {self.n_gpus} is not a multiple of gpus_per_node = {self.gpus_per_node}")
        if not (self.nvlink_GBps > 0 and self.ib_GBps > 0):
            raise ValueError(f"Cluster: bandwidths must be > 0, got NVLink {self.nvlink_GBps}, IB {self.ib_GBps}")
        if not (isinstance(self.comm_sms, int) and 0 <= self.comm_sms < self.sms):
            raise ValueError(f"Cluster: comm_sms must be an int in [0, sms = {self.sms}), got {self.comm_sms!r}")

    @property
    def n_nodes(self) -> int:
        return self.n_gpus // self.gpus_per_node

    @property
    def bandwidth_ratio(self) -> float:
        """NVLink / IB bandwidth: how many NVLink copies fit in the time of one IB copy."""
        return self.nvlink_GBps / self.ib_GBps


#: The report's cluster (§3.1).
H800_CLUSTER = Cluster()


def _check_indices(indices: torch.Tensor, experts_per_node: int) -> None:
    if not torch.is_tensor(indices) or indices.dim() != 2 or indices.dtype not in (torch.int64, torch.int32):
        raise ValueError("indices must be an int tensor [n_tokens, K] of routed expert ids")
    if not isinstance(experts_per_node, int) or experts_per_node < 1:
        raise ValueError(f"experts_per_node must be an int ≥ 1, got {experts_per_node!r}")


def nodes_per_token(indices: torch.Tensor, experts_per_node: int) -> torch.Tensor:
    """Distinct destination nodes of each token, [n_tokens] (expert e on node e // experts_per_node)."""
    _check_indices(indices, experts_per_node)
    nodes = torch.div(indices, experts_per_node, rounding_mode="floor")
    s = nodes.sort(dim=-1).values
    return 1 + (s[:, 1:] != s[:, :-1]).sum(dim=-1)


def node_histogram(indices: torch.Tensor, experts_per_node: int, max_nodes: int | None = None) -> torch.Tensor:
    """Share of tokens reaching 1, 2, … nodes: a float tensor [max_nodes] (index n−1 = share with n nodes)."""
    n = nodes_per_token(indices, experts_per_node)
    max_nodes = max_nodes or int(n.max())
    return torch.bincount(n - 1, minlength=max_nodes).double()[:max_nodes] / len(n)


def ib_bytes_per_token(n_nodes, hidden: int, dispatch_bytes: float = DISPATCH_BYTES,
                       combine_bytes: float = COMBINE_BYTES) -> float:
    """IB bytes one token moves per MoE layer: n_nodes · hidden · (dispatch + combine bytes per value).

    ``n_nodes`` is a number or a tensor of per-token node counts (then the mean is used). The count includes
    the token's own node as if it were remote: an upper bound; with T nodes and tokens spread evenly, a
    destination is the sender's own node with probability 1/T."""
    if torch.is_tensor(n_nodes):
        n_nodes = float(n_nodes.double().mean())
    if n_nodes < 0 or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"need n_nodes ≥ 0 and an int hidden ≥ 1, got {n_nodes!r}, {hidden!r}")
    return n_nodes * hidden * (dispatch_bytes + combine_bytes)


def experts_per_node_used(indices: torch.Tensor, experts_per_node: int) -> float:
    """Mean number of a token's experts on each node it reaches: K / (mean distinct nodes)."""
    return indices.shape[1] / float(nodes_per_token(indices, experts_per_node).double().mean())


def max_experts_at_ib_cost(max_nodes: int = 4, cluster: Cluster = H800_CLUSTER) -> float:
    """M · NVLink/IB: experts a token can reach with IB traffic to M nodes and NVLink forwarding that is never
    slower than the IB transfer feeding it (4 × 3.2 = 12.8 for the report's cluster)."""
    if not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"max_nodes must be an int ≥ 1, got {max_nodes!r}")
    return max_nodes * cluster.bandwidth_ratio


def transfer_seconds(n_bytes: float, link: str, cluster: Cluster = H800_CLUSTER) -> float:
    """Time to push ``n_bytes`` through one GPU's ``link`` ("nvlink" or "ib") at full bandwidth."""
    if link not in ("nvlink", "ib"):
        raise ValueError(f"link must be 'nvlink' or 'ib', got {link!r}")
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be ≥ 0, got {n_bytes}")
    return n_bytes / ((cluster.nvlink_GBps if link == "nvlink" else cluster.ib_GBps) * 1e9)


def dispatch_time(n_nodes: float, experts_on_node: float, hidden: int, bytes_per_value: float = DISPATCH_BYTES,
                  cluster: Cluster = H800_CLUSTER) -> dict:
    """Per-token dispatch time with IB and NVLink pipelined (§3.2.2):

    the sender's NIC pushes one copy to each of ``n_nodes`` nodes (d · b / IB each, one after the other);
    on each node the receiving GPU forwards the copy to ``experts_on_node`` GPUs over NVLink (k · d · b / NVLink),
    while the next copy is on the wire. Per node the slower of the two sets the pace:

        time = n · max(d·b / IB, k · d·b / NVLink)

    IB-bound (NVLink forwarding is free) as long as k ≤ NVLink / IB = 3.2."""
    if n_nodes < 0 or experts_on_node < 0:
        raise ValueError(f"n_nodes and experts_on_node must be ≥ 0, got {n_nodes}, {experts_on_node}")
    ib_hop = transfer_seconds(hidden * bytes_per_value, "ib", cluster)
    nvl = transfer_seconds(experts_on_node * hidden * bytes_per_value, "nvlink", cluster)
    return {"ib_hop_s": ib_hop, "nvlink_forward_s": nvl, "bound": "nvlink" if nvl > ib_hop else "ib",
            "time_s": n_nodes * max(ib_hop, nvl)}


def affinity_mass(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Σ over a token's selected experts of its affinity s_{i,t}: [n_tokens]. The limited router keeps a
    share of the unlimited router's mass; that share is the quality cost the report accepts."""
    return scores.gather(1, indices).sum(dim=-1)


def sm_partition(cluster: Cluster = H800_CLUSTER) -> dict:
    """What dedicating ``comm_sms`` of ``sms`` SMs to communication costs the computation:
    share of SMs lost, and the compute slow-down factor sms / (sms − comm_sms) (work spread over fewer SMs)."""
    lost = cluster.comm_sms / cluster.sms
    return {"sm_share": lost, "slowdown": cluster.sms / (cluster.sms - cluster.comm_sms)}


def overlap_pays_above(cluster: Cluster = H800_CLUSTER) -> float:
    """Communication/computation ratio ρ above which overlapping (compute slowed by the SM partition, comm hidden)
    beats running them one after the other on all SMs: C · s ≤ C + ρC ⇔ ρ ≥ s − 1 = comm_sms / (sms − comm_sms)."""
    return sm_partition(cluster)["slowdown"] - 1


def routing_traffic(scores: torch.Tensor, bias: torch.Tensor | None, topk: int, experts_per_node: int,
                    max_nodes: int | None, hidden: int) -> dict:
    """Re-route real affinities ``scores`` [n, N_r] onto N_r / experts_per_node nodes, each token limited to
    ``max_nodes`` nodes (None: no limit), and measure the traffic. Node-limited routing IS group-limited routing
    with one group per node (helpers.moe.route: groups ranked by the sum of their top-2 s + b).

    Returns nodes per token (tensor), its mean and histogram, IB bytes per token for ``hidden`` and the share of
    the unlimited router's affinity mass the limited one keeps (mean over tokens of Σ_sel s / Σ_sel-unlimited s).
    """
    from .moe import route
    n_exp = scores.shape[1]
    if not isinstance(experts_per_node, int) or experts_per_node < 1 or n_exp % experts_per_node:
        raise ValueError(f"experts_per_node = {experts_per_node!r} must be an int dividing the {n_exp} experts")
    nodes = n_exp // experts_per_node
    m = nodes if max_nodes is None else max_nodes
    if not isinstance(m, int) or not 1 <= m <= nodes:
        raise ValueError(f"max_nodes = {max_nodes!r} must be an int between 1 and the {nodes} nodes (or None)")
    if topk > m * experts_per_node:
        raise ValueError(f"top-{topk} cannot fit on {m} node(s) of {experts_per_node} experts; allow more nodes")
    _, idx = route(scores, bias, topk, n_groups=nodes, topk_groups=m)
    _, free = route(scores, bias, topk)
    n = nodes_per_token(idx, experts_per_node)
    kept = (affinity_mass(scores, idx) / affinity_mass(scores, free)).double().mean()
    return {"indices": idx, "nodes": n, "mean_nodes": float(n.double().mean()), "max_nodes_seen": int(n.max()),
            "hist": node_histogram(idx, experts_per_node, nodes), "n_nodes": nodes,
            "ib_bytes": ib_bytes_per_token(n, hidden), "mass_kept": float(kept),
            "changed": float((idx.sort(-1).values != free.sort(-1).values).any(-1).double().mean())}
