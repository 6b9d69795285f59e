"""helpers.dedup: exact and near-duplicate detection, checked against brute force and the MinHash/LSH laws."""
import itertools
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers import dedup as dd

P = dd.MERSENNE_PRIME


# -- exact duplicates -------------------------------------------------------------------------------------------
def test_normalize_and_hash():
    assert dd.normalize("  Hello,\n\tWORLD  ") == "hello, world"
    assert dd.text_hash("a  b\nC") == dd.text_hash("A b c")
    assert dd.text_hash("a b c") != dd.text_hash("a b d")
    with pytest.raises(TypeError, match="must be a str"):
        dd.normalize(b"bytes")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(alphabet="aAb \n", max_size=5), max_size=25))
def test_exact_groups_equal_brute_force(docs):
    groups = dd.exact_groups(docs)
    want = {}
    for i, d in enumerate(docs):
        want.setdefault(" ".join(d.lower().split()), []).append(i)
    assert sorted(groups) == sorted(g for g in want.values() if len(g) > 1)
    kept = dd.dedup_exact(docs)
    assert kept == sorted(g[0] for g in want.values())


def test_exact_bad_inputs():
    with pytest.raises(TypeError, match=r"wrap one text in a list"):
        dd.exact_groups("one text")
    with pytest.raises(TypeError, match=r"docs\[1\] is a int"):
        dd.dedup_exact(["a", 3])


# -- shingles ---------------------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcé 日\n.", max_size=60), st.integers(1, 6))
def test_char_shingles_count_distinct_substrings(text, k):
    t = dd.normalize(text)
    want = {t[i:i + k] for i in range(max(len(t) - k + 1, 1))} if t else set()
    sh = dd.shingles(text, k)
    assert sh.dtype == np.int64 and np.all(np.diff(sh) > 0)        # sorted, distinct
    assert len(sh) == len(want)                                    # no collisions on a text this small
    assert sh.size == 0 or (0 <= sh.min() and sh.max() < P)


def test_word_shingles_and_determinism():
    text = "def f(x):\n    return x + 1"
    words = re.findall(r"\w+|[^\w\s]", dd.normalize(text))
    assert len(dd.shingles(text, 3, "word")) == len({tuple(words[i:i + 3]) for i in range(len(words) - 2)})
    assert np.array_equal(dd.shingles(text, 3, "word"), dd.shingles("DEF f(x):  return x + 1", 3, "word"))
    assert not np.array_equal(dd.shingles(text, 3, "word", normalized=False), dd.shingles(text.upper(), 3, "word", normalized=False))
    # the same values on every machine and in every process (integer arithmetic, no salted hash())
    assert dd.shingles("Hello   World", 5)[:3].tolist() == [193522505, 714052571, 745032651]
    assert dd.shingles("def f(x): return x", 2, "word")[:3].tolist() == [156288338, 612209767, 694345229]
    assert len(dd.shingles("abc", 5)) == 1 and len(dd.shingles("", 5)) == 0


def test_shingles_bad_inputs():
    with pytest.raises(ValueError, match="k must be an int ≥ 1"):
        dd.shingles("abc", 0)
    with pytest.raises(ValueError, match="unit must be 'char' or 'word'"):
        dd.shingles("abc", 2, unit="line")
    with pytest.raises(TypeError):
        dd.shingles(None)


# -- exact Jaccard --------------------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 40)), st.sets(st.integers(0, 40)))
def test_jaccard_equals_python_sets(a, b):
    want = 1.0 if not (a or b) else len(a & b) / len(a | b)
    got = dd.jaccard(np.array(sorted(a), dtype=np.int64), np.array(sorted(b), dtype=np.int64))
    assert got == pytest.approx(want)


def test_pairwise_jaccard_equals_pairs():
    rng = np.random.default_rng(0)
    sets = [np.unique(rng.integers(0, 60, rng.integers(0, 30))) for _ in range(25)]
    j = dd.pairwise_jaccard(sets)
    assert j.shape == (25, 25) and torch.equal(j, j.T)
    for i, k in itertools.combinations(range(25), 2):
        assert j[i, k].item() == pytest.approx(dd.jaccard(sets[i], sets[k]))
    assert torch.all(j.diagonal() == 1)


# -- MinHash ------------------------------------------------------------------------------------------------------------------
def test_hash_is_exact_and_a_permutation():
    rng = np.random.default_rng(1)
    x = np.concatenate([[0, 1, P - 1, P - 2], rng.integers(0, P, 3000)]).astype(np.int64)
    x = np.unique(x)
    a, b = dd.minhash_params(16, seed=3)
    a[0], b[0] = P - 1, P - 1                                       # the largest values the family can draw
    h = dd._hash_mod_p(x, a, b)
    big = (x.astype(object)[:, None] * a.astype(object)[None, :] + b.astype(object)[None, :]) % P
    assert (h.astype(object) == big).all()                          # exact modular arithmetic, no overflow
    for i in range(16):                                             # injective on distinct shingles: no ties
        assert len(np.unique(h[:, i])) == len(x)


