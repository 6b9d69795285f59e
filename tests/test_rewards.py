"""helpers.rewards: the verifier, the format rule, the flawed proxy, Bradley–Terry."""
import math

import pytest
import torch

from helpers.arithmetic import generate_problems
from helpers.config import ModelConfig
from helpers.model import Transformer
from helpers.rewards import (RewardModel, accuracy_reward, bt_loss, bt_probability, format_reward,
                             best_of_n, length_proxy_reward, preference_pairs, score_answers, train_reward_model)


def test_accuracy_and_format():
    p = generate_problems(1, 3)[0]
    assert accuracy_reward(p, p.completion()) == 1.0 and format_reward(p.completion()) == 1.0
    wrong = p.completion().rsplit("####", 1)[0] + f"#### {p.answer + 1}"
    assert accuracy_reward(p, wrong) == 0.0 and format_reward(wrong) == 1.0   # right shape, wrong number
    assert format_reward(f" the answer is #### {p.answer}") == 0.0 and accuracy_reward(p, f"#### {p.answer}") == 1.0
    assert format_reward(p.completion() + " Q: more") == 0.0


def test_length_proxy_pays_for_steps_not_truth():
    assert length_proxy_reward(" 1 + 1 = 2 #### 2") == pytest.approx(1 / 8 + 0.2)
    padded = "; ".join(["1 + 1 = 3"] * 10) + " #### 3"
    assert length_proxy_reward(padded) == pytest.approx(1.2)


def test_bradley_terry():
    assert bt_probability(2.0, 2.0) == 0.5
    assert bt_probability(1.0, 0.0) == pytest.approx(1 / (1 + math.exp(-1)))
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 3.0])
    assert float(bt_loss(a, b)) == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2)
    assert float(bt_loss(a + 5, b + 5)) == pytest.approx(float(bt_loss(a, b)))   # shift invariance
    with pytest.raises(ValueError):
        bt_loss(a, b[:1])


def test_reward_model_reads_last_real_token():
    torch.manual_seed(0)
    rm = RewardModel(Transformer(ModelConfig.cpu(n_layers=2)))
    torch.nn.init.normal_(rm.score_head.weight)
    x = torch.randint(0, 100, (2, 8))
    s = rm(x, torch.tensor([5, 8]))
    alone = rm(x[:1, :5], torch.tensor([5]))
    assert torch.allclose(s[0], alone[0], atol=1e-5)                  # padding after the answer is ignored
    with pytest.raises(ValueError, match="lengths"):
        rm(x, torch.tensor([0, 8]))


def test_preference_pairs_need_a_right_and_a_wrong_answer():
    probs = generate_problems(3, 5)
    right = [p.completion() for p in probs]
    wrong = [p.completion().rsplit("####", 1)[0] + f"#### {p.answer + 1}" for p in probs]
    pairs = preference_pairs(probs, [[right[0], wrong[0]], [right[1]], [wrong[2], wrong[2]]])
    assert pairs == [(probs[0], right[0], wrong[0])]


def test_reward_model_learns_a_separable_preference():
    from helpers.tokenizer import load_tokenizer
    tok = load_tokenizer()
    torch.manual_seed(0)
    rm = RewardModel(Transformer(ModelConfig.cpu(n_layers=2)))
    probs = generate_problems(40, 9, min_ops=1, max_ops=1)
    pairs = [(p, p.completion(), " no idea") for p in probs]   # chosen: worked answer; rejected: a refusal
    losses = train_reward_model(rm, tok, pairs, steps=30, batch_size=8, lr=1e-3, show_progress=False)
    assert losses[-1] < 0.3 < losses[0] + 1e-6                  # starts at ln 2 ≈ 0.69 (zero head)
    s_good = score_answers(rm, tok, probs[:5], [p.completion() for p in probs[:5]])
    s_bad = score_answers(rm, tok, probs[:5], [" no idea"] * 5)
    assert (s_good > s_bad).all()
    with pytest.raises(ValueError, match="no preference pairs"):
        train_reward_model(rm, tok, [], steps=1)


def test_best_of_n_with_the_verifier_is_pass_at_n():
    g = torch.Generator().manual_seed(0)
    correct = (torch.rand(50, 8, generator=g) < 0.3).float()
    for n in (1, 3, 8):
        est = best_of_n(correct, correct, n, draws=4000, generator=g)
        k = correct.sum(1)
        exact = torch.tensor([1 - math.comb(8 - int(ki), n) / math.comb(8, n) for ki in k])
        assert torch.allclose(est, exact, atol=0.03)
    anti = best_of_n(-correct, correct, 8, draws=10, generator=g)      # a reward that hates the truth
    assert torch.equal(anti, (correct.sum(1) == 8).float())
    rand = best_of_n(torch.zeros(50, 8), correct, 4, draws=4000, generator=g)   # all ties: a random pick
    assert torch.allclose(rand, correct.mean(1), atol=0.03)
    with pytest.raises(ValueError, match="n must be"):
        best_of_n(correct, correct, 9)
