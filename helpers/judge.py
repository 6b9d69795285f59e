"""A generative judge: the model writes a rationale, then a verdict on a candidate answer (DeepSeek-V3 §5.2.1).

Where no rule can check an answer, the report scores it with a model. For open-ended questions its reward model
writes a chain of thought that leads to the reward, and the report notes this lowers the risk of reward hacking.
Our arithmetic has a rule (the verifier), so a judge's verdicts can be graded against it exactly.

A judging turn is a chat turn. The user gives the problem and a candidate reply, and the judge answers in one of two
formats:

* with a rationale: ``<its own worked steps> #### n | verdict: right``, trained with the teacher's steps and the
  verifier's verdict on the candidate;
* verdict only: `` verdict: right``.

Judging with a rationale amounts to "solve it yourself, then compare". A judge that makes a mistake therefore
mostly rejects a right candidate. It accepts a wrong one only when it makes the same mistake.
"""
from __future__ import annotations

import re

from .arithmetic import check_answer
from .chat import encode_chat
from .posttraining import generate_replies

__all__ = ["JUDGE_SEED", "judge_messages", "judge_reply", "parse_verdict", "judge_conversations", "judge_verdicts", "agreement"]

JUDGE_SEED = 9_300        # the problems whose sampled replies train the judge (none from the held-out test)
_VERDICT = re.compile(r"verdict: (right|wrong)")


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
