"""helpers.batching: the token cache, windows, packing, the mixture sampler, evaluation batches."""
import shutil
import time
from collections import Counter

import pytest
import torch

import helpers.batching as hb
from helpers.batching import MixtureSampler, eval_batches, load_splits, pack_documents, random_windows
from helpers.data import DOMAINS, DataFileError, record_checksum, split_documents
from helpers.runtime import repo_root
from helpers.tokenizer import load_tokenizer


def test_load_splits_shape_dtype_speed():
    hb._cache.clear()
    t0 = time.perf_counter()
    splits = load_splits()
    assert time.perf_counter() - t0 < 1.0
    assert set(splits) == set(DOMAINS)
    for d in DOMAINS:
        assert set(splits[d]) == {"train", "val"}
        for t in splits[d].values():
            assert t.dtype == torch.int64 and t.dim() == 1
            assert 0 <= int(t.min()) and int(t.max()) < 4096
        ratio = len(splits[d]["val"]) / (len(splits[d]["train"]) + len(splits[d]["val"]))
        assert 0.07 < ratio < 0.16, (d, ratio)
    splits["code"]["train"][:10] = 0  # callers get their own tensors
    assert int(load_splits()["code"]["train"][:10].sum()) > 0


@pytest.mark.parametrize("domain", DOMAINS)
def test_cache_is_the_documents_encoded(domain):
    tok, splits = load_tokenizer(), load_splits()
    for split, docs in split_documents(domain).items():
        ids = splits[domain][split]
        assert tok.decode(ids) == "".join(doc + "<|endoftext|>" for doc in docs)
        assert int((ids == tok.eot_id).sum()) == len(docs)
    if domain == "arithmetic":  # exact ids on a domain that is quick to re-encode
        docs = split_documents(domain)["val"]
        want = [i for doc in docs for i in tok.encode(doc) + [tok.eot_id]]
        assert splits[domain]["val"].tolist() == want


def test_cache_from_another_tokenizer_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "data"
    shutil.copytree(repo_root() / "data", d)
    monkeypatch.setenv("COURSE_DATA", str(d))
    p = d / "tokenizer.json"
    p.write_text(p.read_text().replace('"version": 1', '"version":  1'))  # same content, other bytes
    record_checksum("tokenizer.json", d)
    with pytest.raises(DataFileError, match="different tokenizer.*build_data.py tokens"):
        load_splits()
    (d / "tokens.npz").write_bytes(b"garbage")
    with pytest.raises(DataFileError, match=r"tokens\.npz was altered.*build_data.py tokens"):
        load_splits()


def test_split_stats_match_the_text():
    stats, splits = hb.split_stats(), load_splits()
    for d in DOMAINS:
        for split, docs in split_documents(d).items():
            assert stats[d][split] == {"tokens": len(splits[d][split]), "documents": len(docs),
                                       "bytes": sum(len(doc.encode("utf-8")) for doc in docs)}


def _ramp(n=1000):
    return torch.arange(n)


def test_random_windows_shift_and_contiguity():
    g = torch.Generator().manual_seed(0)
    x, y = random_windows(_ramp(), batch_size=6, block_size=16, generator=g)
    assert x.shape == y.shape == (6, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)                          # y is x shifted by one (tokens are a ramp)
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(6, 16))  # each row is a contiguous slice
    assert int(y.max()) <= 999
    again = random_windows(_ramp(), 6, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x)
    tokens = load_splits()["shakespeare"]["train"]
    x, y = random_windows(tokens, 4, 32, generator=torch.Generator().manual_seed(1), device="cpu")
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_random_windows_reach_both_ends():
    starts = Counter()
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x, _ = random_windows(_ramp(20), 8, 16, generator=g)
        starts.update(x[:, 0].tolist())
    assert set(starts) == {0, 1, 2, 3}  # every legal start (0 .. n - T - 1), nothing beyond


def test_window_errors():
    with pytest.raises(ValueError, match="fewer than block_size"):
        random_windows(_ramp(10), 2, 10)
    with pytest.raises(ValueError, match="batch_size"):
        random_windows(_ramp(), 0, 4)
    with pytest.raises(ValueError, match="1-D"):
        random_windows(torch.zeros(3, 40, dtype=torch.long), 2, 4)


def test_pack_documents():
    docs = [[1, 2, 3], [4, 5], torch.tensor([6, 7, 8, 9])]
    rows = pack_documents(docs, block_size=3, eot_id=0)
    flat = [1, 2, 3, 0, 4, 5, 0, 6, 7, 8, 9, 0]
    assert rows.shape == (3, 4) and rows.dtype == torch.int64
    assert rows.flatten().tolist() == flat
    rows = pack_documents(docs, block_size=4, eot_id=0)
    assert rows.flatten().tolist() == flat[:10]  # tail shorter than a row dropped
    with pytest.raises(ValueError, match="fewer than one row"):
        pack_documents([[1]], block_size=8, eot_id=0)
    with pytest.raises(ValueError, match="no documents"):
        pack_documents([], block_size=8, eot_id=0)


def _synthetic_splits():
    # domain k's tokens live in [1000k, 1000k + n): a row's domain can be read off its tokens
    return {d: {"train": torch.arange(1000 * k, 1000 * k + 500), "val": torch.arange(1000 * k + 500, 1000 * k + 600)}
            for k, d in enumerate(DOMAINS)}


