"""Every bad input to the public API raises a clear error before any work is done.

Each case asserts the exception type and, with regexes, that the message names the problem (the argument
or value) AND the way to fix it. Models are tiny so the whole file runs in seconds.
"""
import pytest
import torch

from helpers import arithmetic, batching, objective, optim, precision, rope, widgets
from helpers.config import ModelConfig
from helpers.model import Transformer
from helpers.tokenizer import Tokenizer
from helpers.train import CheckpointError, TrainConfig, evaluate, load_checkpoint, save_checkpoint, train

V, T = 64, 8
NAN, INF = float("nan"), float("inf")


def tiny_cfg(**kw):
    return ModelConfig.dense_tiny(**{**dict(vocab_size=V, dim=16, n_heads=2, inter_dim=32, n_layers=1,
                                            n_dense_layers=1, max_seq_len=16), **kw})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(tiny_cfg())


def ids(*shape, hi=V):
    return torch.randint(0, hi, shape, generator=torch.Generator().manual_seed(0))


# -- model forward -----------------------------------------------------------------------------------------
FORWARD = [
    (lambda: (ids(2, T, hi=V + 5) + 5, None), ValueError, r"idx holds token id \d+, outside 0 … 63.*vocab_size"),
    (lambda: (ids(2, T) - 100, None), ValueError, r"idx holds token id -\d+.*encode with the tokenizer"),
    (lambda: (ids(2, T).float(), None), TypeError, r"idx must hold integer token ids.*idx\.long\(\)"),
    (lambda: (torch.zeros(0, T, dtype=torch.long), None), ValueError, r"idx is empty.*at least one row"),
    (lambda: (torch.zeros(2, 0, dtype=torch.long), None), ValueError, r"idx is empty.*at least one token"),
    (lambda: (ids(T), None), ValueError, r"\[batch, seq\].*idx\[None\]"),
    (lambda: ([[1, 2, 3]], None), TypeError, r"tensor of token ids.*torch\.tensor"),
    (lambda: (ids(2, T), torch.full((2, T), V)), ValueError, r"targets holds token id 64.*−1 = ignore.*tokenizer"),
    (lambda: (ids(2, T), torch.full((2, T), -2)), ValueError, r"targets holds token id -2.*vocab_size"),
    (lambda: (ids(2, T), ids(2, T - 1)), ValueError, r"targets shape .* must equal idx shape.*follows"),
    (lambda: (ids(2, 20), None), ValueError, r"exceed max_seq_len = 16.*larger max_seq_len"),
]


@pytest.mark.parametrize("make,exc,match", FORWARD)
def test_forward_rejects(model, make, exc, match):
    idx, targets = make()
    with pytest.raises(exc, match=match):
        model(idx, targets=targets)


def test_forward_allows_ignore_index(model):
    y = ids(2, T)
    y[:, :3] = -1
    assert torch.isfinite(model(ids(2, T), targets=y)["loss"])


# -- generate ----------------------------------------------------------------------------------------------
GENERATE = [
    (dict(temperature=-1.0), r"temperature must be .*≥ 0.*got -1\.0.*temperature=0 for greedy"),
    (dict(temperature=NAN), r"temperature .* got nan.*temperature=0"),
    (dict(temperature=INF), r"temperature .* got inf.*positive value"),
    (dict(top_k=0), r"top_k must be None .* int ≥ 1, got 0.*top_k=None"),
    (dict(top_k=-3), r"top_k .* got -3.*top_k=50"),
    (dict(top_k=2.5), r"top_k .* got 2\.5.*top_k=None"),
    (dict(max_new_tokens=-1), r"max_new_tokens must be an int ≥ 0, got -1.*whole number"),
    (dict(max_new_tokens=2.5), r"max_new_tokens .* got 2\.5.*max_new_tokens=50"),
    (dict(max_new_tokens=50), r"exceed max_seq_len = 16.*fewer tokens"),
    (dict(idx=torch.zeros(1, 0, dtype=torch.long)), r"generate: idx is empty.*at least one token"),
    (dict(idx=torch.tensor([[V]])), r"generate: idx holds token id 64.*vocab_size"),
]


