"""Rewards (DeepSeek-V3 §5.2.1): rules where correctness can be checked, a learned model where it cannot.

**Rule-based.** For arithmetic the verifier is exact: :func:`accuracy_reward` is 1 when the completion's
integer after ``####`` equals the truth (``helpers.arithmetic.check_answer``), else 0. :func:`format_reward`
checks only the shape of the answer — worked steps ``a op b = c`` joined by ``; ``, then ``#### n`` — and
says nothing about whether it is right. A rule cannot be flattered: the report prefers it wherever it
applies.

**Learned (Bradley–Terry).** Where no rule applies, a reward model r_φ scores a (prompt, answer) pair with
one number, trained on preference pairs (chosen y_w, rejected y_l) so that

    P(y_w ≻ y_l) = σ(r_φ(x, y_w) − r_φ(x, y_l)),      L(φ) = −log σ(r_φ(x, y_w) − r_φ(x, y_l)).

Only differences of scores matter (adding a constant to every score changes nothing). :class:`RewardModel`
is the course model with its output head replaced by one scalar read at the last token.

**Reward hacking.** A proxy reward that is correlated with the true one on the data it was built from can
be maximised by behaviour the true reward does not want (e.g. a reward that likes long answers is
maximised by padding). :func:`length_proxy_reward` is such a flawed reward, for section 06.3; :func:`best_of_n`
measures what selecting the top-scored of n answers does to the true reward.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from .arithmetic import check_answer

__all__ = ["accuracy_reward", "format_reward", "length_proxy_reward", "bt_loss", "bt_probability", "RewardModel",
           "score_answers", "preference_pairs", "train_reward_model", "best_of_n"]

_STEP = r"-?\d+ [-+*] -?\d+ = -?\d+"
_FORMAT = re.compile(rf"\s*{_STEP}(?:; {_STEP})* #### -?\d+\s*")


def accuracy_reward(problem, text: str) -> float:
    """1.0 when ``text`` ends its work with ``#### <the right answer>``, else 0.0 (the rule-based verifier)."""
    return float(check_answer(problem, text))


def format_reward(text: str) -> float:
    """1.0 when ``text`` has the answer's shape: steps ``a op b = c`` joined by ``"; "``, then ``#### n``
    and nothing else; 0.0 otherwise. It does not check a single number."""
    if not isinstance(text, str):
        raise TypeError(f"format_reward: text must be a str, got {type(text).__name__}")
    return float(_FORMAT.fullmatch(text) is not None)


def length_proxy_reward(text: str, target_steps: int = 8) -> float:
    """A flawed proxy: the share of ``target_steps`` worked steps the answer writes (capped at 1), plus 0.2 for
    an ``####`` answer. It was "right" on the corpus (harder problems have more steps and get more credit)
    but it pays for steps, not for correct ones, so maximising it invites padding."""
    if not isinstance(text, str):
        raise TypeError(f"length_proxy_reward: text must be a str, got {type(text).__name__}")
    if not (isinstance(target_steps, int) and target_steps >= 1):
        raise ValueError(f"length_proxy_reward: target_steps must be an int ≥ 1, got {target_steps!r}")
    n = len(re.findall(_STEP, text))
    return min(n / target_steps, 1.0) + (0.2 if "####" in text else 0.0)


def bt_loss(score_chosen: torch.Tensor, score_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry loss −log σ(r_w − r_l), averaged over pairs (``F.logsigmoid`` keeps it stable)."""
    if score_chosen.shape != score_rejected.shape:
        raise ValueError(f"bt_loss: chosen {tuple(score_chosen.shape)} and rejected {tuple(score_rejected.shape)} "
                         "scores must have the same shape (one score per pair on each side)")
    return -F.logsigmoid(score_chosen - score_rejected).mean()


def bt_probability(score_a, score_b):
    """P(a ≻ b) = σ(r_a − r_b) under the Bradley–Terry model (floats or tensors)."""
    if torch.is_tensor(score_a) or torch.is_tensor(score_b):
        return torch.sigmoid(torch.as_tensor(score_a) - torch.as_tensor(score_b))
    return 1.0 / (1.0 + math.exp(-(score_a - score_b)))


class RewardModel(nn.Module):
    """A scalar reward r_φ(x, y): the course model's blocks and final norm (initialised from a language model,
    e.g. the SFT checkpoint) and a linear head ``dim → 1`` read at each row's last real token.

    ``forward(idx, lengths)``: idx [B, T] right-padded token rows, lengths [B] the number of real tokens;
    returns [B] scores.
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.cfg = lm.cfg                                # recorded by save_checkpoint, checked by load_checkpoint
        self.score_head = nn.Linear(lm.cfg.dim, 1, bias=False)
        nn.init.zeros_(self.score_head.weight)          # every answer starts at score 0: P = 1/2 for any pair

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = torch.as_tensor(lengths, device=idx.device)
        if lengths.shape != idx.shape[:1] or bool((lengths < 1).any()) or bool((lengths > idx.shape[1]).any()):
            raise ValueError(f"RewardModel: lengths must hold one count in [1, {idx.shape[1]}] per row of idx, "
                             f"got {lengths.tolist()}")
        h = self.lm(idx, return_hidden=True)["hidden"]
        last = h[torch.arange(idx.shape[0], device=idx.device), lengths - 1]
        return self.score_head(self.lm.norm(last)).squeeze(-1)


