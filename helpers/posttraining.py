"""The course's post-training recipe (DeepSeek-V3 §5): chat data, the graded chat test, the SFT checkpoint.

SFT data (``sft_conversations``): arithmetic problems with 1–4 operations (seeded, none in the held-out test
set of ``helpers.pretraining.arithmetic_test_set``) as conversations — the user asks, the assistant answers
with worked steps and ``#### n``. A share ``multi_turn`` of them hold two question/answer exchanges, so the
data has user turns *after* assistant turns: what the unmasked ablation learns to write.

The graded test (:func:`chat_accuracy`): greedy decoding of ``<|user|>question<|end|><|assistant|>`` up to
the first ``<|end|>``; correct when ``check_answer`` accepts the reply; format compliance is
``helpers.rewards.format_reward`` of the reply. Equal-length prompts decode together (no padding needed).

``scripts/post_train.py`` trains the SFT model with exactly these pieces and writes
``data/checkpoints/sft.pt`` (weights + config) and ``sft.json`` (the log); :func:`load_sft` reads them,
checksum-verified.
"""
from __future__ import annotations

import json
import random

import torch

from .arithmetic import check_answer, generate_problems
from .chat import completion_text, encode_chat, problem_messages, role_ids
from .config import ModelConfig
from .data import data_path
from .grpo import sample_completions
from .model import Transformer
from .pretraining import arithmetic_test_set
from .rewards import format_reward
from .runtime import get_device
from .tokenizer import load_tokenizer

__all__ = ["SFT_SEED", "SFT_PATH", "SFT_LOG", "answer_text", "sft_conversations", "chat_prompt", "chat_generate",
           "chat_accuracy", "user_turn_probability", "load_sft", "load_reward_model", "sft_log", "load_chat_model"]

SFT_SEED = 6_100
RM_SEED = 8_100
SFT_PATH, SFT_LOG = "checkpoints/sft.pt", "checkpoints/sft.json"


def _test_questions() -> set[str]:
    return {p.question for p in arithmetic_test_set()}


def answer_text(problem, style: str = "steps") -> str:
    """The assistant's reply to ``problem``: the teacher's worked steps and ``#### n`` (``"steps"``, what
    ``helpers.arithmetic.solve`` writes: a programmatic chain of thought), or the answer alone (``"answer"``:
    ``" #### n"``)."""
    if style == "steps":
        return problem.completion()
    if style == "answer":
        return f" #### {problem.answer}"
    raise ValueError(f"answer style must be 'steps' (worked steps) or 'answer' (the answer only), got {style!r}")


