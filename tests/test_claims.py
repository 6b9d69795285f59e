"""helpers.claims: the verdict rule on constructed intervals, Student-t quantiles against closed forms, seed intervals,
n-gram contamination against hand-counted overlaps and a brute force built on helpers.dedup.shingles, and clear
errors for missing or corrupted result files."""
import json
import math
import random

import numpy as np
import pytest

from helpers import claims as C
from helpers.dedup import shingles


# -- the verdict rule ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("low, high, kw, expected", [
    (100.0, 100.0, dict(target=100.0), "reproduced"),                               # exact and equal
    (104.0, 104.0, dict(target=100.0, tol=0.05), "reproduced"),                     # inside the band
    (106.0, 106.0, dict(target=100.0, tol=0.05), "contradicted"),                   # outside, no null: no excuse
    (90.0, 104.0, dict(target=100.0, tol=0.05), "not at this scale"),               # partly inside
    (0.86, 0.88, dict(target=(0.85, 0.90)), "reproduced"),                          # a stated band
    (0.67, 0.88, dict(target=(0.85, 0.90)), "not at this scale"),
    (0.01, 0.03, dict(null=0.0), "reproduced"),                                     # direction: above 0
    (-0.01, 0.03, dict(null=0.0), "not at this scale"),                             # straddles 0
    (-0.03, -0.01, dict(null=0.0), "contradicted"),                                 # wholly on the other side
    (-0.03, -0.01, dict(null=0.0, side="below"), "reproduced"),
    (0.01, 0.03, dict(null=0.0, side="below"), "contradicted"),
    (1.05, 1.16, dict(target=1.8, null=1.0), "not at this scale"),                  # right direction, wrong size
    (1.75, 1.85, dict(target=1.8, null=1.0), "reproduced"),
    (0.5, 0.9, dict(target=1.8, null=1.0), "contradicted"),                         # wrong direction
    (0.9, 1.2, dict(target=1.8, null=1.0), "not at this scale"),
])
def test_verdict_on_constructed_intervals(low, high, kw, expected):
    assert C.verdict(low, high, **kw) == expected


def test_verdict_tolerance_moves_a_size_claim_and_nothing_else():
    assert C.verdict(12.8, 12.8, target=13, tol=0.05) == "reproduced"
    assert C.verdict(12.8, 12.8, target=13, tol=0.01) == "contradicted"
    for tol in (0.0, 0.05, 0.5):
        assert C.verdict(0.01, 0.03, null=0.0, tol=tol) == "reproduced"


@pytest.mark.parametrize("kw, match", [
    (dict(low=0.2, high=0.1, null=0.0), "low ≤ high"),
    (dict(low=0.0, high=0.1), "target=|null="),
    (dict(low=0.0, high=0.1, null=0.0, side="up"), "side"),
    (dict(low=0.0, high=0.1, target=0.0), "nonzero"),
    (dict(low=0.0, high=0.1, target=(2.0, 1.0)), "low ≤ high"),
    (dict(low=0.0, high=0.1, target=1.0, tol=-0.1), "tol"),
    (dict(low=float("nan"), high=0.1, null=0.0), "finite"),
])
def test_verdict_rejects_bad_inputs(kw, match):
    with pytest.raises(ValueError, match=match):
        C.verdict(**kw)


def test_map_verdict():
    assert C.map_verdict("not resolved") == "not at this scale"
    assert C.map_verdict("Reproduced") == "reproduced"
    with pytest.raises(ValueError, match="unknown verdict"):
        C.map_verdict("maybe")


# -- t quantiles, seed intervals, seeds needed ---------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.6, 0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_closed_forms(p):
    assert C.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-5)   # Cauchy
    a = 2 * p - 1
    assert C.t_quantile(p, 2) == pytest.approx(a * math.sqrt(2 / (1 - a * a)), rel=1e-5)
    assert C.t_quantile(1 - p, 2) == pytest.approx(-C.t_quantile(p, 2), rel=1e-9)


def test_t_quantile_matches_the_table_and_tends_to_the_normal():
    for df, t in {2: 4.303, 3: 3.182, 10: 2.228}.items():                 # two-sided 95% table values
        assert C.t_quantile(0.975, df) == pytest.approx(t, abs=6e-4)
    assert C.t_quantile(0.95, 2000) == pytest.approx(1.6449, abs=2e-3)
    with pytest.raises(ValueError, match="df"):
        C.t_quantile(0.9, 0)
    with pytest.raises(ValueError, match="p must"):
        C.t_quantile(1.0, 3)


def test_seed_interval_is_mean_plus_minus_t_se():
    v = [0.1, 0.4, 0.25, 0.3]
    m, lo, hi = C.seed_interval(v, level=0.95)
    s = float(np.std(v, ddof=1))
    assert m == pytest.approx(np.mean(v))
    assert hi - m == pytest.approx(C.t_quantile(0.975, 3) * s / 2) and m - lo == pytest.approx(hi - m)
    assert C.seed_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="at least 2"):
        C.seed_interval([1.0])


