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
    (lambda: tasks.pair_recall(2, 9, n_keys=8), "n_keys ≥ 9"),
    (lambda: tasks.pair_recall(2, 0), "n_pairs"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@settings(max_examples=30, deadline=None)
@given(n_pairs=st.integers(1, 10), n_values=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_pair_recall_answers_are_the_stored_values(n_pairs, n_values, seed):
    n_keys = 10
    x, y = tasks.pair_recall(3, n_pairs, n_keys=n_keys, n_values=n_values, generator=torch.Generator().manual_seed(seed))
    assert x.shape == y.shape == (3, 2 * n_pairs)
    vocab = tasks.pair_recall_vocab(n_keys, n_values)
    assert int(x.min()) >= 1 and int(x.max()) < vocab and int(y.max()) < vocab
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        store = {}
        for tok in row_x[:n_pairs]:                      # decode pair tokens by brute force
            k, v = divmod(tok - 1, n_values)
            assert 0 <= k < n_keys and k not in store, "keys must be distinct pair tokens"
            store[k] = v
        assert all(t == tasks.IGNORE for t in row_y[:n_pairs])
        asked = [tok - 1 - n_keys * n_values for tok in row_x[n_pairs:]]
        assert sorted(asked) == sorted(store), "every stored key is queried once"
        for k, target in zip(asked, row_y[n_pairs:]):
            assert target == 1 + n_keys * n_values + n_keys + store[k]


def test_train_on_task_records_and_learns_a_trivial_task():
    """A one-pair recall (the answer is a function of the first token) is learned in a few steps; the records are
    at the asked steps and their accuracy agrees with masked_accuracy recomputed on the same rows."""
    from helpers.config import ModelConfig
    from helpers.model import Transformer
    from helpers.runtime import seed_everything

    cfg = ModelConfig.cpu(vocab_size=tasks.pair_recall_vocab(4, 4), dim=32, n_heads=2, n_layers=1, n_dense_layers=1,
                          n_routed_experts=0, mtp_depth=0, balance="none", max_seq_len=2, q_lora_rank=0, inter_dim=64)
    seed_everything(0)
    m = Transformer(cfg)
    get = tasks.task_batches(tasks.pair_recall, 32, seed=0, n_pairs=1, n_keys=4, n_values=4)
    rec = tasks.train_on_task(m, get, 60, lr=1e-2, warmup_steps=5, eval_every=20, eval_rows=64)
    assert [r["step"] for r in rec] == [20, 40, 60]
    assert rec[-1]["acc"] == 1.0 and rec[-1]["loss"] < rec[0]["loss"]
    xv, yv = tasks.task_batches(tasks.pair_recall, 32, seed=0, n_pairs=1, n_keys=4, n_values=4)("val")
    assert tasks.masked_accuracy(m(xv)["logits"], yv) == 1.0


def _induction_oracle(row: list[int]) -> list[int]:
    """Brute-force induction: at each position predict the token that followed the current token's last earlier
    occurrence (SEP for none)."""
    out = []
    for t, tok in enumerate(row):
        prev = [i for i in range(t) if row[i] == tok]
        out.append(row[prev[-1] + 1] if prev else tasks.SEP)
    return out


@settings(max_examples=30, deadline=None)
@given(length=st.integers(2, 20), lo_gap=st.integers(0, 18), prefix=st.integers(0, 12), seed=st.integers(0, 10_000))
def test_induction_copy_is_solved_exactly_by_induction(length, lo_gap, prefix, seed):
    lo = max(2, length - lo_gap)
    x, y = tasks.induction_copy(5, length, n_symbols=40, min_length=lo, prefix=prefix,
                                generator=torch.Generator().manual_seed(seed))
    assert x.shape == y.shape == (5, prefix + 2 * length + 1)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        content = [t for t in row_x if t != tasks.SEP]
        L = (len(content) - prefix) // 2
        assert lo <= L <= length
        first = content[:prefix + L]
        assert len(set(first)) == len(first) and all(1 <= t <= 40 for t in first)     # distinct symbols
        assert content[prefix + L:] == first[prefix:]                                  # the second copy
        graded = [t for t, v in enumerate(row_y) if v != tasks.IGNORE]
        assert graded == list(range(prefix + L + 1, prefix + 2 * L))                   # s_2 … s_L
        oracle = _induction_oracle(row_x)
        assert all(oracle[t] == row_y[t] == row_x[t + 1] for t in graded)


def test_induction_copy_checks_its_arguments():
    for call, word in ((lambda: tasks.induction_copy(2, 1), "length"),
                       (lambda: tasks.induction_copy(2, 8, min_length=9), "min_length"),
                       (lambda: tasks.induction_copy(2, 8, n_symbols=10, prefix=4), "n_symbols"),
                       (lambda: tasks.induction_copy(2, 8, prefix=-1), "prefix")):
        with pytest.raises(ValueError, match=word):
            call()