@pytest.mark.parametrize("kw,match", GENERATE)
def test_generate_rejects(model, kw, match):
    kw = {"idx": ids(1, 3), "max_new_tokens": 2, **kw}
    with pytest.raises(ValueError, match=match):
        model.generate(**kw)


def test_generate_float_prompt(model):
    with pytest.raises(TypeError, match=r"generate: idx must hold integer token ids.*\.long\(\)"):
        model.generate(ids(1, 3).float(), 2)


# -- ModelConfig -------------------------------------------------------------------------------------------
CONFIG = [
    (dict(norm_eps=-1e-6), r"norm_eps must be > 0.*such as 1e-6"),
    (dict(norm_eps=0.0), r"norm_eps must be > 0.*such as 1e-6"),
    (dict(norm_eps=NAN), r"norm_eps must be a finite number.*default 1e-06"),
    (dict(init_std=INF), r"init_std must be a finite number, got inf.*default 0\.02"),
    (dict(init_std=NAN), r"init_std must be a finite number, got nan.*default"),
    (dict(rope_theta=NAN), r"rope_theta must be a finite number.*default 10000"),
    (dict(vocab_size=True), r"vocab_size must be an int, got True.*whole number"),
    (dict(inter_dim=2.5), r"inter_dim must be an int, got 2\.5.*whole number"),
]


@pytest.mark.parametrize("kw,match", CONFIG)
def test_model_config_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_cfg(**kw)


# -- TrainConfig -------------------------------------------------------------------------------------------
TRAIN_CONFIG = [
    (dict(lr=INF), r"lr must be a finite number > 0, got inf.*typical values"),
    (dict(lr=NAN), r"lr must be a finite number > 0, got nan.*typical values"),
    (dict(min_lr=NAN), r"min_lr must be in \[0, lr.*None for lr / 10"),
    (dict(weight_decay=NAN), r"weight_decay must be a finite number ≥ 0.*use 0 for no decay"),
    (dict(betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\).*\(0\.9, 0\.95\)"),
    (dict(betas=(NAN, 0.95)), r"betas must be two numbers.*report uses"),
    (dict(eps=0.0), r"eps must be a finite number > 0.*1e-8"),
    (dict(clip_norm=NAN), r"clip_norm must be > 0, or None / inf for no clipping, got nan.*clips at 1\.0"),
    (dict(steps=True), r"steps must be an int ≥ 1, got True"),
    (dict(decay_frac=0.0), r"decay_frac must be in \(0, 1\].*e\.g\. 0\.2"),
]


@pytest.mark.parametrize("kw,match", TRAIN_CONFIG)
def test_train_config_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


# -- train / evaluate --------------------------------------------------------------------------------------
def batches(x=None, y=None):
    """get_batch giving (x, y) for "train" (good ids where not given) and good ids for "val"."""
    x = ids(2, T) if x is None else x
    y = ids(2, T) if y is None else y
    return lambda split: (x, y) if split == "train" else (ids(2, T), ids(2, T))


TRAIN = [
    (dict(get_batch=batches(x=ids(2, T) + V)), ValueError, r"train step 0: x holds token id \d+.*vocab_size"),
    (dict(get_batch=batches(y=torch.full((2, T), V))), ValueError, r"train step 0: y holds token id 64.*tokenizer"),
    (dict(get_batch=batches(x=ids(2, T).float())), TypeError, r"x must hold integer token ids.*x\.long\(\)"),
    (dict(get_batch=batches(x=torch.zeros(2, 0, dtype=torch.long), y=torch.zeros(2, 0, dtype=torch.long))),
     ValueError, r"x is empty.*at least one"),
    (dict(get_batch=batches(y=torch.full((2, T), -1))), ValueError, r"every target .* is −1.*check the loss mask"),
    (dict(val_data=[]), ValueError, r"validation set 'val' holds no batches.*at least one \(x, y\) batch"),
    (dict(val_data={"a": []}), ValueError, r"validation set 'a' holds no batches.*val_data=None"),
    (dict(val_data={}), ValueError, r"val_data is an empty dict.*None"),
    (dict(val_data=[(ids(1, 20), ids(1, 20))]), ValueError, r"rows of 20 tokens .* max_seq_len = 16.*block_size ≤ 16"),
    (dict(val_data=[ids(1, T)]), TypeError, r"batch must be a pair \(x, y\).*get_batch"),
    (dict(start_step=2.5), ValueError, r"start_step must be an int.*load_checkpoint returned"),
    (dict(cfg={"steps": 3}), TypeError, r"cfg must be a TrainConfig.*TrainConfig\(steps"),
]


@pytest.mark.parametrize("kw,exc,match", TRAIN)
def test_train_rejects_before_the_first_step(kw, exc, match):
    torch.manual_seed(0)
    m = Transformer(tiny_cfg())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    kw = {"get_batch": batches(), "cfg": TrainConfig(steps=3, eval_batches=1), **kw}
    with pytest.raises(exc, match=match):
        train(m, kw.pop("get_batch"), kw.pop("cfg"), show_progress=False, **kw)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())     # nothing changed


