"""A generative judge: the model writes a rationale, then a verdict on a candidate answer (DeepSeek-V3 §5.2.1).

Where no rule can check an answer, the report scores it with a model. For open-ended questions its reward model
writes a chain of thought that leads to the reward, and the report notes this lowers the risk of reward hacking.
Our arithmetic has a rule (the verifier), so a judge's verdicts can be graded against it exactly.

A judging turn is a chat turn. The user gives the problem and a candidate reply, and the judge answers in one of two
formats:

* with a rationale: ``<its own worked steps> #### n | verdict: right``, trained with the teacher's steps and the
  verifier's verdict on the candidate;
* verdict only: ``" verdict: right"`` (with its leading space).

Judging with a rationale amounts to "solve it yourself, then compare". A judge that makes a mistake therefore
mostly rejects a right candidate. It accepts a wrong one only when it makes the same mistake.

**Pairwise judging** (chapter 07.3). Open-ended benchmarks such as Arena-Hard and AlpacaEval 2.0 (the report's
Table 7) ask a judge model which of two answers is better. The user shows both, labelled A and B, and the judge
answers ``[<its own steps> #### n |] verdict: A`` or ``… verdict: B`` (:func:`pair_messages`, :func:`pair_reply`).
A judge has a *position bias* when its choice depends on where an answer is shown. Judging every pair in both
orders measures it (:func:`position_bias`): with a_1 the accuracy when the right answer is shown first and a_2 when
it is shown second,

    bias = a_1 − a_2,   P(picks A) = (a_1 + 1 − a_2) / 2,   consistency = P(same answer chosen in both orders).

Scoring a pair by both orders (1 when both pick the right answer, 0 when neither does, ½ for a tie when the choice
flips with the order) makes the score blind to position: its mean is (a_1 + a_2)/2 whatever order the pairs were
stored in, which is what the swap fixes.
"""
from __future__ import annotations

import random
import re

from .arithmetic import check_answer
from .chat import encode_chat
from .posttraining import generate_replies

__all__ = ["JUDGE_SEED", "judge_messages", "judge_reply", "parse_verdict", "judge_conversations", "judge_verdicts", "agreement",
           "PAIR_SEED", "pair_messages", "pair_reply", "parse_choice", "pair_conversations", "pair_choices",
           "position_bias", "swap_scores"]

JUDGE_SEED = 9_300        # the problems whose sampled replies train the judge (none from the held-out test)
PAIR_SEED = 9_500         # the problems whose sampled replies train the pairwise judges
_VERDICT = re.compile(r"verdict: (right|wrong)")
_CHOICE = re.compile(r"verdict: ([AB])\b")


def judge_messages(problem, candidate: str, reply: str | None = None) -> list[dict]:
    """The judging conversation: the user shows ``problem`` and the ``candidate`` reply; the judge's ``reply``
    (when given) follows."""
    msgs = [{"role": "user", "content": f"Grade this answer. {problem.question} Answer: {candidate.strip()}"}]
    if reply is not None:
        msgs.append({"role": "assistant", "content": reply})
    return msgs


def judge_reply(problem, right: bool, rationale: bool = True) -> str:
    """The target reply: (the teacher's worked steps, then) ``| verdict: right`` or ``| verdict: wrong``."""
    verdict = f"verdict: {'right' if right else 'wrong'}"
    return f"{problem.completion()} | {verdict}" if rationale else f" {verdict}"


def parse_verdict(text: str) -> bool | None:
    """True for ``verdict: right``, False for ``verdict: wrong`` (the last one written), None when there is none."""
    found = _VERDICT.findall(text)
    return None if not found else found[-1] == "right"


def judge_conversations(problems, candidates, rationale: bool = True) -> list[list[dict]]:
    """Training conversations for the judge: each candidate labelled by the verifier."""
    if len(problems) != len(candidates):
        raise ValueError(f"judge_conversations: {len(problems)} problems but {len(candidates)} candidates")
    return [judge_messages(p, c, judge_reply(p, check_answer(p, c), rationale)) for p, c in zip(problems, candidates)]


def judge_verdicts(model, tok, problems, candidates, max_new_tokens: int = 64) -> tuple[list[bool | None], list[str]]:
    """The judge's greedy verdict on each (problem, candidate) pair, and its full replies."""
    if len(problems) != len(candidates):
        raise ValueError(f"judge_verdicts: {len(problems)} problems but {len(candidates)} candidates")
    prompts = [encode_chat(tok, judge_messages(p, c), add_generation_prompt=True)[0] for p, c in zip(problems, candidates)]
    replies = [r[0] for r in generate_replies(model, tok, prompts, max_new_tokens)]
    return [parse_verdict(r) for r in replies], replies


def agreement(verdicts, truth) -> dict:
    """How a judge's verdicts compare with the truth (the verifier): ``accuracy`` (a missing verdict counts as
    wrong), ``precision`` (of the candidates it accepts, the share that are right: what a filter keeps),
    ``recall`` (of the right candidates, the share it accepts), ``accepted`` and ``no_verdict`` shares."""
    verdicts, truth = list(verdicts), [bool(t) for t in truth]
    if len(verdicts) != len(truth) or not truth:
        raise ValueError(f"agreement: need as many verdicts as truths (≥ 1), got {len(verdicts)} and {len(truth)}")
    acc = [v is True for v in verdicts]
    tp = sum(a and t for a, t in zip(acc, truth))
    return {"accuracy": sum(v is not None and v == t for v, t in zip(verdicts, truth)) / len(truth),
            "precision": tp / max(sum(acc), 1), "recall": tp / max(sum(truth), 1),
            "accepted": sum(acc) / len(truth), "no_verdict": sum(v is None for v in verdicts) / len(truth),
            "base_rate": sum(truth) / len(truth)}