def _rows(tok, problems, texts):
    from .chat import encode_chat, problem_messages
    return [encode_chat(tok, problem_messages(p, t))[0] for p, t in zip(problems, texts)]


def _score_rows(rm: RewardModel, rows, pad_id: int) -> torch.Tensor:
    """r_φ of token rows of different lengths: right-padded with ``pad_id``, each read at its last real token."""
    dev = next(rm.parameters()).device
    x = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r)
    return rm(x.to(dev), torch.tensor([len(r) for r in rows], device=dev))


def score_answers(rm: RewardModel, tok, problems, texts, batch_size: int = 64) -> torch.Tensor:
    """r_φ of each (problem, answer text) pair, read at the answer's closing ``<|end|>`` (no gradient)."""
    if len(problems) != len(texts):
        raise ValueError(f"score_answers: {len(problems)} problems but {len(texts)} answers; give one answer per problem")
    if not problems:
        raise ValueError("score_answers: no answers to score")
    rows = _rows(tok, problems, texts)
    out = []
    was = rm.training
    rm.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                out.append(_score_rows(rm, rows[s:s + batch_size], tok.eot_id).float().cpu())
    finally:
        rm.train(was)
    return torch.cat(out)


def preference_pairs(problems, samples, seed: int = 0) -> list[tuple]:
    """(problem, chosen, rejected) triples: for each problem whose sampled answers ``samples[i]`` hold both a
    right and a wrong one (by the rule-based verifier), one right answer is chosen and one wrong one rejected
    (picked with ``random.Random(seed)``). Problems whose answers are all right or all wrong give no pair."""
    import random
    if len(problems) != len(samples):
        raise ValueError(f"preference_pairs: {len(problems)} problems but {len(samples)} lists of answers; give one "
                         "list of sampled answers per problem")
    rng = random.Random(seed)
    pairs = []
    for p, answers in zip(problems, samples):
        good = [a for a in answers if check_answer(p, a)]
        bad = [a for a in answers if not check_answer(p, a)]
        if good and bad:
            pairs.append((p, rng.choice(good), rng.choice(bad)))
    return pairs


def train_reward_model(rm: RewardModel, tok, pairs, steps: int = 200, batch_size: int = 32, lr: float = 3e-4,
                       seed: int = 0, show_progress: bool = True) -> list[float]:
    """Fit r_φ to preference pairs with the Bradley–Terry loss (AdamW, constant ``lr``, clipping at 1.0).
    Each step draws ``batch_size`` pairs; returns the loss per step."""
    from .optim import AdamW, clip_grad_norm_, param_groups
    from .runtime import progress
    if not pairs:
        raise ValueError("train_reward_model: no preference pairs; sample answers that are sometimes right and "
                         "sometimes wrong (preference_pairs) first")
    g = torch.Generator().manual_seed(seed)
    chosen = _rows(tok, [p for p, _, _ in pairs], [c for _, c, _ in pairs])
    rejected = _rows(tok, [p for p, _, _ in pairs], [r for _, _, r in pairs])
    opt = AdamW(param_groups(rm, 0.0), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    params = [q for q in rm.parameters() if q.requires_grad]
    losses = []
    rm.train()
    for _ in progress(range(steps), desc="reward model", disable=None if show_progress else True):
        pick = torch.randint(len(pairs), (batch_size,), generator=g).tolist()
        s = _score_rows(rm, [chosen[i] for i in pick] + [rejected[i] for i in pick], tok.eot_id)
        loss = bt_loss(s[:batch_size], s[batch_size:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    rm.eval()
    return losses


def best_of_n(scores: torch.Tensor, correct: torch.Tensor, n: int, draws: int = 32,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Accuracy of best-of-n selection by ``scores``, per problem: for each of ``draws`` random subsets of n of the
    M sampled answers (without replacement), keep the answer with the highest score (ties broken at random) and
    record whether it is correct; returns the mean over draws, [P].

    scores, correct: [P, M] (P problems, M ≥ n answers each). With the verifier itself as the score this estimates
    pass@n (the chance that at least one of n answers drawn without replacement is right).
    """
    if not (isinstance(draws, int) and draws >= 1):
        raise ValueError(f"best_of_n: draws must be an int ≥ 1, got {draws!r}")
    if scores.shape != correct.shape or scores.dim() != 2:
        raise ValueError(f"best_of_n: scores {tuple(scores.shape)} and correct {tuple(correct.shape)} must both be "
                         "[problems, answers]")
    m = scores.shape[1]
    if not (isinstance(n, int) and 1 <= n <= m):
        raise ValueError(f"best_of_n: n must be an int in [1, {m}] (the answers sampled per problem), got {n!r}")
    p = scores.shape[0]
    keys = torch.rand(draws, p, m, generator=generator)
    subset = keys.argsort(-1)[..., :n]                                     # [draws, P, n] random subsets
    s = scores.float()[None].expand(draws, p, m).gather(-1, subset)
    tie = torch.rand(draws, p, n, generator=generator) * 1e-6 * (s.abs().amax() + 1)
    pick = subset.gather(-1, (s + tie).argmax(-1, keepdim=True))           # [draws, P, 1]
    return correct.float()[None].expand(draws, p, m).gather(-1, pick)[..., 0].mean(0)
