"""Deduplication (DeepSeek-V3 §4.1): remove repeated text before it is tokenized and packed.

The report's pre-training pipeline is built "to minimise redundancy while keeping the corpus diverse". Two
kinds of repetition are removed:

**Exact duplicates.** Two documents whose *normalised* text (:func:`normalize`: lower case, every run of
whitespace one space) is equal. One hash per document (:func:`text_hash`) finds them in linear time;
:func:`exact_groups` lists the groups, :func:`dedup_exact` keeps the first of each.

**Near duplicates.** A document is represented by its set of *shingles* (:func:`shingles`): every run of
``k`` consecutive characters (``unit="char"``) or words (``unit="word"``), each hashed to a number below
p = 2^31 − 1. Two
documents are near duplicates when the Jaccard similarity of their shingle sets

    J(A, B) = |A ∩ B| / |A ∪ B|

is at least a threshold (0.8 is usual). Comparing every pair costs O(n²); MinHash + LSH avoids that:

- *MinHash* (:func:`minhash`). Draw ``K`` random hash functions ``h_i(x) = (a_i·x + b_i) mod p`` with the
  prime ``p = 2^31 − 1``, ``a_i`` uniform in [1, p), ``b_i`` in [0, p): each is a permutation of Z_p, so no
  two shingles tie. The signature of a set is ``sig_i(A) = min_{x ∈ A} h_i(x)``. Under a random permutation
  the element of A ∪ B with the smallest value is equally likely to be any of them, and
  ``sig_i(A) = sig_i(B)`` exactly when it lies in A ∩ B:

      P[sig_i(A) = sig_i(B)] = J(A, B),     Ĵ = (1/K) Σ_i 1[sig_i(A) = sig_i(B)]

  is unbiased, with standard error sqrt(J(1 − J)/K) — shrinking like 1/√K (:func:`minhash_jaccard`). The
  linear family is not a truly random permutation, only close to one; ``tests/test_dedup.py`` measures that
  its bias is far below the 1/√K noise. (The hash must really mix: with ``a_i < 2^32`` and ``p = 2^61 − 1``
  the map ``a x + b`` barely wraps, small shingles get small hashes for every i, and unrelated documents
  share signatures — a classic MinHash bug.)
- *LSH banding* (:func:`lsh_candidate_pairs`). Cut the ``K`` signature rows into ``b`` bands of ``r`` rows
  (b·r ≤ K). Two documents become a *candidate pair* when all ``r`` rows of at least one band agree. For a
  pair with similarity s one band agrees with probability s^r, so

      P[candidate] = 1 − (1 − s^r)^b          (the S-curve, :func:`s_curve`)

  which is steep around s* ≈ (1/b)^(1/r) (:func:`s_curve_threshold`): pairs well above s* are found with
  probability near 1, pairs well below are almost never compared. Only the candidates are then checked
  (estimated or exact Jaccard ≥ threshold: :func:`near_duplicate_pairs`).

Documents joined by near-duplicate pairs form clusters; :func:`dedup_near` keeps the first document of
each cluster (union-find over the pairs). :func:`pairwise_jaccard` computes the exact all-pairs matrix
(a sparse product, for checking on a few thousand documents).

Everything is deterministic: shingle hashes come from fixed arithmetic (never Python's salted ``hash``),
and the MinHash functions from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

import hashlib
import re
import warnings
import zlib
from numbers import Integral, Real

import numpy as np
import torch

__all__ = ["normalize", "text_hash", "exact_groups", "dedup_exact", "shingles", "jaccard", "pairwise_jaccard",
           "MERSENNE_PRIME", "minhash_params", "minhash", "minhash_jaccard", "s_curve", "s_curve_threshold",
           "lsh_candidate_pairs", "near_duplicate_pairs", "candidate_quality", "clusters", "dedup_near"]

MERSENNE_PRIME = (1 << 31) - 1          # p: shingles and hashes live in Z_p; a·x + b < 2^62 fits int64
_P = np.int64(MERSENNE_PRIME)
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+|[^\w\s]")


# -- checks -----------------------------------------------------------------------------------------------
def _int(name: str, v, low: int, where: str, example: str) -> None:
    if not (isinstance(v, Integral) and not isinstance(v, bool) and v >= low):
        raise ValueError(f"{where}: {name} must be an int ≥ {low}, got {v!r}; e.g. {example}")


def _texts(docs, where: str, name: str = "docs") -> list[str]:
    if isinstance(docs, str) or not hasattr(docs, "__iter__"):
        raise TypeError(f"{where}: {name} must be a list of str, got {type(docs).__name__}"
                        + ("; wrap one text in a list: [text]" if isinstance(docs, str) else ""))
    docs = list(docs)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise TypeError(f"{where}: {name}[{i}] is a {type(d).__name__}, not a str; decode or str() it first")
    return docs


# -- exact duplicates ---------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower case, every run of whitespace (spaces, tabs, line breaks) one space, no space at either end."""
    if not isinstance(text, str):
        raise TypeError(f"normalize: text must be a str, got {type(text).__name__}")
    return _WS.sub(" ", text.lower()).strip()


