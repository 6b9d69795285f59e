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
import time

import torch

from .arithmetic import check_answer, generate_problems
from .chat import completion_text, encode_chat, problem_messages, role_ids
from .config import ModelConfig
from .data import data_path
from .grpo import completion_logprobs, completion_mask, group_advantages, grpo_loss, sample_completions
from .model import Transformer
from .optim import clip_grad_norm_
from .pretraining import arithmetic_test_set
from .rewards import format_reward
from .runtime import get_device
from .tokenizer import load_tokenizer

__all__ = ["SFT_SEED", "SFT_PATH", "SFT_LOG", "answer_text", "sft_conversations", "chat_prompt", "chat_generate",
           "chat_accuracy", "user_turn_probability", "load_sft", "load_reward_model", "sft_log", "load_chat_model",
           "GRPO_SEED", "MIX_ANSWER_SHARE", "RS_SEED", "reply_style", "bare_share", "grpo_step", "rejection_sample",
           "generate_replies"]

SFT_SEED = 6_100
RM_SEED = 8_100
GRPO_SEED = 7_100          # the RL prompts: problems drawn with this seed (none from the held-out test)
MIX_ANSWER_SHARE = 0.5     # "mixed" SFT data: the share of replies that give the answer alone
RS_SEED = 9_100            # rejection sampling: the problems of its rounds (none from the held-out test)
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