def test_minhash_is_the_min_of_the_hashes():
    rng = np.random.default_rng(2)
    sets = [np.unique(rng.integers(0, P, n)) for n in (1, 5, 300, 0, 40000, 7)]
    sig = dd.minhash(sets, num_perm=32, seed=5, block=500)          # blocks smaller than one set: still right
    a, b = dd.minhash_params(32, seed=5)
    for s, row in zip(sets, sig):
        want = dd._hash_mod_p(s, a, b).min(0) if s.size else np.full(32, P)
        assert np.array_equal(row, want)
    # order and repetition inside a set do not matter
    s = sets[2]
    assert np.array_equal(dd.minhash([np.concatenate([s[::-1], s])], 32, 5)[0], sig[2])


def _pair_with_jaccard(rng, n_union: int, n_inter: int):
    u = np.unique(rng.integers(0, P, 2 * n_union))       # distinct random shingles, in random order
    rng.shuffle(u)
    u = u[:n_union]
    n_a = n_inter + (n_union - n_inter) // 2
    return u[:n_a], np.concatenate([u[:n_inter], u[n_a:]])


@pytest.mark.parametrize("j_true", [0.2, 0.5, 0.8])
def test_minhash_estimate_unbiased_with_binomial_spread(j_true):
    """P[sig_i(A) = sig_i(B)] = J: over 400 pairs × 128 rows the mean estimate is within 4 standard errors of J,
    and the spread of single estimates is sqrt(J(1−J)/K)."""
    rng = np.random.default_rng(10)
    n_union = 200
    pairs = [_pair_with_jaccard(rng, n_union, round(j_true * n_union)) for _ in range(400)]
    sig = dd.minhash([s for p in pairs for s in p], num_perm=128, seed=7)
    est = (sig[0::2] == sig[1::2]).mean(1)
    assert abs(dd.jaccard(*pairs[0]) - j_true) < 1e-12
    se = np.sqrt(j_true * (1 - j_true) / (128 * 400))
    assert abs(est.mean() - j_true) < 4 * se
    assert est.std() == pytest.approx(np.sqrt(j_true * (1 - j_true) / 128), rel=0.2)


def test_minhash_error_shrinks_like_one_over_sqrt_k():
    rng = np.random.default_rng(11)
    pairs = [_pair_with_jaccard(rng, 150, 75) for _ in range(300)]          # J = 0.5
    sets = [s for p in pairs for s in p]
    rmse = {}
    for k in (16, 64, 256):
        sig = dd.minhash(sets, num_perm=k, seed=1)
        rmse[k] = float(np.sqrt((((sig[0::2] == sig[1::2]).mean(1) - 0.5) ** 2).mean()))
    assert rmse[16] / rmse[64] == pytest.approx(2.0, rel=0.25)
    assert rmse[64] / rmse[256] == pytest.approx(2.0, rel=0.25)
    assert dd.minhash_jaccard(dd.minhash([sets[0]], 64)[0], dd.minhash([sets[0]], 64)[0]) == 1.0


def test_minhash_bad_inputs():
    with pytest.raises(ValueError, match=r"outside \[0, 2\^31 − 1\)"):
        dd.minhash([np.array([P], dtype=np.int64)])
    with pytest.raises(ValueError, match="num_perm must be an int ≥ 1"):
        dd.minhash([np.array([1])], num_perm=0)
    with pytest.raises(ValueError, match="1-D integer array"):
        dd.minhash([np.array([0.5])])
    with pytest.raises(ValueError, match="same num_perm"):
        dd.minhash_jaccard(np.zeros(4), np.zeros(8))


# -- LSH -------------------------------------------------------------------------------------------------------------------------
def test_s_curve_formula():
    s = np.linspace(0, 1, 11)
    assert np.allclose(dd.s_curve(s, 16, 8), 1 - (1 - s ** 8) ** 16)
    assert dd.s_curve(0.0, 5, 3) == 0.0 and dd.s_curve(1.0, 5, 3) == 1.0
    assert np.all(np.diff(dd.s_curve(s, 20, 5)) >= 0)
    t = dd.s_curve_threshold(20, 5)
    assert t == pytest.approx(20 ** -0.2) and 0.3 < dd.s_curve(t, 20, 5) < 0.7     # the steep part
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        dd.s_curve(1.5, 4, 4)
    with pytest.raises(ValueError, match="bands must be an int"):
        dd.s_curve(0.5, 0, 4)


def test_lsh_candidates_equal_brute_force_band_matches():
    rng = np.random.default_rng(3)
    sig = rng.integers(0, 3, (40, 12))                     # few values: many bands collide
    bands, rows = 4, 3
    want = {(i, j) for i, j in itertools.combinations(range(40), 2)
            if any(np.array_equal(sig[i, t * rows:(t + 1) * rows], sig[j, t * rows:(t + 1) * rows]) for t in range(bands))}
    got = dd.lsh_candidate_pairs(sig, bands, rows)
    assert got.dtype == np.int64 and got.shape[1] == 2
    assert set(map(tuple, got.tolist())) == want
    assert dd.lsh_candidate_pairs(np.arange(12).reshape(3, 4), 2, 2).shape == (0, 2)
    with pytest.raises(ValueError, match="exceeds the 12 signature rows"):
        dd.lsh_candidate_pairs(sig, 5, 3)


