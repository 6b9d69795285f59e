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
