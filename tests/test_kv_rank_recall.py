"""scripts/kv_rank_recall.py (chapter 02.3): the arms differ only in attention, a tiny run is deterministic, and the
shipped result file is what its runs say."""
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import kv_rank_recall as K  # noqa: E402

from helpers.attention import cache_elements_per_token  # noqa: E402


def test_arms_differ_only_in_attention():
    base = K.arm_config("mla32").to_dict()       # the config default d_c = 32
    expect = {"mla8": {"kv_lora_rank"}, "mha": {"attn"}, "gqa": {"attn", "n_kv_heads"}, "mqa": {"attn", "n_kv_heads"}}
    for arm, fields in expect.items():
        c = K.arm_config(arm).to_dict()
        assert {k for k, v in c.items() if v != base[k]} == fields, arm
    caches = {arm: cache_elements_per_token(K.arm_config(arm)) for arm in ("mla2", "mla32", "mha", "gqa", "mqa")}
    # one block, width 64, 4 heads of d_h = 16; MLA caches d_c + d_h^R = d_c + 16
    assert caches == {"mla2": 18, "mla32": 48, "mha": 128, "gqa": 64, "mqa": 32}


@pytest.mark.parametrize("arm", ["mla", "mlax", "gqa2", "MHA"])
def test_bad_arm_names(arm):
    with pytest.raises(ValueError, match="arm must be"):
        K.arm_config(arm)


def test_tiny_run_is_deterministic_and_summarised(tmp_path):
    argv = ["--arms", "mla4", "mqa", "--seeds", "0", "1", "--steps", "6", "--device", "cpu"]
    small = {"eval_every": 3, "eval_rows": 16, "batch_size": 8}
    old = dict(K.DEFAULTS)
    K.DEFAULTS.update(small)
    try:
        a = K.main(argv + ["--out", str(tmp_path / "a.json")])
        b = K.main(argv + ["--out", str(tmp_path / "b.json")])
    finally:
        K.DEFAULTS.clear(), K.DEFAULTS.update(old)
    assert [(r["arm"], r["seed"]) for r in a["runs"]] == [("mla4", 0), ("mqa", 0), ("mla4", 1), ("mqa", 1)]
    for ra, rb in zip(a["runs"], b["runs"]):
        assert ra["curve"] == rb["curve"]
        assert [p["step"] for p in ra["curve"]] == [3, 6]
    s = a["summary"]["mla4"]
    accs = [r["final_acc"] for r in a["runs"] if r["arm"] == "mla4"]
    assert s["mean"] == pytest.approx(statistics.fmean(accs)) and s["n"] == 2 and s["cache"] == 20
    assert json.loads((tmp_path / "a.json").read_text())["summary"] == a["summary"]


def test_shipped_file_agrees_with_its_runs():
    path = K.OUT
    if not path.exists():
        pytest.skip("data/results/ch02_kv_rank_recall.json not made yet")
    res = json.loads(path.read_text())
    assert res["summary"] == K.summarise(res["runs"])
    for r in res["runs"]:
        assert r["cache"] == cache_elements_per_token(K.arm_config(r["arm"]))
        assert r["final_acc"] == r["curve"][-1]["acc"] and r["curve"][-1]["step"] == res["settings"]["steps"]
    assert {(r["arm"], r["seed"]) for r in res["runs"]} == {(a, s) for a in res["arms"] for s in res["seeds"]}


def test_a_short_run_is_the_start_of_a_long_one():
    """Constant learning rate after warm-up: the first k steps of a long run are a k-step run (the notebook checks the
    shipped file by rerunning its first steps)."""
    small = {**K.DEFAULTS, "eval_every": 2, "eval_rows": 16, "batch_size": 8, "warmup_steps": 2}
    long = K.run("mla4", 0, steps=6, settings=small)["curve"]
    short = K.run("mla4", 0, steps=4, settings=small)["curve"]
    assert short == long[:2]
