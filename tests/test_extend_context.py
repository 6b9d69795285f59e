"""helpers.long_context and scripts/extend_context.py (chapter 04.4): the measurements the script records are what
they claim to be.

- passkey_scores' exact match is helpers.pretraining.passkey_accuracy's, checked with oracle models that know the
  answers (all right, every other document wrong) so that the test can fail;
- the key NLL is the mean −log p of the key tokens, recomputed by hand;
- loss_profile's loss at L is the model's own main loss on the first L tokens (causality), its buckets average to
  the whole window's loss;
- with_rope changes the rotary table and the softmax scale only (same weights; plain RoPE leaves the first T
  positions' logits unchanged; YaRN's table is helpers.rope's);
- probe (the notebook widget's logic) is deterministic and agrees with the pieces it is made of;
- a quick end-to-end run writes a complete results file, and extra training seeds are added to it.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import long_context as LC
from helpers import pretraining as P
from helpers.config import ModelConfig
from helpers.model import Transformer
from helpers.rope import precompute_freqs_cis, yarn_softmax_scale
from helpers.tokenizer import load_tokenizer
from helpers.train import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("extend_context", ROOT / "scripts" / "extend_context.py")
E = importlib.util.module_from_spec(spec)
spec.loader.exec_module(E)

TINY = dict(dim=32, n_layers=2, n_heads=2, inter_dim=64, moe_inter_dim=16, q_lora_rank=16, kv_lora_rank=16,
            qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=4, n_activated_experts=2)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return Transformer(P.base_config(**{**TINY, **kw})).eval()


class Oracle(nn.Module):
    """Logits that put the argmax on the true next token of each known document (``wrong`` documents get
    their last key token shifted by one); the true token's log-probability is log(0.9) wherever it is the argmax."""

    def __init__(self, docs, vocab, wrong=()):
        super().__init__()
        self.cfg = ModelConfig.cpu(vocab_size=vocab, max_seq_len=4096)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.rows = {tuple((p + a)[:-1]): (p + a, k in wrong) for k, (p, a) in enumerate(docs)}
        self.vocab = vocab

    def forward(self, x):
        out = torch.full((*x.shape, self.vocab), math.log(0.1 / (self.vocab - 1)))
        for b, row in enumerate(x.tolist()):
            full, bad = self.rows[tuple(row)]
            nxt = full[1:]
            if bad:
                nxt = nxt[:-1] + [(nxt[-1] + 1) % self.vocab]
            out[b, torch.arange(len(nxt)), torch.tensor(nxt)] = math.log(0.9)
        return {"logits": out}


@pytest.mark.parametrize("wrong", [(), (0, 2, 4)])
def test_passkey_scores_match_passkey_accuracy(tok, wrong):
    docs = LC.passkey_docs(tok, 96, 6, seed=3, depth=0.5)
    oracle = Oracle(docs, tok.vocab_size, wrong)
    r = LC.passkey_scores(oracle, docs, batch_size=4)
    assert r["hit"] == [k not in wrong for k in range(6)]
    assert r["acc"] == P.passkey_accuracy(oracle, tok, 96, n=6, seed=3, depth=0.5, batch_size=4) == 1 - len(wrong) / 6
    # the oracle gives every true token log(0.9), except a wrong document's last key token
    n_key = [len(a) for _, a in docs]
    expect = [(-math.log(0.9) * (n - 1) - math.log(0.1 / (tok.vocab_size - 1))) / n if k in wrong else -math.log(0.9)
              for k, n in enumerate(n_key)]
    assert r["nll"] == pytest.approx(expect, rel=1e-3)          # float32 log-softmax over 4096 logits


def test_passkey_nll_by_hand(tok):
    model = tiny_model()
    docs = LC.passkey_docs(tok, 80, 3, seed=1)
    r = LC.passkey_scores(model, docs, batch_size=2)
    for (p, a), nll in zip(docs, r["nll"]):
        with torch.no_grad():
            logp = model(torch.tensor([p + a]))["logits"][0].log_softmax(-1)
        by_hand = -sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(a)) / len(a)
        assert nll == pytest.approx(by_hand, rel=1e-4)
    assert r["acc"] == P.passkey_accuracy(model, tok, 80, n=3, seed=1)


def test_passkey_grid_counts(tok):
    model = tiny_model(max_seq_len=512)
    g = LC.passkey_grid(model, tok, [128, 256], [0.2, 0.8], 3, show_progress=False)
    assert set(g) == {"128", "256"}
    for cell in g.values():
        assert cell["n"] == 6 and set(cell["by_depth"]) == {"0.2", "0.8"}
        assert cell["acc"] == pytest.approx(sum(d["acc"] for d in cell["by_depth"].values()) / 2)
        assert cell["mean_nll"] == pytest.approx(sum(d["nll"] for d in cell["by_depth"].values()) / 2)
    # the depth-0.8 cell at 256 is the documents passkey_docs(seed = 0 + 1) gives
    direct = LC.passkey_scores(model, LC.passkey_docs(tok, 256, 3, seed=1, depth=0.8))
    assert g["256"]["by_depth"]["0.8"] == {"acc": direct["acc"], "nll": pytest.approx(direct["mean_nll"], rel=1e-6)}


