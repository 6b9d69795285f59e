"""scripts/balance_sweep.py (chapter 02.5): the arms differ only in their balancing, the confidence bound that
decides "no loss cost" can fail, and a tiny run is deterministic with a prefix property."""
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import balance_sweep as B  # noqa: E402

TINY = dict(vocab_size=4096, dim=32, n_layers=2, n_dense_layers=0, n_heads=2, inter_dim=48, moe_inter_dim=16,
            q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)


def test_arms_differ_only_in_balancing_and_share_the_init():
    cfgs = {arm: B.arm_config(arm, 32, TINY) for arm in B.ARMS}
    base = cfgs["none"].to_dict()
    diff = {arm: {k for k, v in c.to_dict().items() if v != base[k]} for arm, c in cfgs.items()}
    assert diff["none"] == set() and all(cfg.mtp_depth == 0 for cfg in cfgs.values())
    assert all(d <= {"balance", "aux_loss_alpha", "seq_aux_alpha", "bias_update_speed"} for d in diff.values())
    assert [cfgs[a].aux_loss_alpha for a in ("aux_1e-3", "aux_1e-2", "aux_1e-1")] == [1e-3, 1e-2, 1e-1]
    v3 = cfgs["v3"]
    assert (v3.balance, v3.seq_aux_alpha, v3.bias_update_speed) == ("aux_free+seq_aux", 1e-4, 1e-3)
    assert v3.n_expert_groups > 1 and v3.n_limited_groups < v3.n_expert_groups          # group-limited routing
    ref = B.build_model(cfgs["none"], 5).state_dict()
    for arm in B.ARMS:
        assert all(torch.equal(v, ref[k]) for k, v in B.build_model(cfgs[arm], 5).state_dict().items()), arm
    with pytest.raises(ValueError, match="arm must be one of"):
        B.arm_overrides("aux")
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        B.arm_overrides("free", gamma=0.0)


@pytest.mark.parametrize("p", [0.9, 0.95, 0.975])
def test_t_quantile_matches_closed_forms(p):
    # df = 1 is the Cauchy distribution: tan(π(p − 1/2)); df = 2: (2p − 1)·√(2 / (4p(1 − p)))
    assert B.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-5)
    assert B.t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-6)
    assert B.t_quantile(1 - p, 4) == pytest.approx(-B.t_quantile(p, 4))
    # large df tends to the normal quantile (statistics.NormalDist, an independent implementation)
    assert B.t_quantile(p, 2000) == pytest.approx(statistics.NormalDist().inv_cdf(p), abs=2e-3)
    assert B.t_quantile(0.95, 4) == pytest.approx(2.131847, abs=1e-5)         # printed t tables


def test_loss_cost_can_pass_fail_and_stay_undecided():
    tight = B.loss_cost([0.001, -0.002, 0.0, 0.002, -0.001], margin=0.02)
    assert tight["no_loss_cost"] and not tight["costs"] and tight["verdict"] == "no cost ≥ δ"
    t = B.t_quantile(0.95, 4)
    assert tight["upper"] == pytest.approx(0.0 + t * statistics.stdev([0.001, -0.002, 0.0, 0.002, -0.001]) / math.sqrt(5))
    cost = B.loss_cost([0.05, 0.06, 0.055], margin=0.02)
    assert not cost["no_loss_cost"] and cost["costs"] and cost["verdict"] == "costs"
    noisy = B.loss_cost([-0.03, 0.04, 0.0], margin=0.02)
    assert not noisy["no_loss_cost"] and not noisy["costs"] and "undecided" in noisy["text"]
    with pytest.raises(ValueError, match="at least 2"):
        B.loss_cost([0.1])
    with pytest.raises(ValueError, match="margin must be > 0"):
        B.loss_cost([0.1, 0.2], margin=0)


def _fake_run(arm, seed, loss, mv):
    losses = {"shakespeare": loss + 1, "code": loss + 1, "arithmetic": loss - 2}
    losses["mean"] = statistics.fmean(losses.values())
    return {"arm": arm, "seed": seed, "steps": 10, "tokens": 100, "maxvio_last": mv, "tokens_per_s": 1.0,
            "final": {"losses": losses, "maxvio": mv, "seq_maxvio": mv + 0.2}, "val_steps": [5, 10],
            "val_curves": {k: [9.0, v] for k, v in losses.items()}, "curve_steps": [1, 2], "train_curve": [8.0, 7.0],
            "bal_curve": [0.0, 0.0], "maxvio_curve": [1.0, mv]}


