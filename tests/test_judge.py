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


def test_pair_messages_reply_and_parse_choice():
    m = J.pair_messages(P[0], " #### 1 ", " 1 + 1 = 2 #### 2", reply=" verdict: B")
    assert m[0]["content"] == f"Which answer is right? {P[0].question} A: #### 1 B: 1 + 1 = 2 #### 2"
    ids, mask = encode_chat(TOK, m)
    assert sum(mask) == len(TOK.encode(" verdict: B")) + 1
    for choice in "AB":
        for rationale in (True, False):
            reply = J.pair_reply(P[0], choice, rationale)
            assert J.parse_choice(reply) == choice and reply.startswith(P[0].completion()) is rationale
    assert J.parse_choice("verdict: A then verdict: B") == "B" and J.parse_choice("verdict: right") is None
    assert J.parse_choice("verdict: AB") is None
    with pytest.raises(ValueError, match="'A' or 'B'"):
        J.pair_reply(P[0], "C")


def test_pair_conversations_put_the_right_reply_first_at_the_asked_rate():
    right, wrong = P[1].completion(), f" #### {P[1].answer + 1}"
    n = 2000
    for share in (0.0, 0.5, 0.8, 1.0):
        convs = J.pair_conversations([P[1]] * n, [right] * n, [wrong] * n, first_share=share, seed=1)
        firsts = [J.parse_choice(c[-1]["content"]) == "A" for c in convs]
        # the target always names the right reply: A exactly when the right reply is shown first
        assert all((c[0]["content"].index(right.strip()) < c[0]["content"].index(wrong.strip())) == f
                   for c, f in zip(convs, firsts))
        assert abs(sum(firsts) / n - share) < 4 * (share * (1 - share) / n) ** 0.5 + 1e-12
    with pytest.raises(ValueError, match="probability"):
        J.pair_conversations([P[1]], [right], [wrong], first_share=1.5)
    with pytest.raises(ValueError, match="wrong replies"):
        J.pair_conversations([P[1]], [right], [])


def test_position_bias_counts_by_hand():
    # right shown first → choices; right shown second → choices (the right answer is then B)
    rf = ["A", "A", "A", "B", None, "A"]
    rs = ["B", "A", "A", "A", "B", "B"]
    pb = J.position_bias(rf, rs)
    assert pb["acc_first"] == pytest.approx(4 / 6) and pb["acc_second"] == pytest.approx(3 / 6)
    assert pb["bias"] == pytest.approx(1 / 6)
    assert J.swap_scores(rf, rs) == [1, 0.5, 0.5, 0, 0.5, 1]
    assert pb["consistency"] == pytest.approx(3 / 6) and pb["consistent_accuracy"] == pytest.approx(2 / 3)
    assert pb["swap_accuracy"] == pytest.approx((pb["acc_first"] + pb["acc_second"]) / 2)   # the law
    assert pb["p_first"] == pytest.approx(7 / 11) and pb["no_choice"] == pytest.approx(1 / 12)
    # a judge that always says A: perfectly biased, never consistent, swap score exactly chance
    always = J.position_bias(["A"] * 5, ["A"] * 5)
    assert always["bias"] == 1 and always["consistency"] == 0 and always["swap_accuracy"] == 0.5
    assert J.position_bias([None], [None])["consistency"] == 0
    with pytest.raises(ValueError, match="both orders"):
        J.swap_scores(["A"], [])


def test_pair_choices_of_an_untrained_model():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.cpu(n_layers=2, max_seq_len=128)).eval()
    choices, replies = J.pair_choices(model, TOK, P[:2], [" #### 1", " #### 2"], [" #### 3", " #### 4"], max_new_tokens=6)
    assert len(choices) == len(replies) == 2 and all(c is None for c in choices)
    with pytest.raises(ValueError, match="second"):
        J.pair_choices(model, TOK, P[:2], [" #### 1"], [" #### 2"])
