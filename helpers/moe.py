"""DeepSeekMoE (§2.1.2): shared + fine-grained routed SwiGLU experts, sigmoid routing, load balancing.

For a token with (normalised) hidden state u_t, N_s shared and N_r routed experts:

    h'_t = u_t + Σ_{i≤N_s} FFN_i^(s)(u_t) + Σ_{i≤N_r} g_{i,t} FFN_i^(r)(u_t)

    s_{i,t} = sigmoid(u_tᵀ e_i)                           affinity (e_i: centroid of routed expert i)
    selected = TopK_i(s_{i,t} + b_i, K_r)                 the bias b_i is used ONLY to select
    g_{i,t}  = route_scale · s_{i,t} / Σ_{j∈selected} s_{j,t}   for i selected, else 0

Group-limited routing (the reference code's form of node-limited routing): the N_r experts form
n_expert_groups groups; each group scores the sum of its top-2 (s + b); only the n_limited_groups best
groups may be selected from.

Balancing, chosen by ``balance``:
- "aux_free": after each optimizer step, b_i ← b_i + γ·sign(mean_j load_j − load_i), with load_i the number of
  tokens that chose expert i during the step (no gradient, no loss term);
- "seq_aux": L_Bal = α Σ_i f_i P_i per sequence (mean over sequences), f_i = N_r/(K_r T)·#{t: i selected},
  P_i = (1/T) Σ_t s'_{i,t}, s' = s / Σ_j s_j (affinities normalised over all experts);
- "aux": the classic (Switch/GShard) batch-wise loss α N_r Σ_i f_i P_i with f_i the fraction of routed
  assignments sent to expert i over the whole batch and P_i the mean softmax router probability;
- "aux_free+seq_aux": both, as DeepSeek-V3 trains (α tiny);
- "none": nothing.
Max violation MaxVio = max_i load_i / mean_i load_i − 1 measures imbalance (0 = perfect). Measured over a batch it is
what the bias and the batch-wise loss control; :func:`seq_max_violation` takes it per sequence (the loads of one
sequence's T·K_r slots), what the sequence-wise loss controls. Even a router that picks experts uniformly at random has
MaxVio > 0 from sampling alone (a sequence of 128 tokens with K_r = 2 fills each of 8 experts with
Binomial(128, 1/4) = 32 ± 4.9 slots, without groups);
:func:`random_routing_maxvio` simulates that floor, the baseline beside any measured MaxVio.

Expert specialisation (the report's Appendix C, Figure 9): route held-out text of D domains through a trained
model and count, per MoE layer, the tokens each routed expert receives from each domain (:func:`domain_expert_loads`).
With p(i | d) the share of domain d's routed slots that go to expert i and p̄(i) = (1/D) Σ_d p(i | d) (domains
weighted equally), the *relative load* p(i | d)·N_r is 1 for a domain-blind router, and the specialisation

    I(domain; expert) = (1/D) Σ_d KL(p(· | d) ‖ p̄) = (1/D) Σ_d Σ_i p(i | d) log₂(p(i | d) / p̄(i))   bits

(:func:`specialisation`) is the mutual information between a slot's domain and its expert: 0 when every domain
spreads over the experts alike, log₂ D at most (each domain on experts of its own). A sequence-wise balance loss
pushes every sequence — here, every domain — towards the uniform load, so it pulls I towards 0; a batch-wise
loss or the bias only balances the total p̄.

Dispatch (who computes what). Each token needs only its K_r experts. The reference path
(:meth:`MoE.dispatch_loop`, used when ``helpers.runtime.fast_path()`` is off) loops over experts and
finds each one's tokens with ``torch.where``; the fast path (:meth:`MoE.dispatch_sorted`, the default)
sorts the n·K_r (token, slot) assignments by expert once, so that every expert's tokens form one
contiguous slice: gather the rows once, run expert i on slice i, scale by the gate values, add back once.
Both compute Σ_i g_{i,t} FFN_i^(r)(u_t) exactly (same gradients, float rounding aside).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import BALANCE_MODES, ModelConfig
from .runtime import fast_path

__all__ = ["MLP", "Gate", "MoE", "route", "bias_update", "max_violation", "expert_load",
           "seq_balance_loss", "classic_aux_loss",
           "seq_max_violation", "random_routing_maxvio", "simulate_bias_balancing", "capacity_drop",
           "moe_param_counts", "fine_grained_split", "domain_expert_loads", "specialisation", "BALANCE_MODES"]


class MLP(nn.Module):
    """SwiGLU feed-forward network: FFN(x) = W_2 (SiLU(W_1 x) ⊙ W_3 x). 3·dim·inter_dim parameters."""

    def __init__(self, dim: int, inter_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)
        self.w2 = nn.Linear(inter_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, inter_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


# ---- routing as pure functions (tested directly, used by Gate and by the notebooks' simulations) ----

def route(scores: torch.Tensor, bias: torch.Tensor | None, topk: int, n_groups: int = 1, topk_groups: int = 1,
          route_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Select experts and gate values from affinities ``scores`` [n, N_r] (sigmoid outputs).

    Returns (weights [n, K], indices [n, K]): indices = top-K of scores + bias inside the kept groups;
    weights = route_scale · s / Σ_selected s (the bias does not enter the gate values).
    """
    n, n_exp = scores.shape
    if not 1 <= topk <= n_exp:
        raise ValueError(f"top-K = {topk} must be between 1 and the number of experts {n_exp}")
    if n_groups < 1 or n_exp % n_groups:
        raise ValueError(f"{n_exp} experts cannot be split into {n_groups} equal groups")
    if not 1 <= topk_groups <= n_groups or topk > topk_groups * (n_exp // n_groups):
        raise ValueError(f"cannot pick top-{topk} inside {topk_groups} of {n_groups} groups of {n_exp // n_groups}")
    sel = scores if bias is None else scores + bias
    if n_groups > 1:
        g = sel.view(n, n_groups, -1)
        group_scores = g.topk(min(2, g.shape[-1]), dim=-1)[0].sum(dim=-1)  # sum of the top-2 per group
        keep = group_scores.topk(topk_groups, dim=-1)[1]
        drop = torch.ones(n, n_groups, dtype=torch.bool, device=scores.device).scatter_(1, keep, False)
        sel = g.masked_fill(drop.unsqueeze(-1), float("-inf")).flatten(1)
    indices = sel.topk(topk, dim=-1)[1]
    weights = scores.gather(1, indices)
    weights = weights / weights.sum(dim=-1, keepdim=True) * route_scale
    return weights, indices


def expert_load(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Tokens routed to each expert: counts of ``indices`` (any shape) as float [n_experts]."""
    return torch.bincount(indices.flatten(), minlength=n_experts).float()


def max_violation(load: torch.Tensor) -> float:
    """MaxVio = max_i load_i / mean_i load_i − 1 (0 when perfectly balanced; nan when nothing was routed)."""
    load = torch.as_tensor(load, dtype=torch.float64)
    m = load.mean(dim=-1)
    return (load.max(dim=-1)[0] / m - 1).tolist() if load.dim() > 1 else float(load.max() / m - 1)


def bias_update(bias: torch.Tensor, load: torch.Tensor, gamma: float) -> torch.Tensor:
    """Aux-loss-free update: b_i + γ·sign(mean load − load_i): overloaded experts get less likely to be picked."""
    if gamma < 0:
        raise ValueError(f"bias update speed γ must be ≥ 0, got {gamma}")
    load = load.to(bias.dtype)
    return bias + gamma * torch.sign(load.mean() - load)


def seq_balance_loss(scores: torch.Tensor, indices: torch.Tensor, n_experts: int, topk: int) -> torch.Tensor:
    """Σ_i f_i P_i per sequence, averaged over sequences (multiply by α). scores [B, T, N], indices [B, T, K].

    f_i = N_r/(K_r T) · #{t : i selected}, P_i = mean_t s'_{i,t}, s' = s / Σ_j s_j.
    """
    b, t, _ = scores.shape
    counts = torch.zeros(b, n_experts, device=scores.device).scatter_add_(
        1, indices.reshape(b, -1), torch.ones(b, t * topk, device=scores.device))
    f = counts * n_experts / (topk * t)
    p = (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=1)
    return (f * p).sum(dim=-1).mean()


def classic_aux_loss(logits: torch.Tensor, indices: torch.Tensor, n_experts: int, topk: int) -> torch.Tensor:
    """Switch/GShard load-balancing loss N_r Σ_i f_i P_i over the batch (multiply by α).

    logits [n, N], indices [n, K]; f_i = share of the n·K assignments sent to i, P_i = mean softmax prob.
    """
    n = logits.shape[0]
    f = expert_load(indices, n_experts).to(logits.device) / (n * topk)
    p = logits.float().softmax(dim=-1).mean(dim=0)
    return n_experts * (f * p).sum()


def seq_max_violation(indices: torch.Tensor, n_experts: int) -> float:
    """Mean over sequences of each sequence's MaxVio: indices [B, T, K] → (1/B) Σ_b (max_i c_bi / mean_i c_bi − 1),
    c_bi = #{(t, k): indices[b, t, k] = i} (what the sequence-wise balance loss evens out)."""
    if indices.dim() != 3:
        raise ValueError(f"indices must be [batch, tokens, K] (one row per sequence), got shape {tuple(indices.shape)}; "
                         "reshape the router's [B·T, K] indices with .view(B, T, K)")
    if n_experts < 1 or indices.numel() == 0 or int(indices.min()) < 0 or int(indices.max()) >= n_experts:
        raise ValueError(f"indices must be non-empty expert ids in [0, {n_experts})")
    b = indices.shape[0]
    flat = indices.reshape(b, -1)
    counts = torch.zeros(b, n_experts, dtype=torch.float64, device=indices.device).scatter_add_(
        1, flat, torch.ones(flat.shape, dtype=torch.float64, device=indices.device))
    return float((counts.max(dim=-1)[0] / counts.mean(dim=-1) - 1).mean())


def random_routing_maxvio(n_tokens: int, n_experts: int, topk: int, n_groups: int = 1, topk_groups: int = 1,
                          trials: int = 200, seed: int = 0) -> dict:
    """The MaxVio of a router that knows nothing: i.i.d. uniform affinities routed by :func:`route` (same top-K and
    group limit, no bias), ``n_tokens`` tokens at a time. Every expert then has the same expected load, so what is
    left is sampling noise: the floor below which no balancing method can push the MaxVio of ``n_tokens`` tokens.
    Returns {"mean", "std", "trials"} over ``trials`` seeded draws."""
    if min(n_tokens, trials) < 1:
        raise ValueError(f"n_tokens and trials must be ≥ 1, got {n_tokens}, {trials}")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(trials):
        _, idx = route(torch.rand(n_tokens, n_experts, generator=g), None, topk, n_groups, topk_groups)
        vals.append(max_violation(expert_load(idx, n_experts)))
    v = torch.tensor(vals, dtype=torch.float64)
    return {"mean": float(v.mean()), "std": float(v.std()) if trials > 1 else 0.0, "trials": trials}


# ---- modules --------------------------------------------------------------------------------------

class Gate(nn.Module):
    """The router: centroids e_i (``weight`` [N_r, dim]) and the selection bias b (a buffer, not trained by SGD)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.topk, self.n_groups, self.topk_groups = cfg.n_activated_experts, cfg.n_expert_groups, cfg.n_limited_groups
        self.route_scale = cfg.route_scale
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.dim))
        self.register_buffer("bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor):
        """x [n, dim] → (weights [n, K], indices [n, K], scores s [n, N_r], logits [n, N_r])."""
        logits = F.linear(x.float(), self.weight.float())
        scores = logits.sigmoid()
        weights, indices = route(scores, self.bias, self.topk, self.n_groups, self.topk_groups, self.route_scale)
        return weights.type_as(x), indices, scores, logits


class MoE(nn.Module):
    """DeepSeekMoE layer: shared experts (one SwiGLU of n_shared·moe_inter_dim) + routed experts + gate.

    After a forward pass: ``aux_loss`` (the balance loss, 0 unless "aux"/"seq_aux" balancing),
    ``last_load`` (tokens per expert in that pass). In training mode the loads also accumulate into
    ``step_load`` until :meth:`after_step` uses them for the bias update.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dim, self.n_routed_experts, self.topk = cfg.dim, cfg.n_routed_experts, cfg.n_activated_experts
        self.balance, self.gamma = cfg.balance, cfg.bias_update_speed
        self.seq_aux_alpha, self.aux_loss_alpha = cfg.seq_aux_alpha, cfg.aux_loss_alpha
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList(MLP(cfg.dim, cfg.moe_inter_dim) for _ in range(cfg.n_routed_experts))
        self.shared_experts = MLP(cfg.dim, cfg.n_shared_experts * cfg.moe_inter_dim) if cfg.n_shared_experts else None
        self.register_buffer("step_load", torch.zeros(cfg.n_routed_experts), persistent=False)
        self.last_load = torch.zeros(cfg.n_routed_experts)
        self.last_step_load = torch.zeros(cfg.n_routed_experts)
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xf = x.reshape(-1, self.dim)
        weights, indices, scores, logits = self.gate(xf)
        load = expert_load(indices, self.n_routed_experts)
        self.last_load = load.detach().cpu()
        if self.training:
            self.step_load += load.to(self.step_load.device)
        aux = xf.new_zeros((), dtype=torch.float32)
        if "seq_aux" in self.balance and len(shape) == 3:
            aux = aux + self.seq_aux_alpha * seq_balance_loss(
                scores.view(shape[0], shape[1], -1), indices.view(shape[0], shape[1], -1),
                self.n_routed_experts, self.topk)
        if self.balance == "aux":
            aux = aux + self.aux_loss_alpha * classic_aux_loss(logits, indices, self.n_routed_experts, self.topk)
        self.aux_loss = aux
        counts = load.long().tolist()
        dispatch = self.dispatch_sorted if fast_path() else self.dispatch_loop
        y = dispatch(xf, weights, indices, counts)
        if self.shared_experts is not None:
            y = y + self.shared_experts(xf)
        return y.view(shape)

    def dispatch_loop(self, xf: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                      counts: list[int]) -> torch.Tensor:
        """Reference: y_t = Σ_i g_{i,t} FFN_i(x_t), one expert at a time (find its tokens, compute, add back)."""
        y = torch.zeros_like(xf)
        for i, expert in enumerate(self.experts):
            if counts[i] == 0:
                continue
            tok, slot = torch.where(indices == i)
            y.index_add_(0, tok, expert(xf[tok]) * weights[tok, slot, None])
        return y

    def dispatch_sorted(self, xf: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                        counts: list[int]) -> torch.Tensor:
        """Fast: the same sum with the n·K assignments sorted by expert (one gather, one scatter-add).

        order = argsort(expert of each assignment); tok = order // K is the token of each sorted assignment;
        rows tok[c_0 + … + c_{i−1} : c_0 + … + c_i] are expert i's (c_i = counts[i]).
        """
        order = indices.flatten().argsort(stable=True)
        tok = order // indices.shape[1]
        xs = xf[tok]                                                        # gathered once, grouped by expert
        out = torch.cat([expert(rows) for expert, rows in zip(self.experts, xs.split(counts)) if len(rows)])
        out = out * weights.flatten()[order, None]                          # g_{i,t} FFN_i(x_t)
        return torch.zeros_like(xf).index_add_(0, tok, out)                 # Σ over each token's K experts

    @torch.no_grad()
    def after_step(self) -> None:
        """Apply the aux-loss-free bias update from the loads counted over the step, then reset them."""
        if "aux_free" in self.balance:
            self.gate.bias.copy_(bias_update(self.gate.bias, self.step_load, self.gamma))
        self.last_step_load = self.step_load.detach().cpu().clone()
        self.step_load.zero_()


# ---- simulations and formulas for the notebooks' widgets ---------------------------------------------

def simulate_bias_balancing(scores: torch.Tensor, topk: int, gamma: float, steps: int, batch_tokens: int,
                            n_groups: int = 1, topk_groups: int = 1, seed: int = 0) -> dict:
    """Replay routing with the aux-loss-free bias update on fixed affinities ``scores`` [n, N_r].

    Each step draws ``batch_tokens`` rows (with replacement, seeded), routes them with the current bias,
    records the load's MaxVio, then applies b ← b + γ·sign(mean load − load). The affinities do not
    learn here (in training they do), so this isolates the bias dynamics. Returns
    {"maxvio": [steps], "bias": final bias [N_r], "bias_history": [steps+1, N_r]}.
    """
    if steps < 1 or batch_tokens < 1:
        raise ValueError("steps and batch_tokens must be ≥ 1")
    n, n_exp = scores.shape
    g = torch.Generator().manual_seed(seed)
    bias = torch.zeros(n_exp, dtype=scores.dtype)
    maxvio, hist = [], [bias.clone()]
    for _ in range(steps):
        rows = torch.randint(n, (batch_tokens,), generator=g)
        _, idx = route(scores[rows], bias, topk, n_groups, topk_groups)
        load = expert_load(idx, n_exp)
        maxvio.append(max_violation(load))
        bias = bias_update(bias, load, gamma)
        hist.append(bias.clone())
    return {"maxvio": maxvio, "bias": bias, "bias_history": torch.stack(hist)}


def capacity_drop(indices: torch.Tensor, n_experts: int, capacity_factor: float | None) -> dict:
    """What a per-expert capacity drops, tokens processed in order (first come, first served).

    indices [n_tokens, K]: the routed experts of one batch. Capacity C = ceil(cf · n_tokens · K / N_r)
    assignments per expert; the rest are dropped (the token skips that expert). ``capacity_factor=None``
    means no limit (DeepSeek-V3: no token dropping). Returns {"capacity", "dropped_assignments" (fraction of
    the n·K assignments), "tokens_with_drop" (fraction of tokens losing at least one expert), "dropped"
    (bool [n_tokens, K], True where the assignment is dropped)}.
    """
    n, k = indices.shape
    if capacity_factor is None:
        return {"capacity": None, "dropped_assignments": 0.0, "tokens_with_drop": 0.0,
                "dropped": torch.zeros(n, k, dtype=torch.bool, device=indices.device)}
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be positive (or None for no limit), got {capacity_factor}")
    cap = math.ceil(capacity_factor * n * k / n_experts)
    flat = indices.reshape(-1)                                    # token-major order
    onehot = F.one_hot(flat, n_experts)
    position = (onehot.cumsum(0) * onehot).sum(-1)                # 1-based arrival position at its expert
    dropped = (position > cap).view(n, k)
    return {"capacity": cap, "dropped_assignments": dropped.float().mean().item(),
            "tokens_with_drop": dropped.any(-1).float().mean().item(), "dropped": dropped}


def moe_param_counts(dim: int, moe_inter_dim: int, n_routed: int, n_shared: int, topk: int) -> dict:
    """Parameters of one MoE layer: total, active per token, and forward FLOPs per token (2 per active weight).

    expert = 3·dim·moe_inter_dim (SwiGLU); gate = N_r·dim; total = (N_r + N_s)·expert + gate;
    active = (K + N_s)·expert + gate.
    """
    if min(dim, moe_inter_dim, n_routed, topk) < 1 or n_shared < 0 or topk > n_routed:
        raise ValueError("need dim, moe_inter_dim, n_routed, topk ≥ 1, n_shared ≥ 0 and topk ≤ n_routed")
    expert = 3 * dim * moe_inter_dim
    gate = n_routed * dim
    total = (n_routed + n_shared) * expert + gate
    active = (topk + n_shared) * expert + gate
    return {"expert": expert, "gate": gate, "total": total, "active": active, "flops_per_token": 2 * active}


def fine_grained_split(dim: int, ffn_dim: int, n_experts: int, topk: int, granularity: int, n_shared: int) -> dict:
    """DeepSeekMoE's two moves on a conventional MoE of ``n_experts`` FFNs of ``ffn_dim``, top-``topk``.

    Fine-grained segmentation: split every expert into m = ``granularity`` pieces of ffn_dim/m, and route
    top-(m·K) of m·N. Shared-expert isolation: n_shared of the m·K active pieces become always-on shared
    experts, leaving N_r = m·N − n_shared routed and K_r = m·K − n_shared active routed. Total and active
    parameters stay (up to the gate) what they were; the number of expert combinations explodes.
    """
    if ffn_dim % granularity:
        raise ValueError(f"ffn_dim {ffn_dim} is not divisible by granularity {granularity}")
    n_r, k_r = granularity * n_experts - n_shared, granularity * topk - n_shared
    if k_r < 1 or n_r < k_r:
        raise ValueError(f"{n_shared} shared experts leave no routed choice (K_r = {k_r}, N_r = {n_r})")
    counts = moe_param_counts(dim, ffn_dim // granularity, n_r, n_shared, k_r)
    return {"moe_inter_dim": ffn_dim // granularity, "n_routed": n_r, "n_shared": n_shared, "topk": k_r,
            "combinations": math.comb(n_r, k_r), **counts}


@torch.no_grad()
def domain_expert_loads(model, windows: dict) -> dict:
    """Routed slots per MoE layer, domain and expert: {domain: tensor [n_moe_layers, N_r]} (counts).

    ``windows``: {domain: list of (x, y) batches}. Runs ``model(x)`` on every batch in eval mode (the routing of
    inference; the bias takes part in the selection as it does there) and sums ``model.expert_loads("last")``.
    Only the main model's MoE layers are counted: an MTP module's block is not run by ``model(x)``."""
    if not isinstance(windows, dict) or not windows or any(not b for b in windows.values()):
        raise ValueError("windows must be a non-empty dict {domain: non-empty list of (x, y) batches}")
    was = model.training
    model.eval()
    n = sum(model.cfg.is_moe_layer(i) for i in range(model.cfg.n_layers))
    try:
        out = {}
        for d, batches in windows.items():
            load = 0
            for x, _ in batches:
                model(x)
                load = load + model.expert_loads("last")[:n].double()
            out[d] = load
    finally:
        model.train(was)
    return out


def specialisation(loads) -> dict:
    """Mutual information between domain and expert, in bits, from per-domain expert counts.

    ``loads``: {domain: counts [N_r] or [layers, N_r]} (e.g. from :func:`domain_expert_loads`). Domains are weighted
    equally. Returns {"bits": I per layer (a list; a float for 1-D counts), "max_bits": log₂ D,
    "relative": {domain: p(i | d)·N_r, same shape as the counts}} (see the module docstring)."""
    if not isinstance(loads, dict) or len(loads) < 2:
        raise ValueError(f"loads must be a dict of at least two domains' expert counts, got {type(loads).__name__}")
    t = {d: torch.as_tensor(v, dtype=torch.float64) for d, v in loads.items()}
    shapes = {tuple(v.shape) for v in t.values()}
    if len(shapes) != 1 or next(iter(shapes)) == () or len(next(iter(shapes))) > 2:
        raise ValueError(f"every domain's counts must have the same shape [N_r] or [layers, N_r], got {shapes}")
    for d, v in t.items():
        if not torch.isfinite(v).all() or (v < 0).any() or (v.sum(-1) <= 0).any():
            raise ValueError(f"domain {d!r}: counts must be finite, ≥ 0 and not all zero in any layer")
    p = torch.stack([v / v.sum(-1, keepdim=True) for v in t.values()])          # [D, (layers,) N_r]
    mean = p.mean(0)
    terms = torch.where(p > 0, p * torch.log2(p / mean), torch.zeros_like(p))
    bits = terms.sum(-1).mean(0)
    n_r = p.shape[-1]
    return {"bits": bits.tolist() if bits.dim() else float(bits), "max_bits": math.log2(len(t)),
            "relative": {d: p[k] * n_r for k, d in enumerate(t)}}