@pytest.mark.parametrize("j_true,bands,rows", [(0.5, 8, 4), (0.7, 16, 8), (0.3, 32, 2)])
def test_lsh_candidate_rate_follows_the_s_curve(j_true, bands, rows):
    rng = np.random.default_rng(4)
    pairs = [_pair_with_jaccard(rng, 100, round(j_true * 100)) for _ in range(400)]
    sig = dd.minhash([s for p in pairs for s in p], num_perm=bands * rows, seed=2)
    cand = {tuple(c) for c in dd.lsh_candidate_pairs(sig, bands, rows).tolist()}
    rate = np.mean([(2 * i, 2 * i + 1) in cand for i in range(len(pairs))])
    p = dd.s_curve(j_true, bands, rows)
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / len(pairs)) + 0.01


def test_lsh_finds_every_pair_above_threshold_on_planted_duplicates():
    """Candidates ⊇ {pairs with J ≥ 0.8} when the S-curve is ≈ 1 there (32 bands × 4 rows: 1 − 5e-8 at 0.8)."""
    rng = np.random.default_rng(5)
    base = [rng.integers(0, P, rng.integers(50, 150)) for _ in range(60)]
    docs = list(base)
    for s in base[:30]:                                    # a near copy: drop a few, add a few
        keep = s[rng.random(len(s)) > rng.uniform(0.02, 0.3)]
        docs.append(np.concatenate([keep, rng.integers(0, P, rng.integers(0, 10))]))
    sets = [np.unique(d) for d in docs]
    j = dd.pairwise_jaccard(sets)
    sig = dd.minhash(sets, 128, seed=0)
    iu = torch.triu_indices(len(sets), len(sets), 1)
    above = {(int(a), int(b)) for a, b in iu.T.tolist() if j[a, b] >= 0.8}
    assert len(above) >= 5
    cand = {tuple(c) for c in dd.lsh_candidate_pairs(sig, 32, 4).tolist()}
    assert above <= cand
    pairs, sims = dd.near_duplicate_pairs(sig, 0.8, 32, 4, sets=sets)
    assert {tuple(p) for p in pairs.tolist()} == above                 # exact verification keeps exactly those
    assert np.allclose(sims, [j[a, b].item() for a, b in pairs])
    est_pairs, est = dd.near_duplicate_pairs(sig, 0.8, 32, 4)          # MinHash-estimated verification
    assert np.allclose(est, [(sig[a] == sig[b]).mean() for a, b in est_pairs]) and np.all(est >= 0.8)
    with pytest.raises(ValueError, match="threshold must be a Jaccard"):
        dd.near_duplicate_pairs(sig, 1.2, 32, 4)
    with pytest.raises(ValueError, match="one per document"):
        dd.near_duplicate_pairs(sig, 0.8, 32, 4, sets=sets[:3])


def test_candidate_quality_counts():
    j = torch.tensor([[1.0, 0.9, 0.1, 0.85], [0.9, 1.0, 0.2, 0.3], [0.1, 0.2, 1.0, 0.95], [0.85, 0.3, 0.95, 1.0]])
    q = dd.candidate_quality(np.array([[0, 1], [1, 2], [2, 3]]), j, 0.8)   # true: (0,1), (0,3), (2,3)
    assert q == {"candidates": 3, "true": 3, "found": 2, "recall": 2 / 3, "precision": 2 / 3}
    assert dd.candidate_quality(np.zeros((0, 2)), j, 0.99) == {"candidates": 0, "true": 0, "found": 0,
                                                                "recall": 1.0, "precision": 1.0}
    with pytest.raises(ValueError, match="0 ≤ i < j < n"):
        dd.candidate_quality(np.array([[1, 0]]), j, 0.8)
    with pytest.raises(ValueError, match="square"):
        dd.candidate_quality(np.array([[0, 1]]), j[:2], 0.8)


# -- clusters ------------------------------------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 15).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=20))))
def test_clusters_equal_connected_components(case):
    n, edges = case
    adj = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, comps = set(), []
    for i in range(n):
        if i in seen:
            continue
        stack, comp = [i], set()
        while stack:
            v = stack.pop()
            if v not in comp:
                comp.add(v)
                stack += adj[v]
        seen |= comp
        if len(comp) > 1:
            comps.append(sorted(comp))
    assert dd.clusters(n, edges) == sorted(comps, key=lambda g: g[0])
    kept = dd.dedup_near(n, edges)
    assert kept == sorted(set(range(n)) - {v for c in comps for v in c[1:]})


def test_clusters_bad_pair():
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        dd.clusters(3, [(0, 5)])
