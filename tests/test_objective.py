"""Stable softmax / cross-entropy against torch; the bigram model against a brute-force count."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from helpers.objective import (BigramModel, cross_entropy, entropy, log_softmax, logsumexp, naive_cross_entropy,
                               naive_softmax, perplexity, softmax, temperature_view)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(2, 50), st.floats(1e-3, 1e4), st.integers(0, 10_000))
def test_match_torch(n, v, scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, v, (n,), generator=g)
    torch.testing.assert_close(logsumexp(z), torch.logsumexp(z, -1))
    torch.testing.assert_close(log_softmax(z), F.log_softmax(z, -1))
    torch.testing.assert_close(softmax(z), F.softmax(z, -1))
    torch.testing.assert_close(cross_entropy(z, y), F.cross_entropy(z, y))


def test_huge_logits_naive_overflows_stable_does_not():
    z = torch.tensor([[1000.0, 999.0, 0.0]])
    y = torch.tensor([1])
    assert torch.isnan(naive_softmax(z)).any()
    assert not torch.isfinite(naive_cross_entropy(z, y))
    torch.testing.assert_close(cross_entropy(z, y), F.cross_entropy(z, y))
    assert cross_entropy(z, y).item() == pytest.approx(1 + math.log1p(math.exp(-1)), rel=1e-6)
    assert logsumexp(torch.full((3,), -math.inf)).item() == -math.inf


def test_ignore_index_and_shapes():
    z, y = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    y[0, :2] = -1
    torch.testing.assert_close(cross_entropy(z, y), F.cross_entropy(z.view(-1, 7), y.view(-1), ignore_index=-1))
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(z, y[:, :4])
    with pytest.raises(ValueError, match="integer"):
        cross_entropy(z, y.float())
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        cross_entropy(z, torch.full((2, 5), 7))


def test_uniform_baseline_and_perplexity():
    v = 4096
    z = torch.zeros(10, v)
    loss = cross_entropy(z, torch.randint(0, v, (10,)))
    assert loss.item() == pytest.approx(math.log(v)) and perplexity(loss) == pytest.approx(v)
    assert entropy(softmax(z[0])).item() == pytest.approx(math.log(v), rel=1e-6)


def test_bigram_brute_force():
    v, k = 5, 0.5
    toks = torch.tensor([0, 1, 2, 1, 2, 3, 1, 2, 4, 0, 1])
    m = BigramModel(v, k).fit(toks)
    pairs = list(zip(toks[:-1].tolist(), toks[1:].tolist()))
    for a in range(v):
        for b in range(v):
            c_ab, c_a = pairs.count((a, b)), sum(1 for p in pairs if p[0] == a)
            assert m.log_probs()[a, b].item() == pytest.approx(math.log((c_ab + k) / (c_a + k * v)))
    assert torch.allclose(m.log_probs().exp().sum(-1), torch.ones(v))
    test = torch.tensor([1, 2, 3, 3])
    expect = -sum(math.log((pairs.count((a, b)) + k) / (sum(1 for p in pairs if p[0] == a) + k * v))
                  for a, b in zip(test[:-1].tolist(), test[1:].tolist())) / 3
    assert m.loss(test) == pytest.approx(expect)
    # the bigram as logits: cross_entropy of its log-probs gives the same loss
    assert cross_entropy(m.logits(test[:-1]), test[1:]).item() == pytest.approx(expect)


def test_bigram_errors():
    with pytest.raises(ValueError, match="k > 0"):
        BigramModel(5, k=0)
    m = BigramModel(5)
    with pytest.raises(ValueError, match="token ids"):
        m.fit(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="at least 2"):
        m.loss(torch.tensor([1]))


def test_temperature_view():
    z = torch.tensor([2.0, 1.0, 0.0, -1.0])
    r1 = temperature_view(z, 1.0, target=1)
    assert r1["top"][0][0] == 0 and r1["rank"] == 2
    assert r1["loss"] == pytest.approx(F.cross_entropy(z[None], torch.tensor([1])).item(), rel=1e-6)
    cold, hot = temperature_view(z, 0.1), temperature_view(z, 10.0)
    assert cold["entropy"] < r1["entropy"] < hot["entropy"] < math.log(4)
    assert sum(p for _, p in temperature_view(z, 0.7, top=4)["top"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature"):
        temperature_view(z, 0.0)
    with pytest.raises(ValueError, match="one distribution"):
        temperature_view(z[None], 1.0)
    with pytest.raises(ValueError, match="target"):
        temperature_view(z, 1.0, target=4)


def test_bigram_window_losses_counts_each_domain_stream_and_scores_its_windows():
    from helpers.objective import bigram_window_losses
    a, b = torch.tensor([0, 1, 0, 1, 2]), torch.tensor([3, 4, 3])
    splits = {"a": {"train": a}, "b": {"train": b}}
    win = {"a": [(torch.tensor([[0, 1]]), torch.tensor([[1, 0]]))], "b": [(torch.tensor([[3]]), torch.tensor([[4]]))]}
    ref = BigramModel(5).fit(a).fit(b)          # no pair (2, 3) across the two streams
    lp = ref.log_probs()
    out = bigram_window_losses(splits, win, 5, ("a", "b"))
    assert out["val_losses"]["a"] == pytest.approx(-(lp[0, 1] + lp[1, 0]).item() / 2)
    assert out["val_losses"]["b"] == pytest.approx(-lp[3, 4].item())
    assert out["val_loss"] == pytest.approx(sum(out["val_losses"].values()) / 2)
    assert ref.counts[2, 3] == 0 and BigramModel(5).fit(torch.cat([a, b])).counts[2, 3] == 1   # cross pair not counted