def text_hash(text: str) -> str:
    """SHA-1 (hex) of the normalised text: equal for documents that differ only in case and whitespace."""
    return hashlib.sha1(normalize(text).encode("utf-8")).hexdigest()


def exact_groups(docs) -> list[list[int]]:
    """Groups (≥ 2 members) of documents with equal normalised text, as lists of indices in increasing order;
    groups ordered by their first index."""
    docs = _texts(docs, "exact_groups")
    seen: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        seen.setdefault(text_hash(d), []).append(i)
    return sorted((g for g in seen.values() if len(g) > 1), key=lambda g: g[0])


def dedup_exact(docs) -> list[int]:
    """Indices of the documents kept by exact deduplication: the first of every normalised text."""
    docs = _texts(docs, "dedup_exact")
    seen, kept = set(), []
    for i, d in enumerate(docs):
        h = text_hash(d)
        if h not in seen:
            seen.add(h)
            kept.append(i)
    return kept


# -- shingles and exact Jaccard -------------------------------------------------------------------------------
def _mix_to_p(h: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64), then mod p: spreads similar polynomial hashes over [0, p)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    return (h % np.uint64(MERSENNE_PRIME)).astype(np.int64)


def shingles(text: str, k: int = 5, unit: str = "char", normalized: bool = True) -> np.ndarray:
    """The set of ``k``-shingles of ``text`` as a sorted array of distinct hashes in [0, 2^31 − 1) (int64).

    unit="char": every ``k`` consecutive characters; unit="word": every ``k`` consecutive words (a word is a
    run of letters/digits/underscore or one punctuation mark). With ``normalized=True`` the text goes through
    :func:`normalize` first. A text with fewer than ``k`` units gives one shingle (all of it); an empty text
    gives an empty set. A shingle's hash is a polynomial in its characters (word: in the CRC-32 of its words)
    mixed and reduced mod p = 2^31 − 1: deterministic on every machine; two distinct shingles collide with
    probability about 2^-31 (for two documents of 700 shingles each, a chance of about 2·10^-4 that any
    pair of their shingles does).
    """
    if not isinstance(text, str):
        raise TypeError(f"shingles: text must be a str, got {type(text).__name__}")
    _int("k", k, 1, "shingles", "k=5")
    if unit not in ("char", "word"):
        raise ValueError(f"shingles: unit must be 'char' or 'word', got {unit!r}")
    t = normalize(text) if normalized else text
    if unit == "char":
        units = np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    else:
        units = np.array([zlib.crc32(w.encode("utf-8")) for w in _WORD.findall(t)], dtype=np.uint64)
    if units.size == 0:
        return np.zeros(0, dtype=np.int64)
    n = max(units.size - k + 1, 1)
    kk = min(k, units.size)
    h = np.full(n, np.uint64(kk), dtype=np.uint64)
    for j in range(kk):                                   # h = ((kk·B + u_0)·B + u_1)·B + … (mod 2^64)
        h = h * np.uint64(1_000_003) + units[j:j + n]
    return np.unique(_mix_to_p(h))


