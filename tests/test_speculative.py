"""MTP speculative decoding (helpers.speculative): output == plain greedy decoding, counts, cost model, widget logic."""
import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.inference import greedy_match
from helpers.model import ModelConfig, Transformer
from helpers.speculative import (KINDS, acceptance_walk, draft_outcomes, expected_speedup, interleaved_medians,
                                 mark_drafts, mtp_agreement, mtp_logits, speculative_generate, speculative_view)

SMALL = dict(vocab_size=16, dim=32, n_heads=2, q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8,
             qk_rope_head_dim=4, v_head_dim=8, inter_dim=48, moe_inter_dim=16, max_seq_len=64)


def small_model(seed: int, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.cpu(**{**SMALL, **kw})).eval()


@pytest.fixture(scope="module")
def base():
    from helpers.pretraining import load_base
    return load_base("cpu")


@pytest.fixture(scope="module")
def val_prompts():
    """Two 24-token prompts from each shipped domain's validation split and two passkey rows."""
    from helpers.batching import load_splits
    from helpers.pretraining import PASSKEY_SEEDS, passkey_rows
    from helpers.tokenizer import load_tokenizer
    streams = {d: s["val"] for d, s in load_splits().items()}
    streams["passkey"] = passkey_rows(load_tokenizer(), 2, seed=PASSKEY_SEEDS["val"])
    out = []
    for d, s in streams.items():
        for k in range(2):
            start = k * (len(s) - 200) // 2
            out.append((d, s[start:start + 24][None]))
    return out


def same_greedy(m, a, b, prompt_len):
    """Equal tokens, or a first difference at a top-2 near-tie of the main model (rounding may break an exact tie
    either way on another CPU: helpers.inference.greedy_match)."""
    with torch.no_grad():
        return greedy_match(m, a, b, prompt_len)


def check_counts(r, n_new):
    assert r.new_tokens == n_new == len(r.kinds)
    assert r.new_tokens == r.main_forwards + r.accepted          # each forward: its own token + an accepted draft
    assert r.kinds.count("draft") == r.kinds.count("bonus") == r.accepted
    assert r.accepted <= r.drafted <= max(r.main_forwards - 1, 0)   # the prefill never verifies a draft
    assert r.mtp_forwards == r.drafted                           # one MTP forward per draft
    for i, k in enumerate(r.kinds):                              # a bonus always follows its accepted draft
        assert k in KINDS
        if k == "draft":
            assert r.kinds[i + 1] == "bonus"


# ---- output == plain greedy decoding ---------------------------------------------------------------------------

def test_base_model_speculative_equals_greedy_every_domain(base, val_prompts):
    accepted = rejected = 0
    for domain, x in val_prompts:
        r = speculative_generate(base, x, 48)
        assert same_greedy(base, r.tokens, base.generate(x, 48, temperature=0), x.shape[1]), domain
        check_counts(r, 48)
        accepted += r.accepted
        rejected += r.drafted - r.accepted
    assert accepted > 0 and rejected > 0                         # both branches ran


def test_counts_equal_the_walk_over_teacher_forced_drafts(base, val_prompts):
    """Independent check of the bookkeeping: the drafts the MTP module makes in one teacher-forced forward over the
    final output decide, through acceptance_walk, exactly the counts and kinds the cached run reported — unless a
    cached draft differs from its teacher-forced twin, which rounding allows only at a near-tie of the MTP's top 2
    logits."""
    for domain, x in val_prompts[::2]:
        n = x.shape[1]
        r = speculative_generate(base, x, 40)
        _, mtp = mtp_logits(base, r.tokens)
        agree = (mtp.argmax(-1)[0, n - 1:-1] == r.tokens[0, n + 1:]).tolist()
        top2 = mtp[0, n - 1:-1].topk(2).values
        differ = [j for j, a in draft_outcomes(r.kinds) if agree[j] != a]
        assert all(float(top2[j, 0] - top2[j, 1]) < 1e-3 for j in differ), (domain, differ)
        if not differ:
            w = acceptance_walk(agree, 40)
            assert (w["drafted"], w["accepted"], w["main_forwards"], w["kinds"]) == \
                   (r.drafted, r.accepted, r.main_forwards, r.kinds), domain


