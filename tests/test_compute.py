"""helpers.compute: the report's Table 1 (exact sums), 6N and the attention term against brute-force FLOP counts,
inverse functions that round-trip, bad inputs; and the sweep logic of scripts/lr_sweep.py."""
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode

from helpers import compute as C
from helpers.attention import causal_mask
from helpers.config import ModelConfig, deepseek_v3_config
from helpers.model import Transformer, count_params
from helpers.moe import Gate
from helpers.optim import DEEPSEEK_V3_SCHEDULE, deepseek_v3_batch_size, deepseek_v3_lr
from helpers.runtime import use_fast_path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import lr_sweep  # noqa: E402


def tiny(**kw):
    base = dict(vocab_size=64, dim=32, n_layers=3, n_dense_layers=1, n_heads=2, inter_dim=48, moe_inter_dim=16,
                q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                n_routed_experts=4, n_activated_experts=2, n_expert_groups=2, n_limited_groups=1, mtp_depth=0,
                max_seq_len=16)
    return ModelConfig.cpu(**{**base, **kw})


VARIANTS = {
    "mla+moe": {},
    "mla, no query compression": dict(q_lora_rank=0),
    "mha dense": dict(attn="mha", n_routed_experts=0, n_dense_layers=3),
    "gqa+moe": dict(attn="gqa", n_heads=4, n_kv_heads=2),
    "moe, 2 shared": dict(n_shared_experts=2),
}


# -- the report's numbers ------------------------------------------------------------------------------------
def test_table1_sums_are_exact():
    t = C.report_table1()
    assert t["total_gpu_hours"] == 2_664_000 + 119_000 + 5_000 == 2_788_000 == C.REPORT_TOTAL_GPU_HOURS
    assert t["total_cost"] == 5_576_000 == C.REPORT_TOTAL_COST                     # $5.576M at $2/GPU-hour
    assert [r["cost"] for r in t["rows"].values()] == [5_328_000, 238_000, 10_000]
    assert sum(r["cost"] for r in t["rows"].values()) == t["total_cost"]


def test_gpu_hours_per_trillion_tokens():
    t = C.report_table1()
    assert t["pretrain_from_rate"] == pytest.approx(C.REPORT_GPU_HOURS["pre_training"], rel=1e-12)   # 180K × 14.8
    assert round(t["days_per_trillion"], 1) == C.REPORT_DAYS_PER_TRILLION                             # 3.7 days
    assert t["pretrain_days"] < 61                                                  # "less than two months"


def test_v3_flops_per_token_near_the_published_250_gflops():
    f = C.training_flops_per_token(deepseek_v3_config(), 4096, mtp=False)
    assert f["total"] == pytest.approx(C.REPORT_FLOPS_PER_TOKEN, rel=0.02)
    # 6N with N = matmul params is 6 × (active − embedding − norm gains): close to the report's 6 × 37B
    assert f["matmul"] == pytest.approx(C.six_n(C.REPORT_ACTIVE_PARAMS), rel=0.02)


@pytest.mark.parametrize("cfg", [ModelConfig.cpu(), deepseek_v3_config(), *[tiny(**v) for v in VARIANTS.values()]])
def test_matmul_params_is_active_minus_lookups_and_gains(cfg):
    c = count_params(cfg)
    gains = cfg.n_layers * 2 * cfg.dim + cfg.dim
    if cfg.attn == "mla":
        gains += cfg.n_layers * (cfg.kv_lora_rank + cfg.q_lora_rank)
    assert C.matmul_params(cfg)["main"] == c["active_main"] - c["embedding"] - gains


