"""The two benchmark tools: the work they count and the metric they report, checked against exact formulas."""
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from helpers.model import ModelConfig, Transformer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))   # the same import as test_grading.py
import bench_quality  # noqa: E402
import bench_throughput  # noqa: E402


def test_counted_step_flops_are_6N_per_token_plus_attention():
    """A dense MHA model's forward + backward is exactly 6 FLOPs per matmul weight per token (2 forward, 2 for the
    input gradient, 2 for the weight gradient) plus attention's T² terms: QKᵀ and AV, 2·B·H·T²·d_h each forward,
    three times that with their backward."""
    cfg = ModelConfig.dense_tiny()
    model = Transformer(cfg)
    B, T = 2, 16
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(0, cfg.vocab_size, (B, T), generator=g) for _ in range(2))
    matmul_weights = sum(p.numel() for p in model.parameters() if p.dim() == 2) - model.num_params()["embedding"]
    d_h = cfg.dim // cfg.n_heads
    expected = 6 * matmul_weights * B * T + 3 * 2 * (2 * B * cfg.n_heads * T * T * d_h) * cfg.n_layers
    assert bench_throughput.step_flops(model, x, y) == expected
    assert all(p.grad is None for p in model.parameters())          # it leaves no gradients behind


def test_throughput_table_prints_the_ceiling_its_numbers_give(capsys):
    r = bench_throughput.main(["--preset", "dense_tiny", "--batch", "2", "--seq", "16", "--steps", "1",
                               "--rounds", "1", "--warmup", "1", "--matmul-n", "256"])
    out = capsys.readouterr().out
    assert r["tokens_per_s"] > 0 and r["reference_tokens_per_s"] > 0 and r["step_flops"] > 0
    ceiling = r["step_s"][False] / (r["step_flops"] / r["peak_flops"])   # reference step ÷ its work at peak
    assert re.search(rf"\| ceiling: reference step / step at peak +\| {ceiling:.2f}× ", out)


class Uniform(torch.nn.Module):
    """Logits all zero: every token gets probability 1/V."""
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return {"logits": torch.zeros(*x.shape, self.vocab)}


def test_nats_per_char_of_a_uniform_model_is_ln_V_per_predicted_token():
    """Every token predicted once (windows, then the tail), each costing ln V nats, divided by the characters."""
    val = torch.arange(103) % 50
    for seq in (10, 17, 103):
        npc, n_pred = bench_quality.nats_per_char(Uniform(64), val, seq, n_chars=300, batch=4)
        assert n_pred == 102                                        # every token but the first
        assert math.isclose(npc, 102 * math.log(64) / 300, rel_tol=1e-6)


def test_set_overrides_are_typed_and_bad_ones_are_named():
    assert bench_quality.parse_set(["dim=96", "route_scale=2.5", "attn=mha", "init_std=1e-2"]) == \
        {"dim": 96, "route_scale": 2.5, "attn": "mha", "init_std": 0.01}
    for bad, match in [("depth=3", "one of ModelConfig's fields"), ("dim", "FIELD=VALUE"),
                       ("dim=9.5", "dim takes a int")]:
        with pytest.raises(ValueError, match=match):
            bench_quality.parse_set([bad])


def test_quality_bench_trains_the_preset_and_reports_what_it_ran(capsys):
    r = bench_quality.main(["--steps", "2", "--batch", "2", "--seq", "32", "--set", "n_layers=1"])
    assert r["steps"] == 2 and r["preset"] == "cpu_fast" and r["config"] == {"n_layers": 1}
    _, val, chars = bench_quality.shakespeare()
    assert r["val_tokens"] == len(val) - 1 and r["val_chars"] == chars      # every val token but the first
    uniform = math.log(4096) * r["val_tokens"] / r["val_chars"]                # what guessing costs per character
    assert abs(r["nats_per_char"] - uniform) < 0.2 * uniform                  # two steps: still near guessing
    with pytest.raises(SystemExit):
        bench_quality.main(["--seconds", "0"])