@pytest.mark.parametrize("arg,match", [([], r"empty list of batches.*at least one"),
                                       ([(ids(2, T), ids(2, T) + V)], r"evaluate: y holds token id.*vocab_size")])
def test_evaluate_rejects(model, arg, match):
    with pytest.raises(ValueError, match=match):
        evaluate(model, arg)


def test_evaluate_rejects_bad_n_batches(model):
    with pytest.raises(ValueError, match=r"n_batches must be an int ≥ 1.*or None"):
        evaluate(model, [(ids(2, T), ids(2, T))], n_batches=0)


# -- checkpoints -------------------------------------------------------------------------------------------
def test_checkpoint_from_other_config_with_same_shapes(tmp_path):
    moe = dict(vocab_size=V, dim=32, n_heads=2, q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4,
               v_head_dim=8, inter_dim=48, moe_inter_dim=16, max_seq_len=16, n_layers=2, mtp_depth=0)
    path = save_checkpoint(tmp_path / "top2.pt", Transformer(ModelConfig.cpu(**moe)))
    for change, field in ((dict(n_activated_experts=1), "n_activated_experts: file 2 vs model 1"),
                          (dict(rope_theta=500.0), "rope_theta: file 10000.0 vs model 500.0")):
        other = Transformer(ModelConfig.cpu(**moe, **change))
        before = [p.clone() for p in other.parameters()]
        with pytest.raises(CheckpointError, match=rf"different ModelConfig.*{field}.*checkpoint_config\(path\)"):
            load_checkpoint(path, other)
        assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))        # nothing loaded


def test_checkpoint_save_errors(tmp_path):
    m = Transformer(tiny_cfg())
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*a_file.*ck\.pt.*choose another path"):
        save_checkpoint(blocker / "ck.pt", m)
    with pytest.raises(CheckpointError, match=r"is a folder.*model\.pt"):
        save_checkpoint(tmp_path, m)
    with pytest.raises(TypeError, match=r"extra\['f'\] is a function.*weights_only=True.*convert it"):
        save_checkpoint(tmp_path / "ck.pt", m, extra={"f": lambda: 0})
    with pytest.raises(ValueError, match=r"step must be an int ≥ 0"):
        save_checkpoint(tmp_path / "ck.pt", m, step=-1)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "ck.pt").exists()


# -- optim -------------------------------------------------------------------------------------------------
def _params():
    return [torch.nn.Parameter(torch.ones(2, 2))]