# -- 6N and the attention term against brute force ---------------------------------------------------------------
def _linear_macs(model, idx):
    """Multiply-adds of every nn.Linear (and the router's linear map) in one forward pass, counted with hooks."""
    macs = [0]

    def hook(mod, inp, out):
        x, w = inp[0], mod.weight
        macs[0] += (x.numel() // x.shape[-1]) * w.shape[0] * w.shape[1]
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Linear, Gate))]
    try:
        with use_fast_path(False), torch.no_grad():
            model(idx)
    finally:
        for h in hooks:
            h.remove()
    return macs[0]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_six_n_against_hooked_linear_layers(name):
    """Forward multiply-adds per token of all linear layers == N (each weight used once per token): 2N forward FLOPs."""
    torch.manual_seed(0)
    cfg = tiny(**VARIANTS[name])
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 16))
    assert _linear_macs(model, idx) == idx.numel() * C.matmul_params(cfg)["main"]


@pytest.mark.parametrize("name", ["mla+moe", "mha dense"])
@pytest.mark.parametrize("mtp_depth", [0, 1, 2])
def test_training_flops_against_torch_flop_counter(name, mtp_depth):
    """Forward + backward of the written-out path (full T × T scores, then the mask), counted by PyTorch's
    FlopCounterMode, equals tokens × training_flops_per_token(causal=False) exactly, MTP modules included."""
    torch.manual_seed(0)
    cfg = tiny(**VARIANTS[name], mtp_depth=mtp_depth)
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    with use_fast_path(False), FlopCounterMode(display=False) as fc:
        model(idx, targets=idx)["loss"].backward()
    assert fc.get_total_flops() == pytest.approx(idx.numel() * C.training_flops_per_token(cfg, 16, causal=False)["total"],
                                                 rel=1e-12)


@pytest.mark.parametrize("t", [1, 2, 7, 64, 4096])
def test_causal_attention_counts_the_unmasked_pairs(t):
    pairs = int(causal_mask(t, 0).sum()) if t > 1 else 1
    cfg = ModelConfig.cpu(max_seq_len=4096)
    ratio = C.attention_flops_per_token(cfg, t, causal=True) / C.attention_flops_per_token(cfg, t, causal=False)
    assert ratio == pytest.approx(pairs / t ** 2)                          # T(T+1)/2 pairs of T² computed
    per = C.attention_flops_per_token(cfg, t, backward=False) / cfg.n_layers
    h, d = cfg.n_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim
    assert per == pytest.approx(2 * h * d * pairs / t)


def test_run_flops_scales_with_tokens():
    cfg = ModelConfig.cpu(max_seq_len=256)
    a, b = C.run_flops(cfg, 16, 256, 2000), C.run_flops(cfg, 16, 256, 1000)
    assert a["tokens"] == 16 * 256 * 2000 and a["flops"] == pytest.approx(2 * b["flops"])
    assert a["flops_per_token"]["mtp"] > 0 and C.run_flops(cfg, 16, 256, 1, mtp=False)["flops_per_token"]["mtp"] == 0


# -- time, utilisation, money -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(flops=st.floats(1e10, 1e26), peak=st.floats(1e9, 1e16), m=st.floats(0.01, 1.0), n=st.integers(1, 10_000))
def test_inverses_round_trip(flops, peak, m, n):
    h = C.gpu_hours(flops, peak, m)
    assert C.implied_mfu(flops, h, peak) == pytest.approx(m, rel=1e-12)
    assert C.wall_clock_days(h, n) * n * 24 == pytest.approx(h, rel=1e-12)
    assert C.mfu(flops, h * 3600, peak) == pytest.approx(m, rel=1e-12)


def test_v3_mfu_in_a_plausible_range():
    flops = C.REPORT_PRETRAIN_TOKENS * C.six_n(C.REPORT_ACTIVE_PARAMS)
    m = C.implied_mfu(flops, C.REPORT_GPU_HOURS["pre_training"], C.H800_BF16_DENSE_FLOPS)
    assert m == pytest.approx(flops / (2_664_000 * 3600 * 989e12))
    assert 0.2 < m < 0.6                       # a large MoE run: well below the peak, far above nothing
    assert C.H800_FP8_DENSE_FLOPS == pytest.approx(2 * C.H800_BF16_DENSE_FLOPS, rel=1e-3)


