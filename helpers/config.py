"""The course model's configuration: one dataclass holding every knob, validated on creation.

It stands apart from the modules it configures (as ``ModelArgs`` does in DeepSeek-V3's inference/model.py),
so ``attention``, ``moe`` and ``model`` all import it and none of them imports another to get it. Field
names follow that ``ModelArgs``; the symbols of the report are in the comments (d_c, d_h^R, N_r, K_r, γ, α,
D, λ). ``deepseek_v3_config()`` is the published 671B configuration, for formulas only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["ModelConfig", "deepseek_v3_config", "BALANCE_MODES"]

BALANCE_MODES = ("none", "aux_free", "aux", "seq_aux", "aux_free+seq_aux")


@dataclass
class ModelConfig:
    """Every knob of the course model. The defaults are the CPU course model (= ``ModelConfig.cpu()``).

    init_std: the report uses 0.006 at width 7168. At width 128 that is far smaller than the ~1/sqrt(dim)
    scale of a unit-variance input's natural weights (0.088), and a few-hundred-step CPU run learns
    visibly slower from it; we use GPT-2's 0.02, which trains well at widths 64–512.
    """
    vocab_size: int = 4096
    dim: int = 128
    n_layers: int = 4
    n_dense_layers: int = 1
    n_heads: int = 4
    inter_dim: int = 384                  # dense SwiGLU hidden size
    moe_inter_dim: int = 96               # hidden size of every (shared or routed) expert
    attn: str = "mla"                     # "mla" | "mha" | "gqa"
    n_kv_heads: int = 0                   # mha/gqa: key/value heads (0 = n_heads; 1 = MQA)
    # MLA
    q_lora_rank: int = 64                 # d_c' (0 = no query compression)
    kv_lora_rank: int = 32                # d_c
    qk_nope_head_dim: int = 32            # d_h
    qk_rope_head_dim: int = 16            # d_h^R
    v_head_dim: int = 32
    attn_impl: str = "naive"              # "naive" | "absorb" (same function, see helpers.attention)
    # MoE
    n_routed_experts: int = 8             # N_r (0 = dense everywhere)
    n_shared_experts: int = 1             # N_s
    n_activated_experts: int = 2          # K_r
    n_expert_groups: int = 2
    n_limited_groups: int = 1
    route_scale: float = 1.0
    balance: str = "aux_free"             # "none" | "aux_free" | "aux" | "seq_aux" | "aux_free+seq_aux"
    bias_update_speed: float = 0.001      # γ
    seq_aux_alpha: float = 1e-4           # α of the sequence-wise balance loss
    aux_loss_alpha: float = 0.01          # α of the classic auxiliary loss
    # MTP
    mtp_depth: int = 1                    # D
    mtp_lambda: float = 0.3               # λ
    # positions, init
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    init_std: float = 0.02
    norm_eps: float = 1e-6
    # long context (YaRN, §4.3); active only when original_seq_len > 0 and max_seq_len > original_seq_len
    original_seq_len: int = 0             # L, the pre-training context length (0 = YaRN off)
    rope_factor: float = 1.0              # s, the extension factor (θ_j → θ_j / s for the slow pairs)
    beta_fast: int = 32                   # β: pairs turning ≥ beta_fast times over L keep θ_j
    beta_slow: int = 1                    # α: pairs turning ≤ beta_slow times over L get θ_j / s
    mscale: float = 1.0                   # attention temperature √t = 0.1·mscale·ln s + 1

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"ModelConfig: {msg}")

        # every int field holds an int (not a bool or 2.5), every float field a finite number (not NaN or inf)
        for f in self.__dataclass_fields__.values():
            v = getattr(self, f.name)
            if f.type in ("int", int):
                need(isinstance(v, int) and not isinstance(v, bool),
                     f"{f.name} must be an int, got {v!r}; pass a whole number (default {f.default})")
            elif f.type in ("float", float):
                need(isinstance(v, (int, float)) and not isinstance(v, bool) and float("-inf") < v < float("inf"),
                     f"{f.name} must be a finite number, got {v!r}; pass a real value (default {f.default})")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "max_seq_len"):
            v = getattr(self, name)
            need(isinstance(v, int) and v > 0, f"{name} must be a positive int, got {v!r}")
        need(0 <= self.n_dense_layers <= self.n_layers,
             f"n_dense_layers = {self.n_dense_layers} must be between 0 and n_layers = {self.n_layers}")
        need(self.attn in ("mla", "mha", "gqa"), f"attn must be 'mla', 'mha' or 'gqa', got {self.attn!r}")
        need(self.attn_impl in ("naive", "absorb"), f"attn_impl must be 'naive' or 'absorb', got {self.attn_impl!r}")
        if self.attn in ("mha", "gqa"):
            need(self.dim % self.n_heads == 0,
                 f"dim = {self.dim} is not divisible by n_heads = {self.n_heads} (head size d_h = dim / n_heads); "
                 "change one of them")
            need((self.dim // self.n_heads) % 2 == 0,
                 f"head size dim / n_heads = {self.dim // self.n_heads} is odd; RoPE rotates pairs, so it must be even")
            if self.attn == "mha":
                need(self.n_kv_heads in (0, self.n_heads),
                     f"attn='mha' has one KV head per query head; n_kv_heads = {self.n_kv_heads} "
                     f"should be 0 or {self.n_heads} (use attn='gqa' for fewer KV heads)")
            else:
                need(1 <= self.kv_heads <= self.n_heads and self.n_heads % self.kv_heads == 0,
                     f"n_heads = {self.n_heads} is not divisible by n_kv_heads = {self.n_kv_heads}: every KV head "
                     "must serve the same number of query heads")
        else:
            need(1 <= self.kv_lora_rank <= self.dim,
                 f"kv_lora_rank (d_c) = {self.kv_lora_rank} must be between 1 and dim = {self.dim}: "
                 "a latent wider than the model compresses nothing")
            need(0 <= self.q_lora_rank <= self.dim,
                 f"q_lora_rank = {self.q_lora_rank} must be between 0 (no query compression) and dim = {self.dim}")
            need(self.qk_nope_head_dim >= 1 and self.v_head_dim >= 1,
                 f"qk_nope_head_dim and v_head_dim must be ≥ 1, got {self.qk_nope_head_dim}, {self.v_head_dim}")
            need(self.qk_rope_head_dim >= 2 and self.qk_rope_head_dim % 2 == 0,
                 f"qk_rope_head_dim (d_h^R) = {self.qk_rope_head_dim} must be even and ≥ 2: RoPE rotates pairs")
        uses_dense = self.n_dense_layers > 0 or self.n_routed_experts == 0
        need(not uses_dense or self.inter_dim >= 1, f"inter_dim must be ≥ 1 for the dense layers, got {self.inter_dim}")
        need(self.n_routed_experts >= 0, f"n_routed_experts must be ≥ 0, got {self.n_routed_experts}")
        if self.n_routed_experts > 0:
            n, k = self.n_routed_experts, self.n_activated_experts
            need(self.moe_inter_dim >= 1, f"moe_inter_dim must be ≥ 1, got {self.moe_inter_dim}")
            need(self.n_shared_experts >= 0, f"n_shared_experts must be ≥ 0, got {self.n_shared_experts}")
            need(1 <= k <= n, f"n_activated_experts (top-K) = {k} must be between 1 and n_routed_experts = {n}")
            need(self.n_expert_groups >= 1 and n % self.n_expert_groups == 0,
                 f"n_routed_experts = {n} is not divisible by n_expert_groups = {self.n_expert_groups}")
            need(1 <= self.n_limited_groups <= self.n_expert_groups,
                 f"n_limited_groups = {self.n_limited_groups} must be between 1 and n_expert_groups = {self.n_expert_groups}")
            per_group = n // self.n_expert_groups
            need(k <= self.n_limited_groups * per_group,
                 f"top-{k} is impossible inside {self.n_limited_groups} kept group(s) of {per_group} experts; "
                 "raise n_limited_groups or lower n_activated_experts")
            need(self.balance in BALANCE_MODES, f"balance must be one of {BALANCE_MODES}, got {self.balance!r}")
            need(self.route_scale > 0, f"route_scale must be positive, got {self.route_scale}")
            for name in ("bias_update_speed", "seq_aux_alpha", "aux_loss_alpha"):
                need(getattr(self, name) >= 0, f"{name} must be ≥ 0, got {getattr(self, name)}")
        need(self.mtp_depth >= 0 and self.mtp_lambda >= 0,
             f"mtp_depth and mtp_lambda must be ≥ 0, got {self.mtp_depth}, {self.mtp_lambda}")
        need(self.mtp_depth < self.max_seq_len, f"mtp_depth = {self.mtp_depth} must be < max_seq_len")
        need(self.rope_theta > 1, f"rope_theta must be > 1, got {self.rope_theta}; the usual value is 10000.0")
        need(self.init_std > 0, f"init_std must be positive, got {self.init_std}; GPT-2 uses 0.02")
        need(self.norm_eps > 0, f"norm_eps must be > 0 (it keeps RMSNorm from dividing by zero), got {self.norm_eps}; "
                                "use a small value such as 1e-6")
        need(self.original_seq_len >= 0,
             f"original_seq_len must be ≥ 0, got {self.original_seq_len}; use 0 for no context extension, or the "
             "length the model was pre-trained at (DeepSeek-V3: 4096)")
        need(self.rope_factor >= 1,
             f"rope_factor (YaRN's s) must be ≥ 1, got {self.rope_factor}; use 1.0 for no extension or the ratio "
             "of the new to the pre-training context (DeepSeek-V3: 40)")
        need(self.beta_slow >= 0,
             f"beta_slow must be ≥ 0, got {self.beta_slow}; it counts turns over the pre-training context "
             "(DeepSeek-V3: 1)")
        need(self.beta_fast > self.beta_slow,
             f"beta_fast = {self.beta_fast} must be larger than beta_slow = {self.beta_slow}: pairs turning more "
             "than beta_fast times keep their frequency, fewer than beta_slow times are interpolated "
             "(DeepSeek-V3: 32 and 1)")
        need(self.mscale >= 0, f"mscale must be ≥ 0, got {self.mscale}; DeepSeek-V3 uses 1.0 (0 = no YaRN "
                               "attention temperature)")

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        """Number of key/value heads of the MHA/GQA baselines (n_kv_heads, 0 meaning n_heads)."""
        return self.n_kv_heads or self.n_heads

    @property
    def rope_dim(self) -> int:
        """Size of the rotated part of a head: d_h^R for MLA, the whole head for MHA/GQA."""
        return self.qk_rope_head_dim if self.attn == "mla" else self.dim // self.n_heads

    @property
    def yarn_active(self) -> bool:
        """True when YaRN changes the model: original_seq_len > 0 and max_seq_len > original_seq_len (V3's rule).

        Then the RoPE frequencies are YaRN's (helpers.rope.yarn_frequencies) and the softmax scale is multiplied
        by yarn_mscale(rope_factor, mscale)²; otherwise the YaRN fields change nothing.
        """
        return self.original_seq_len > 0 and self.max_seq_len > self.original_seq_len

    def is_moe_layer(self, layer_id: int) -> bool:
        return self.n_routed_experts > 0 and layer_id >= self.n_dense_layers

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def cpu(cls, **overrides) -> "ModelConfig":
        """The course model: MLA + DeepSeekMoE (8 routed + 1 shared, top-2, 2 groups) + MTP D=1; ~3M params,
        trains in minutes on a 2-core CPU at sequence length 128."""
        return cls(**overrides)

    @classmethod
    def cpu_fast(cls, **overrides) -> "ModelConfig":
        """The course model cut to what two minutes of a 2-core CPU reward: 3 blocks instead of 4, no MTP module.

        Chosen by ``tools/bench_quality.py`` (Shakespeare, nats/char after a wall-clock budget): in a budget of a
        few hundred steps, the steps a smaller model gains are worth more than its lost depth. MTP (a block plus
        a second pass through the 4096-way output head: a third of a step's FLOPs) cost 37% of the steps in one
        120-s run and ended higher (one seed, so suggestive only). Everything else is the course model (MLA,
        DeepSeekMoE, aux-loss-free balancing): the same architecture, only shallower and without D = 1. Train it
        with batch 24 × 64 and lr 6e-3 (bench_quality's defaults). Longer budgets reward something else: by five
        minutes the model has seen Shakespeare 8–9 times, and 4 blocks with weight decay 0.5–1.0 learn more
        (``--seconds 300 --set n_layers=4 --weight-decay 1.0``).
        """
        return cls(**{**dict(n_layers=3, mtp_depth=0), **overrides})

    @classmethod
    def gpu(cls, **overrides) -> "ModelConfig":
        """A larger sibling for a GPU: width 384, 8 blocks, 16 routed experts (top-4 in 2 of 4 groups)."""
        base = dict(dim=384, n_layers=8, n_dense_layers=1, n_heads=6, inter_dim=1024, moe_inter_dim=192,
                    q_lora_rank=192, kv_lora_rank=96, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                    n_routed_experts=16, n_shared_experts=1, n_activated_experts=4, n_expert_groups=4,
                    n_limited_groups=2, max_seq_len=1024)
        return cls(**{**base, **overrides})

    @classmethod
    def dense_tiny(cls, **overrides) -> "ModelConfig":
        """Chapter 01's small model: MHA + dense SwiGLU, no MoE, no MTP; well under 1M parameters."""
        base = dict(dim=64, n_layers=2, n_dense_layers=2, n_heads=4, inter_dim=192, attn="mha",
                    n_routed_experts=0, mtp_depth=0, balance="none", max_seq_len=256)
        return cls(**{**base, **overrides})


def deepseek_v3_config() -> ModelConfig:
    """DeepSeek-V3's published config (671B) as a ModelConfig (for formulas only: never instantiate it).

    max_seq_len = 4096 is the pre-training context (§4.2). The YaRN fields are the published ones (s = 40,
    β_fast = 32, β_slow = 1, mscale 1.0, original 4096), so YaRN is recorded but not active at this length:
    ``deepseek_v3_config().replace(max_seq_len=131072)`` is the 128K model of §4.3, where it is.
    """
    return ModelConfig(vocab_size=129280, dim=7168, n_layers=61, n_dense_layers=3, n_heads=128, inter_dim=18432,
                       moe_inter_dim=2048, attn="mla", q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                       qk_rope_head_dim=64, v_head_dim=128, n_routed_experts=256, n_shared_experts=1,
                       n_activated_experts=8, n_expert_groups=8, n_limited_groups=4, route_scale=2.5,
                       balance="aux_free+seq_aux", bias_update_speed=0.001, seq_aux_alpha=1e-4, mtp_depth=1,
                       mtp_lambda=0.3, max_seq_len=4096, init_std=0.006,
                       original_seq_len=4096, rope_factor=40.0, beta_fast=32, beta_slow=1, mscale=1.0)