def test_seed_interval_covers_the_truth_about_as_often_as_it_says():
    rng = random.Random(0)
    hits = sum(lo <= 0.0 <= hi for lo, hi in
               (C.seed_interval([rng.gauss(0, 1) for _ in range(3)], 0.9)[1:] for _ in range(1000)))
    assert 0.87 <= hits / 1000 <= 0.93                            # exact for normal data: 0.90 ± 0.01 noise


def test_seeds_needed_formula_and_the_ablation_file():
    assert C.seeds_needed(0.05, 0.005) == 400                     # (2 · 0.05 / 0.005)² = 400 exactly
    assert C.seeds_needed(0.0, 0.005) == 2
    with pytest.raises(ValueError, match="delta"):
        C.seeds_needed(0.1, 0.0)
    for name in ("ch04_ablations", "ch04_ablations_long"):         # the script's numbers (CPU and GPU runs), same formula
        abl = C.load_result(name)
        for claim in abl["claims"]:
            o = claim["ours"]
            if o.get("seeds_needed") is not None:
                n = len(abl["config"]["seeds"])
                assert C.seeds_needed(o["paired_se"] * math.sqrt(n), abl["config"]["report_gap"]) == o["seeds_needed"]


# -- evidence, claims, scoreboard ------------------------------------------------------------------------------------
def test_evidence_intervals():
    assert C.Evidence("exact", (3.0,)).interval() == (3.0, 3.0, 3.0)
    assert C.Evidence("range", (1.0, 4.0, 2.5)).interval() == (2.5, 1.0, 4.0)
    assert C.Evidence("seeds", (1.0, 2.0, 3.0)).interval(0.9) == C.seed_interval([1.0, 2.0, 3.0], 0.9)
    c, lo, hi = C.Evidence("items", tuple([0.0] * 50 + [1.0] * 50)).interval()
    assert c == 0.5 and lo < 0.5 < hi
    assert C.Evidence("carried", (0.1,), carried="not resolved").carried == "not at this scale"
    with pytest.raises(ValueError, match="kind"):
        C.Evidence("guess", (1.0,))
    with pytest.raises(ValueError, match="one number"):
        C.Evidence("exact", (1.0, 2.0))


def test_claim_rows_and_scoreboard():
    rows = [C.Claim("a", "§1", "13", C.Evidence("exact", (12.8,)), "x", target=13),
            C.Claim("b", "§2", "> 0", C.Evidence("seeds", (0.1, 0.2, 0.15)), "y", null=0.0),
            C.Claim("c", "§3", "1.8×", C.Evidence("range", (1.05, 1.16)), "z", target=1.8, null=1.0),
            C.Claim("d", "§4", "ok", C.Evidence("carried", (0.0,), carried="reproduced"), "w"),
            C.pending("e", "§5", "?", "data/results/none.json")]
    board = C.scoreboard(rows, tol=0.05, display=False)
    assert [r["verdict"] for r in board] == ["reproduced", "reproduced", "not at this scale", "reproduced",
                                             "pending (file missing)"]
    assert C.verdict_counts(board) == {"reproduced": 3, "not at this scale": 1, "contradicted": 0, "pending": 1}
    assert C.scoreboard(rows, tol=0.01, display=False)[0]["verdict"] == "contradicted"
    assert board[1]["test"] == "> 0" and "within ±5% of 1.8" in board[2]["test"]
    assert "3 seeds" in board[1]["ours"]
    with pytest.raises(ValueError, match="what to test"):
        C.Claim("f", "§6", "?", C.Evidence("exact", (1.0,)), "v")
    with pytest.raises(ValueError, match="target"):
        C.Claim("g", "§7", "?", C.Evidence("exact", (1.0,)), "v", target={"x": 1})


# -- result files -------------------------------------------------------------------------------------------------
def test_load_result_reads_a_file_and_explains_a_missing_or_broken_one(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps({"ours": 1}))
    assert C.load_result("good", tmp_path) == {"ours": 1}
    assert C.load_result("good.json", tmp_path) == {"ours": 1}
    with pytest.raises(FileNotFoundError, match="missing.json is missing"):
        C.load_result("missing.json", tmp_path)
    (tmp_path / "cut.json").write_text('{"ours": [1, 2')
    with pytest.raises(C.ResultFileError, match="not valid JSON"):
        C.load_result("cut.json", tmp_path)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(C.ResultFileError, match="JSON list"):
        C.load_result("list.json", tmp_path)
    with pytest.raises(ValueError, match="file name"):
        C.load_result("", tmp_path)