def test_v3_steps_closed_form_against_step_by_step():
    s, tok, steps = DEEPSEEK_V3_SCHEDULE, 0.0, 0
    while tok < s["batch_ramp_tokens"]:
        tok += deepseek_v3_batch_size(tok) * s["seq_len"]
        steps += 1
    assert C.v3_steps_at(tok) == pytest.approx(steps, rel=2e-3)
    total = steps + (s["total_tokens"] - tok) / (s["batch_end"] * s["seq_len"])
    assert C.v3_steps_at(s["total_tokens"]) == pytest.approx(total, rel=1e-4)
    assert C.v3_steps_at(0) == 0
    after = C.v3_steps_at(1e12) - C.v3_steps_at(0.9e12)
    assert after == pytest.approx(0.1e12 / (15360 * 4096))


def test_v3_progress():
    p = C.v3_progress(14.8e12)
    assert p["gpu_hours"] == pytest.approx(2_664_000) and p["cost"] == pytest.approx(5_328_000) and p["share"] == 1
    q = C.v3_progress(5e12)
    assert q["lr"] == deepseek_v3_lr(5e12) == 2.2e-4 and q["batch"] == 15360


def test_deepseek_llm_hparams():
    r = C.deepseek_llm_hparams(1e20)
    assert r["lr"] == pytest.approx(0.3118 * 1e20 ** -0.125) and r["batch_tokens"] == pytest.approx(0.2920 * 1e20 ** 0.3271)
    small, big = C.deepseek_llm_hparams(1e17), C.deepseek_llm_hparams(1e24)
    assert big["lr"] < small["lr"] and big["batch_tokens"] > small["batch_tokens"]
    # halving the learning rate takes 2^8 = 256x the compute (exponent -1/8)
    assert C.deepseek_llm_hparams(256e20)["lr"] == pytest.approx(r["lr"] / 2)


def test_measure_matmul_peak():
    r = C.measure_matmul_peak(n=64, repeats=3)
    assert r["flops_per_s"] > 0 and math.isfinite(r["flops_per_s"])
    assert r["flops_per_s"] == pytest.approx(2 * 64 ** 3 / (r["ms"] / 1e3))
    assert r["threads"] == torch.get_num_threads() and r["dtype"] == "float32"


BAD = [
    (lambda: C.gpu_hours(-1, 1e12, 0.4), ValueError, r"gpu_hours: flops must be a finite number > 0, got -1"),
    (lambda: C.gpu_hours(1e20, 1e12, 0), ValueError, r"mfu must be a fraction in \(0, 1\].*e\.g\. 0\.4"),
    (lambda: C.gpu_hours(1e20, 1e12, 1.5), ValueError, r"mfu must be a fraction in \(0, 1\], got 1\.5"),
    (lambda: C.gpu_hours(1e20, float("nan"), 0.4), ValueError, r"peak_flops must be a finite number > 0.*H800"),
    (lambda: C.implied_mfu(1e20, 0, 1e12), ValueError, r"gpu_hours_spent must be a finite number > 0, got 0"),
    (lambda: C.mfu(1e9, True, 1e12), ValueError, r"seconds must be a finite number > 0, got True"),
    (lambda: C.wall_clock_days(100, 0), ValueError, r"n_gpus must be an int ≥ 1, got 0"),
    (lambda: C.cost_usd(-5), ValueError, r"gpu_hours_spent must be a finite number ≥ 0, got -5"),
    (lambda: C.cost_usd(5, 0), ValueError, r"price_per_gpu_hour must be a finite number > 0"),
    (lambda: C.six_n(float("inf")), ValueError, r"six_n: n_params must be a finite number > 0.*37e9"),
    (lambda: C.matmul_params("cpu"), TypeError, r"cfg must be a helpers.config.ModelConfig, got str.*ModelConfig.cpu"),
    (lambda: C.training_flops_per_token(ModelConfig.cpu(), 0), ValueError, r"seq_len must be an int ≥ 1, got 0"),
    (lambda: C.training_flops_per_token(ModelConfig.cpu(), 1024), ValueError,
     r"seq_len = 1024 exceeds the model's max_seq_len = 512.*replace\(max_seq_len=1024\)"),
    (lambda: C.run_flops(ModelConfig.cpu(), 16, 64, 2.5), ValueError, r"steps must be an int ≥ 1, got 2.5"),
    (lambda: C.v3_steps_at(-1), ValueError, r"tokens must be a number in \[0, 1.48e\+13\]"),
    (lambda: C.v3_steps_at(2e13), ValueError, r"tokens must be a number in \[0, 1.48e\+13\]"),
    (lambda: C.v3_progress(float("nan")), ValueError, r"tokens must be a number in"),
    (lambda: C.deepseek_llm_hparams(0), ValueError, r"compute_flops must be a finite number > 0.*C = M·D"),
    (lambda: C.measure_matmul_peak(n=4), ValueError, r"n must be an int ≥ 16, got 4"),
    (lambda: C.measure_matmul_peak(dtype=torch.int32), TypeError, r"dtype must be a floating torch.dtype.*float32"),
]