OPTIM = [
    (lambda: optim.AdamW(_params(), lr=INF), r"lr must be a finite number ≥ 0, got inf.*typical values"),
    (lambda: optim.AdamW(_params(), lr=NAN), r"lr must be a finite number ≥ 0, got nan"),
    (lambda: optim.AdamW(_params(), eps=NAN), r"eps must be a finite number > 0.*1e-8"),
    (lambda: optim.AdamW(_params(), weight_decay=NAN), r"weight_decay must be .*use 0 for no decay"),
    (lambda: optim.AdamW([dict(params=_params(), weight_decay=NAN)]), r"weight_decay .* got nan.*use 0"),
    (lambda: optim.param_groups(torch.nn.Linear(2, 2), -0.1), r"weight_decay must be .*use 0 for no decay"),
    (lambda: optim.lr_at(0, lr=NAN, steps=10), r"lr_at: lr must be a finite number.*typical values"),
    (lambda: optim.lr_at(-1, lr=1.0, steps=10), r"lr_at: step must be a number ≥ 0.*0-based"),
    (lambda: optim.lr_at(0, lr=1.0, steps=10, min_lr=NAN), r"min_lr must be in \[0, lr.*None for lr / 10"),
    (lambda: optim.lr_at(0, lr=1.0, steps=10, warmup_steps=2.5), r"warmup_steps.*shorten the warm-up"),
    (lambda: optim.deepseek_v3_lr(NAN), r"tokens must be a number in \[0, .*14\.8T"),
    (lambda: optim.deepseek_v3_batch_size(NAN), r"tokens must be a finite number ≥ 0.*tokens seen"),
]


