"""helpers.tasks: the synthetic tasks are what they say (checked by brute force on each row)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers import tasks


@settings(max_examples=30, deadline=None)
@given(n_pairs=st.integers(1, 12), extra_q=st.integers(0, 11), seed=st.integers(0, 10_000))
def test_associative_recall_answers_are_the_stored_values(n_pairs, extra_q, seed):
    n_queries = min(n_pairs, 1 + extra_q)
    g = torch.Generator().manual_seed(seed)
    x, y = tasks.associative_recall(4, n_pairs, n_queries, n_keys=16, n_values=8, generator=g)
    assert x.shape == y.shape == (4, 2 * (n_pairs + n_queries))
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        store = dict(zip(row_x[0:2 * n_pairs:2], row_x[1:2 * n_pairs:2]))
        assert len(store) == n_pairs, "keys must be distinct"
        assert all(1 <= k <= 16 for k in store) and all(17 <= v <= 24 for v in store.values())
        graded = [(t, v) for t, v in enumerate(row_y) if v != tasks.IGNORE]
        assert len(graded) == n_queries
        for t, v in graded:
            assert t >= 2 * n_pairs and row_x[t] in store and store[row_x[t]] == v == row_x[t + 1]


def test_copy_task_targets_are_the_second_copy():
    x, y = tasks.copy_task(3, 10, n_symbols=5, generator=torch.Generator().manual_seed(1))
    assert x.shape == (3, 21) and (x[:, 10] == tasks.SEP).all()
    assert torch.equal(x[:, :10], x[:, 11:])
    assert torch.equal(y[:, 10:20], x[:, 11:21]) and (y[:, :10] == tasks.IGNORE).all() and (y[:, 20] == tasks.IGNORE).all()
    assert x.max() <= 5 and x[:, :10].min() >= 1


def test_task_batches_are_seeded_and_splits_differ():
    a = tasks.task_batches(tasks.copy_task, 4, seed=3, length=6)
    b = tasks.task_batches(tasks.copy_task, 4, seed=3, length=6)
    assert torch.equal(a("train")[0], b("train")[0])
    assert not torch.equal(a("val")[0], a("train")[0])
    with pytest.raises(ValueError, match="split"):
        a("test")


def test_masked_accuracy_counts_graded_positions_only():
    y = torch.tensor([[tasks.IGNORE, 2, 3]])
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 4] = logits[0, 1, 2] = logits[0, 2, 1] = 1.0
    assert tasks.masked_accuracy(logits, y) == 0.5
    with pytest.raises(ValueError, match="no graded"):
        tasks.masked_accuracy(logits, torch.full((1, 3), tasks.IGNORE))


@pytest.mark.parametrize("call, match", [
    (lambda: tasks.associative_recall(2, 5, 6), "n_queries"),
    (lambda: tasks.associative_recall(2, 40, 1, n_keys=32), "n_keys"),
    (lambda: tasks.associative_recall(2.5, 4, 2), "n must be an int"),
    (lambda: tasks.copy_task(2, 0), "length"),
    (lambda: tasks.copy_task(2, 4, n_symbols=1), "n_symbols"),
    (lambda: tasks.task_batches(tasks.copy_task, 0, length=4), "batch_size"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