@pytest.mark.parametrize("call,exc,msg", BAD, ids=[m for _, _, m in BAD])
def test_bad_inputs(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


# -- the sweep's logic (scripts/lr_sweep.py) ----------------------------------------------------------------------
def test_default_lrs_span_30x_log_spaced():
    lrs = lr_sweep.default_lrs()
    assert len(lrs) == 5 and lrs[0] == 1e-3 and lrs[-1] == 3e-2
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) / min(ratios) < 1.01
    with pytest.raises(ValueError, match="need 0 < lo < hi"):
        lr_sweep.default_lrs(1e-2, 1e-3)


def test_spike_stats():
    assert lr_sweep.spike_stats([1.0] * 30) == {"grad_spikes": 0, "first_grad_spike": None, "max_grad_ratio": 1.0}
    g = [1.0] * 30
    g[7], g[20] = 50.0, 11.0
    assert lr_sweep.spike_stats(g) == {"grad_spikes": 2, "first_grad_spike": 8, "max_grad_ratio": 50.0}
    assert lr_sweep.spike_stats(g, ratio=20)["grad_spikes"] == 1
    assert lr_sweep.spike_stats([])["grad_spikes"] == 0


def _row(lr, vals, diverged=0):
    import statistics
    return {"lr": lr, "n": len(vals), "n_diverged": diverged, "mean": statistics.mean(vals),
            "std": statistics.stdev(vals), "per_seed": dict(enumerate(vals))}


def test_verdict_names_a_winner_only_outside_the_spread():
    v = lr_sweep.verdict([_row(1e-3, [4.5, 4.6, 4.4]), _row(3e-3, [4.0, 4.02, 3.98]), _row(1e-2, [4.3, 4.32, 4.28])])
    assert v["resolved"] and v["best"] == 3e-3 and v["runner_up"] == 1e-2
    assert v["paired_diffs"] == pytest.approx([0.3, 0.3, 0.3])
    w = lr_sweep.verdict([_row(1e-3, [4.1, 4.3, 3.9]), _row(3e-3, [4.0, 4.2, 3.9]), _row(1e-2, [5, 5.1, 5.2])])
    assert not w["resolved"] and "no measurable difference" in w["text"] and set(w["flat_range"]) == {1e-3, 3e-3}
    # a learning rate with a diverged seed is never named, however low its mean
    x = lr_sweep.verdict([_row(1e-3, [4.1, 4.11, 4.12]), _row(3e-3, [3.0, 3.01, 3.02], diverged=1),
                          _row(1e-2, [4.5, 4.51, 4.52])])
    assert x["best"] == 1e-3