def test_cached_mtp_states_equal_the_teacher_forced_ones(base, val_prompts, monkeypatch):
    """Every hidden state the MTP module computes with its cache during decoding equals, to float rounding, the
    state at the same position of one teacher-forced MTP pass over the final output: right positions, right
    (h_i, t_(i+1)) pairs, nothing stale left in the MTP cache."""
    module, seen = base.mtp[0], []
    original = module.forward

    def record(h, e, freqs, start_pos=0):
        out = original(h, e, freqs, start_pos)
        seen.append((start_pos, out[0]))
        return out
    monkeypatch.setattr(module, "forward", record)
    for domain, x in val_prompts[1::2]:
        seen.clear()
        r = speculative_generate(base, x, 40)
        monkeypatch.setattr(module, "forward", original)
        with torch.no_grad():
            t = r.tokens.shape[1]
            h = base(r.tokens, return_hidden=True)["hidden"]
            ref = module(h[:, :-1], base.embed(r.tokens[:, 1:]), base.freqs_cis(h.device)[:t - 1])[0]
        monkeypatch.setattr(module, "forward", record)
        assert len(seen) == r.mtp_forwards and seen[0][0] == 0
        for pos, out in seen:
            torch.testing.assert_close(out, ref[pos:pos + len(out)], rtol=1e-4, atol=1e-4, msg=f"{domain} at {pos}")


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n_prompt=st.integers(1, 12), n_new=st.integers(0, 30),
       variant=st.sampled_from(["mla", "mla-absorb", "mha", "dense"]))
def test_random_models_speculative_equals_greedy(seed, n_prompt, n_new, variant):
    kw = {"mla": {}, "mla-absorb": {"attn_impl": "absorb"}, "mha": {"attn": "mha"},
          "dense": {"n_layers": 2, "n_dense_layers": 2, "n_routed_experts": 0}}[variant]
    m = small_model(seed, init_std=0.3, **kw)
    x = torch.randint(0, SMALL["vocab_size"], (1, n_prompt), generator=torch.Generator().manual_seed(seed))
    r = speculative_generate(m, x, n_new)
    assert same_greedy(m, r.tokens, m.generate(x, n_new, temperature=0), n_prompt)
    check_counts(r, n_new)


def test_random_models_both_branches_and_full_window():
    """Prompt + new tokens fill max_seq_len exactly (the last step must not verify past the window); over 5 seeds
    of random weights some drafts are accepted and some rejected, so both branches are compared with greedy."""
    accepted = rejected = 0
    for seed in range(5):
        m = small_model(seed)
        x = torch.randint(0, SMALL["vocab_size"], (1, 4), generator=torch.Generator().manual_seed(seed))
        n_new = SMALL["max_seq_len"] - 4
        r = speculative_generate(m, x, n_new)
        assert same_greedy(m, r.tokens, m.generate(x, n_new, temperature=0), 4), seed
        check_counts(r, n_new)
        accepted += r.accepted
        rejected += r.drafted - r.accepted
    assert accepted > 0 and rejected > 0


def test_small_counts_exact():
    m = small_model(0)
    x = torch.tensor([[1, 2, 3]])
    assert speculative_generate(m, x, 0).tokens.equal(x)
    r1 = speculative_generate(m, x, 1)
    assert (r1.main_forwards, r1.drafted, r1.mtp_forwards, r1.kinds) == (1, 0, 0, ["main"])
    assert math.isnan(r1.acceptance) and r1.tokens_per_forward == 1
    r2 = speculative_generate(m, x, 2)            # two tokens: prefill + one plain forward, no draft can pay off
    assert (r2.main_forwards, r2.drafted, r2.kinds) == (2, 0, ["main", "main"])
    r3 = speculative_generate(m, x, 3)            # three: one draft is verified
    assert r3.drafted == 1 and r3.main_forwards == 3 - r3.accepted


def test_state_restored_after_decoding(base, val_prompts):
    base.train()
    speculative_generate(base, val_prompts[0][1], 5)
    assert base.training
    base.eval()
    assert all(layer.attn.kv_cache is None for layer in base.layers)
    assert base.mtp[0].block.attn.kv_cache is None and base.mtp[0].block.attn.pe_cache is None


