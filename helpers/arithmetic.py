"""Procedural arithmetic: multi-step problems with worked steps and a checkable final answer.

A problem is an integer expression with two to four operations among ``+``, ``-`` and ``*`` on small
non-negative integers, sometimes with one pair of parentheses. The worked solution reduces it one
operation at a time in the usual order (innermost parentheses first, then ``*`` left to right, then
``+``/``-`` left to right), writing each step as ``a op b = c``. Rendered::

    Q: What is 7 + 3 * (8 - 5)?
    A: 8 - 5 = 3; 3 * 3 = 9; 7 + 9 = 16 #### 16

The ``#### answer`` convention (as in GSM8K) makes the reward of chapter 6 a rule: :func:`check_answer`
reads the integer right after the first ``####`` of a completion and compares it with the truth.
Everything is seeded: the same ``(n, seed, ...)`` gives the same problems on every machine.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["Problem", "generate_problems", "check_answer", "extract_answer", "parse_problem", "solve"]

_OPS = ("+", "-", "*")


@dataclass(frozen=True)
class Problem:
    """One problem: ``question`` text, worked ``steps`` (``"a op b = c"`` strings) and the integer ``answer``."""

    question: str
    steps: tuple[str, ...]
    answer: int

    @property
    def expression(self) -> str:
        """The bare expression, e.g. ``"7 + 3 * (8 - 5)"`` (what Python's ``eval`` can check)."""
        m = re.fullmatch(r"What is (.+)\?", self.question)
        if not m:
            raise ValueError(f"question {self.question!r} is not of the form 'What is <expression>?'")
        return m.group(1)

    def prompt(self) -> str:
        """The text a model is given: ``"Q: <question>\\nA:"``."""
        return f"Q: {self.question}\nA:"

    def completion(self) -> str:
        """The text a model should produce after :meth:`prompt`: steps and ``#### answer``."""
        return f" {'; '.join(self.steps)} #### {self.answer}"

    def render(self) -> str:
        """Prompt and completion together: the text a corpus holds."""
        return self.prompt() + self.completion()


def _tokens(expr: str) -> list[str]:
    if not isinstance(expr, str):
        raise TypeError(f"expression must be a str such as '7 + 3 * (8 - 5)', got {type(expr).__name__}")
    toks = re.findall(r"\d+|[-+*()]", expr)
    if "".join(toks) != expr.replace(" ", ""):
        raise ValueError(f"cannot parse expression {expr!r}: only integers, + - * and parentheses are allowed")
    depth, want_number = 0, True           # grammar: number (op number)*, where a number may be ( ... )
    for t in toks:
        if t == "(" and want_number:
            depth += 1
        elif t == ")" and not want_number and depth > 0:
            depth -= 1
        elif t.isdigit() and want_number:
            want_number = False
        elif t in _OPS and not want_number:
            want_number = True
        else:
            break
    else:
        if toks and depth == 0 and not want_number:
            return toks
    raise ValueError(f"malformed expression {expr!r}: write numbers joined by + - * with balanced parentheses, "
                     "e.g. '7 + 3 * (8 - 5)'")


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def solve(expr: str) -> tuple[list[str], int]:
    """Reduce ``expr`` one operation at a time; return (steps, value).

    Order: the leftmost innermost parenthesised group is reduced first; inside a group (or at the
    top level) ``*`` before ``+``/``-``, each left to right. A group reduced to one number drops its
    parentheses.
    """
    toks: list = [int(t) if t.isdigit() else t for t in _tokens(expr)]
    steps = []
    while True:
        # drop parentheses around a single number
        i = 0
        while i + 2 < len(toks):
            if toks[i] == "(" and isinstance(toks[i + 1], int) and toks[i + 2] == ")":
                toks[i:i + 3] = [toks[i + 1]]
            else:
                i += 1
        if len(toks) == 1:
            return steps, toks[0]
        # the span to work in: the leftmost innermost group, else everything
        lo, hi = 0, len(toks)
        for j, t in enumerate(toks):
            if t == "(":
                lo = j + 1
            elif t == ")":
                hi = j
                break
        span = toks[lo:hi]
        ops = [k for k in range(1, len(span), 2) if span[k] == "*"] or list(range(1, len(span), 2))
        k = lo + ops[0]
        a, op, b = toks[k - 1], toks[k], toks[k + 1]
        if not (isinstance(a, int) and isinstance(b, int)):
            raise ValueError(f"malformed expression {expr!r}")
        c = _apply(a, op, b)
        steps.append(f"{a} {op} {b} = {c}")
        toks[k - 1:k + 2] = [c]


def _random_expression(rng: random.Random, n_ops: int, max_operand: int, max_factor: int, paren_prob: float) -> str:
    ops = [rng.choice(_OPS) for _ in range(n_ops)]
    nums = []
    for i in range(n_ops + 1):  # factors of a product stay small so answers stay in a few hundred
        next_to_mul = (i > 0 and ops[i - 1] == "*") or (i < n_ops and ops[i] == "*")
        nums.append(rng.randint(0 if not next_to_mul else 2, max_factor if next_to_mul else max_operand))
    parts = [str(nums[0])]
    for op, x in zip(ops, nums[1:]):
        parts += [op, str(x)]
    if n_ops >= 2 and rng.random() < paren_prob:  # parentheses around a run of 2..n_ops operands
        length = rng.randint(2, n_ops)
        start = rng.randint(0, n_ops + 1 - length)
        parts[2 * start] = "(" + parts[2 * start]
        parts[2 * (start + length - 1)] += ")"
    return " ".join(parts)


def generate_problems(
    n: int,
    seed: int,
    *,
    min_ops: int = 2,
    max_ops: int = 4,
    max_operand: int = 20,
    max_factor: int = 12,
    paren_prob: float = 0.35,
    max_value: int = 999,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> list[Problem]:
    """``n`` distinct problems drawn with ``random.Random(seed)``.

    Each has ``min_ops``..``max_ops`` operations; addends are in [0, ``max_operand``], factors of a
    product in [2, ``max_factor``]; every intermediate result stays within ±``max_value`` (others are
    redrawn), so numbers have at most three digits by default. No two problems share a question, and none has a question in
    ``exclude`` (pass the training corpus's questions to draw a clean held-out set).
    """
    for name, v in (("n", n), ("seed", seed), ("min_ops", min_ops), ("max_ops", max_ops),
                    ("max_operand", max_operand), ("max_factor", max_factor), ("max_value", max_value)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"generate_problems: {name} must be an int, got {v!r}; pass a whole number, e.g. {name}=10")
    if isinstance(exclude, str):
        raise TypeError("generate_problems: exclude must be a set of question strings, not one str; "
                        "wrap it: exclude={question}")
    if n < 0:
        raise ValueError(f"generate_problems: n must be >= 0, got {n}")
    if not 1 <= min_ops <= max_ops:
        raise ValueError(f"need 1 <= min_ops <= max_ops, got min_ops={min_ops}, max_ops={max_ops}")
    if max_value < max_operand:
        raise ValueError(f"max_value ({max_value}) must be >= max_operand ({max_operand})")
    if max_operand < 1 or max_factor < 2:
        raise ValueError(f"need max_operand >= 1 and max_factor >= 2, got {max_operand}, {max_factor}")
    if not 0.0 <= paren_prob <= 1.0:
        raise ValueError(f"paren_prob must be in [0, 1], got {paren_prob}")
    rng = random.Random(seed)
    seen, out, tries = set(exclude), [], 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"could only draw {len(out)} distinct problems of {n}: widen the ranges or use fewer")
        expr = _random_expression(rng, rng.randint(min_ops, max_ops), max_operand, max_factor, paren_prob)
        question = f"What is {expr}?"
        if question in seen:
            continue
        seen.add(question)
        steps, answer = solve(expr)
        if any(abs(int(s.rsplit("= ", 1)[1])) > max_value for s in steps):
            continue
        out.append(Problem(question, tuple(steps), answer))
    return out


_RENDERED = re.compile(r"Q: (?P<q>.+)\nA: (?P<steps>.*) #### (?P<ans>-?\d+)\s*")


def parse_problem(text: str) -> Problem:
    """Inverse of :meth:`Problem.render` (raises ``ValueError`` on text that is not a rendered problem)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_problem: text must be a str (a rendered problem), got {type(text).__name__}")
    m = _RENDERED.fullmatch(text)
    if not m:
        raise ValueError(f"not a rendered problem: {text[:80]!r}")
    return Problem(m["q"], tuple(s for s in m["steps"].split("; ") if s), int(m["ans"]))


_ANSWER = re.compile(r"####\s*([-+\u2212]?)\s*(\d[\d,_]*)")


def extract_answer(text: str) -> int | None:
    """The integer right after the first ``####`` in ``text``, or ``None`` when there is none.

    Robust to spacing (``####16``, ``#### 16``), a sign (``-``, ``+`` or the Unicode minus),
    thousands separators (``1,234``), and whatever follows the number (a full stop, ``<|end|>``, a
    further hallucinated problem). The *first* ``####`` counts: a model that answers and then keeps
    generating new ``Q:``/``A:`` pairs is judged on its first answer.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer: text must be a str (a model completion), got {type(text).__name__}; "
                        "decode the tokens first, e.g. tokenizer.decode(ids)")
    m = _ANSWER.search(text)
    if not m:
        return None
    digits = m.group(2).replace(",", "").replace("_", "")
    if not digits.isdigit():
        return None
    value = int(digits)
    return -value if m.group(1) in ("-", "\u2212") else value


def check_answer(problem: Problem | int, text: str) -> bool:
    """True when the completion ``text`` ends its work with ``#### <the right answer>``.

    ``problem`` is a :class:`Problem` or the true integer answer. A completion without ``####`` is
    wrong, whatever numbers it contains: the format is part of the task.
    """
    if not isinstance(problem, Problem) and (not isinstance(problem, int) or isinstance(problem, bool)):
        raise TypeError(f"check_answer: problem must be a Problem or its int answer, got {problem!r}")
    truth = problem.answer if isinstance(problem, Problem) else problem
    got = extract_answer(text)
    return got is not None and got == truth
