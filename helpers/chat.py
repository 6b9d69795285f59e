"""Chat: the template that turns a conversation into tokens, and the loss mask of SFT (DeepSeek-V3 §5.1).

A conversation is a list of messages ``{"role": r, "content": text}`` with r in ``system``, ``user``,
``assistant``. The template writes each message as its role token, its content, and ``<|end|>``::

    <|system|>You are terse.<|end|><|user|>What is 2 + 3?<|end|><|assistant|> 2 + 3 = 5 #### 5<|end|>

The role and end tokens are special ids of the course tokenizer: a user's text can never forge them (its
``"<|end|>"`` is encoded as plain bytes), so the model always knows whose turn it is. To ask the model
for a reply, the prompt ends with ``<|assistant|>`` (``add_generation_prompt=True``) and generation stops
at the first ``<|end|>``.

**The loss mask.** Supervised fine-tuning trains only on what the assistant writes. With tokens
``t_1 … t_n`` and ``m_i = 1`` when ``t_i`` belongs to an assistant message (its content and its closing
``<|end|>``, not its role token, which the prompt supplies), the loss is

    L = Σ_i m_i · (−log p(t_i | t_<i)) / Σ_i m_i,

the mean over assistant tokens only; the targets of the other positions are set to −1 (ignored by the
cross-entropy). Across micro-batches the mean is token-weighted (``helpers.train``), so a batch of long
answers and one of short answers count per token, not per batch.
"""
from __future__ import annotations

import torch

__all__ = ["ROLES", "render", "encode_chat", "sft_example", "pad_batch", "SFTSampler", "problem_messages",
           "completion_text", "role_ids"]

ROLES = ("system", "user", "assistant")
END = "<|end|>"


def _role_token(role: str) -> str:
    return f"<|{role}|>"


def _check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts, e.g. "
                         "[{'role': 'user', 'content': 'What is 2 + 3?'}]")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and set(m) >= {"role", "content"}):
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i}: role must be one of {ROLES}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i}: content must be a str, got {type(m['content']).__name__}")
        if m["role"] == "system" and i != 0:
            raise ValueError(f"message {i}: a system message may only come first")


def render(messages, add_generation_prompt: bool = False) -> str:
    """The conversation as template text (special tokens written out), e.g. for printing."""
    _check_messages(messages)
    text = "".join(f"{_role_token(m['role'])}{m['content']}{END}" for m in messages)
    return text + (_role_token("assistant") if add_generation_prompt else "")


def role_ids(tok) -> dict[str, int]:
    """Ids of the template's special tokens: ``{"system", "user", "assistant", "end"}``."""
    ids = {r: tok.special_tokens[_role_token(r)] for r in ROLES}
    ids["end"] = tok.special_tokens[END]
    return ids


def encode_chat(tok, messages, add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """Token ids of the conversation and, per token, whether it is an assistant token (trained by SFT).

    Each message's content is encoded with special tokens *disallowed*: its text cannot produce a control
    id. Only the template adds role and end ids.
    """
    _check_messages(messages)
    ids_of = role_ids(tok)
    ids, mask = [], []
    for m in messages:
        content = tok.encode(m["content"])             # allowed_special="none": no forged control tokens
        is_asst = m["role"] == "assistant"
        ids += [ids_of[m["role"]]] + content + [ids_of["end"]]
        mask += [False] + [is_asst] * (len(content) + 1)
    if add_generation_prompt:
        ids.append(ids_of["assistant"])
        mask.append(False)
    return ids, mask


def sft_example(tok, messages, mask_prompt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One training row: ``x = ids[:-1]``, ``y = ids[1:]`` with ``y = −1`` where the target is not an
    assistant token (``mask_prompt=False`` keeps every target: the unmasked ablation)."""
    ids, mask = encode_chat(tok, messages)
    if mask_prompt and not any(mask[1:]):
        raise ValueError("sft_example: the conversation has no assistant token to train on; add an assistant "
                         "message")
    x = torch.tensor(ids[:-1], dtype=torch.long)
    y = torch.tensor(ids[1:], dtype=torch.long)
    if mask_prompt:
        y[~torch.tensor(mask[1:])] = -1
    return x, y


def pad_batch(rows, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (x, y) rows of different lengths: x padded with ``pad_id``, y with −1 (padding is never a target).
    Right padding is safe for training: attention is causal, so a padded position never influences the real
    tokens before it."""
    if not rows:
        raise ValueError("pad_batch: no rows given")
    n = max(len(x) for x, _ in rows)
    xs = torch.full((len(rows), n), pad_id, dtype=torch.long)
    ys = torch.full((len(rows), n), -1, dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        xs[i, :len(x)], ys[i, :len(y)] = x, y
    return xs, ys


class SFTSampler:
    """``sampler(split)`` → a padded (x, y) batch of ``batch_size`` random conversations of that split, for
    ``helpers.train.train``. ``examples`` is ``{"train": [messages, ...], "val": [...]}``; rows are encoded
    once. ``mask_prompt=False`` trains on every token (the ablation of section 06.1)."""

    def __init__(self, tok, examples: dict, batch_size: int = 32, seed: int = 0, mask_prompt: bool = True,
                 device=None):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"SFTSampler: batch_size must be an int ≥ 1, got {batch_size!r}")
        if not isinstance(examples, dict) or "train" not in examples:
            raise ValueError("SFTSampler: examples must be a dict {'train': [...], 'val': [...]} of conversations")
        self.rows = {s: [sft_example(tok, m, mask_prompt) for m in ex] for s, ex in examples.items() if ex}
        if "train" not in self.rows:
            raise ValueError("SFTSampler: the train split is empty")
        self.pad_id, self.batch_size, self.device = tok.eot_id, batch_size, device
        self._gens = {s: torch.Generator().manual_seed(seed + k) for k, s in enumerate(sorted(self.rows))}

    def __call__(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self.rows:
            raise ValueError(f"SFTSampler: split must be one of {sorted(self.rows)}, got {split!r}")
        rows = self.rows[split]
        pick = torch.randint(len(rows), (self.batch_size,), generator=self._gens[split]).tolist()
        x, y = pad_batch([rows[i] for i in pick], self.pad_id)
        return (x.to(self.device), y.to(self.device)) if self.device is not None else (x, y)


def problem_messages(problem, answer: str | None = None, system: str | None = None) -> list[dict]:
    """An arithmetic problem as a conversation: the user asks its question; the assistant (when ``answer`` is
    given, e.g. ``problem.completion()``) replies."""
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": problem.question})
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def completion_text(tok, ids) -> str:
    """The text of generated ids up to (not including) the first ``<|end|>`` (or ``<|endoftext|>``)."""
    ids = [int(i) for i in ids]
    stops = {tok.special_tokens[END], tok.eot_id}
    for k, i in enumerate(ids):
        if i in stops:
            ids = ids[:k]
            break
    return tok.decode(ids)
