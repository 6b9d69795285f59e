"""The course model: a small image of DeepSeek-V3 (§2), configured by one dataclass.

    h_0 = Emb(t)
    for each block l:   u = h + Attn(RMSNorm(h));   h = u + FFN(RMSNorm(u))      (pre-norm residuals)
    logits = Head(RMSNorm(h))

Attn is MLA (or an MHA/GQA baseline, helpers.attention); FFN is a dense SwiGLU in the first
``n_dense_layers`` blocks and DeepSeekMoE after (helpers.moe). Multi-token prediction (§2.2) adds D
sequential modules; depth k at position i combines the previous depth's hidden state with the
embedding of token t_{i+k}:

    h'_i^k = M_k [RMSNorm(h_i^{k−1}); RMSNorm(Emb(t_{i+k}))],   h^k = TRM_k(h'^k),
    P^k = Head(RMSNorm(h^k)),   L_k = CE(P^k_i, t_{i+k+1}) over i < T − k,
    loss = L_main + λ · (1/D) Σ_k L_k + balance losses.

Embedding and output head are shared between the main model and the MTP modules (not tied to each
other, as in the report). Field names follow DeepSeek-V3's inference/model.py ModelArgs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import GQA, MLA, cache_elements_per_token
from .config import ModelConfig, deepseek_v3_config
from .moe import MLP, MoE
from .norm import RMSNorm
from .objective import linear_cross_entropy
from .rope import apply_rotary_emb, precompute_freqs_cis
from .runtime import fast_path

__all__ = ["ModelConfig", "RMSNorm", "MLP", "MoE", "MLA", "GQA", "Block", "MTPModule", "Transformer",
           "count_params", "deepseek_v3_config", "apply_rotary_emb", "precompute_freqs_cis",
           "cache_elements_per_token", "check_token_ids"]


def check_token_ids(ids, vocab_size: int, name: str = "idx", where: str = "forward", allow_ignore: bool = False) -> None:
    """Raise a clear error unless ``ids`` is a non-empty [batch, seq] integer tensor of ids in [0, vocab_size)
    (``allow_ignore``: targets may also be −1, the ignore_index of the loss). Called before any work is done,
    so a bad batch never reaches the embedding (where it would be an IndexError, or a CUDA device assert)."""
    if not torch.is_tensor(ids):
        raise TypeError(f"{where}: {name} must be a torch tensor of token ids, got {type(ids).__name__}; "
                        f"build it with torch.tensor(ids, dtype=torch.long)")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{where}: {name} must hold integer token ids, got dtype {ids.dtype}; "
                        f"convert it with {name}.long() (token ids are whole numbers)")
    if ids.dim() != 2:
        raise ValueError(f"{where}: {name} must be [batch, seq] token ids, got shape {tuple(ids.shape)}; "
                         f"add a batch dimension with {name}[None] for a single sequence")
    if ids.numel() == 0:
        raise ValueError(f"{where}: {name} is empty (shape {tuple(ids.shape)}); pass at least one row of at least "
                         "one token")
    lo = -1 if allow_ignore else 0
    bad = (ids < lo) | (ids >= vocab_size)
    if bool(bad.any()):
        value = int(ids[bad][0])
        allowed = f"0 … {vocab_size - 1} (or −1 = ignore)" if allow_ignore else f"0 … {vocab_size - 1}"
        raise ValueError(f"{where}: {name} holds token id {value}, outside {allowed} for vocab_size = {vocab_size}; "
                         "encode with the tokenizer the model was built for, or build the model with a larger "
                         "vocab_size")


class Block(nn.Module):
    """Pre-norm block: x + Attn(RMSNorm(x)), then + FFN(RMSNorm(·)); FFN dense SwiGLU or DeepSeekMoE."""

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.attn = MLA(cfg) if cfg.attn == "mla" else GQA(cfg)
        self.ffn = MoE(cfg) if cfg.is_moe_layer(layer_id) else MLP(cfg.dim, cfg.inter_dim)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), freqs_cis, start_pos)
        return x + self.ffn(self.ffn_norm(x))


class MTPModule(nn.Module):
    """One MTP depth: h' = M_k [RMSNorm(h_prev); RMSNorm(Emb(t_{i+k}))], then one Transformer block.

    ``layer_id`` is the block's index in the whole stack (n_layers + k − 1 for depth k, as DeepSeek-V3
    numbers its MTP layer 61), so the block is an MoE block whenever the main model's later blocks are.
    """

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.depth = layer_id - cfg.n_layers + 1
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.dim, cfg.dim, bias=False)   # M_k
        self.block = Block(cfg, layer_id)

    def forward(self, h_prev: torch.Tensor, emb_next: torch.Tensor, freqs_cis: torch.Tensor,
                start_pos: int = 0) -> torch.Tensor:
        if h_prev.shape != emb_next.shape:
            raise ValueError(f"MTP depth {self.depth}: h_prev {tuple(h_prev.shape)} and emb_next "
                             f"{tuple(emb_next.shape)} must have the same shape")
        h = self.eh_proj(torch.cat([self.hnorm(h_prev), self.enorm(emb_next)], dim=-1))
        return self.block(h, freqs_cis, start_pos)


class Transformer(nn.Module):
    """The course model. ``forward(idx, targets=None)`` returns a dict (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"Transformer needs a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.mtp = nn.ModuleList(MTPModule(cfg, cfg.n_layers + k) for k in range(cfg.mtp_depth))
        self._freqs = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every matrix (embedding, projections, expert weights, router centroids) ~ N(0, init_std²);
        RMSNorm gains 1; router biases 0."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=self.cfg.init_std)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
            elif isinstance(m, MoE):
                nn.init.normal_(m.gate.weight, std=self.cfg.init_std)
                m.gate.bias.zero_()

    def freqs_cis(self, device) -> torch.Tensor:
        """RoPE rotations for all positions (complex64, kept per device, not a buffer so dtype casts leave it).

        With ``cfg.yarn_active`` (§4.3) the frequencies are YaRN's θ'_j (helpers.rope.yarn_frequencies). They
        rotate only the rope_dim part: in MLA that is the decoupled q^R / k^R (d_h^R), so YaRN changes nothing
        in the content part q^C·k^C or the latent c^KV; in the MHA/GQA baselines it is the whole head. With
        YaRN off (the default) the table is the plain RoPE table, bit for bit.
        """
        key = str(device)
        if key not in self._freqs:
            cfg = self.cfg
            if cfg.yarn_active:
                table = precompute_freqs_cis(cfg.rope_dim, cfg.max_seq_len, cfg.rope_theta,
                                             original_seq_len=cfg.original_seq_len, rope_factor=cfg.rope_factor,
                                             beta_fast=cfg.beta_fast, beta_slow=cfg.beta_slow)
            else:
                table = precompute_freqs_cis(cfg.rope_dim, cfg.max_seq_len, cfg.rope_theta)
            self._freqs[key] = table.to(device)
        return self._freqs[key]

    def moe_layers(self) -> list[MoE]:
        """All MoE layers, main model first, then the MTP modules'."""
        return [m for m in self.modules() if isinstance(m, MoE)]

    def _check_inputs(self, idx, targets, start_pos: int) -> None:
        """forward's argument checks, all before any computation (see check_token_ids)."""
        v = self.cfg.vocab_size
        check_token_ids(idx, v, "idx")
        if not (isinstance(start_pos, int) and not isinstance(start_pos, bool) and start_pos >= 0):
            raise ValueError(f"forward: start_pos must be an int ≥ 0 (the position of idx's first token), "
                             f"got {start_pos!r}; use 0 unless you decode with a cache")
        t = idx.shape[1]
        if start_pos + t > self.cfg.max_seq_len:
            raise ValueError(f"forward: positions up to {start_pos + t} exceed max_seq_len = {self.cfg.max_seq_len}; "
                             "pass fewer tokens (keep the last ones: idx[:, -n:]) or build the model with a larger "
                             "max_seq_len (RoPE tables are precomputed up to it)")
        if targets is None:
            return
        check_token_ids(targets, v, "targets", allow_ignore=True)
        if targets.shape != idx.shape:
            raise ValueError(f"forward: targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}; "
                             "targets[b, i] is the token that follows idx[b, i]")
        if self.mtp and start_pos == 0 and t <= self.cfg.mtp_depth:
            raise ValueError(f"forward: MTP depth {self.cfg.mtp_depth} needs sequences longer than "
                             f"{self.cfg.mtp_depth} tokens to have a target, got {t}; use longer rows or mtp_depth=0")

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, start_pos: int = 0,
                return_hidden: bool = False) -> dict:
        self._check_inputs(idx, targets, start_pos)
        b, t = idx.shape
        freqs = self.freqs_cis(idx.device)[start_pos:start_pos + t]
        h = self.embed(idx)
        for layer in self.layers:
            h = layer(h, freqs, start_pos)
        fused = targets is not None and fast_path()     # fast path: head + loss in one chunked pass (objective.py)
        if fused:
            main_loss, logits = linear_cross_entropy(self.norm(h).flatten(0, 1), self.head.weight, targets.flatten())
            logits = logits.view(b, t, -1)
        else:
            logits = self.head(self.norm(h))
        out = {"logits": logits}
        if return_hidden:
            out["hidden"] = h
        if targets is None:
            return out
        v = self.cfg.vocab_size
        if not fused:
            main_loss = F.cross_entropy(logits.float().reshape(-1, v), targets.reshape(-1), ignore_index=-1)
        mtp_losses = []
        if self.mtp and start_pos == 0:
            h_prev = h
            for k, module in enumerate(self.mtp, start=1):
                h_prev = module(h_prev[:, :t - k], self.embed(idx[:, k:]), freqs[:t - k])
                if fused:
                    mtp_losses.append(linear_cross_entropy(self.norm(h_prev).flatten(0, 1), self.head.weight,
                                                           targets[:, k:].reshape(-1), return_logits=False)[0])
                    continue
                lk = self.head(self.norm(h_prev)).float()
                mtp_losses.append(F.cross_entropy(lk.reshape(-1, v), targets[:, k:].reshape(-1), ignore_index=-1))
        mtp_loss = torch.stack(mtp_losses).mean() if mtp_losses else main_loss.new_zeros(())
        aux = [m.aux_loss for m in self.moe_layers()]
        aux_loss = torch.stack(aux).sum() if aux else main_loss.new_zeros(())
        out.update(main_loss=main_loss, mtp_loss=mtp_loss, aux_loss=aux_loss,
                   loss=main_loss + self.cfg.mtp_lambda * mtp_loss + aux_loss)
        return out

    # -- balance bookkeeping -------------------------------------------------------------------------
    def after_step(self) -> None:
        """Called after each optimizer step: aux-loss-free bias update from the loads counted over the step."""
        for m in self.moe_layers():
            m.after_step()

    def expert_loads(self, which: str = "step") -> torch.Tensor:
        """Tokens per routed expert, [n_moe_layers, N_r]: "step" = over the last optimizer step, "last" = last forward."""
        layers = self.moe_layers()
        if not layers:
            raise ValueError("this model has no MoE layers")
        attr = {"step": "last_step_load", "last": "last_load"}[which]
        return torch.stack([getattr(m, attr) for m in layers])

    def set_attn_impl(self, impl: str) -> None:
        """Switch every MLA layer between the "naive" and "absorb" paths."""
        if impl not in ("naive", "absorb"):
            raise ValueError(f"attn_impl must be 'naive' or 'absorb', got {impl!r}")
        for m in self.modules():
            if isinstance(m, MLA):
                m.attn_impl = impl

    # -- generation with a cache --------------------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: int | None = None, dtype=torch.float32,
                    kind: str | None = None) -> None:
        """Allocate the per-layer inference caches: latent c^KV and k^R for MLA (kind None or "latent"), or its
        per-head K and V (kind "expanded", see helpers.attention); K and V for MHA/GQA (kind None)."""
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ValueError(f"setup_cache: batch_size must be an int ≥ 1, got {batch_size!r}; pass the number of "
                             "sequences you will decode")
        max_len = max_len or self.cfg.max_seq_len
        if not (isinstance(max_len, int) and not isinstance(max_len, bool) and 1 <= max_len):
            raise ValueError(f"setup_cache: max_len must be an int ≥ 1 (or None = max_seq_len), got {max_len!r}")
        if max_len > self.cfg.max_seq_len:
            raise ValueError(f"setup_cache: cache length {max_len} exceeds max_seq_len = {self.cfg.max_seq_len}; "
                             "use a shorter max_len or a model with a larger max_seq_len")
        dev = self.embed.weight.device
        for layer in self.layers:
            layer.attn.setup_cache(batch_size, max_len, device=dev, dtype=dtype, kind=kind)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.attn.clear_cache()

    def cache_bytes(self) -> int:
        """Bytes held by the allocated caches (0 when none)."""
        return sum(t.numel() * t.element_size() for layer in self.layers
                   for t in (getattr(layer.attn, n) for n in layer.attn._cache_names()) if t is not None)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 cache_kind: str | None = None, stop_id: int | None = None, pad_id: int = 0) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` [B, T] (greedy when temperature = 0).

        ``use_cache=False`` re-runs the whole sequence for every new token; with a cache, ``cache_kind`` picks
        what it holds (None = the attention's default: MLA's latent; "expanded": per-head K and V).
        ``top_k``: sample only among the k most likely tokens (None = all). ``stop_id``: a row that has produced
        this token is finished (its later positions hold ``pad_id``), and generation ends early once every row is
        finished, so the result may be shorter than ``max_new_tokens``. Every argument is checked
        before anything runs (an empty prompt, a negative temperature, top_k = 0 ... raise ValueError).
        """
        check_token_ids(idx, self.cfg.vocab_size, "idx", where="generate")
        if not (isinstance(max_new_tokens, int) and not isinstance(max_new_tokens, bool) and max_new_tokens >= 0):
            raise ValueError(f"generate: max_new_tokens must be an int ≥ 0, got {max_new_tokens!r}; "
                             "pass a whole number such as max_new_tokens=50")
        if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
                and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"generate: temperature must be a finite number ≥ 0 (0 = greedy), got {temperature!r}; "
                             "use temperature=0 for greedy decoding or a positive value (e.g. 1.0) to sample")
        if top_k is not None and not (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 1):
            raise ValueError(f"generate: top_k must be None (no limit) or an int ≥ 1, got {top_k!r}; "
                             "use top_k=None to sample from all tokens, or e.g. top_k=50")
        if idx.shape[1] + max_new_tokens > self.cfg.max_seq_len:
            raise ValueError(f"generate: prompt {idx.shape[1]} + {max_new_tokens} new tokens exceed max_seq_len = "
                             f"{self.cfg.max_seq_len}; ask for fewer tokens or keep only the prompt's last "
                             f"{max(self.cfg.max_seq_len - max_new_tokens, 0)} tokens (idx[:, -n:])")
        if stop_id is not None:
            check_token_ids(torch.tensor([[stop_id, pad_id]]), self.cfg.vocab_size, "stop_id/pad_id", where="generate")
        was_training = self.training
        self.eval()
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        try:
            if use_cache:
                self.setup_cache(idx.shape[0], idx.shape[1] + max_new_tokens, kind=cache_kind)
            out, pos, cur = idx, 0, idx
            for _ in range(max_new_tokens):
                logits = self(cur, start_pos=pos)["logits"][:, -1] if use_cache else self(out)["logits"][:, -1]
                if temperature == 0:
                    nxt = logits.argmax(-1, keepdim=True)
                else:
                    logits = logits.float() / temperature
                    if top_k is not None:
                        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1)[0][:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = logits.softmax(-1)
                    if generator is not None and generator.device != probs.device:
                        probs = probs.to(generator.device)     # sample where the generator lives (determinism)
                    nxt = torch.multinomial(probs, 1, generator=generator).to(logits.device)
                if stop_id is not None:
                    nxt = torch.where(done[:, None], torch.full_like(nxt, pad_id), nxt)
                    done |= nxt[:, 0] == stop_id
                pos += cur.shape[1]
                out, cur = torch.cat([out, nxt], dim=1), nxt
                if stop_id is not None and bool(done.all()):
                    break
            return out
        finally:
            self.clear_cache()
            self.train(was_training)

    # -- parameter counts -------------------------------------------------------------------------
    def num_params(self) -> dict:
        """Counts from the module itself.

        total: every parameter (main model + MTP). active: those a token uses in a forward pass (all but
        the N_r − K_r unselected routed experts of each MoE layer). *_main: without the MTP modules (the
        report's 671B/37B exclude them). Router biases are buffers, not parameters.
        """
        total = sum(p.numel() for p in self.parameters())
        mtp = sum(p.numel() for p in self.mtp.parameters())

        def inactive(mods):
            return sum((m.n_routed_experts - m.topk) * sum(p.numel() for p in m.experts[0].parameters())
                       for mod in mods for m in mod.modules() if isinstance(m, MoE))
        off_main, off_mtp = inactive(self.layers), inactive(self.mtp)
        return {"total": total, "active": total - off_main - off_mtp, "total_main": total - mtp,
                "active_main": total - mtp - off_main, "mtp": mtp, "embedding": self.embed.weight.numel(),
                "head": self.head.weight.numel()}


def attention_matmul_params(cfg: ModelConfig) -> int:
    """Weights of one attention block's matrices (no norm gains): MLA W^DQ, W^UQ;W^QR (or W^Q), W^DKV;W^KR,
    W^UK;W^UV, W^O; MHA/GQA W^Q, W^K, W^V, W^O. Shared by :func:`count_params` and helpers.compute."""
    d = cfg.dim
    if cfg.attn == "mla":
        qk = cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim)
        q = d * qk if cfg.q_lora_rank == 0 else d * cfg.q_lora_rank + cfg.q_lora_rank * qk
        return (q + d * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
                + cfg.kv_lora_rank * cfg.n_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim)
                + cfg.n_heads * cfg.v_head_dim * d)
    hd = d // cfg.n_heads
    return 2 * d * cfg.n_heads * hd + 2 * d * cfg.kv_heads * hd


def count_params(cfg: ModelConfig) -> dict:
    """The same counts as ``Transformer(cfg).num_params()`` from the config alone (formulas, no module).

    Per block: attention + FFN + 2 RMSNorm gains (2·dim).
      MLA: dim·d_c' + d_c' + d_c'·n_h(d_h+d_h^R)   (or dim·n_h(d_h+d_h^R) without query compression)
           + dim·(d_c+d_h^R) + d_c + d_c·n_h(d_h+d_v) + n_h·d_v·dim
      MHA/GQA: dim·n_h·d_h + 2·dim·n_g·d_h + n_h·d_h·dim, d_h = dim/n_h
      dense FFN: 3·dim·inter_dim;  MoE: (N_r + N_s)·3·dim·moe_inter_dim + N_r·dim (router)
    Model: embedding V·dim + head V·dim + final norm dim + blocks; MTP depth: 2 norms + 2·dim² + a block.
    """
    d = cfg.dim
    attn = attention_matmul_params(cfg)
    if cfg.attn == "mla":                           # + the RMSNorm gains of the two latents (d_c' and d_c)
        attn += cfg.q_lora_rank + cfg.kv_lora_rank
    expert = 3 * d * cfg.moe_inter_dim
    moe_total = (cfg.n_routed_experts + cfg.n_shared_experts) * expert + cfg.n_routed_experts * d
    moe_off = (cfg.n_routed_experts - cfg.n_activated_experts) * expert
    dense = 3 * d * cfg.inter_dim

    def block(layer_id):
        moe = cfg.is_moe_layer(layer_id)
        return attn + 2 * d + (moe_total if moe else dense), (moe_off if moe else 0)

    main = [block(i) for i in range(cfg.n_layers)]
    mtp = [block(cfg.n_layers + k) for k in range(cfg.mtp_depth)]
    emb = cfg.vocab_size * d
    total_main = 2 * emb + d + sum(p for p, _ in main)
    mtp_total = sum(p + 2 * d + 2 * d * d for p, _ in mtp)
    off_main, off_mtp = sum(o for _, o in main), sum(o for _, o in mtp)
    return {"total": total_main + mtp_total, "active": total_main + mtp_total - off_main - off_mtp,
            "total_main": total_main, "active_main": total_main - off_main, "mtp": mtp_total,
            "embedding": emb, "head": emb, "attention_per_layer": attn, "dense_ffn": dense,
            "moe_total": moe_total if cfg.n_routed_experts else 0,
            "moe_active": moe_total - moe_off if cfg.n_routed_experts else 0}