def sft_conversations(n: int, seed: int = SFT_SEED, multi_turn: float = 0.25, style: str = "steps",
                      answer_share: float = MIX_ANSWER_SHARE) -> list[list[dict]]:
    """``n`` SFT conversations (see the module docstring), deterministic in ``seed``; none asks a question of
    the held-out test set. ``style``: the assistant's replies, see :func:`answer_text`; ``"mixed"``: each reply
    is the answer alone with probability ``answer_share``, else the worked steps (its own seeded coin, so the
    problems are the same as for the other styles)."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"sft_conversations: n must be an int ≥ 1, got {n!r}")
    if not 0 <= multi_turn <= 1:
        raise ValueError(f"sft_conversations: multi_turn must be a share in [0, 1], got {multi_turn!r}")
    if style not in ("steps", "answer", "mixed"):
        raise ValueError(f"sft_conversations: style must be 'steps' (worked steps), 'answer' (the answer only) or "
                         f"'mixed' (either, the answer alone with probability answer_share), got {style!r}")
    if not 0 <= answer_share <= 1:
        raise ValueError(f"sft_conversations: answer_share must be a share in [0, 1], got {answer_share!r}")
    rng, coin = random.Random(seed), random.Random(seed + 1)

    def reply(p):
        s = style if style != "mixed" else ("answer" if coin.random() < answer_share else "steps")
        return answer_text(p, s)

    probs = generate_problems(2 * n, seed, min_ops=1, max_ops=4, exclude=_test_questions())
    out, k = [], 0
    while len(out) < n:
        msgs = problem_messages(probs[k], reply(probs[k]))
        k += 1
        if rng.random() < multi_turn:
            msgs += problem_messages(probs[k], reply(probs[k]))
            k += 1
        out.append(msgs)
    return out


def chat_prompt(tok, problem) -> list[int]:
    """The ids a model is given to answer ``problem``: ``<|user|>question<|end|><|assistant|>``."""
    return encode_chat(tok, problem_messages(problem), add_generation_prompt=True)[0]


def reply_style(reply: str) -> str:
    """``"answer"`` when a reply gives the answer alone (it starts with ``####``), else ``"steps"``."""
    return "answer" if reply.lstrip().startswith("####") else "steps"


def bare_share(replies) -> float:
    """The share of ``replies`` that give the answer alone (:func:`reply_style`); 0 for no replies."""
    replies = list(replies)
    return sum(reply_style(r) == "answer" for r in replies) / max(len(replies), 1)


def _by_prompt_length(prompts: list[list[int]]) -> dict[int, list[int]]:
    """Indices of ``prompts`` grouped by length (equal-length prompts batch without padding)."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    return dict(sorted(groups.items()))


def length_batches(prompts: list[list[int]], per: int, max_new_tokens: int, max_seq_len: int, where: str):
    """Yield (n, part, room) for batched generation without padding: ``part`` is up to ``per`` indices of prompts
    of one length n (shortest first), ``room`` = min(max_new_tokens, max_seq_len − n) the tokens they may add.
    ValueError (prefixed by ``where``) when a prompt leaves no room in ``max_seq_len``."""
    for n, idx in _by_prompt_length(prompts).items():
        room = min(max_new_tokens, max_seq_len - n)
        if room < 1:
            raise ValueError(f"{where}: a prompt of {n} tokens leaves no room in max_seq_len = {max_seq_len}; "
                             "use shorter prompts")
        for s in range(0, len(idx), per):
            yield n, idx[s:s + per], room


def chat_generate(model, tok, problems, max_new_tokens: int = 64, temperature: float = 0.0, samples: int = 1,
                  generator: torch.Generator | None = None, batch_size: int = 128) -> list[list[str]]:
    """Replies of ``model`` to each problem through the chat template (``samples`` per problem; greedy when
    ``temperature = 0``), each cut at its first ``<|end|>``. Returns one list of ``samples`` texts per problem."""
    return generate_replies(model, tok, [chat_prompt(tok, p) for p in problems], max_new_tokens, temperature,
                            samples, generator, batch_size)


def generate_replies(model, tok, prompts: list[list[int]], max_new_tokens: int = 64, temperature: float = 0.0,
                     samples: int = 1, generator: torch.Generator | None = None, batch_size: int = 128
                     ) -> list[list[str]]:
    """Replies to chat prompts given as token ids (each ending with ``<|assistant|>``), ``samples`` per prompt,
    cut at the first ``<|end|>``; equal-length prompts decode together (no padding)."""
    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"chat_generate: samples must be an int ≥ 1 (answers per problem), got {samples!r}")
    stop = role_ids(tok)["end"]
    out: list[list[str]] = [[] for _ in prompts]
    dev = next(model.parameters()).device
    per = max(1, batch_size // samples)
    for _, part, room in length_batches(prompts, per, max_new_tokens, model.cfg.max_seq_len, "generate_replies"):
        x = torch.tensor([prompts[i] for i in part], device=dev).repeat_interleave(samples, 0)
        c = sample_completions(model, x, room, stop, tok.eot_id, temperature, generator)
        for j, i in enumerate(part):
            out[i] = [completion_text(tok, row) for row in c[j * samples:(j + 1) * samples].tolist()]
    return out


def grpo_step(model, ref, optimizer, tok, problems, group_size: int = 8, *, temperature: float = 1.0,
              beta: float = 0.04, clip_eps: float = 0.2, updates: int = 1, max_new_tokens: int = 64,
              max_grad_norm: float = 1.0, generator: torch.Generator | None = None) -> dict:
    """One GRPO step (DeepSeek-V3 §5.2.2) on ``problems`` with the rule-based reward.

    1. π_θold = ``model`` now: sample ``group_size`` (G) replies per problem at ``temperature``.
    2. r = 1 where ``check_answer`` accepts the reply, else 0; A = (r − mean) / std within each group.
    3. ``updates`` (DeepSeekMath's μ) optimizer steps on −J of ``helpers.grpo.grpo_loss``: the clipped ratio
       π_θ/π_θold per token (exactly 1 on the first update, clipped at 1 ± ``clip_eps`` on later ones) and
       β·KL to the frozen ``ref``, averaged over each reply's tokens, then over all P·G replies; the gradient's
       global norm is clipped at ``max_grad_norm``.

    The model stays in eval mode (no MoE bias update during RL; the gradient flows all the same). Returns the
    step's statistics: mean ``reward`` (the sampled accuracy), ``kl``, ``clip_frac`` (last update),
    ``length`` (mean reply tokens), ``answer_only`` (share of replies that skip the steps), ``informative``
    (share of groups whose rewards differ, the only ones with a non-zero advantage), and the wall seconds spent
    sampling and scoring (``sample_s``, with the two no-grad passes for π_θold and π_ref) and updating (``update_s``).
    """
    if not (isinstance(group_size, int) and group_size >= 2):
        raise ValueError(f"grpo_step: group_size must be an int ≥ 2 (a group is its own baseline), got {group_size!r}")
    if not (isinstance(updates, int) and updates >= 1):
        raise ValueError(f"grpo_step: updates must be an int ≥ 1, got {updates!r}")
    if temperature <= 0:
        raise ValueError(f"grpo_step: temperature must be > 0 (GRPO needs varied samples), got {temperature}")
    if not problems:
        raise ValueError("grpo_step: no problems given")
    stop = role_ids(tok)["end"]
    dev = next(model.parameters()).device
    model.eval()
    t0 = time.perf_counter()
    prompts = [chat_prompt(tok, p) for p in problems]
    batches, rewards, n_answer, n_informative = [], [], 0, 0
    with torch.no_grad():
        for n, idx in _by_prompt_length(prompts).items():
            room = min(max_new_tokens, model.cfg.max_seq_len - n)
            x = torch.tensor([prompts[i] for i in idx], device=dev).repeat_interleave(group_size, 0)
            c = sample_completions(model, x, room, stop, tok.eot_id, temperature, generator)
            texts = [completion_text(tok, row) for row in c.tolist()]
            r = torch.tensor([float(check_answer(problems[idx[j // group_size]], t)) for j, t in enumerate(texts)])
            adv = group_advantages(r.view(-1, group_size)).flatten().to(dev)
            mask = completion_mask(c, stop)
            old = completion_logprobs(model, x, c, temperature)
            refl = completion_logprobs(ref, x, c, temperature) if beta > 0 else None
            batches.append((x, c, adv, mask, old, refl))
            rewards.append(r)
            n_answer += sum(reply_style(t) == "answer" for t in texts)
            n_informative += int((r.view(-1, group_size).std(1) > 0).sum())
    total = sum(b[0].shape[0] for b in batches)
    t1 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(updates):
        optimizer.zero_grad(set_to_none=True)
        kl = clip = 0.0
        for x, c, adv, mask, old, refl in batches:
            lp = completion_logprobs(model, x, c, temperature)
            loss, st = grpo_loss(lp, old, refl, adv, mask, clip_eps, beta)
            (loss * (x.shape[0] / total)).backward()
            kl += st["kl"] * x.shape[0] / total
            clip += st["clip_frac"] * x.shape[0] / total
        clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    r_all = torch.cat(rewards)
    return {"reward": float(r_all.mean()), "kl": kl, "clip_frac": clip,
            "length": float(sum(b[3].sum() for b in batches)) / total, "answer_only": n_answer / total,
            "informative": n_informative / len(problems), "sample_s": t1 - t0, "update_s": time.perf_counter() - t1}


def rejection_sample(model, tok, problems, k: int = 4, *, accept="verifier", temperature: float = 1.0,
                     max_keep: int | None = None, generator: torch.Generator | None = None
                     ) -> tuple[list[list[dict]], dict]:
    """Self-generated SFT data (the report's rejection sampling, §5.1): ``k`` replies per problem at
    ``temperature``, and per problem the first reply the filter ``accept`` lets through (problems with none give
    nothing). ``accept``: ``"verifier"`` (``check_answer``), ``"all"`` (no filter: the first reply), or a function
    ``(problems, replies) → list of bool`` (e.g. a model judge, ``helpers.judge``) called once on all k·n pairs.
    At most ``max_keep`` conversations are kept (the first ones), e.g. to give an unfiltered run as many examples as
    a filtered one. Returns (conversations, stats): ``sampled`` (accuracy of one sample), ``pass_at_k`` (share of
    problems with a right reply), ``kept``, ``kept_right`` (share of kept replies the verifier accepts: the
    filter's precision), ``kept_bare`` (share of kept replies that skip the steps)."""
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"rejection_sample: k must be an int ≥ 1 (replies per problem), got {k!r}")
    if not problems:
        raise ValueError("rejection_sample: no problems given")
    if not (accept in ("verifier", "all") or callable(accept)):
        raise ValueError(f"rejection_sample: accept must be 'verifier', 'all' or a function (problems, replies) → "
                         f"list of bool, got {accept!r}")
    samples = chat_generate(model, tok, problems, temperature=temperature, samples=k, generator=generator)
    flat_p = [p for p, rs in zip(problems, samples) for _ in rs]
    flat_r = [r for rs in samples for r in rs]
    ok = [check_answer(p, r) for p, r in zip(flat_p, flat_r)]
    passed = ok if accept == "verifier" else [True] * len(ok) if accept == "all" else list(accept(flat_p, flat_r))
    if len(passed) != len(ok):
        raise ValueError(f"rejection_sample: the filter returned {len(passed)} verdicts for {len(ok)} replies")
    convs, right, n_pass = [], [], 0
    for i, p in enumerate(problems):
        rows = range(i * k, (i + 1) * k)
        n_pass += any(ok[j] for j in rows)
        pick = next((j for j in rows if passed[j]), None)
        if pick is not None and (max_keep is None or len(convs) < max_keep):
            convs.append(problem_messages(p, flat_r[pick]))
            right.append(ok[pick])
    replies = [c[-1]["content"] for c in convs]
    stats = {"sampled": sum(ok) / len(ok), "pass_at_k": n_pass / len(problems), "kept": len(convs),
             "kept_right": sum(right) / max(len(right), 1),
             "kept_bare": bare_share(replies)}
    return convs, stats


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