def test_mixture_proportions_and_rows_from_their_domain():
    weights = {"shakespeare": 0.5, "code": 0.3, "arithmetic": 0.2}
    s = MixtureSampler(_synthetic_splits(), weights, batch_size=40, block_size=8, seed=0)
    seen = Counter()
    for _ in range(100):
        x, y = s("train")
        assert x.shape == y.shape == (40, 8)
        assert torch.equal(y, x + 1)
        for row, d in zip(x, s.last_domains):
            k = DOMAINS.index(d)
            assert 1000 * k <= int(row.min()) and int(row.max()) < 1000 * k + 500  # from d's train split
        seen.update(s.last_domains)
    n = sum(seen.values())
    for d, w in weights.items():  # 4000 draws: 3 standard deviations is at most ~0.024
        assert abs(seen[d] / n - w) < 0.03, (d, seen[d] / n)
    x, _ = s("val")
    assert all(int(r.min()) % 1000 >= 500 for r in x)


def test_mixture_is_deterministic_by_seed_only():
    w = {"shakespeare": 1, "code": 1, "arithmetic": 2}
    torch.manual_seed(0)
    a = MixtureSampler(_synthetic_splits(), w, 8, 8, seed=5)
    torch.manual_seed(99)  # e.g. a different model initialisation
    b = MixtureSampler(_synthetic_splits(), w, 8, 8, seed=5)
    c = MixtureSampler(_synthetic_splits(), w, 8, 8, seed=6)
    xa = [a()[0] for _ in range(5)]
    for i in range(5):
        b("val")  # evaluating in between does not change the training stream
        torch.rand(3)
        assert torch.equal(b()[0], xa[i])
    assert not all(torch.equal(c()[0], x) for x in xa)


def test_mixture_resume_from_state():
    s = MixtureSampler(_synthetic_splits(), {"code": 1.0}, 4, 8, seed=1)
    s()
    state = s.state_dict()
    want = [s()[0] for _ in range(3)]
    s.load_state_dict(state)
    assert all(torch.equal(s()[0], w) for w in want)


def test_mixture_zero_weight_domain_never_drawn():
    s = MixtureSampler(_synthetic_splits(), {"shakespeare": 0, "code": 1}, 16, 8)
    for _ in range(20):
        s()
        assert set(s.last_domains) == {"code"}


def test_mixture_errors():
    sp = _synthetic_splits()
    with pytest.raises(ValueError, match="unknown domain"):
        MixtureSampler(sp, {"poetry": 1.0}, 4, 8)
    with pytest.raises(ValueError, match="sum to more than 0"):
        MixtureSampler(sp, {"code": 0.0, "shakespeare": 0}, 4, 8)
    with pytest.raises(ValueError, match=">= 0"):
        MixtureSampler(sp, {"code": -1.0, "shakespeare": 2.0}, 4, 8)
    with pytest.raises(ValueError, match="non-empty dict"):
        MixtureSampler(sp, {}, 4, 8)
    with pytest.raises(ValueError, match=r"split code/val has 100 tokens"):
        MixtureSampler(sp, {"code": 1.0}, 4, 200)
    with pytest.raises(ValueError, match="split must be"):
        MixtureSampler(sp, {"code": 1.0}, 4, 8)("test")


def test_mixture_on_the_real_splits():
    s = MixtureSampler(load_splits(), {"shakespeare": 1, "code": 1, "arithmetic": 1}, 4, 64, seed=3)
    x, y = s()
    assert x.shape == (4, 64) and torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < 4096


def test_eval_batches_fixed_and_from_val():
    sp = _synthetic_splits()
    batches = eval_batches(sp, "code", n_batches=3, batch_size=4, block_size=8)
    assert len(batches) == 3
    again = eval_batches(sp, "code", 3, 4, 8)
    starts = []
    for (x, y), (x2, y2) in zip(batches, again):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert x.shape == (4, 8) and torch.equal(y, x + 1)
        assert int(x.min()) >= 1500 and int(y.max()) < 1600  # code's val split
        starts += x[:, 0].tolist()
    assert starts == sorted(starts) and starts[0] == 1500 and starts[-1] + 8 == 1599  # spread over the split
    assert all(b - a >= 8 for a, b in zip(starts, starts[1:]))  # non-overlapping when the split allows
    with pytest.raises(ValueError, match="unknown domain"):
        eval_batches(sp, "poetry", 1, 1, 8)
    with pytest.raises(ValueError, match="fewer than block_size"):
        eval_batches(sp, "code", 1, 1, 100)
    with pytest.raises(ValueError, match="n_batches"):
        eval_batches(sp, "code", 0, 1, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_land_on_the_requested_device():
    sp = _synthetic_splits()
    x, y = MixtureSampler(sp, {"code": 1.0}, 4, 8, device="cuda")()
    assert x.is_cuda and y.is_cuda and torch.equal(y.cpu(), x.cpu() + 1)
    x, _ = random_windows(sp["code"]["train"], 2, 8, device="cuda")
    assert x.is_cuda
    assert all(b[0].is_cuda for b in eval_batches(sp, "code", 2, 2, 8, device="cuda"))
