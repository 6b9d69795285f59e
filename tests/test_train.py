"""The training loop: accumulation = large batch, schedule, evaluation, after_step, checkpoints, errors."""
import math

import pytest
import torch

from helpers.model import ModelConfig, Transformer
from helpers.optim import AdamW, param_groups
from helpers.train import CheckpointError, History, TrainConfig, evaluate, load_checkpoint, save_checkpoint, train

V, T = 64, 16


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig.dense_tiny(**{**dict(vocab_size=V, dim=16, n_heads=2, inter_dim=32, n_layers=1,
                                           n_dense_layers=1, max_seq_len=32), **kw})
    return Transformer(cfg)


class Batches:
    """Deterministic batches from a fixed token stream (a stand-in for MixtureSampler): a bigram chain
    t_{i+1} = (5 t_i + 1) mod V with 20% of tokens replaced at random, so there is something to learn."""

    def __init__(self, batch_size=4, seed=0):
        self.g = {s: torch.Generator().manual_seed(seed + k) for k, s in enumerate(("train", "val"))}
        g = torch.Generator().manual_seed(99)
        noise, rand = torch.rand(5000, generator=g) < 0.2, torch.randint(0, V, (5000,), generator=g)
        t = [0]
        for i in range(1, 5000):
            t.append(int(rand[i]) if noise[i] else (5 * t[-1] + 1) % V)
        self.tokens = torch.tensor(t)
        self.batch_size = batch_size

    def __call__(self, split="train"):
        starts = torch.randint(0, len(self.tokens) - T - 1, (self.batch_size,), generator=self.g[split])
        rows = self.tokens[starts[:, None] + torch.arange(T + 1)]
        return rows[:, :-1], rows[:, 1:]


def test_accumulation_equals_large_batch():
    big = Batches(batch_size=8)
    xb, yb = big("train")
    micro = iter([(xb[i:i + 2], yb[i:i + 2]) for i in range(0, 8, 2)])
    a, b = tiny(), tiny()
    cfg = dict(steps=1, warmup_steps=0, clip_norm=None, eval_batches=1, schedule="constant")
    train(a, lambda s: (xb, yb) if s == "train" else (xb, yb), TrainConfig(**cfg), show_progress=False)
    train(b, lambda s: next(micro) if s == "train" else (xb, yb), TrainConfig(grad_accum_steps=4, **cfg),
          show_progress=False)
    dev = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert dev < 1e-6


def test_history_schedule_and_evaluation():
    m = tiny()
    cfg = TrainConfig(steps=12, lr=1e-2, warmup_steps=3, eval_every=5, eval_batches=2, grad_accum_steps=2)
    h = train(m, Batches(), cfg, show_progress=False)
    assert isinstance(h, History) and h.step == list(range(1, 13))
    assert h.lr == [cfg.lr_at(s) for s in range(12)] and h.lr[2] == pytest.approx(1e-2)
    assert h.val_step == [5, 10, 12] and len(h.val_loss) == 3 and h.val_losses["val"] == h.val_loss
    assert h.tokens[-1] == 12 * 2 * 4 * T and h.tokens_per_s > 0 and h.wall_time > 0
    assert set(h.metrics) >= {"main_loss", "mtp_loss", "aux_loss"} and len(h.metrics["main_loss"]) == 12
    assert all(g > 0 for g in h.grad_norm)
    assert h.train_loss[0] == pytest.approx(math.log(V), abs=0.3)          # starts near the uniform baseline
    assert not m.training                                                   # left in eval mode


def test_training_lowers_loss_and_clipping_bounds_update():
    m = tiny()
    data = Batches()
    val = [data("val") for _ in range(4)]
    before = evaluate(m, val)
    h = train(m, data, TrainConfig(steps=60, lr=1e-2, warmup_steps=5, eval_every=0), val_data={"a": val, "b": val[:2]},
              show_progress=False)
    assert h.val_losses["a"][-1] < before - 0.3
    assert h.val_loss[-1] == pytest.approx((h.val_losses["a"][-1] + h.val_losses["b"][-1]) / 2)


def test_evaluate_matches_manual_mean_and_restores_mode():
    m = tiny(mtp_depth=1)
    data = Batches()
    batches = [data("val") for _ in range(3)]
    m.train()
    got = evaluate(m, batches)
    with torch.no_grad():
        expect = sum(float(m(x, targets=y)["main_loss"]) for x, y in batches) / 3   # main head only, not + λ·MTP
    assert got == pytest.approx(expect, rel=1e-6) and m.training
    assert evaluate(m, Batches(), n_batches=2) > 0
    with pytest.raises(ValueError, match="n_batches"):
        evaluate(m, Batches())
    with pytest.raises(ValueError, match="empty"):
        evaluate(m, [])


