"""helpers.posttraining: the SFT data, the chat prompt, the graded chat test, the user-turn probability."""
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
