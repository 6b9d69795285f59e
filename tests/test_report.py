import pytest

from helpers.report import fmt, side_by_side


def test_fmt():
    assert fmt(70272) == "70,272"
    assert fmt(0.123456) == "0.1235"
    assert fmt(2.5e-7) == "2.500e-07"
    assert fmt(None) == "—"
    assert fmt("x") == "x"
    assert fmt(float("nan")) == "nan"


def test_side_by_side_builds_markdown():
    md = side_by_side([("KV cache B/token", 70272, 70272, "exact")], display=False)
    lines = md.splitlines()
    assert lines[0] == "| quantity | course model | DeepSeek-V3 report | note |"
    assert lines[2] == "| KV cache B/token | 70,272 | 70,272 | exact |"


def test_side_by_side_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 0 has 2 cells"):
        side_by_side([("a", 1)], display=False)


def test_seed_runs_selects_and_checks():
    from helpers.report import seed_runs
    res = {"runs": [{"arm": "B", "seed": 0}, {"arm": "A", "seed": 0}, {"arm": "A", "seed": 1}]}
    got = seed_runs(res, "arm", "A", "val", ("val", "train"), "mean", ("code",), "f")
    assert [r["seed"] for r in got] == [0, 1]
    with pytest.raises(ValueError, match=r"f: arm 'C' is not in the sweep; choose one of \['B', 'A'\]"):
        seed_runs(res, "arm", "C", "val", ("val",), "mean", (), "f", order=["B", "A", "C"].index, source="sweep")
    with pytest.raises(ValueError, match="kind must be one of"):
        seed_runs(res, "arm", "A", "loss", ("val",), "mean", (), "f")
    with pytest.raises(ValueError, match="domain must be 'mean' or one of"):
        seed_runs(res, "arm", "A", "val", ("val",), "maths", ("code",), "f")
    assert seed_runs(res, "arm", "A", "train", ("train",), "maths", ("code",), "f")   # domain only checked for val