def test_after_step_called_each_step():
    m = tiny()
    calls = []
    m.after_step = lambda: calls.append(1)
    train(m, Batches(), TrainConfig(steps=5, eval_every=0, eval_batches=1), show_progress=False)
    assert len(calls) == 5


def test_checkpoint_round_trip_and_resume(tmp_path):
    # constant schedule: the first half's schedule must not depend on where the run stops
    cfg = TrainConfig(steps=10, lr=1e-2, schedule="constant", eval_every=0, eval_batches=1)
    a = tiny()
    train(a, Batches(seed=5), cfg, show_progress=False)              # uninterrupted run

    b = tiny()
    data = Batches(seed=5)
    opt = AdamW(param_groups(b, cfg.weight_decay), lr=cfg.lr)
    train(b, data, TrainConfig(**{**cfg.__dict__, "steps": 5}), optimizer=opt, show_progress=False)
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", b, opt, step=5, extra={"note": "half", "gen": data.g["train"].get_state()})
    c = tiny(seed=3)
    opt_c = AdamW(param_groups(c, cfg.weight_decay), lr=cfg.lr)
    info = load_checkpoint(path, c, opt_c)
    assert info["step"] == 5 and info["extra"]["note"] == "half"
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), c.parameters()))
    data2 = Batches(seed=5)
    data2.g["train"].set_state(info["extra"]["gen"])
    data2.g["val"].set_state(data.g["val"].get_state())
    train(c, data2, cfg, optimizer=opt_c, start_step=5, show_progress=False)
    dev = max((p - q).abs().max().item() for p, q in zip(a.parameters(), c.parameters()))
    assert dev < 1e-6


def test_checkpoint_errors(tmp_path):
    m = tiny()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", m)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad, m)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a course checkpoint"):
        load_checkpoint(other, m)
    good = save_checkpoint(tmp_path / "good.pt", m)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(good, tiny(dim=32))
    with pytest.raises(CheckpointError, match="optimizer"):
        load_checkpoint(good, m, AdamW(m.parameters()))
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated, m)


@pytest.mark.parametrize("kw,match", [(dict(grad_accum_steps=0), "grad_accum_steps"), (dict(steps=0), "steps"),
                                      (dict(schedule="linear"), "schedule"), (dict(warmup_steps=500), "warmup_steps"),
                                      (dict(clip_norm=0.0), "clip_norm"), (dict(lr=0), "lr"),
                                      (dict(min_lr=1.0), "min_lr"), (dict(grad_accum_steps=1.5), "grad_accum_steps")])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_train_errors():
    m = tiny()
    with pytest.raises(TypeError, match="TrainConfig"):
        train(m, Batches(), {"steps": 3})
    class NoDict(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, targets=None):
            return self.w.sum()
    with pytest.raises(TypeError, match="dict"):
        train(NoDict(), Batches(), TrainConfig(steps=1), show_progress=False)
    with pytest.raises(ValueError, match="start_step"):
        train(m, Batches(), TrainConfig(steps=3), start_step=3, show_progress=False)
    m2 = tiny()
    with torch.no_grad():
        m2.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="learning rate"):
        train(m2, Batches(), TrainConfig(steps=2), show_progress=False)


# -- token-normalised accumulation ----------------------------------------------------------------------------
def _grads(m):
    return [p.grad.clone() for p in m.parameters()]


def test_masked_accumulation_equals_the_big_batch_gradient():
    # micro-batches with different numbers of unmasked targets (ignore_index −1, as in SFT): the step's loss is
    # the mean over all unmasked tokens, so its gradient is the big batch's, not the mean of micro-batch means
    xb, yb = Batches(batch_size=4)("train")
    yb = yb.clone()
    yb[:2, :13] = -1                        # micro-batch 1: 2·3 = 6 targets; micro-batch 2: 2·16 = 32 targets
    micro = iter([(xb[:2], yb[:2]), (xb[2:], yb[2:])])
    cfg = dict(steps=1, clip_norm=None, eval_batches=1, schedule="constant")
    acc = tiny()
    h = train(acc, lambda s: next(micro) if s == "train" else (xb, yb), TrainConfig(grad_accum_steps=2, **cfg),
              show_progress=False)
    big = tiny()
    loss = big(xb, targets=yb)["loss"]
    loss.backward()
    assert h.train_loss[0] == pytest.approx(loss.item(), rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(_grads(acc), _grads(big)))
    old = tiny()                                        # the mean of micro-batch means differs
    for x, y in ((xb[:2], yb[:2]), (xb[2:], yb[2:])):
        (old(x, targets=y)["loss"] / 2).backward()
    assert max((a - b).abs().max().item() for a, b in zip(_grads(old), _grads(big))) > 1e-4


