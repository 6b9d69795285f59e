"""scripts/post_train.py: a short SFT run through the shipped code path writes a loadable checkpoint and its log."""
import importlib.util
import json
from pathlib import Path

import torch

from helpers.config import ModelConfig
from helpers.model import Transformer
from helpers.train import checkpoint_config, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("post_train", ROOT / "scripts" / "post_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_short_sft_run(tmp_path):
    torch.set_num_threads(1)
    log = _script().main(["sft", "--steps", "2", "--n-test", "1", "--out", str(tmp_path)])
    assert (tmp_path / "sft.pt").is_file() and (tmp_path / "sft.json").is_file()
    saved = json.loads((tmp_path / "sft.json").read_text())
    assert saved["history"]["step"] == [1, 2] and set(saved["sft"]) >= {"all", "by_ops", "format", "user_turn_p"}
    assert {str(k) for k in log["base"]["by_ops"]} == set(saved["base"]["by_ops"]) == {"1", "2", "3", "4"}
    model = Transformer(ModelConfig(**checkpoint_config(tmp_path / "sft.pt")))
    assert load_checkpoint(tmp_path / "sft.pt", model)["step"] == 2


def test_short_grpo_and_rejection_runs(tmp_path):
    """Both stages through the shipped code path, tiny: the result files hold what the notebooks read."""
    torch.set_num_threads(1)
    mod = _script()
    log = mod.main(["grpo", "--init", "sft", "--steps", "2", "--seeds", "1", "--prompts", "2", "--group", "2",
                    "--eval-every", "1", "--n-test", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "ch06_grpo_sft.json").read_text())
    run = saved["runs"][0]
    assert [e["step"] for e in run["evals"]] == [0, 1, 2] and [s["step"] for s in run["steps"]] == [1, 2]
    assert set(run["evals"][0]) >= {"all", "by_ops", "answer_only", "reply_tokens", "sampled"}
    assert set(run["steps"][0]) >= {"reward", "kl", "length", "answer_only", "clip_frac", "sample_s", "update_s"}
    assert not (tmp_path / "rl.pt").exists() and log["init"] == "sft"     # only a run from sft_mix writes rl.pt
    mod.main(["rejection-sampling", "--rounds", "2", "--round-problems", "4", "--k", "2", "--round-steps", "1",
              "--seeds", "1", "--n-test", "1", "--out", str(tmp_path)])
    rs = json.loads((tmp_path / "ch06_rejection.json").read_text())
    arms = {r["verify"]: r["rounds"] for r in rs["runs"]}
    assert [r["round"] for r in arms[True]] == [0, 1, 2]
    assert [r["trained_on"] for r in arms[False][1:]] == [r["trained_on"] for r in arms[True][1:]]
    assert all(r["kept_right"] == 1.0 for r in arms[True][1:] if r["kept"])
    import pytest
    with pytest.raises(SystemExit):
        mod.parse_args(["grpo", "--group", "1"])


def test_short_judge_run(tmp_path):
    torch.set_num_threads(1)
    _script().main(["judge", "--n-problems", "4", "--steps", "2", "--seeds", "1", "--round-problems", "4", "--k", "2",
                    "--round-steps", "1", "--n-test", "1", "--out", str(tmp_path)])
    log = json.loads((tmp_path / "ch06_judge.json").read_text())
    assert log["n_train_candidates"] == 8 and log["n_held_out_candidates"] == 8       # 2 models × problems
    assert [r["style"] for r in log["runs"]] == ["rationale", "verdict"]
    for r in log["runs"]:
        assert set(r["agreement"]) >= {"accuracy", "precision", "recall", "accepted", "no_verdict", "base_rate"}
        assert [x["round"] for x in r["filter_rounds"]] == [0, 1] and set(r["by_source"]) == {"sft_mix", "sft"}
    assert not (tmp_path / "judge.pt").exists()
