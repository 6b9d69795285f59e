"""helpers.posttraining: the SFT data, the chat prompt, the graded chat test, the user-turn probability."""
import pytest
import torch

from helpers import posttraining as PT
from helpers.chat import role_ids
from helpers.config import ModelConfig
from helpers.model import Transformer
from helpers.pretraining import arithmetic_test_set
from helpers.tokenizer import load_tokenizer

TOK = load_tokenizer()


def test_sft_conversations_are_seeded_and_held_out():
    a, b = PT.sft_conversations(300, seed=5), PT.sft_conversations(300, seed=5)
    assert a == b and a != PT.sft_conversations(300, seed=6)
    test_q = {p.question for p in arithmetic_test_set()}
    asked = [m["content"] for c in a for m in c if m["role"] == "user"]
    assert not test_q & set(asked)
    multi = sum(len(c) == 4 for c in a) / len(a)
    assert 0.15 < multi < 0.35                       # about a quarter have two exchanges
    assert all(c[-1]["role"] == "assistant" for c in a)


def test_chat_prompt_ends_with_the_assistant_turn():
    p = arithmetic_test_set(1, ops=(2,))[0]
    ids = PT.chat_prompt(TOK, p)
    r = role_ids(TOK)
    assert ids[0] == r["user"] and ids[-2:] == [r["end"], r["assistant"]]
    assert TOK.decode(ids[1:-2]) == p.question


def test_chat_accuracy_scores_a_model_that_always_answers_right():
    probs = arithmetic_test_set(2, ops=(1, 2))
    torch.manual_seed(0)
    model = Transformer(ModelConfig.cpu(n_layers=2)).eval()
    replies = {tuple(PT.chat_prompt(TOK, p)): TOK.encode(p.completion()) + [role_ids(TOK)["end"]] for p in probs}

    class Oracle(torch.nn.Module):          # writes the right answer token by token, whatever it is asked
        def __init__(self):
            super().__init__()
            self.cfg, self.w = model.cfg, torch.nn.Parameter(torch.zeros(1))
            self.seen = None

        generate = Transformer.generate          # the real decoding loop, driven by this model's logits

        def setup_cache(self, b, n, **kw):
            self.seen = None

        def clear_cache(self):
            self.seen = None

        def forward(self, x, start_pos=0):
            self.seen = x if self.seen is None else torch.cat([self.seen, x], 1)
            logits = torch.full((x.shape[0], x.shape[1], self.cfg.vocab_size), -1e9)
            for b in range(x.shape[0]):
                for key, rep in replies.items():
                    n = len(key)
                    if tuple(self.seen[b, :n].tolist()) == key:
                        k = self.seen.shape[1] - n
                        logits[b, -1, rep[min(k, len(rep) - 1)]] = 0.0
            return {"logits": logits}

    res = PT.chat_accuracy(Oracle(), TOK, probs)
    assert res["all"] == 1.0 and res["format"] == 1.0 and res["by_ops"] == {1: 1.0, 2: 1.0}
    res = PT.chat_accuracy(model, TOK, probs, max_new_tokens=4)      # an untrained model: no answer
    assert res["all"] == 0.0 and len(res["replies"]) == len(probs)


def test_user_turn_probability_is_a_probability():
    probs = arithmetic_test_set(1, ops=(1,))
    torch.manual_seed(0)
    model = Transformer(ModelConfig.cpu(n_layers=2)).eval()
    p = PT.user_turn_probability(model, TOK, probs, [probs[0].completion()])
    assert 0.0 < p < 1.0


def test_answer_styles():
    p = arithmetic_test_set(1, ops=(2,))[0]
    assert PT.answer_text(p, "steps") == p.completion() and PT.answer_text(p, "answer") == f" #### {p.answer}"
    convs = PT.sft_conversations(50, seed=1, style="answer")
    steps = PT.sft_conversations(50, seed=1)
    assert [m["content"] for c in convs for m in c if m["role"] == "user"] == \
        [m["content"] for c in steps for m in c if m["role"] == "user"]        # same questions, other replies
    assert all(m["content"].startswith(" #### ") for c in convs for m in c if m["role"] == "assistant")
    import pytest
    with pytest.raises(ValueError, match="steps"):
        PT.sft_conversations(5, style="cot")