def test_unmasked_accumulation_is_the_plain_mean_bit_for_bit():
    data = Batches(batch_size=2)
    mbs = [data("train") for _ in range(2)]
    it = iter(mbs)
    cfg = TrainConfig(steps=1, clip_norm=None, eval_batches=1, schedule="constant", grad_accum_steps=2)
    new = tiny(mtp_depth=1)
    h = train(new, lambda s: next(it) if s == "train" else mbs[0], cfg, show_progress=False)
    old, losses = tiny(mtp_depth=1), []
    for x, y in mbs:                                    # the previous formula: backprop L_a / A, log mean L_a
        out = old(x, targets=y)
        (out["loss"] / 2).backward()
        losses.append(float(out["loss"].detach()))
    assert h.train_loss[0] == sum(losses) / 2
    assert all(torch.equal(a, b) for a, b in zip(_grads(new), _grads(old)))


# -- a non-finite step changes nothing ---------------------------------------------------------------------------
def _moe_model():
    torch.manual_seed(0)
    return Transformer(ModelConfig.cpu(vocab_size=V, dim=32, n_heads=2, q_lora_rank=16, kv_lora_rank=8,
                                       qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, inter_dim=48,
                                       moe_inter_dim=16, max_seq_len=32, n_layers=2, balance="aux_free",
                                       bias_update_speed=0.01))


@pytest.mark.parametrize("what", ["loss", "grad"])
def test_non_finite_step_leaves_the_model_as_it_was(what):
    import copy
    m = _moe_model()
    bad, snap = {"on": False}, {}
    if what == "loss":
        forward = m.forward

        def poisoned(*a, **kw):
            out = forward(*a, **kw)
            if bad["on"] and "loss" in out:
                out["loss"] = out["loss"] * float("inf")
            return out
        m.forward = poisoned
        match = "training loss became"
    else:
        m.head.weight.register_hook(lambda g: g * float("inf") if bad["on"] else g)
        match = "gradient norm became (inf|nan)"
    opt = AdamW(param_groups(m, 0.1), lr=1e-2)

    def after_first_step(step, hist):
        snap.update(state={k: v.clone() for k, v in m.state_dict().items()}, opt=copy.deepcopy(opt.state_dict()),
                    loads=[x.step_load.clone() for x in m.moe_layers()])
        bad["on"] = True
    cfg = TrainConfig(steps=3, grad_accum_steps=2, eval_every=0, eval_batches=1)
    with pytest.raises(FloatingPointError, match=match + r".*at step 1.*left as it was before this step"):
        train(m, Batches(), cfg, optimizer=opt, callback=after_first_step, show_progress=False)
    state = m.state_dict()
    assert any(k.endswith("gate.bias") for k in state)                     # router biases are compared too
    assert all(torch.equal(snap["state"][k], v) for k, v in state.items())  # weights and biases bit-identical
    assert all(torch.equal(a, x.step_load) for a, x in zip(snap["loads"], m.moe_layers()))
    assert all(p.grad is None for p in m.parameters())
    o = opt.state_dict()
    assert all(torch.equal(snap["opt"]["state"][i]["exp_avg"], s["exp_avg"]) and snap["opt"]["state"][i]["step"] == s["step"]
               for i, s in o["state"].items())


# -- checkpoints carry the config ----------------------------------------------------------------------------------
def test_checkpoint_records_config_and_loads_weights_only(tmp_path):
    from helpers.train import checkpoint_config
    m = tiny()
    path = save_checkpoint(tmp_path / "ck.pt", m, step=3)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "course-checkpoint-v2" and raw["config"] == m.cfg.to_dict()
    assert checkpoint_config(path) == m.cfg.to_dict()
    rebuilt = Transformer(ModelConfig(**checkpoint_config(path)))
    assert load_checkpoint(path, rebuilt)["config"] == m.cfg.to_dict()
    load_checkpoint(path, tiny(init_std=0.01))                               # init_std does not change the function


def test_v1_checkpoint_still_loads_with_a_warning(tmp_path):
    m = tiny()
    v1 = tmp_path / "v1.pt"
    torch.save({"format": "course-checkpoint-v1", "model": m.state_dict(), "step": 4, "extra": {}}, v1)
    other = tiny(seed=1)
    with pytest.warns(UserWarning, match="records no ModelConfig.*save it again"):
        info = load_checkpoint(v1, other)
    assert info["step"] == 4 and info["config"] is None
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), other.parameters()))


def test_failed_save_leaves_no_tmp_file(tmp_path, monkeypatch):
    m = tiny()

    def half_write(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("No space left on device")
    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*ck\.pt.*No space left"):
        save_checkpoint(tmp_path / "ck.pt", m)
    assert list(tmp_path.iterdir()) == []