def pair_messages(problem, first: str, second: str, reply: str | None = None) -> list[dict]:
    """The pairwise judging conversation: ``problem`` and two replies shown as A (``first``) and B (``second``)."""
    msgs = [{"role": "user", "content": f"Which answer is right? {problem.question} A: {first.strip()} B: {second.strip()}"}]
    if reply is not None:
        msgs.append({"role": "assistant", "content": reply})
    return msgs


def pair_reply(problem, choice: str, rationale: bool = True) -> str:
    """The target reply: (the teacher's worked steps, then) ``| verdict: A`` or ``| verdict: B``."""
    if choice not in ("A", "B"):
        raise ValueError(f"pair_reply: choice must be 'A' or 'B', got {choice!r}")
    return f"{problem.completion()} | verdict: {choice}" if rationale else f" verdict: {choice}"


def parse_choice(text: str) -> str | None:
    """'A' or 'B' from the last ``verdict: A|B`` written, None when there is none."""
    found = _CHOICE.findall(text)
    return found[-1] if found else None


def pair_conversations(problems, rights, wrongs, first_share: float = 0.5, rationale: bool = True,
                       seed: int = 0) -> list[list[dict]]:
    """Training conversations for a pairwise judge: each problem's right and wrong reply, the right one shown first
    with probability ``first_share`` (0.5: no position carries information), the verifier's choice as the target."""
    if not (len(problems) == len(rights) == len(wrongs)):
        raise ValueError(f"pair_conversations: {len(problems)} problems, {len(rights)} right and {len(wrongs)} wrong replies")
    if not (isinstance(first_share, (int, float)) and 0 <= first_share <= 1):
        raise ValueError(f"first_share must be a probability in [0, 1], got {first_share!r}")
    rng = random.Random(seed)
    out = []
    for p, r, w in zip(problems, rights, wrongs):
        first = rng.random() < first_share
        out.append(pair_messages(p, r, w, pair_reply(p, "A", rationale)) if first
                   else pair_messages(p, w, r, pair_reply(p, "B", rationale)))
    return out


def pair_choices(model, tok, problems, firsts, seconds, max_new_tokens: int = 64) -> tuple[list[str | None], list[str]]:
    """The judge's greedy choice ('A', 'B' or None) on each pair shown in the given order, and its full replies."""
    if not (len(problems) == len(firsts) == len(seconds)):
        raise ValueError(f"pair_choices: {len(problems)} problems, {len(firsts)} first and {len(seconds)} second replies")
    prompts = [encode_chat(tok, pair_messages(p, a, b), add_generation_prompt=True)[0]
               for p, a, b in zip(problems, firsts, seconds)]
    replies = [r[0] for r in generate_replies(model, tok, prompts, max_new_tokens)]
    return [parse_choice(r) for r in replies], replies


def swap_scores(right_first, right_second) -> list[float]:
    """Per pair, judged in both orders: 1 if the right answer was chosen both times, 0 if neither time, ½ when the
    choice followed the position (a tie). ``right_first``: choices with the right answer shown as A; ``right_second``:
    with it shown as B. A missing choice counts as not choosing the right answer."""
    right_first, right_second = list(right_first), list(right_second)
    if len(right_first) != len(right_second) or not right_first:
        raise ValueError(f"swap_scores: need the same number (≥ 1) of choices in both orders, got "
                         f"{len(right_first)} and {len(right_second)}")
    return [((a == "A") + (b == "B")) / 2 for a, b in zip(right_first, right_second)]


def position_bias(right_first, right_second) -> dict:
    """Position bias of a pairwise judge from every pair judged in both orders (see the module docstring):
    ``acc_first`` (a_1), ``acc_second`` (a_2), ``bias`` (a_1 − a_2), ``p_first`` (share of choices that are A),
    ``consistency`` (the same answer chosen in both orders; a missing choice is never consistent), ``swap_accuracy`` (mean of :func:`swap_scores`),
    ``consistent_accuracy`` (accuracy on the pairs judged the same both ways) and ``no_choice``."""
    s = swap_scores(right_first, right_second)
    n = len(s)
    a1 = sum(a == "A" for a in right_first) / n
    a2 = sum(b == "B" for b in right_second) / n
    picks = list(right_first) + list(right_second)
    made = [c for c in picks if c is not None]
    same = [x for x, a, b in zip(s, right_first, right_second) if (a, b) in (("A", "B"), ("B", "A"))]
    return {"n": n, "acc_first": a1, "acc_second": a2, "bias": a1 - a2,
            "p_first": sum(c == "A" for c in made) / max(len(made), 1),
            "consistency": len(same) / n, "swap_accuracy": sum(s) / n,
            "consistent_accuracy": sum(same) / max(len(same), 1),
            "no_choice": sum(c is None for c in picks) / len(picks)}