def _replies(convs):
    return [m["content"] for c in convs for m in c if m["role"] == "assistant"]


def test_mixed_style_draws_each_reply_from_either_teacher():
    import pytest
    steps, answer = PT.sft_conversations(400, seed=3), PT.sft_conversations(400, seed=3, style="answer")
    mixed = PT.sft_conversations(400, seed=3, style="mixed")
    kinds = []
    for s, a, m in zip(_replies(steps), _replies(answer), _replies(mixed)):
        assert m in (s, a)                                     # the same problem, one of the two replies
        kinds.append(PT.reply_style(m))
    n, k = len(kinds), kinds.count("answer")
    assert abs(k / n - PT.MIX_ANSWER_SHARE) < 4 * (0.25 / n) ** 0.5  # binomial: within 4 standard deviations
    assert PT.sft_conversations(60, seed=3, style="mixed", answer_share=0.0) == PT.sft_conversations(60, seed=3)
    assert PT.sft_conversations(60, seed=3, style="mixed", answer_share=1.0) == \
        PT.sft_conversations(60, seed=3, style="answer")
    with pytest.raises(ValueError, match="answer_share"):
        PT.sft_conversations(5, style="mixed", answer_share=1.5)


def test_reply_style():
    assert PT.reply_style(" #### 12") == "answer" and PT.reply_style("#### -3") == "answer"
    assert PT.reply_style(" 3 + 4 = 7 #### 7") == "steps" and PT.reply_style("") == "steps"


def _policy(seed=0):
    torch.manual_seed(seed)
    return Transformer(ModelConfig.cpu(n_layers=2, max_seq_len=96)).eval()


def _opt(model, lr=1e-3):
    from helpers.optim import AdamW, param_groups
    return AdamW(param_groups(model, 0.0), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)