def test_loss_profile_is_causal_loss():
    model = tiny_model(vocab_size=4096, max_seq_len=512)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4096, (2, 512), generator=g)
    y = torch.randint(0, 4096, (2, 512), generator=g)
    prof = LC.loss_profile(model, [(x[:1], y[:1]), (x[1:], y[1:])], bucket=128, lengths=[128, 256, 512, 1024])
    assert len(prof["bucket_loss"]) == 4 and prof["n_windows"] == 2
    assert set(prof["loss_at"]) == {"128", "256", "512"}                  # 1024 is longer than the windows
    with torch.no_grad():
        for L in (128, 256, 512):
            own = model(x[:, :L], targets=y[:, :L])["main_loss"].item()
            assert prof["loss_at"][str(L)] == pytest.approx(own, rel=1e-4)
    assert sum(prof["bucket_loss"]) / 4 == pytest.approx(prof["loss_at"]["512"], rel=1e-5)
    with pytest.raises(ValueError, match="multiple of bucket = 100"):
        LC.loss_profile(model, [(x, y)], bucket=100)


def test_with_rope_changes_only_positions():
    base = tiny_model(max_seq_len=256)
    plain = LC.with_rope(base, 1024, 1.0)
    yarn = LC.with_rope(base, 1024, 4.0)
    for m in (plain, yarn):
        assert all(torch.equal(m.state_dict()[k], v) for k, v in base.state_dict().items())
    assert not plain.cfg.yarn_active and yarn.cfg.yarn_active
    assert (yarn.cfg.original_seq_len, yarn.cfg.rope_factor) == (256, 4.0)
    d = base.cfg.rope_dim
    assert torch.equal(yarn.freqs_cis("cpu"), precompute_freqs_cis(d, 1024, original_seq_len=256, rope_factor=4.0))
    assert torch.equal(plain.freqs_cis("cpu")[:256], base.freqs_cis("cpu"))
    qk = base.cfg.qk_nope_head_dim + base.cfg.qk_rope_head_dim
    assert yarn.layers[0].attn.softmax_scale == pytest.approx(yarn_softmax_scale(qk, 4.0))
    x = torch.randint(0, base.cfg.vocab_size, (1, 256), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(plain(x)["logits"], base(x)["logits"], rtol=0, atol=0)
        assert not torch.allclose(yarn(x)["logits"], base(x)["logits"])


@pytest.mark.parametrize("kw,match", [
    (dict(max_seq_len=0), r"max_seq_len must be a positive int, got 0"),
    (dict(max_seq_len=512, factor=0.5), r"factor \(YaRN's s\) must be a finite number ≥ 1, got 0.5"),
    (dict(max_seq_len=512, factor=float("nan")), r"got nan"),
])
def test_rope_fields_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        LC.rope_fields(**kw)


def test_rope_fields():
    assert LC.rope_fields(512) == {"max_seq_len": 512, "original_seq_len": 0, "rope_factor": 1.0}
    assert LC.rope_fields(512, 2) == {"max_seq_len": 512, "original_seq_len": E.T, "rope_factor": 2.0}


def test_probe_is_deterministic_and_consistent(tok):
    model = LC.with_rope(tiny_model(max_seq_len=256), 512, 2.0)
    docs = LC.passkey_docs(tok, 512, 3, seed=5, depth=0.5)
    x = torch.randint(0, model.cfg.vocab_size, (1, 512), generator=torch.Generator().manual_seed(2))
    window = (x, torch.roll(x, -1, 1))
    a, b = LC.probe(model, docs, window, bucket=128), LC.probe(model, docs, window, bucket=128)
    assert a == b
    assert a["acc"] == P.passkey_accuracy(model, tok, 512, n=3, seed=5, depth=0.5)
    assert a["bucket_loss"] == LC.loss_profile(model, [window], 128)["bucket_loss"]
    assert len(a["hits"]) == 3 and "bucket_loss" not in LC.probe(model, docs)


def test_quick_run_writes_results(tmp_path, tok):
    ckpt = tmp_path / "base.pt"
    save_checkpoint(ckpt, tiny_model(vocab_size=tok.vocab_size, max_seq_len=256))
    out = tmp_path / "lc.json"
    res = E.main(["--quick", "--base", str(ckpt), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python scripts/extend_context.py --quick")
    assert set(saved["models"]) == {"base_rope", "base_yarn_s4", "yarn_phase1", "yarn_phase2", "rope_phase2"}
    assert [(s["arm"], s["phase"]) for s in saved["stages"]] == [("yarn", 1), ("yarn", 2), ("rope", 1), ("rope", 2)]
    for m in saved["models"].values():
        assert set(m["passkey"]) == {"256", "512"} and all(0 <= c["acc"] <= 1 for c in m["passkey"].values())
        assert set(m["loss"]) == set(LC.LOSS_DOMAINS)
    assert saved["models"]["yarn_phase2"]["rope_factor"] == 4.0 and saved["models"]["rope_phase2"]["rope_factor"] == 1.0
    assert saved["models"]["yarn_phase2"]["extension_steps"] == 4
    assert "base_rope" in LC.passkey_table(res)
    # more training seeds of both arms, added to the same file (the first run's settings must be repeated)
    more = E.main(["--quick", "--base", str(ckpt), "--out", str(out), "--seeds-only", "1"])
    assert [(r["seed"], r["arm"]) for r in more["seed_runs"]] == [(1, "yarn"), (1, "rope")]
    assert all(set(r["passkey"]) == {"256", "512"} and set(r["loss_at"]) == set(LC.LOSS_DOMAINS)
               for r in more["seed_runs"])
    assert json.loads(out.read_text())["models"] == saved["models"]              # the first run is kept as it was
    with pytest.raises(SystemExit, match="other settings"):
        E.main(["--quick", "--base", str(ckpt), "--out", str(out), "--seeds-only", "2", "--factor", "2"])