def test_optional_claim_never_raises_for_a_missing_or_odd_file(tmp_path):
    def build(d):
        return C.Claim("x", "§", "r", C.Evidence("seeds", tuple(d["values"])), "f", null=0.0)

    kw = dict(claim="x", section="§", report="r", folder=tmp_path)
    assert C.optional_claim("absent.json", build, **kw).verdict() == "pending (file missing)"
    (tmp_path / "cut.json").write_text("{")
    assert C.optional_claim("cut.json", build, **kw).verdict().startswith("pending (file unreadable")
    (tmp_path / "odd.json").write_text(json.dumps({"other": 1}))
    assert "KeyError" in C.optional_claim("odd.json", build, **kw).verdict()
    (tmp_path / "ok.json").write_text(json.dumps({"values": [0.1, 0.2, 0.3]}))
    assert C.optional_claim("ok.json", build, **kw).verdict() == "reproduced"


# -- contamination -------------------------------------------------------------------------------------------------
def test_overlap_on_hand_counted_texts():
    ix = C.NgramIndex(["The quick brown fox jumps over the lazy dog.", "a b c", "d e f"])
    got = ix.overlap(["the quick brown fox", "a lazy dog sleeps", "jumps over the lazy cat", "Brown FOX",
                      "c d e", "lazy dog."], n=3)
    # 2/2 found; 0/2; 2/3 ("jumps over the", "over the lazy"); shorter than n: the whole item; a document boundary
    # is never crossed; "lazy dog ." is a 3-gram of the first text
    assert got.tolist() == pytest.approx([1.0, 0.0, 2 / 3, 1.0, 0.0, 1.0])
    assert ix.overlap(["c d e"], n=2).tolist() == [0.5]              # "c d" crosses the boundary, "d e" does not
    assert ix.flagged(["c d e", "x y z"], n=2).tolist() == [True, False]
    assert ix.flagged(["c d e"], n=2, threshold=0.5).tolist() == [False]
    assert ix.shared("jumps over the lazy cat", 3) == ["jumps over the", "over the lazy"]
    assert C.ngram_overlap(["b c"], ["a b c"], n=13).tolist() == [1.0]


def _brute_overlap(item, train, n):
    k = min(n, len(C.words(item)))
    grams = shingles(item, k, unit="word")
    known = np.concatenate([shingles(t, k, unit="word") for t in train])
    return float(np.isin(grams, known).mean())


def test_overlap_matches_a_brute_force_on_dedup_shingles():
    rng = random.Random(3)
    vocab = ["a", "b", "c", "d", "e", "+", "=", "7"]
    train = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 30))) for _ in range(40)]
    items = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12))) for _ in range(60)]
    ix = C.NgramIndex(train)
    for n in (1, 2, 3, 5, 8, 13):
        ours = ix.overlap(items, n)
        brute = [_brute_overlap(it, train, n) for it in items]
        assert ours.tolist() == pytest.approx(brute), n


def test_overlap_falls_as_n_grows():
    rng = random.Random(4)
    train = [" ".join(rng.choice("abcdef") for _ in range(200)) for _ in range(5)]
    items = [" ".join(rng.choice("abcdef") for _ in range(20)) for _ in range(30)]
    ix = C.NgramIndex(train)
    rates = [ix.flagged(items, n).mean() for n in range(1, 10)]
    assert all(a >= b for a, b in zip(rates, rates[1:])) and rates[0] == 1.0


def test_contamination_inputs_are_checked():
    with pytest.raises(TypeError, match="wrap one text"):
        C.NgramIndex("just a string")
    with pytest.raises(ValueError, match="empty"):
        C.NgramIndex([])
    ix = C.NgramIndex(["a b"])
    with pytest.raises(ValueError, match="no words"):
        ix.overlap(["   "], 3)
    with pytest.raises(ValueError, match="n must"):
        ix.overlap(["a"], 0)


def test_exact_overlap_normalises_case_and_whitespace():
    assert C.exact_overlap(["What is 2 + 3?", "what is 4?"], ["WHAT  is 2 + 3?", "what is 5?"]) == [True, False]


def test_two_sample_bootstrap():
    d = C.two_sample_bootstrap([1.0] * 20, [0.0] * 30)
    assert d == {"diff": 1.0, "low": 1.0, "high": 1.0, "real": True}
    rng = random.Random(5)
    a = [float(rng.random() < 0.6) for _ in range(300)]
    b = [float(rng.random() < 0.4) for _ in range(200)]
    r = C.two_sample_bootstrap(a, b, level=0.9, n_boot=4000)
    se = math.sqrt(np.var(a) / len(a) + np.var(b) / len(b))
    assert r["low"] < r["diff"] < r["high"] and r["real"]
    assert (r["high"] - r["low"]) / 2 == pytest.approx(1.6449 * se, rel=0.15)      # the normal approximation