def _check_set(a, name: str, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or not (a.dtype.kind in "ui" or a.size == 0):
        raise ValueError(f"{where}: {name} must be a 1-D integer array of shingle hashes (from shingles()), "
                         f"got shape {a.shape} dtype {a.dtype}")
    return a


def jaccard(a, b) -> float:
    """Exact Jaccard similarity |A ∩ B| / |A ∪ B| of two shingle sets (1-D arrays; duplicates ignored).
    Two empty sets count as identical (1.0)."""
    a = np.unique(_check_set(a, "a", "jaccard"))
    b = np.unique(_check_set(b, "b", "jaccard"))
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def pairwise_jaccard(sets) -> torch.Tensor:
    """Exact Jaccard of every pair of shingle sets: an [n, n] float64 tensor (diagonal 1).

    Brute force, done as one sparse product: with M the n × |vocabulary| 0/1 incidence matrix,
    |A_i ∩ A_j| = (M Mᵀ)_ij, and |A_i ∪ A_j| = |A_i| + |A_j| − |A_i ∩ A_j|. Memory O(n²): a few thousand sets.
    """
    if isinstance(sets, (str, bytes)) or not hasattr(sets, "__iter__"):
        raise TypeError(f"pairwise_jaccard: sets must be a list of shingle arrays, got {type(sets).__name__}")
    sets = [np.unique(_check_set(s, f"sets[{i}]", "pairwise_jaccard")) for i, s in enumerate(sets)]
    n = len(sets)
    if n == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    sizes = torch.tensor([s.size for s in sets], dtype=torch.float64)
    flat = np.concatenate(sets) if any(s.size for s in sets) else np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(n), [s.size for s in sets])
    _, cols = np.unique(flat, return_inverse=True)
    m = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols.reshape(-1)]).astype(np.int64)),
                                torch.ones(flat.size, dtype=torch.float64), (n, int(cols.max()) + 1 if flat.size else 1),
                                check_invariants=True)
    with warnings.catch_warnings():                      # "sparse support is in beta": the product is exact
        warnings.simplefilter("ignore", UserWarning)
        inter = torch.sparse.mm(m, m.t()).to_dense()
    union = sizes[:, None] + sizes[None, :] - inter
    j = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    j.fill_diagonal_(1.0)
    return j