def test_grpo_step_is_still_where_nothing_is_learned():
    """A random policy answers nothing right: every group's rewards are equal (A = 0), and the policy is the
    reference (the KL term's gradient is 0), so the step cannot move a single weight."""
    import copy
    model = _policy()
    ref = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    probs = arithmetic_test_set(3, ops=(1,))
    st = PT.grpo_step(model, ref, _opt(model), TOK, probs, 4, max_new_tokens=8, updates=2,
                      generator=torch.Generator().manual_seed(0))
    assert st["reward"] == 0.0 and st["informative"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert set(st) == {"reward", "kl", "clip_frac", "length", "answer_only", "informative", "sample_s", "update_s"}
    assert 1 <= st["length"] <= 8 and 0 <= st["answer_only"] <= 1


def test_grpo_step_moves_the_policy_where_groups_differ():
    """The SFT model on two-operation problems gets some replies right and some wrong at temperature 2: the
    advantages are non-zero and the weights move; the same generator seed gives the same step."""
    import copy
    probs = arithmetic_test_set(8, ops=(2,))
    out = []
    for _ in range(2):
        model = PT.load_sft("cpu")
        ref = copy.deepcopy(model)
        w0 = [p.detach().clone() for p in model.parameters()]
        st = PT.grpo_step(model, ref, _opt(model, 1e-4), TOK, probs, 8, temperature=1.5, updates=2,
                          generator=torch.Generator().manual_seed(1))
        moved = sum(float((p.detach() - w).abs().sum()) for p, w in zip(model.parameters(), w0))
        out.append(({k: v for k, v in st.items() if not k.endswith("_s")}, moved))
    (st, moved), (st2, moved2) = out
    assert 0 < st["informative"] <= 1 and moved > 0
    assert st == st2 and moved == moved2
    assert st["kl"] > 0                                        # the second update sees a policy ≠ reference


def test_grpo_step_rejects_bad_settings():
    import copy
    import pytest
    model = _policy()
    ref, probs = copy.deepcopy(model), arithmetic_test_set(1, ops=(1,))
    for kwargs, msg in (({"group_size": 1}, "group_size"), ({"updates": 0}, "updates"),
                        ({"temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=msg):
            PT.grpo_step(model, ref, _opt(model), TOK, probs, **kwargs)
    with pytest.raises(ValueError, match="no problems"):
        PT.grpo_step(model, ref, _opt(model), TOK, [])


def test_rejection_sample_keeps_only_what_the_verifier_accepts():
    import pytest
    probs = arithmetic_test_set(6, ops=(1, 2))
    sft = PT.load_sft("cpu")
    gen = lambda: torch.Generator().manual_seed(0)
    kept, st = PT.rejection_sample(sft, TOK, probs, 4, generator=gen())
    samples = PT.chat_generate(sft, TOK, probs, temperature=1.0, samples=4, generator=gen())
    from helpers.arithmetic import check_answer
    want = [(p.question, next(r for r in rs if check_answer(p, r))) for p, rs in zip(probs, samples)
            if any(check_answer(p, r) for r in rs)]                       # brute force: the first right reply
    assert [(c[0]["content"], c[1]["content"]) for c in kept] == want
    assert st["kept"] == len(want) and st["kept_right"] == 1.0
    assert st["pass_at_k"] == len(want) / len(probs)
    assert st["sampled"] == sum(check_answer(p, r) for p, rs in zip(probs, samples) for r in rs) / (4 * len(probs))
    every, st2 = PT.rejection_sample(sft, TOK, probs, 4, accept="all", generator=gen())
    assert [c[1]["content"] for c in every] == [rs[0] for rs in samples] and st2["kept"] == len(probs)
    capped, st3 = PT.rejection_sample(sft, TOK, probs, 4, accept="all", max_keep=2, generator=gen())
    assert capped == every[:2] and st3["kept"] == 2
    with pytest.raises(ValueError, match="k must be"):
        PT.rejection_sample(sft, TOK, probs, 0)
    with pytest.raises(ValueError, match="no problems"):
        PT.rejection_sample(sft, TOK, [], 2)
    with pytest.raises(ValueError, match="accept must be"):
        PT.rejection_sample(sft, TOK, probs, 2, accept="judge")
    odd = lambda ps, rs: [i % 2 == 1 for i in range(len(rs))]               # a filter that passes every 2nd reply
    by_fn, st4 = PT.rejection_sample(sft, TOK, probs, 4, accept=odd, generator=gen())
    assert [c[1]["content"] for c in by_fn] == [rs[1] for rs in samples] and st4["kept"] == len(probs)
    assert st4["kept_right"] == sum(check_answer(p, rs[1]) for p, rs in zip(probs, samples)) / len(probs)


def test_rejection_sample_keeps_nothing_from_a_policy_that_is_never_right():
    model = _policy()
    kept, st = PT.rejection_sample(model, TOK, arithmetic_test_set(2, ops=(1,)), 2,
                                   generator=torch.Generator().manual_seed(0))
    assert kept == [] and st["kept"] == 0 and st["pass_at_k"] == 0.0 and st["kept_right"] == 0.0


def test_bare_share():
    assert PT.bare_share([" #### 3", " 1 + 2 = 3 #### 3", "#### 4", " 2 * 2 = 4 #### 4"]) == 0.5
    assert PT.bare_share([]) == 0


def test_length_batches_cover_every_prompt_once_in_equal_length_batches():
    from helpers.posttraining import length_batches
    prompts = [[1] * n for n in (3, 5, 3, 3, 7, 5, 3)]
    out = list(length_batches(prompts, 2, 10, 12, "here"))
    assert sorted(i for _, part, _ in out for i in part) == list(range(len(prompts)))
    for n, part, room in out:
        assert 1 <= len(part) <= 2 and {len(prompts[i]) for i in part} == {n} and room == min(10, 12 - n)
    assert [n for n, _, _ in out] == sorted(n for n, _, _ in out)              # shortest first
    with pytest.raises(ValueError, match="here: a prompt of 12 tokens leaves no room"):
        list(length_batches([[1] * 12], 2, 10, 12, "here"))