def test_cache_cleared_after_an_error(base, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(base.mtp[0], "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        speculative_generate(base, torch.tensor([[1, 2, 3]]), 5)
    assert base.layers[0].attn.kv_cache is None and base.mtp[0].block.attn.kv_cache is None


# ---- argument errors -----------------------------------------------------------------------------------------

def test_argument_errors():
    m = small_model(0)
    x = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="one sequence"):
        speculative_generate(m, torch.tensor([[1, 2], [3, 4]]), 4)
    with pytest.raises(ValueError, match="max_seq_len"):
        speculative_generate(m, x, SMALL["max_seq_len"] - 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(m, x, -1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(m, x, 2.0)
    with pytest.raises(TypeError, match="integer token ids"):
        speculative_generate(m, x.float(), 4)
    with pytest.raises(ValueError, match="token id 99"):
        speculative_generate(m, torch.tensor([[1, 99]]), 4)
    with pytest.raises(ValueError, match="no MTP module"):
        speculative_generate(small_model(0, mtp_depth=0), x, 4)
    with pytest.raises(TypeError, match="Transformer"):
        speculative_generate(torch.nn.Linear(2, 2), x, 4)
    assert m.layers[0].attn.kv_cache is None              # nothing allocated before the checks failed


def test_full_window_is_allowed():
    m = small_model(1)
    r = speculative_generate(m, torch.tensor([[1, 2, 3]]), SMALL["max_seq_len"] - 3)
    assert r.tokens.shape[1] == SMALL["max_seq_len"]


# ---- cost model --------------------------------------------------------------------------------------------

def test_expected_speedup_values():
    assert expected_speedup(0.85) == pytest.approx(1.85)
    assert expected_speedup(0.9) == pytest.approx(1.9)
    assert expected_speedup(0.0) == 1.0                                 # nothing accepted, free drafts: no change
    assert expected_speedup(0.0, 0.3, 1.1) == pytest.approx(1 / 1.4)    # costly drafts that never land: a slowdown
    assert expected_speedup(0.9, 0.03, 1.02) == pytest.approx(1.9 / 1.05)
    assert expected_speedup(1.0, 0.0, 1.0) == 2.0                       # D = 1 can at most double


@given(p=st.floats(0, 1), q=st.floats(0, 1), cd=st.floats(0, 2), cv=st.floats(0.5, 3))
def test_expected_speedup_monotone(p, q, cd, cv):
    lo, hi = sorted((p, q))
    assert expected_speedup(lo, cd, cv) <= expected_speedup(hi, cd, cv)
    assert expected_speedup(p, cd, cv) * (cv + cd) == pytest.approx(1 + p)


@pytest.mark.parametrize("args,match", [((1.2,), "acceptance"), ((-0.1,), "acceptance"), ((True,), "acceptance"),
                                        ((0.5, -1.0), "draft_cost"), ((0.5, 0.1, 0.0), "verify_cost"),
                                        ((0.5, float("nan")), "draft_cost"), ((0.5, 0.1, float("inf")), "verify_cost")])
def test_expected_speedup_errors(args, match):
    with pytest.raises(ValueError, match=match):
        expected_speedup(*args)


# ---- the walk ----------------------------------------------------------------------------------------------

def test_acceptance_walk_exact():
    w = acceptance_walk([True] * 6, 7)        # accept, accept, accept: 3 verify forwards + the prefill
    assert (w["drafted"], w["accepted"], w["main_forwards"]) == (3, 3, 4)
    assert w["kinds"] == ["main", "draft", "bonus", "draft", "bonus", "draft", "bonus"]
    w = acceptance_walk([False] * 4, 5)       # every draft rejected; the last token needs no draft
    assert (w["drafted"], w["accepted"], w["main_forwards"]) == (3, 0, 5)
    w = acceptance_walk([False, True, True, True], 5)   # reject at 0, accept at 1 (skips flag 2), then 1 token left
    assert w["kinds"] == ["main", "main", "draft", "bonus", "main"] and w["drafted"] == 2
    assert acceptance_walk([], 0)["main_forwards"] == 0 and acceptance_walk([], 1)["kinds"] == ["main"]


@given(flags=st.lists(st.booleans(), min_size=0, max_size=60))
def test_acceptance_walk_laws(flags):
    n = len(flags) + 1
    w = acceptance_walk(flags, n)
    assert len(w["kinds"]) == n
    assert n == w["main_forwards"] + w["accepted"]
    assert w["accepted"] <= w["drafted"] <= w["main_forwards"] - 1
    assert w["accepted"] <= sum(flags)
    if all(flags):
        assert w["main_forwards"] == 1 + math.ceil((n - 1) / 2)
    if not any(flags):
        assert w["main_forwards"] == n


@given(flags=st.lists(st.booleans(), min_size=0, max_size=60), extra=st.integers(0, 3))
def test_draft_outcomes_invert_the_walk(flags, extra):
    n = max(len(flags) + 1 - extra, 0)
    w = acceptance_walk(flags, n)
    out = draft_outcomes(w["kinds"])
    assert len(out) == w["drafted"] and sum(a for _, a in out) == w["accepted"]
    assert all(flags[j] == a for j, a in out)                    # the flags the walk read, where it read them
    assert [j for j, _ in out] == sorted({j for j, _ in out})
    flipped = list(flags)                                        # flags the walk never read do not matter
    seen = {j for j, _ in out}
    for j in range(len(flipped)):
        if j not in seen:
            flipped[j] = not flipped[j]
    assert acceptance_walk(flipped, n) == w


def test_draft_outcomes_on_a_run():
    assert draft_outcomes(["main", "draft", "bonus", "main", "main", "draft", "bonus", "main"]) == \
        [(0, True), (2, False), (3, False), (4, True)]          # the last token came from a plain forward
    assert draft_outcomes(["main"]) == [] and draft_outcomes([]) == []
    with pytest.raises(ValueError, match="bonus"):
        draft_outcomes(["main", "draft", "main", "main"])
    with pytest.raises(ValueError, match="'guess'"):
        draft_outcomes(["main", "guess"])


def test_acceptance_walk_errors():
    with pytest.raises(ValueError, match="n_new"):
        acceptance_walk([True], -1)
    with pytest.raises(ValueError, match="flags"):
        acceptance_walk([True], 5)


# ---- teacher-forced MTP accuracy -----------------------------------------------------------------------------

def test_mtp_logits_are_the_training_mtp_path():
    """CE of mtp_logits against t_{i+2} equals Transformer.forward's mtp_loss (same module, same positions)."""
    m = small_model(3)
    x = torch.randint(0, SMALL["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(3))
    y = torch.roll(x, -1, 1)
    with torch.no_grad():
        out = m(x, targets=y)
    main, mtp = mtp_logits(m, x)
    assert main.shape == (2, 20, SMALL["vocab_size"]) and mtp.shape == (2, 19, SMALL["vocab_size"])
    ce = torch.nn.functional.cross_entropy(mtp.reshape(-1, SMALL["vocab_size"]), y[:, 1:].reshape(-1))
    assert float(ce) == pytest.approx(float(out["mtp_loss"]), rel=1e-5)
    torch.testing.assert_close(main, out["logits"], rtol=1e-5, atol=1e-5)


def test_mtp_agreement_brute_force(base, val_prompts):
    x = torch.cat([p for _, p in val_prompts[:4]])
    a = mtp_agreement(base, x)
    main, mtp = [], []
    with torch.no_grad():
        for row in x:                                   # one position at a time, from the full forward's pieces
            out = base(row[None], return_hidden=True)
            for i in range(x.shape[1] - 1):
                main.append(int(out["logits"][0, i].argmax()) == int(row[i + 1]))
            _, ml = mtp_logits(base, row[None])
            mtp.append(ml.argmax(-1)[0])
    assert a["main_acc"] == pytest.approx(sum(main) / len(main))
    gd = torch.stack(mtp)
    assert a["mtp_acc"] == pytest.approx(float((gd[:, :-1] == x[:, 2:]).float().mean()))
    assert 0 < a["agree"] <= 1 and a["main_acc"] > 0.1


def test_mtp_logits_errors():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        mtp_logits(small_model(0), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="no MTP module"):
        mtp_logits(small_model(0, mtp_depth=0), torch.tensor([[1, 2]]))


# ---- widget logic ------------------------------------------------------------------------------------------

def test_mark_drafts():
    assert mark_drafts(["a", "b", "c", "d"], ["main", "draft", "bonus", "main"]) == "a⟦b⟧cd"
    assert mark_drafts(["a", "b", "c"], ["main", "draft", "bonus"], show_bonus=True) == "a⟦b⟧{c}"
    with pytest.raises(ValueError, match="kinds"):
        mark_drafts(["a"], [])
    with pytest.raises(ValueError, match="'guess'"):
        mark_drafts(["a"], ["guess"])


def test_speculative_view_on_the_base_model(base, val_prompts):
    from helpers.tokenizer import load_tokenizer
    tok = load_tokenizer()
    ids = val_prompts[0][1][0].tolist()
    v = speculative_view(base, tok, ids, 30, show_bonus=True)
    r = v["result"]
    assert v["text"].startswith(tok.decode(ids))
    assert v["text"].count("⟦") == v["accepted"] == r.accepted and v["text"].count("{") >= r.accepted
    assert v["saved"] == 30 - r.main_forwards == r.accepted
    assert v["plain_forwards"] == 30 and v["acceptance"] == r.acceptance
    assert same_greedy(base, r.tokens, base.generate(torch.tensor([ids]), 30, temperature=0), len(ids))
    pieces = [tok.decode([t]) for t in r.tokens[0, len(ids):].tolist()]
    assert v["text"] == tok.decode(ids) + mark_drafts(pieces, r.kinds, show_bonus=True)
    assert speculative_view(base, tok, ids, 30)["text"] == tok.decode(ids) + mark_drafts(pieces, r.kinds)


def test_interleaved_medians():
    calls = []
    r = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.002))},
                            repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4                      # interleaved: a, b, a, b, ...
    assert set(r) == {"a", "b"} and r["b"] > r["a"] >= 0 and r["b"] >= 0.002
    with pytest.raises(ValueError, match="repeats"):
        interleaved_medians({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="at least one"):
        interleaved_medians({})