# -- MinHash ----------------------------------------------------------------------------------------------------
def minhash_params(num_perm: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_perm`` hash functions h_i(x) = (a_i x + b_i) mod p, p = 2^31 − 1: int64 arrays a (uniform in
    [1, p)) and b (uniform in [0, p)), drawn with ``numpy.random.default_rng(seed)``."""
    _int("num_perm", num_perm, 1, "minhash_params", "num_perm=128")
    _int("seed", seed, 0, "minhash_params", "seed=0")
    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE_PRIME, num_perm, dtype=np.int64)
    b = rng.integers(0, MERSENNE_PRIME, num_perm, dtype=np.int64)
    return a, b


def _hash_mod_p(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a_i x + b_i) mod p for every shingle x (< p) and every i: an [len(x), len(a)] int64 array, exact.

    a x + b < 2^62 + 2^31 fits int64. The remainder uses 2^31 ≡ 1 (mod p): y = hi·2^31 + lo ≡ hi + lo,
    twice (below 2^32 + 1, then at most p + 2), then one conditional subtraction — cheaper than a division.
    """
    h = np.multiply(x[:, None], a[None, :])
    h += b[None, :]
    for _ in range(2):
        hi = h >> 31
        h &= _P
        h += hi
    np.subtract(h, _P, out=h, where=h >= _P)
    return h


def minhash(sets, num_perm: int = 128, seed: int = 0, block: int = 1 << 16) -> np.ndarray:
    """MinHash signatures: an [n, num_perm] int64 array, row d = (min_{x ∈ A_d} h_i(x))_i.

    ``sets`` is a list of shingle arrays (from :func:`shingles`, values in [0, p)). Vectorised: the shingles
    of many documents are hashed together, about ``block`` shingles at a time, and reduced per document with
    ``np.minimum.reduceat``. An empty set gets the signature p in every row (larger than any hash).
    """
    if isinstance(sets, (str, bytes)) or not hasattr(sets, "__iter__"):
        raise TypeError(f"minhash: sets must be a list of shingle arrays, got {type(sets).__name__}")
    _int("block", block, 1, "minhash", "block=65536")
    sets = [_check_set(s, f"sets[{i}]", "minhash") for i, s in enumerate(sets)]
    for i, s in enumerate(sets):
        if s.size and (int(s.min()) < 0 or int(s.max()) >= MERSENNE_PRIME):
            raise ValueError(f"minhash: sets[{i}] holds values outside [0, 2^31 − 1); pass shingle hashes "
                             "from helpers.dedup.shingles")
    a, b = minhash_params(num_perm, seed)
    sig = np.full((len(sets), num_perm), _P, dtype=np.int64)
    nonempty = [i for i, s in enumerate(sets) if s.size]
    start = 0
    while start < len(nonempty):                       # groups of documents holding about `block` shingles
        stop, total = start, 0
        while stop < len(nonempty) and (stop == start or total + sets[nonempty[stop]].size <= block):
            total += sets[nonempty[stop]].size
            stop += 1
        idx = nonempty[start:stop]
        x = np.concatenate([sets[i].astype(np.int64) for i in idx])
        offsets = np.cumsum([0] + [sets[i].size for i in idx[:-1]])
        h = _hash_mod_p(x, a, b)                                      # [shingles, num_perm]
        sig[idx] = np.minimum.reduceat(h, offsets, axis=0)
        start = stop
    return sig


def minhash_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Estimated Jaccard: the share of signature rows that agree (last axis). Broadcasts: sig_a [n, K] with
    sig_b [K] gives n estimates."""
    sig_a, sig_b = np.asarray(sig_a), np.asarray(sig_b)
    if sig_a.shape[-1] != sig_b.shape[-1]:
        raise ValueError(f"minhash_jaccard: signatures have {sig_a.shape[-1]} and {sig_b.shape[-1]} rows; "
                         "compare signatures made with the same num_perm and seed")
    est = (sig_a == sig_b).mean(-1)
    return float(est) if np.ndim(est) == 0 else est


# -- LSH banding ---------------------------------------------------------------------------------------------------
def _bands_rows(bands, rows, where: str) -> None:
    _int("bands", bands, 1, where, "bands=16")
    _int("rows", rows, 1, where, "rows=8")


def s_curve(s, bands: int, rows: int):
    """Probability that a pair with Jaccard ``s`` becomes an LSH candidate: 1 − (1 − s^rows)^bands."""
    _bands_rows(bands, rows, "s_curve")
    s_arr = np.asarray(s, dtype=np.float64)
    if np.any((s_arr < 0) | (s_arr > 1)) or np.any(~np.isfinite(s_arr)):
        raise ValueError(f"s_curve: s must be similarities in [0, 1], got {s!r}")
    p = 1.0 - (1.0 - s_arr ** rows) ** bands
    return float(p) if p.ndim == 0 else p


def s_curve_threshold(bands: int, rows: int) -> float:
    """Where the S-curve is steepest, approximately: s* = (1/bands)^(1/rows)."""
    _bands_rows(bands, rows, "s_curve_threshold")
    return (1.0 / bands) ** (1.0 / rows)


def lsh_candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Candidate pairs of LSH banding: an [m, 2] int64 array of distinct pairs (i < j), sorted.

    Band t is the signature columns ``t·rows … (t+1)·rows − 1``; documents whose band t is identical share a
    bucket, and every pair inside a bucket is a candidate. Needs ``bands · rows ≤ num_perm``. The cost is
    the sum over buckets of size², so a corpus with a huge group of near-identical documents gives many pairs.
    """
    sig = np.asarray(signatures)
    if sig.ndim != 2:
        raise ValueError(f"lsh_candidate_pairs: signatures must be [n_docs, num_perm], got shape {sig.shape}")
    _bands_rows(bands, rows, "lsh_candidate_pairs")
    if bands * rows > sig.shape[1]:
        raise ValueError(f"lsh_candidate_pairs: bands · rows = {bands}·{rows} = {bands * rows} exceeds the "
                         f"{sig.shape[1]} signature rows; lower bands or rows, or make signatures with more num_perm")
    n = sig.shape[0]
    found = []
    for t in range(bands):
        band = np.ascontiguousarray(sig[:, t * rows:(t + 1) * rows])
        _, inv, counts = np.unique(band, axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        if counts.max(initial=0) < 2:
            continue
        order = np.argsort(inv, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for g in np.flatnonzero(counts >= 2):
            members = order[starts[g]:starts[g] + counts[g]]
            i, j = np.triu_indices(members.size, 1)
            lo, hi = np.minimum(members[i], members[j]), np.maximum(members[i], members[j])
            found.append(lo.astype(np.int64) * n + hi)
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    keys = np.unique(np.concatenate(found))
    return np.stack([keys // n, keys % n], axis=1)


def near_duplicate_pairs(signatures: np.ndarray, threshold: float, bands: int, rows: int,
                         sets=None) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate pairs: LSH candidates whose Jaccard is ≥ ``threshold``.

    The Jaccard of a candidate is the exact one when ``sets`` (the shingle arrays) is given, else the MinHash
    estimate over all signature rows. Returns (pairs [m, 2] with i < j, their Jaccard [m])."""
    if not (isinstance(threshold, Real) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"near_duplicate_pairs: threshold must be a Jaccard similarity in [0, 1], got {threshold!r}; "
                         "e.g. 0.8")
    sig = np.asarray(signatures)
    if sets is not None and len(sets) != len(sig):
        raise ValueError(f"near_duplicate_pairs: {len(sets)} shingle sets for {len(sig)} signatures; give one per document")
    cand = lsh_candidate_pairs(sig, bands, rows)
    if sets is None:
        sim = (sig[cand[:, 0]] == sig[cand[:, 1]]).mean(1) if len(cand) else np.zeros(0)
    else:
        sets = [np.unique(_check_set(s, f"sets[{i}]", "near_duplicate_pairs")) for i, s in enumerate(sets)]
        sim = np.empty(len(cand), dtype=np.float64)
        for k, (i, j) in enumerate(cand.tolist()):          # sorted distinct arrays: one merge per pair
            a, b = sets[i], sets[j]
            inter = np.intersect1d(a, b, assume_unique=True).size
            union = a.size + b.size - inter
            sim[k] = inter / union if union else 1.0
    keep = sim >= threshold
    return cand[keep], sim[keep]


def candidate_quality(pairs, jaccard_matrix, threshold: float) -> dict:
    """How good a set of candidate pairs is against the exact all-pairs Jaccard matrix (brute force).

    recall = |candidates ∩ true| / |true| and precision = |candidates ∩ true| / |candidates|, where true pairs
    are those (i < j) with J ≥ ``threshold``. Returns a dict with both (1.0 when their denominator is 0) and
    the counts ``candidates``, ``true``, ``found``.
    """
    j = torch.as_tensor(jaccard_matrix, dtype=torch.float64)
    if j.dim() != 2 or j.shape[0] != j.shape[1]:
        raise ValueError(f"candidate_quality: jaccard_matrix must be square [n, n] (from pairwise_jaccard), got {tuple(j.shape)}")
    if not (isinstance(threshold, Real) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"candidate_quality: threshold must be in [0, 1], got {threshold!r}")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= j.shape[0] or np.any(pairs[:, 0] >= pairs[:, 1])):
        raise ValueError("candidate_quality: pairs must be (i, j) with 0 ≤ i < j < n, as lsh_candidate_pairs returns")
    true = int(torch.triu(j >= threshold, diagonal=1).sum())
    found = int((j[torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])] >= threshold).sum()) if len(pairs) else 0
    return {"candidates": len(pairs), "true": true, "found": found,
            "recall": found / true if true else 1.0, "precision": found / len(pairs) if len(pairs) else 1.0}


# -- clusters ----------------------------------------------------------------------------------------------------------
def clusters(n: int, pairs) -> list[list[int]]:
    """Connected components (≥ 2 members) of the graph on ``n`` documents with edges ``pairs`` (union-find),
    each a sorted list, ordered by first member."""
    _int("n", n, 0, "clusters", "n=len(docs)")
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"clusters: pair ({i}, {j}) refers to a document outside [0, {n})")
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def dedup_near(n: int, pairs) -> list[int]:
    """Indices kept by near-duplicate removal: every document outside a cluster, and the first of each cluster."""
    drop = {i for g in clusters(n, pairs) for i in g[1:]}
    return [i for i in range(n) if i not in drop]
