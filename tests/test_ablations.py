"""scripts/ablations.py (chapter 04.5): the arms differ only where they should, equal-token and equal-FLOP
accounting, the statistics that decide a winner, and a tiny run that is deterministic with a prefix property."""
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.compute import run_flops
from helpers.config import deepseek_v3_config
from helpers.model import Transformer
from helpers.runtime import seed_everything

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import ablations as A  # noqa: E402

TINY = dict(vocab_size=4096, dim=32, n_layers=3, n_dense_layers=1, n_heads=2, inter_dim=48, moe_inter_dim=16,
            q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)


def test_arms_differ_only_in_mtp_and_balancing():
    cfgs = {arm: A.arm_config(arm, 32, TINY) for arm in A.ARMS}
    base = cfgs["A"].to_dict()
    diff = {arm: {k for k, v in c.to_dict().items() if v != base[k]} for arm, c in cfgs.items()}
    assert diff == {"A": set(), "B": {"mtp_depth"}, "B_flops": {"mtp_depth"}, "C": {"balance"},
                    "N": {"mtp_depth", "balance"}}
    assert cfgs["N"].balance == "none"
    assert cfgs["A"].balance == "aux_free" and cfgs["A"].mtp_depth == 1 and cfgs["A"].mtp_lambda == 0.3
    assert cfgs["C"].balance == "aux" and cfgs["C"].aux_loss_alpha == A.DEFAULTS["aux_alpha"]


def test_mtp_off_has_no_mtp_parameters_and_shares_the_main_models_init():
    with_mtp = A.build_model(A.arm_config("A", 32, TINY), 3)
    without = A.build_model(A.arm_config("B", 32, TINY), 3)
    aux = A.build_model(A.arm_config("C", 32, TINY), 3)
    assert without.num_params()["mtp"] == 0 and not any(k.startswith("mtp.") for k in without.state_dict())
    assert with_mtp.num_params()["mtp"] > 0
    own = without.state_dict()
    for k, v in with_mtp.state_dict().items():
        if not k.startswith("mtp."):
            assert torch.equal(v, own[k]), k          # every arm starts from the same main-model weights
    for k, v in aux.state_dict().items():
        assert torch.equal(v, with_mtp.state_dict()[k]), k     # C: same main model and same MTP module as A
    seed_everything(3)
    plain = Transformer(A.arm_config("B", 32, TINY))
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in own.items())     # = a plain seeded build


def test_equal_flops_steps():
    a, b = A.arm_config("A", 128), A.arm_config("B", 128)
    eq = A.equal_flops_steps(a, b, 100, 16, 128)
    per_step_b = run_flops(b, 16, 128, 1)["flops"]
    assert eq["ratio"] > 1 and eq["steps"] == round(100 * eq["ratio"])
    assert abs(eq["flops_plain"] - eq["flops_mtp"]) <= per_step_b / 2       # equal within half a step
    # at DeepSeek-V3's size the MTP module costs a few percent, not most of a model (formulas only)
    v3 = deepseek_v3_config()
    big = A.equal_flops_steps(v3, v3.replace(mtp_depth=0), 1000, 1, 4096)
    assert 1.02 < big["ratio"] < 1.06


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match=r"arm must be one of \('A', 'B', 'B_flops', 'C', 'N'\), got 'D'"):
        A.arm_overrides("D")
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        A.arm_overrides("A", gamma=-1.0)
    with pytest.raises(ValueError, match="need at least 2 seeds"):
        A.compare({0: 1.0}, {0: 2.0})
    with pytest.raises(ValueError, match="got no values"):
        A.stats([])


