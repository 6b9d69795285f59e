"""scripts/pretrain.py: resuming equals an uninterrupted run; 2 DDP processes (gloo) equal one process at the
same global batch; the shipped base checkpoint loads and matches its log."""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("pretrain_script", ROOT / "scripts" / "pretrain.py")
pretrain = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pretrain)

TINY = ["--tiny", "--no-final-eval", "--n-fresh-arithmetic", "300", "--eval-every", "2", "--eval-batches", "1"]


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_resume_equals_uninterrupted(tmp_path):
    pretrain.main(TINY + ["--steps", "4", "--batch", "4", "--out", str(tmp_path / "a")])
    assert pretrain.main(TINY + ["--steps", "4", "--batch", "4", "--out", str(tmp_path / "b"), "--stop-after", "2"]) is None
    assert (tmp_path / "b" / "base.resume.pt").is_file() and not (tmp_path / "b" / "base.pt").exists()
    pretrain.main(TINY + ["--steps", "4", "--batch", "4", "--out", str(tmp_path / "b"), "--resume"])
    wa, wb = _weights(tmp_path / "a" / "base.pt"), _weights(tmp_path / "b" / "base.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ha = json.loads((tmp_path / "a" / "base.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "base.json").read_text())["history"]
    assert ha["step"] == hb["step"] == [1, 2, 3, 4]
    assert ha["train_loss"] == hb["train_loss"] and ha["val_losses"] == hb["val_losses"]
    assert not (tmp_path / "b" / "base.resume.pt").exists()


def test_resume_needs_a_saved_run(tmp_path):
    with pytest.raises(SystemExit, match="no .*base.resume.pt"):
        pretrain.main(TINY + ["--steps", "4", "--out", str(tmp_path), "--resume"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_processes_match_one(tmp_path):
    args = TINY + ["--steps", "3", "--batch", "4"]
    pretrain.main(args + ["--out", str(tmp_path / "one")])
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([str(torchrun if torchrun.exists() else "torchrun"), "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                        str(ROOT / "scripts" / "pretrain.py"), *args, "--out", str(tmp_path / "two")],
                       env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = _weights(tmp_path / "one" / "base.pt"), _weights(tmp_path / "two" / "base.pt")
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4, msg=k)
    h1 = json.loads((tmp_path / "one" / "base.json").read_text())
    h2 = json.loads((tmp_path / "two" / "base.json").read_text())
    assert h2["world_size"] == 2 and h1["world_size"] == 1
    for d, v in h1["history"]["val_losses"].items():
        assert h2["history"]["val_losses"][d] == pytest.approx(v, abs=1e-4)


def test_shipped_base_checkpoint_loads_and_matches_its_log():
    from helpers.pretraining import base_config, base_log, load_base
    log = base_log()
    model = load_base(device="cpu")
    assert model.cfg == base_config() and not model.training
    assert log["config"] == model.cfg.to_dict()
    assert log["history"]["step"][-1] == log["args"]["steps"]
    f = log["final"]
    for d in ("shakespeare", "code", "arithmetic"):        # the base model beats the bigram on every domain
        assert f["val_loss"][d] < f["bigram_val_loss"][d] - 0.3, d
