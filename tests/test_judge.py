"""helpers.judge: the judging conversation, verdict parsing, training labels from the verifier, agreement."""
import pytest
import torch

from helpers import judge as J
from helpers.chat import encode_chat
from helpers.config import ModelConfig
from helpers.model import Transformer
from helpers.pretraining import arithmetic_test_set
from helpers.tokenizer import load_tokenizer

TOK = load_tokenizer()
P = arithmetic_test_set(3, ops=(2,))


def test_judge_messages_show_problem_and_candidate():
    m = J.judge_messages(P[0], " 1 + 1 = 2 #### 2 ")
    assert m == [{"role": "user", "content": f"Grade this answer. {P[0].question} Answer: 1 + 1 = 2 #### 2"}]
    m = J.judge_messages(P[0], "x", reply=" verdict: wrong")
    assert m[-1] == {"role": "assistant", "content": " verdict: wrong"}
    ids, mask = encode_chat(TOK, m)                   # a valid chat: the judge's reply is what SFT trains
    assert sum(mask) == len(TOK.encode(" verdict: wrong")) + 1


def test_judge_reply_and_parse_verdict_round_trip():
    for right in (True, False):
        for rationale in (True, False):
            reply = J.judge_reply(P[0], right, rationale)
            assert J.parse_verdict(reply) is right
            assert reply.startswith(P[0].completion()) is rationale
    assert J.parse_verdict(" 2 + 2 = 4 #### 4") is None
    assert J.parse_verdict("verdict: right ... verdict: wrong") is False       # the last verdict counts


def test_judge_conversations_label_with_the_verifier():
    right, wrong = P[1].completion(), f" #### {P[1].answer + 1}"
    convs = J.judge_conversations([P[1], P[1]], [right, wrong])
    assert [J.parse_verdict(c[-1]["content"]) for c in convs] == [True, False]
    with pytest.raises(ValueError, match="candidates"):
        J.judge_conversations([P[1]], [])


def test_agreement_counts_by_hand():
    verdicts = [True, True, False, None, False, True]
    truth = [True, False, False, True, True, True]
    a = J.agreement(verdicts, truth)
    assert a["accuracy"] == pytest.approx(3 / 6)        # rows 0, 2, 5
    assert a["precision"] == pytest.approx(2 / 3)       # accepted rows 0, 1, 5: two right
    assert a["recall"] == pytest.approx(2 / 4)          # right rows 0, 3, 4, 5: two accepted
    assert a["accepted"] == pytest.approx(3 / 6) and a["no_verdict"] == pytest.approx(1 / 6)
    assert a["base_rate"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="as many"):
        J.agreement([True], [True, False])


def test_judge_verdicts_of_an_untrained_model():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.cpu(n_layers=2, max_seq_len=128)).eval()
    verdicts, replies = J.judge_verdicts(model, TOK, P[:2], [" #### 1", " #### 2"], max_new_tokens=6)
    assert len(verdicts) == len(replies) == 2 and all(v is None for v in verdicts)
    with pytest.raises(ValueError, match="candidates"):
        J.judge_verdicts(model, TOK, P[:2], [" #### 1"])