def sft_conversations(n: int, seed: int = SFT_SEED, multi_turn: float = 0.25, style: str = "steps") -> list[list[dict]]:
    """``n`` SFT conversations (see the module docstring), deterministic in ``seed``; none asks a question of
    the held-out test set. ``style``: the assistant's replies, see :func:`answer_text`."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"sft_conversations: n must be an int ≥ 1, got {n!r}")
    if not 0 <= multi_turn <= 1:
        raise ValueError(f"sft_conversations: multi_turn must be a share in [0, 1], got {multi_turn!r}")
    if style not in ("steps", "answer"):
        raise ValueError(f"sft_conversations: style must be 'steps' (worked steps) or 'answer' (the answer only), "
                         f"got {style!r}")
    rng = random.Random(seed)
    probs = generate_problems(2 * n, seed, min_ops=1, max_ops=4, exclude=_test_questions())
    out, k = [], 0
    while len(out) < n:
        msgs = problem_messages(probs[k], answer_text(probs[k], style))
        k += 1
        if rng.random() < multi_turn:
            msgs += problem_messages(probs[k], answer_text(probs[k], style))
            k += 1
        out.append(msgs)
    return out


def chat_prompt(tok, problem) -> list[int]:
    """The ids a model is given to answer ``problem``: ``<|user|>question<|end|><|assistant|>``."""
    return encode_chat(tok, problem_messages(problem), add_generation_prompt=True)[0]


def chat_generate(model, tok, problems, max_new_tokens: int = 64, temperature: float = 0.0, samples: int = 1,
                  generator: torch.Generator | None = None, batch_size: int = 128) -> list[list[str]]:
    """Replies of ``model`` to each problem through the chat template (``samples`` per problem; greedy when
    ``temperature = 0``), each cut at its first ``<|end|>``. Returns one list of ``samples`` texts per problem."""
    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"chat_generate: samples must be an int ≥ 1 (answers per problem), got {samples!r}")
    stop = role_ids(tok)["end"]
    prompts = [chat_prompt(tok, p) for p in problems]
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    out: list[list[str]] = [[] for _ in problems]
    dev = next(model.parameters()).device
    per = max(1, batch_size // samples)
    for n, idx in sorted(by_len.items()):
        room = min(max_new_tokens, model.cfg.max_seq_len - n)
        for s in range(0, len(idx), per):
            part = idx[s:s + per]
            x = torch.tensor([prompts[i] for i in part], device=dev).repeat_interleave(samples, 0)
            c = sample_completions(model, x, room, stop, tok.eot_id, temperature, generator)
            for j, i in enumerate(part):
                out[i] = [completion_text(tok, row) for row in c[j * samples:(j + 1) * samples].tolist()]
    return out


def chat_accuracy(model, tok=None, problems=None, max_new_tokens: int = 64) -> dict:
    """Greedy accuracy of ``model`` on ``problems`` (default: the held-out ``arithmetic_test_set()``) through the
    chat template. Returns ``{"all", "by_ops": {k: acc}, "format": share well-formed, "n", "replies"}``."""
    tok = tok or load_tokenizer()
    problems = arithmetic_test_set() if problems is None else problems
    if not problems:
        raise ValueError("chat_accuracy: no problems given")
    replies = [r[0] for r in chat_generate(model, tok, problems, max_new_tokens)]
    ok = [check_answer(p, r) for p, r in zip(problems, replies)]
    by_ops: dict[int, list[bool]] = {}
    for p, c in zip(problems, ok):
        by_ops.setdefault(len(p.steps), []).append(c)
    return {"all": sum(ok) / len(ok), "n": len(ok), "by_ops": {k: sum(v) / len(v) for k, v in sorted(by_ops.items())},
            "format": sum(format_reward(r) for r in replies) / len(replies), "replies": replies}


@torch.no_grad()
def user_turn_probability(model, tok, problems, replies) -> float:
    """Mean probability the model gives to ``<|user|>`` right after its own reply and ``<|end|>``: how
    readily it would go on to write the user's next turn."""
    if not problems or len(problems) != len(replies):
        raise ValueError(f"user_turn_probability: need one reply per problem and at least one, got {len(problems)} "
                         f"problems and {len(replies)} replies")
    ids = role_ids(tok)
    dev = next(model.parameters()).device
    total = 0.0
    for p, r in zip(problems, replies):
        x = chat_prompt(tok, p) + tok.encode(r) + [ids["end"]]
        probs = model(torch.tensor([x], device=dev))["logits"][0, -1].float().softmax(-1)
        total += float(probs[ids["user"]])
    return total / len(problems)


def load_chat_model(path: str, device=None):
    """A post-trained checkpoint (``checkpoints/sft.pt`` …) in eval mode, checksum-verified."""
    from .train import checkpoint_config, load_checkpoint
    p = data_path(path)
    model = Transformer(ModelConfig(**checkpoint_config(p)))
    load_checkpoint(p, model)
    return model.to(device or get_device()).eval()


def load_sft(device=None):
    """The shipped SFT model (``data/checkpoints/sft.pt``) in eval mode."""
    return load_chat_model(SFT_PATH, device)


def load_reward_model(device=None):
    """The shipped Bradley–Terry reward model (``data/checkpoints/rm.pt``, from ``post_train.py reward-model``)."""
    from .rewards import RewardModel
    from .train import checkpoint_config, load_checkpoint
    p = data_path("checkpoints/rm.pt")
    rm = RewardModel(Transformer(ModelConfig(**checkpoint_config(p))))
    load_checkpoint(p, rm)
    return rm.to(device or get_device()).eval()


def sft_log() -> dict:
    """The SFT run's log (``data/checkpoints/sft.json``): command, arguments, curve, accuracies."""
    return json.loads(data_path(SFT_LOG).read_text())
