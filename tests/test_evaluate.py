"""helpers.evaluate: bootstrap intervals (against the normal approximation and by coverage), paired comparisons,
per-item arithmetic scores with their decoding settings."""
import math
import random

import pytest
import torch

from helpers import evaluate as E
from helpers import posttraining as PT
from helpers.pretraining import arithmetic_accuracy, arithmetic_test_set, load_base
from helpers.tokenizer import load_tokenizer


def test_bootstrap_of_a_constant_is_that_constant():
    assert E.bootstrap_ci([0.25] * 30) == (0.25, 0.25, 0.25)


def test_bootstrap_half_width_matches_the_normal_approximation():
    rng = random.Random(0)
    x = [float(rng.random() < 0.45) for _ in range(400)]
    m, lo, hi = E.bootstrap_ci(x, level=0.9, n_boot=4000)
    normal = 1.6449 * math.sqrt(m * (1 - m) / len(x))
    assert lo < m < hi
    assert abs((hi - lo) / 2 - normal) < 0.15 * normal


def test_bootstrap_interval_covers_the_truth_about_as_often_as_it_says():
    rng = random.Random(1)
    covered = 0
    for k in range(200):
        x = [float(rng.random() < 0.3) for _ in range(100)]
        _, lo, hi = E.bootstrap_ci(x, level=0.9, n_boot=500, seed=k)
        covered += lo <= 0.3 <= hi
    assert 0.82 <= covered / 200 <= 0.97            # nominal 0.90; binomial noise over 200 tests ≈ ± 0.02


def test_bootstrap_is_seeded():
    rng = random.Random(5)
    x = [rng.random() for _ in range(50)]
    assert E.bootstrap_ci(x, seed=3) == E.bootstrap_ci(x, seed=3)
    assert E.bootstrap_ci(x, seed=3) != E.bootstrap_ci(x, seed=4)


def test_paired_bootstrap_sees_a_small_consistent_difference_that_separate_intervals_miss():
    rng = random.Random(2)
    d = [rng.random() for _ in range(200)]                # item difficulty, shared by both models
    a, b = [v + 0.02 for v in d], d
    _, alo, ahi = E.bootstrap_ci(a)
    _, blo, bhi = E.bootstrap_ci(b)
    assert alo < bhi                                       # the separate intervals overlap
    p = E.paired_bootstrap(a, b)
    assert p["real"] and p["diff"] == pytest.approx(0.02) and p["low"] == pytest.approx(0.02)
    same = E.paired_bootstrap(b, b)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "real": False}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        E.bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        E.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        E.bootstrap_ci([1.0], level=90)
    with pytest.raises(ValueError, match="n_boot"):
        E.bootstrap_ci([1.0], n_boot=10)
    with pytest.raises(ValueError, match="same items"):
        E.paired_bootstrap([1.0, 0.0], [1.0])


def test_arithmetic_items_agree_with_the_graded_tests():
    tok = load_tokenizer()
    probs = arithmetic_test_set(3)
    sft = PT.load_sft("cpu")
    greedy = E.arithmetic_items(sft, tok, probs)
    assert greedy["scores"] == [float(x) for x in _chat_ok(sft, tok, probs)]
    assert greedy["settings"] == {"format": "chat", "decoding": "greedy", "samples": 1}
    sampled = E.arithmetic_items(sft, tok, probs, temperature=1.0, samples=4, generator=torch.Generator().manual_seed(0))
    assert all(s in (0, 0.25, 0.5, 0.75, 1) for s in sampled["scores"])
    assert sampled["settings"]["decoding"] == "sampled at T = 1" and len(sampled["replies"][0]) == 4
    base = load_base("cpu")
    own = E.arithmetic_items(base, tok, probs, chat=False)
    assert sum(own["scores"]) / len(probs) == pytest.approx(arithmetic_accuracy(base, tok, probs)["all"])
    with pytest.raises(ValueError, match="greedily only"):
        E.arithmetic_items(base, tok, probs, chat=False, temperature=1.0)
    with pytest.raises(ValueError, match="samples=1"):
        E.arithmetic_items(sft, tok, probs, samples=2)
    with pytest.raises(ValueError, match="no problems"):
        E.arithmetic_items(sft, tok, [])


def _chat_ok(model, tok, probs):
    from helpers.arithmetic import check_answer
    return [check_answer(p, r) for p, r in zip(probs, PT.chat_accuracy(model, tok, probs)["replies"])]
