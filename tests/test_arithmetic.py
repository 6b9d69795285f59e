"""helpers.arithmetic: problems checked against Python's own evaluation, and the answer checker."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import arithmetic as ar
from helpers.data import documents


def test_answers_and_every_step_match_python_eval():
    problems = ar.generate_problems(2000, seed=3)
    for p in problems:
        assert eval(p.expression) == p.answer  # independent reference: Python's evaluator
        assert len(p.steps) == len(re.findall(r"[-+*]", p.expression))  # one step per operation
        for s in p.steps:
            lhs, rhs = s.split(" = ")
            assert eval(lhs) == int(rhs)
        assert int(p.steps[-1].split(" = ")[1]) == p.answer
        assert all(abs(int(s.split(" = ")[1])) <= 999 for s in p.steps)
    assert len({p.question for p in problems}) == len(problems)


def test_worked_steps_follow_operator_precedence():
    steps, value = ar.solve("7 + 3 * (8 - 5)")
    assert steps == ["8 - 5 = 3", "3 * 3 = 9", "7 + 9 = 16"] and value == 16
    steps, value = ar.solve("11 - 13 - 7 * 11 + 20")
    assert steps == ["7 * 11 = 77", "11 - 13 = -2", "-2 - 77 = -79", "-79 + 20 = -59"] and value == -59


_expr = st.recursive(
    st.integers(0, 30).map(str),
    lambda inner: st.builds(lambda a, op, b, paren: f"({a} {op} {b})" if paren else f"{a} {op} {b}",
                            inner, st.sampled_from("+-*"), inner, st.booleans()),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(_expr)
def test_solver_agrees_with_eval_on_any_expression(expr):
    steps, value = ar.solve(expr)
    assert value == eval(expr)
    assert len(steps) == expr.count("+") + expr.count("-") + expr.count("*")


def test_seeded_and_distinct():
    a = ar.generate_problems(50, seed=1)
    assert a == ar.generate_problems(50, seed=1)
    assert a != ar.generate_problems(50, seed=2)
    held_out = ar.generate_problems(200, seed=9, exclude={p.question for p in a})
    assert not {p.question for p in a} & {p.question for p in held_out}


def test_options_are_respected():
    for p in ar.generate_problems(300, seed=0, min_ops=1, max_ops=1, paren_prob=0.0):
        assert len(p.steps) == 1 and "(" not in p.question
    for p in ar.generate_problems(300, seed=0, min_ops=3, max_ops=3, paren_prob=1.0):
        assert len(p.steps) == 3 and "(" in p.question


def test_render_parse_round_trip():
    for p in ar.generate_problems(100, seed=5):
        text = p.render()
        assert text == p.prompt() + p.completion()
        assert text.startswith("Q: What is ") and text.endswith(f"#### {p.answer}")
        assert ar.parse_problem(text) == p
    with pytest.raises(ValueError, match="not a rendered problem"):
        ar.parse_problem("hello")


def test_shipped_corpus_is_correct():
    docs = documents("arithmetic")
    for doc in docs:
        p = ar.parse_problem(doc)
        assert eval(p.expression) == p.answer
        assert ar.check_answer(p, doc)


def test_check_answer():
    p = ar.Problem("What is 11 - 13 - 7 * 11 + 20?", ("7 * 11 = 77", "11 - 13 = -2", "-2 - 77 = -79", "-79 + 20 = -59"), -59)
    assert ar.check_answer(p, p.completion())
    assert ar.check_answer(p, p.render())
    for good in ["#### -59", "####-59", "#### - 59", "#### \u221259", "so #### -59.", " #### -59<|end|>",
                 "#### -59\n\nQ: What is 1 + 1?\nA: 1 + 1 = 2 #### 2"]:
        assert ar.check_answer(p, good), good
    for bad in ["-59", "the answer is -59", "#### 59", "#### -5", "#### -590", "#### ", "####", "",
                "#### 1\nQ: What is 1 + 1?\nA: #### -59"]:
        assert not ar.check_answer(p, bad), bad
    assert ar.check_answer(1234, "#### 1,234") and ar.check_answer(-7, "####\t-7 apples")
    assert ar.extract_answer("no answer here") is None
    assert ar.extract_answer("#### +12") == 12


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_ops"):
        ar.generate_problems(3, seed=0, min_ops=3, max_ops=2)
    with pytest.raises(ValueError, match="n must be"):
        ar.generate_problems(-1, seed=0)
    with pytest.raises(ValueError, match="distinct problems"):
        ar.generate_problems(100, seed=0, min_ops=1, max_ops=1, max_operand=1, max_factor=2, paren_prob=0.0)
    with pytest.raises(ValueError, match="cannot parse"):
        ar.solve("2 / 3")
    with pytest.raises(ValueError, match="malformed"):
        ar.solve("2 ** 3")