def test_stats_and_seeds_needed():
    s = A.stats([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["se"] == pytest.approx(1 / math.sqrt(3))
    assert A.stats([5.0])["std"] is None
    # se = sd/√n reaches δ/2 at n = (2·sd/δ)²: sd 0.01, δ 0.005 → 16 seeds
    assert A.seeds_needed(0.01, 0.005) == 16 and A.seeds_needed(None) is None


@settings(max_examples=40, deadline=None)
@given(st.floats(0.001, 0.1), st.floats(0.001, 0.05))
def test_seeds_needed_is_enough(sd, delta):
    n = A.seeds_needed(sd, delta)
    assert sd / math.sqrt(n) <= delta / 2 + 1e-12
    assert n == 2 or sd / math.sqrt(n - 1) > delta / 2


def test_compare_names_a_winner_only_outside_the_spread():
    clear = A.compare({0: 4.0, 1: 4.02, 2: 3.98}, {0: 4.2, 1: 4.21, 2: 4.19}, "B")
    assert clear["measurable"] and clear["winner"] == "A" and clear["gap"] == pytest.approx(0.2)
    assert clear["paired_diffs"] == pytest.approx([0.2, 0.19, 0.21])
    better = A.compare({0: 4.2, 1: 4.21, 2: 4.19}, {0: 4.0, 1: 4.02, 2: 3.98}, "C")
    assert better["winner"] == "C"
    noisy = A.compare({0: 4.0, 1: 4.1, 2: 3.9}, {0: 4.01, 1: 4.12, 2: 3.93}, "B")
    assert not noisy["measurable"] and noisy["winner"] is None and "no measurable difference" in noisy["text"]
    d = statistics.stdev([0.01, 0.02, 0.03])
    assert noisy["paired_std"] == pytest.approx(d) and noisy["seeds_needed"] == A.seeds_needed(d)
    assert noisy["same_sign"] and noisy["seeds_needed_unpaired"] == math.ceil(2 * (2 * 0.1 / 0.005) ** 2 - 1e-6)
    mixed = A.compare({0: 1.0, 1: 1.0, 2: 1.0}, {0: 1.1, 1: 0.9, 2: 1.0}, "B", delta=None)
    assert not mixed["same_sign"] and mixed["seeds_needed"] is None and "mixed signs" in mixed["text"]


def _fake_run(arm, seed, mean, mv):
    final = {"shakespeare": mean + 1, "code": mean + 1, "arithmetic": mean - 2}
    final["mean"] = statistics.fmean(final.values())
    return {"arm": arm, "seed": seed, "steps": 10, "tokens": 100, "final": final, "maxvio_last": mv,
            "val_maxvio": {"all": mv}, "tokens_per_s": 1000.0, "val_steps": [5, 10],
            "val_curves": {**{d: [9.0, final[d]] for d in A.DOMAINS}, "mean": [9.0, final["mean"]]},
            "curve_steps": [1, 2], "train_curve": [8.0, 7.0], "maxvio_curve": [1.0, mv]}


def test_summarize_and_arm_curves():
    runs = [_fake_run("A", s, 4.0 + 0.01 * s, 0.1) for s in range(3)]
    runs += [_fake_run("C", s, 4.0 + 0.01 * s, 0.3 + 0.01 * s) for s in range(3)]
    runs += [_fake_run("B", s, 4.0 + 0.01 * s, 0.1 + 0.01 * s) for s in range(3)]
    runs += [_fake_run("N", s, 4.0 + 0.01 * s, 2.0 + 0.3 * s) for s in range(3)]
    bigram = {"val_loss": 4.5, "val_losses": {"shakespeare": 4.9, "code": 5.5, "arithmetic": 2.5}}
    out = A.summarize(runs, bigram)
    assert set(out["arms"]) == {"A", "B", "C", "N"} and set(out["comparisons"]) == {"B_vs_A", "C_vs_A", "N_vs_B"}
    assert out["comparisons"]["N_vs_B"]["maxvio_last"]["winner"] == "B"             # gap 2.2 > spread 0.3
    assert [c["claim"][:20] for c in A.claims(out, {"ratio": 1.7})] == [
        "MTP (D = 1) improves", "aux-loss-free balanc", "aux-loss-free balanc", "aux-loss-free vs aux"]
    assert out["arms"]["A"]["mean"]["mean"] == pytest.approx(4.01) and out["arms"]["A"]["beats_bigram"]
    assert out["arms"]["A"]["beats_bigram_by_domain"] == {"shakespeare": False, "code": True, "arithmetic": True}
    c = out["comparisons"]["C_vs_A"]
    assert not c["mean"]["measurable"] and c["maxvio_last"]["winner"] == "A"
    res = {"runs": runs}
    curves = A.arm_curves(res, "C", "code")
    assert [x[0] for x in curves] == [0, 1, 2] and curves[0][1] == [5, 10]
    assert A.arm_curves(res, "A", kind="maxvio")[0][2] == [1.0, 0.1]
    with pytest.raises(ValueError, match=r"arm 'B_flops' is not in the result; choose one of \['A', 'B', 'C', 'N'\]"):
        A.arm_curves(res, "B_flops")
    with pytest.raises(ValueError, match="kind must be"):
        A.arm_curves(res, "A", kind="loss")
    with pytest.raises(ValueError, match="domain must be 'mean' or one of"):
        A.arm_curves(res, "A", domain="maths")


def test_evaluate_arm_equals_the_training_loops_evaluate():
    from helpers.batching import load_splits
    from helpers.train import evaluate
    net = A.build_model(A.arm_config("A", 32, TINY), 0)
    windows = A.val_windows(load_splits(), 32, 1, batch_size=2)
    losses, mv = A.evaluate_arm(net, windows)
    for d in A.DOMAINS:
        assert losses[d] == pytest.approx(evaluate(net, windows[d]), abs=1e-5)
    assert losses["mean"] == pytest.approx(statistics.fmean(losses[d] for d in A.DOMAINS))
    assert set(mv) == {"all", *A.DOMAINS} and all(v >= 0 for v in mv.values())


SMALL = dict(steps=4, batch_size=2, block_size=32, lr=3e-3, warmup_steps=1, decay_frac=0.5, eval_every=2, eval_batches=1, curve_every=1,
             gamma=0.01, aux_alpha=0.01, mtp_lambda=0.3, model=TINY)


def test_run_arm_is_deterministic_and_stop_after_is_a_prefix():
    torch.set_num_threads(1)
    a = A.run_arm("A", 0, **SMALL)
    b = A.run_arm("A", 0, **SMALL)
    c = A.run_arm("A", 0, stop_after=2, **SMALL)
    assert a["train_curve"] == b["train_curve"] and a["final"] == b["final"] is not None
    assert a["maxvio_curve"] == b["maxvio_curve"] and a["val_maxvio"] == b["val_maxvio"]
    assert c["steps_done"] == 2 and c["train_curve"] == a["train_curve"][:2]
    assert c["final"]["mean"] == a["val_curves"]["mean"][0]           # evaluated at step 2, as the full run was
    assert a["tokens"] == 4 * 2 * 32 and a["val_steps"] == [2, 4]
    f = A.run_arm("B_flops", 0, **SMALL)
    assert f["steps"] == f["steps_done"] == round(4 * A.equal_flops_steps(
        A.arm_config("A", 32, TINY), A.arm_config("B", 32, TINY), 4, 2, 32)["ratio"])


def test_main_writes_the_file_and_merge_adds_an_arm(tmp_path):
    out = tmp_path / "abl.json"
    tiny = ["--steps", "2", "--eval-every", "2", "--warmup-steps", "1", "--batch-size", "2", "--block-size", "16",
            "--eval-batches", "1", "--seeds", "0", "1", "--dim", "64", "--out", str(out)]
    first = A.main(["--arms", "A", "B", *tiny])
    assert first["config"]["arms"] == ["A", "B"] and len(first["runs"]) == 4 and "B_vs_A" in first["summary"]["comparisons"]
    both = A.main(["--arms", "N", "--merge", *tiny])
    assert both["config"]["arms"] == ["A", "B", "N"] and len(both["runs"]) == 6
    assert both["command"].count("python scripts/ablations.py") == 2 and "--merge" in both["command"]
    assert [r for r in both["runs"] if r["arm"] != "N"] == json.loads(json.dumps(first["runs"]))   # kept as they were
    assert "N_vs_B" in both["summary"]["comparisons"] and both["wall_s"] > first["wall_s"]
    with pytest.raises(SystemExit):                       # another config cannot be merged into the file
        A.main(["--arms", "C", "--merge", *tiny[:-4], "--lr", "1e-3", "--out", str(out)])
