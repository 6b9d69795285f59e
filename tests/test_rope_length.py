"""scripts/rope_length.py (chapter 02.2): the arms differ only in attention, a tiny run is deterministic and graded on
fixed rows, and the shipped result file is what its runs say."""
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import rope_length as R  # noqa: E402


def test_arms_differ_only_in_attention():
    mla, mha = R.arm_config("mla").to_dict(), R.arm_config("mha").to_dict()
    assert {k for k in mla if mla[k] != mha[k]} == {"attn"}
    assert mla["max_seq_len"] >= 2 * max(R.EVAL_LENGTHS) + 1 + 0          # RoPE tables cover the longest grading row
    assert mla["max_seq_len"] >= R.PREFIX_LENGTH * 2 + 1 + max(R.PREFIXES)
    with pytest.raises(ValueError, match="arm must be"):
        R.arm_config("gqa")


def test_grading_rows_are_fixed_and_cover_the_lengths():
    for L in (8, 64):
        x1, y1 = R.eval_rows(L)
        x2, y2 = R.eval_rows(L)
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (128, 2 * L + 1)
        assert ((y1 != -1).sum(1) == L - 1).all()                         # fixed L: s_2 … s_L graded in every row
    xp, _ = R.eval_rows(R.PREFIX_LENGTH, prefix=64)
    assert xp.shape == (128, 64 + 2 * R.PREFIX_LENGTH + 1)


def test_tiny_run_is_deterministic_and_summarised(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "EVAL_LENGTHS", (8, 32, 64))
    monkeypatch.setattr(R, "PREFIXES", (0, 16))
    monkeypatch.setitem(R.DEFAULTS, "grade_rows", 8)
    monkeypatch.setitem(R.DEFAULTS, "eval_every", 3)
    monkeypatch.setitem(R.DEFAULTS, "eval_rows", 16)
    monkeypatch.setitem(R.DEFAULTS, "batch_size", 8)
    argv = ["--seeds", "0", "1", "--steps", "6", "--device", "cpu"]
    a = R.main(argv + ["--out", str(tmp_path / "a.json")])
    b = R.main(argv + ["--out", str(tmp_path / "b.json")])
    assert [(r["arm"], r["seed"]) for r in a["runs"]] == [("mla", 0), ("mha", 0), ("mla", 1), ("mha", 1)]
    for ra, rb in zip(a["runs"], b["runs"]):
        assert ra["curve"] == rb["curve"] and ra["by_length"] == rb["by_length"] and ra["by_prefix"] == rb["by_prefix"]
        assert [p["step"] for p in ra["curve"]] == [3, 6] and set(ra["by_length"]) == {"8", "32", "64"}
    s = a["summary"]["mha"]["by_length"]["64"]
    accs = [r["by_length"]["64"] for r in a["runs"] if r["arm"] == "mha"]
    assert s["mean"] == pytest.approx(statistics.fmean(accs)) and s["n"] == 2
    assert json.loads((tmp_path / "a.json").read_text())["summary"] == a["summary"]


def test_shipped_file_agrees_with_its_runs():
    if not R.OUT.exists():
        pytest.skip("data/results/ch02_rope_length.json not made yet")
    res = json.loads(R.OUT.read_text())
    assert not res["partial"] and res["summary"] == R.summarise(res["runs"])
    assert {(r["arm"], r["seed"]) for r in res["runs"]} == {(a, s) for a in res["arms"] for s in res["seeds"]}
    for r in res["runs"]:
        assert r["curve"][-1]["step"] == res["settings"]["steps"]
        assert [int(L) for L in r["by_length"]] == res["eval_lengths"]


def test_a_short_run_is_the_start_of_a_long_one():
    """Constant learning rate after warm-up: the first k steps of a long run are a k-step run (the notebook checks the
    shipped file by rerunning its first steps)."""
    small = {**R.DEFAULTS, "eval_every": 2, "eval_rows": 16, "batch_size": 8, "warmup_steps": 2}
    long = R.train_arm("mha", 0, 6, settings=small)[1]
    short = R.train_arm("mha", 0, 4, settings=small)[1]
    assert short == long[:2]


def test_position_probe_reports_the_graded_positions():
    model = R.train_arm("mha", 0, 2, settings={**R.DEFAULTS, "eval_rows": 8, "batch_size": 4})[0]
    out = R.position_probe(model, 12, row=3)
    assert len(out["p_correct"]) == len(out["hit"]) == 11                  # s_2 … s_12
    assert all(0 < p < 1 for p in out["p_correct"]) and 0 <= out["acc"] <= 1
    assert out["acc"] == R.accuracy(model, 12)
    with pytest.raises(ValueError, match="length"):
        R.position_probe(model, 1)
    with pytest.raises(ValueError, match="row"):
        R.position_probe(model, 12, row=10_000)