def test_sweep_curves_and_its_errors():
    runs = [{"lr": lr, "seed": s, "val_steps": [10, 20], "val_curve": [5.0, 4.0 + lr],
             "val_curves": {d: [5.0, 4.0] for d in lr_sweep.DOMAINS}, "curve_steps": [1, 2], "train_curve": [8, 7],
             "grad_norm_curve": [1, 1], "diverged": None} for lr in (1e-3, 1e-2) for s in (0, 1, 2)]
    res = {"runs": runs}
    c = lr_sweep.sweep_curves(res, 1e-2)
    assert [x[0] for x in c] == [0, 1, 2] and c[0][2] == [5.0, 4.01] and c[0][3] is None
    assert lr_sweep.sweep_curves(res, 1e-3, kind="train")[1][2] == [8, 7]
    with pytest.raises(ValueError, match=r"lr 0.5 is not in the sweep; choose one of \[0.001, 0.01\]"):
        lr_sweep.sweep_curves(res, 0.5)
    with pytest.raises(ValueError, match="kind must be"):
        lr_sweep.sweep_curves(res, 1e-3, kind="loss")
    with pytest.raises(ValueError, match="domain must be 'mean' or one of"):
        lr_sweep.sweep_curves(res, 1e-3, domain="maths")


SMALL = dict(steps=6, batch_size=4, block_size=32, warmup_steps=2, schedule="wsd", decay_frac=0.2, eval_every=3,
             eval_batches=1, curve_every=1, model=dict(dim=32, n_layers=2, n_heads=2, q_lora_rank=16, kv_lora_rank=16, mtp_depth=0))


def test_run_one_is_deterministic_and_stop_after_is_a_prefix():
    a = lr_sweep.run_one(3e-3, 0, **SMALL)
    b = lr_sweep.run_one(3e-3, 0, **SMALL)
    c = lr_sweep.run_one(3e-3, 0, stop_after=3, **SMALL)
    assert a["train_curve"] == b["train_curve"] and a["final_val"] == b["final_val"] is not None
    assert c["steps_done"] == 3 and c["train_curve"] == a["train_curve"][:3] and c["val_curve"] == a["val_curve"][:1]
    assert c["final_val"] == a["val_curve"][0]          # evaluated at step 3, as the full run was
    assert a["tokens"] == 6 * 4 * 32 and a["diverged"] is None and len(a["curve_steps"]) == 6


def test_run_one_records_a_divergence_instead_of_raising(monkeypatch):
    real = lr_sweep.train

    def exploding(model, sampler, cfg, **kw):
        steps = {"n": 0}
        cb = kw["callback"]

        def callback(step, hist):
            cb(step, hist)
            steps["n"] = step
            if step == 2:
                raise FloatingPointError("training loss became nan at step 2")
        return real(model, sampler, cfg, **{**kw, "callback": callback})
    monkeypatch.setattr(lr_sweep, "train", exploding)
    r = lr_sweep.run_one(3e-3, 0, **SMALL)
    assert r["diverged"]["step"] == 3 and "nan" in r["diverged"]["error"] and r["final_val"] is None
    assert r["steps_done"] == 2


def test_probe_lr_works_on_copies():
    r = lr_sweep.run_one(3e-3, 0, keep_state=True, **SMALL)
    st = r["state"]
    before = [p.detach().clone() for p in st["model"].parameters()]
    gen_state = st["sampler"].state_dict()
    p1, p2 = lr_sweep.probe_lr(st, 1e-2, steps=2), lr_sweep.probe_lr(st, 1e-2, steps=2)
    assert p1 == p2 and p1["val_before"] == pytest.approx(r["final_val"]) and len(p1["train_loss"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, st["model"].parameters()))
    assert all(torch.equal(gen_state[k], st["sampler"].state_dict()[k]) for k in gen_state)
    with pytest.raises(ValueError, match="probe_lr: lr must be a finite number > 0"):
        lr_sweep.probe_lr(st, 0.0)