@pytest.mark.parametrize("call,match", OPTIM)
def test_optim_rejects(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_adamw_step_rejects_nan_lr_before_any_update():
    p = _params()
    opt = optim.AdamW(p, lr=1e-2)
    p[0].grad = torch.ones(2, 2)
    opt.param_groups[0]["lr"] = NAN
    with pytest.raises(ValueError, match=r"AdamW\.step: lr must be a finite number.*typical values"):
        opt.step()
    assert torch.equal(p[0], torch.ones(2, 2)) and not opt.state


# -- precision, rope ---------------------------------------------------------------------------------------
OTHER = [
    (lambda: precision.FloatFormat("e0m3", 0, 3), ValueError, r"exp_bits must be an int in \[2, 11\].*at least 2"),
    (lambda: precision.FloatFormat("e12m3", 12, 3), ValueError, r"exp_bits .* got 12.*float64 11"),
    (lambda: precision.FloatFormat("e4m2.5", 4, 2.5), ValueError, r"man_bits must be an int.*e\.g\. 3 for E4M3"),
    (lambda: precision.get_format("bf16").spacing(NAN), ValueError, r"x must be a finite number.*undefined"),
    (lambda: precision.representable_values("fp8_e4m3", lo=NAN), ValueError, r"need finite 0 ≤ lo ≤ hi.*e\.g\. lo=0"),
    (lambda: precision.precision_report("bf16", 1.0, torch.tensor([])), ValueError, r"x is empty.*pass the tensor"),
    (lambda: precision.training_state_bytes(2.5, "fp32 Adam"), ValueError, r"n_params must be an int.*numel"),
    (lambda: precision.accumulate_updates(1.0, 1e-3, 10, "bf16", every=-1), ValueError, r"every must be an int ≥ 0.*0 = no"),
    (lambda: rope.precompute_freqs_cis(16, 32, theta=NAN), ValueError, r"theta \(rope_theta\) must be a finite number > 1.*10000"),
    (lambda: rope.precompute_freqs_cis(15, 32), ValueError, r"dim must be a positive even int.*e\.g\. 16"),
    (lambda: rope.precompute_freqs_cis(0, 32), ValueError, r"dim must be a positive even int.*rotated size"),
    (lambda: rope.precompute_freqs_cis(16, 0), ValueError, r"max_seq_len must be a positive int.*positions 0"),
    (lambda: rope.rope_frequencies(16, theta=INF), ValueError, r"theta .* got inf.*usual value is 10000"),
    (lambda: rope.apply_rotary_emb(torch.ones(8, 4), rope.precompute_freqs_cis(4, 8)), ValueError,
     r"x must be \[batch, seq, heads, d\].*x\[None\]"),
]


@pytest.mark.parametrize("call,exc,match", OTHER)
def test_precision_and_rope_reject(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- arithmetic, tokenizer, objective, batching, widgets ----------------------------------------------------
TOK = Tokenizer([(104, 105)])      # 256 bytes + "hi" + 8 specials = 265 ids


MISC = [
    (lambda: arithmetic.generate_problems(n=2.5, seed=0), ValueError, r"n must be an int, got 2\.5.*whole number"),
    (lambda: arithmetic.generate_problems(n=3, seed=1.5), ValueError, r"seed must be an int.*whole number"),
    (lambda: arithmetic.generate_problems(n=3, seed=0, exclude="What is 1 + 2?"), TypeError, r"exclude must be a set.*wrap it"),
    (lambda: arithmetic.solve("2 +"), ValueError, r"malformed expression '2 \+'.*e\.g\. '7 \+ 3"),
    (lambda: arithmetic.solve(""), ValueError, r"malformed expression.*balanced parentheses"),
    (lambda: arithmetic.extract_answer(None), TypeError, r"text must be a str.*tokenizer\.decode"),
    (lambda: arithmetic.check_answer(2.5, "#### 2"), TypeError, r"problem must be a Problem or its int answer"),
    (lambda: TOK.decode([104, 1.5]), ValueError, r"token id 1\.5 is not an int.*\.long\(\)"),
    (lambda: TOK.decode(torch.tensor([1.0, 2.0])), ValueError, r"token id 1\.0 is not an int.*\.long\(\)"),
    (lambda: TOK.decode([265]), ValueError, r"token id 265 out of range \[0, 265\).*encode\(\)"),
    (lambda: TOK.decode([-1]), ValueError, r"token id -1 out of range.*vocab_size"),
    (lambda: TOK.decode([[1, 2]]), ValueError, r"nested list.*decode each row"),
    (lambda: TOK.decode(7), TypeError, r"ids must be a list.*decode\(\[i\]\)"),
    (lambda: TOK.token_bytes(2.0), ValueError, r"token id 2\.0 is not an int.*\.long\(\)"),
    (lambda: objective.temperature_view(torch.zeros(4), INF), ValueError, r"temperature must be a finite number > 0.*0\.05"),
    (lambda: objective.BigramModel(8).fit(torch.tensor([1.5, 2.5])), ValueError, r"tokens must be integer ids.*\.long\(\)"),
    (lambda: objective.cross_entropy(torch.zeros(3, 4), torch.full((3,), -1)), ValueError, r"no target.*keep at least one"),
    (lambda: objective.perplexity(NAN), ValueError, r"loss is NaN.*check the loss"),
    (lambda: batching.random_windows(torch.arange(50.0), 2, 8), ValueError, r"integer token ids.*\.long\(\)"),
    (lambda: batching.random_windows(torch.arange(50), True, 8), ValueError, r"batch_size must be a positive int.*e\.g\."),
    (lambda: batching.pack_documents([[0.5, 1.5]], 4, 0), ValueError, r"document 0 holds torch\.float32.*tokenizer\.encode"),
    (lambda: batching.pack_documents([[1, 2]], 4, -1), ValueError, r"eot_id must be an int token id.*tokenizer\.eot_id"),
    (lambda: widgets.int_slider(2.5, 0, 5), ValueError, r"int_slider .*must be ints.*value=2\.5.*use slider\(\)"),
    (lambda: widgets.slider(NAN, 0, 1), ValueError, r"slider .*finite numbers with min < max.*value=nan"),
    (lambda: widgets.slider(0.5, 0, 1, step=-0.1), ValueError, r"step must be a positive number or None"),
    (lambda: widgets.log_slider(1.0, -2, 2, base=1), ValueError, r"log_slider.*base > 1.*base=1"),
]


@pytest.mark.parametrize("call,exc,match", MISC)
def test_misc_reject(call, exc, match):
    with pytest.raises(exc, match=match):
        call()

