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