def test_summarize_tradeoff_and_verdicts():
    noise = [0.0, 0.01, -0.01]
    runs = []
    for s in range(3):
        runs += [_fake_run("none", s, 4.0 + noise[s], 1.5 + 0.1 * s), _fake_run("aux_1e-1", s, 4.1 + noise[s], 0.1),
                 _fake_run("aux_1e-2", s, 4.0 + noise[s] + 0.001 * s, 0.3), _fake_run("v3", s, 4.0 + noise[s], 0.2)]
    out = B.summarize(runs, {"val_loss": 4.5}, margin=0.02)
    assert set(out["vs_none"]) == {"aux_1e-1", "aux_1e-2", "v3"} and set(out["v3_vs_aux"]) == {"aux_1e-1", "aux_1e-2"}
    assert out["vs_none"]["aux_1e-1"]["cost"]["verdict"] == "costs"                 # +0.1 in every seed
    assert out["vs_none"]["v3"]["cost"]["no_loss_cost"]                             # identical losses
    assert out["vs_none"]["v3"]["maxvio"]["winner"] == "v3"
    assert [r["alpha"] for r in out["tradeoff"]] == [0.0, 1e-2, 1e-1]               # α = 0 is "none"
    assert out["tradeoff"][0]["dloss"] is None and out["tradeoff"][2]["dloss"] == pytest.approx(0.1)
    assert out["v3_vs_aux"]["aux_1e-1"]["loss"]["winner"] == "v3"
    assert [c["claim"][:30] for c in B.claims(out)] == ["aux-loss-free balancing balanc", "... without hurting the model "]
    res = {"runs": runs}
    assert B.arm_curves(res, "v3", "maxvio")[0][2] == [1.0, 0.2]
    assert B.arm_curves(res, "none", "val", "code")[1] == (1, [5, 10], [9.0, 5.01])
    with pytest.raises(ValueError, match="is not in the sweep"):
        B.arm_curves(res, "free")


SMALL = dict(steps=4, batch_size=2, block_size=32, lr=3e-3, warmup_steps=1, decay_frac=0.5, eval_every=2,
             eval_batches=1, curve_every=1, gamma=1e-3, v3_alpha=1e-4, seq_alpha=1e-2, model=TINY)


def test_run_arm_is_deterministic_and_stop_after_is_a_prefix():
    torch.set_num_threads(1)
    a = B.run_arm("v3", 0, **SMALL)
    b = B.run_arm("v3", 0, **SMALL)
    c = B.run_arm("v3", 0, stop_after=2, **SMALL)
    assert a["train_curve"] == b["train_curve"] and a["final"] == b["final"] is not None
    assert a["maxvio_curve"] == b["maxvio_curve"] and a["loads"] == b["loads"]
    assert c["steps_done"] == 2 and c["train_curve"] == a["train_curve"][:2]
    assert c["final"]["losses"]["mean"] == a["val_curves"]["mean"][0]
    assert a["val_steps"] == [2, 4] and a["tokens"] == 4 * 2 * 32
    assert all(x > 0 for x in a["bal_curve"]) and a["bias_final"] != [[0.0] * 8] * 2     # both mechanisms ran
    n = B.run_arm("none", 0, **SMALL)
    assert n["bal_curve"] == [0.0] * 4 and n["bias_final"] == [[0.0] * 8] * 2
    assert n["train_curve"][0] == a["train_curve"][0]                 # same weights, same first batch
    # every routed slot of the validation windows is counted once per layer
    per_domain = 1 * 16 * 32 * 2
    assert all(sum(layer) == per_domain for d in B.DOMAINS for layer in a["loads"][d])


def test_main_writes_the_file_and_merge_adds_seeds(tmp_path):
    out = tmp_path / "bal.json"
    tiny = ["--steps", "2", "--eval-every", "2", "--warmup-steps", "1", "--batch-size", "2", "--block-size", "16",
            "--eval-batches", "1", "--dim", "64", "--arms", "none", "v3", "--out", str(out)]
    first = B.main([*tiny, "--seeds", "0", "1"])
    assert first["config"]["arms"] == ["none", "v3"] and len(first["runs"]) == 4
    assert "v3" in first["summary"]["vs_none"] and first["random_maxvio"]["seq"]["mean"] > 0
    both = B.main([*tiny, "--seeds", "2", "--merge"])
    assert both["config"]["seeds"] == [0, 1, 2] and len(both["runs"]) == 6
    assert both["command"].count("python scripts/balance_sweep.py") == 2
    kept = [r for r in both["runs"] if r["seed"] < 2]
    assert kept == json.loads(json.dumps(first["runs"]))                       # kept as they were
    assert json.loads(out.read_text())["summary"]["vs_none"]["v3"]["cost"]["n"] == 3
    with pytest.raises(SystemExit):                                            # another config cannot be merged
        B.main([*tiny, "--seeds", "3", "--merge", "--lr", "1e-3"])
