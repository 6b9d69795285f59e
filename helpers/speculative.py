"""MTP speculative decoding (DeepSeek-V3 §2.2 and §5.4.3): the MTP module drafts, the main model verifies.

The MTP module of depth 1 was trained to predict the token after next: from the main model's last hidden state
h_i (before the final norm) and the embedding of t_{i+1} it predicts t_{i+2}. At inference it can serve as a
free draft model. Greedy decoding with one draft (D = 1), in the positions of a sequence s_0 … s_{L−1} of verified
tokens whose last one, s_{L−1}, has not been fed to the main model yet:

    draft      d = argmax Head(RMSNorm(MTP(h_{L−2}, Emb(s_{L−1}))))          (a guess for s_L)
    verify     one main forward on [s_{L−1}, d] at positions L−1, L  →  g1 = argmax at L−1, g2 = argmax at L
    accept     if d == g1: s_L = d and s_{L+1} = g2 (the "bonus": the main model's next token given d)
    reject     else:       s_L = g1 only; the cache entry written for d at position L is wrong, but the next
                           verify forward starts at position L and overwrites it (caches write at start_pos)

g1 is the main model's greedy choice given the verified prefix, so the output equals plain greedy decoding token
for token whatever the drafts are; g2 is a valid greedy choice only when d was right. The MTP module then advances
over the verified (h_i, s_{i+1}) pairs only (1 after a rejection, 2 after an acceptance) with its own latent cache,
and drafts again.

Cost model (tokens per unit of time, relative to plain cached greedy decoding). Plain decoding makes 1 token per
1-token main forward (cost 1). A speculative step costs one 2-token verify forward (c_v, in units of a 1-token
forward) plus one MTP forward (c_d) and makes 1 + A tokens, A ~ Bernoulli(p) with p the acceptance rate:

    E[tokens per step] = 1 + p,        speed-up S = (1 + p) / (c_v + c_d)

With free drafting and verification (c_v = 1, c_d = 0) S = 1 + p: the report's 85–90% acceptance bounds its
speed-up by 1.85–1.9×, and it measures 1.8×.

Why batch 1: after one step the rows of a batch have accepted different numbers of drafts and sit at different
positions, while a forward with a cache takes one start_pos for the whole batch; batching needs per-row positions
(padding and masks, or paged caches), which is what serving systems build.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .model import Transformer, check_token_ids
from .runtime import interleaved_medians  # noqa: F401  (re-exported: 05.4 times with it)

__all__ = ["SpecResult", "speculative_generate", "expected_speedup", "acceptance_walk", "mtp_logits",
           "draft_outcomes", "mtp_agreement", "mark_drafts", "speculative_view", "interleaved_medians", "KINDS"]

KINDS = ("main", "draft", "bonus")   # who chose each new token: the main model alone, an accepted draft, a bonus


@dataclass
class SpecResult:
    """The outcome of :func:`speculative_generate`.

    tokens: [1, prompt + new] ids. kinds: one of :data:`KINDS` per new token ("draft": an accepted MTP draft,
    "bonus": the main model's token after an accepted draft, "main": any other token of the main model).
    main_forwards counts the prefill, the verify forwards and a last 1-token forward; every main forward yields
    exactly one token of its own plus one per accepted draft, so new_tokens = main_forwards + accepted.
    """
    tokens: torch.Tensor
    prompt_len: int
    kinds: list = field(default_factory=list)
    main_forwards: int = 0
    mtp_forwards: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def new_tokens(self) -> int:
        return self.tokens.shape[1] - self.prompt_len

    @property
    def acceptance(self) -> float:
        """accepted / drafted (nan when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def tokens_per_forward(self) -> float:
        """New tokens per main-model forward (plain greedy decoding: exactly 1)."""
        return self.new_tokens / self.main_forwards if self.main_forwards else float("nan")


def _check_model(model, where: str) -> None:
    if not isinstance(model, Transformer):
        raise TypeError(f"{where}: model must be a helpers.model.Transformer, got {type(model).__name__}")
    if model.cfg.mtp_depth < 1 or len(model.mtp) < 1:
        raise ValueError(f"{where}: the model has no MTP module (mtp_depth = {model.cfg.mtp_depth}); speculative "
                         "decoding drafts with it: build the model with mtp_depth ≥ 1 (the base checkpoint has 1)")


def _check_count(name: str, value, where: str, low: int = 0) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"{where}: {name} must be an int ≥ {low}, got {value!r}; pass a whole number such as "
                         f"{name}=50")


def _draft(model, module, h: torch.Tensor, nxt: torch.Tensor, pos: int) -> torch.Tensor:
    """Run the MTP module on pairs (h_i, Emb(s_{i+1})) at positions pos … pos + t − 1 (its cache holds the
    earlier ones) and return the draft: argmax of the head at the last position, shape [1, 1]."""
    freqs = model.freqs_cis(h.device)[pos:pos + h.shape[1]]
    hm = module(h, model.embed(nxt), freqs, pos)
    return model.head(model.norm(hm[:, -1:])).argmax(-1)


@torch.no_grad()
def speculative_generate(model: Transformer, idx: torch.Tensor, max_new_tokens: int) -> SpecResult:
    """Greedy decoding of ``max_new_tokens`` tokens after ``idx`` [1, n], the MTP module (depth 1) drafting one
    token per step and the main model verifying it (see the module docstring). The tokens equal
    ``model.generate(idx, max_new_tokens, temperature=0)``; the counts say how many main forwards it took.

    Arguments are checked before any work, as in ``Transformer.generate`` (prompt + new tokens ≤ max_seq_len).
    Both caches (main layers and the MTP block's attention) are allocated here and cleared on the way out.
    """
    where = "speculative_generate"
    _check_model(model, where)
    check_token_ids(idx, model.cfg.vocab_size, "idx", where=where)
    if idx.shape[0] != 1:
        raise ValueError(f"{where}: idx must hold one sequence [1, n], got batch {idx.shape[0]}; decode the rows one "
                         "at a time (idx[i:i+1]): rows accept different numbers of drafts, so after one step they sit "
                         "at different positions, and a cached forward takes one start_pos for the whole batch")
    _check_count("max_new_tokens", max_new_tokens, where)
    n = idx.shape[1]
    if n + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(f"{where}: prompt {n} + {max_new_tokens} new tokens exceed max_seq_len = "
                         f"{model.cfg.max_seq_len}; ask for fewer tokens or keep only the prompt's last "
                         f"{max(model.cfg.max_seq_len - max_new_tokens, 0)} tokens (idx[:, -n:])")
    res = SpecResult(tokens=idx, prompt_len=n)
    if max_new_tokens == 0:
        return res
    module = model.mtp[0]
    dev, dtype = model.embed.weight.device, model.embed.weight.dtype
    was_training = model.training
    model.eval()
    try:
        model.setup_cache(1, n + max_new_tokens)
        module.block.attn.setup_cache(1, n + max_new_tokens, device=dev, dtype=dtype)
        out = model(idx, start_pos=0, return_hidden=True)                   # prefill: positions 0 … n−1
        last = out["logits"][:, -1:].argmax(-1)                             # s_n, the first new token
        seq, kinds = [idx, last], ["main"]
        res.main_forwards = 1
        L = n + 1                                                            # verified tokens s_0 … s_{L−1}
        end = n + max_new_tokens
        draft = None
        if end - L >= 2:                                                     # a draft can still pay off
            draft = _draft(model, module, out["hidden"], torch.cat([idx[:, 1:], last], 1), 0)
            res.mtp_forwards += 1
        while L < end:
            if draft is None:                                                # one token left: no draft needed
                out = model(last, start_pos=L - 1)
                last = out["logits"][:, -1:].argmax(-1)
                seq.append(last); kinds.append("main")
                res.main_forwards += 1
                L += 1
                continue
            out = model(torch.cat([last, draft], 1), start_pos=L - 1, return_hidden=True)   # verify [s_{L−1}, d]
            res.main_forwards += 1
            res.drafted += 1
            g = out["logits"].argmax(-1)                                     # [1, 2]: g1 at L−1, g2 at L
            if bool(g[0, 0] == draft[0, 0]):                                 # accepted: s_L = d, s_{L+1} = g2
                res.accepted += 1
                new, h = g, out["hidden"]                                    # both hidden states are valid
                kinds += ["draft", "bonus"]
            else:                                                            # rejected: s_L = g1 only
                new, h = g[:, :1], out["hidden"][:, :1]                      # h at L (fed the wrong d) is not
                kinds.append("main")
            seq.append(new)
            pos_mtp = L - 1                                                  # MTP pairs (h_i, s_{i+1}) from L−1
            L += new.shape[1]
            last = new[:, -1:]
            draft = None
            if end - L >= 2:
                draft = _draft(model, module, h, new, pos_mtp)
                res.mtp_forwards += 1
        res.tokens = torch.cat(seq, dim=1)
        res.kinds = kinds
        return res
    finally:
        model.clear_cache()
        module.block.attn.clear_cache()
        model.train(was_training)


def expected_speedup(acceptance: float, draft_cost: float = 0.0, verify_cost: float = 1.0) -> float:
    """Expected speed-up of D = 1 speculative decoding over plain greedy decoding (prefill left out).

    A step makes 1 + A tokens, A ~ Bernoulli(p), so E[tokens per step] = 1 + p; it costs one verify forward of
    2 tokens (``verify_cost`` = c_v, in units of a 1-token main forward) and one MTP forward (``draft_cost`` =
    c_d, same unit). Plain decoding makes 1 token per unit, so

        S = (1 + p) / (c_v + c_d).

    Examples: p = 0.85, free draft and verify → 1.85; p = 0.9, c_v = 1.02, c_d = 0.03 → 1.9 / 1.05 ≈ 1.81.

    Two drafters compared at the same c_v: one with acceptance p_1 and cost c_d beats a free one (c_d = 0) with
    acceptance p_0 only if p_1 > (1 + p_0)(c_v + c_d)/c_v − 1, which can exceed 1 when the draft is costly.
    """
    if not (isinstance(acceptance, (int, float)) and not isinstance(acceptance, bool) and 0 <= acceptance <= 1):
        raise ValueError(f"expected_speedup: acceptance must be a probability in [0, 1], got {acceptance!r}")
    for name, v, low_ok in (("draft_cost", draft_cost, True), ("verify_cost", verify_cost, False)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v >= 0 if low_ok else v > 0)):
            raise ValueError(f"expected_speedup: {name} must be a finite number {'≥' if low_ok else '>'} 0 (a cost "
                             f"in units of one 1-token main forward), got {v!r}")
    return (1 + acceptance) / (verify_cost + draft_cost)


def acceptance_walk(agree: Sequence[bool], n_new: int) -> dict:
    """The schedule :func:`speculative_generate` follows, given which drafts would be right.

    ``agree[j]`` (j = 0 … n_new − 2) says whether the draft made when new token j is the last verified one equals
    new token j + 1. Starting at j = 0 (the prefill made token 0): with two or more tokens still to make, a step
    drafts; it accepts if agree[j] (j += 2) or not (j += 1); with one token left, a plain forward makes it.
    Returns {"drafted", "accepted", "main_forwards", "kinds"}: what the real run counts, from flags alone (the
    flags can come from a teacher-forced forward over the output, or from any other draft model).
    """
    _check_count("n_new", n_new, "acceptance_walk")
    agree = [bool(a) for a in agree]
    if n_new and len(agree) < n_new - 1:
        raise ValueError(f"acceptance_walk: agree needs n_new − 1 = {n_new - 1} flags (one per new token but the "
                         f"last), got {len(agree)}")
    if n_new == 0:
        return {"drafted": 0, "accepted": 0, "main_forwards": 0, "kinds": []}
    j, kinds, drafted, accepted, forwards = 0, ["main"], 0, 0, 1
    while j < n_new - 1:
        forwards += 1
        if n_new - 1 - j == 1:               # one token left
            kinds.append("main")
            j += 1
            continue
        drafted += 1
        if agree[j]:
            accepted += 1
            kinds += ["draft", "bonus"]
            j += 2
        else:
            kinds.append("main")
            j += 1
    return {"drafted": drafted, "accepted": accepted, "main_forwards": forwards, "kinds": kinds}


def draft_outcomes(kinds: Sequence[str]) -> list[tuple[int, bool]]:
    """The drafts a run verified, read back from its ``kinds``: (j, accepted) for each, j being the index of the
    new token that was the last verified one when the draft was made (the j of :func:`acceptance_walk`'s
    ``agree[j]``). Inverse of the walk: for any flags, ``draft_outcomes(acceptance_walk(flags, n)["kinds"])`` lists
    exactly the (j, flags[j]) the walk visited. Used to compare a run's drafts one by one with re-computed ones.
    """
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"draft_outcomes: kind {bad[0]!r} is not one of {KINDS}")
    n, j, out = len(kinds), 0, []
    while j < n - 1:
        if n - 1 - j == 1:                   # one token left: a plain forward, no draft
            j += 1
            continue
        accepted = kinds[j + 1] == "draft"
        if accepted and kinds[j + 2] != "bonus":          # j + 2 ≤ n − 1 here
            raise ValueError(f"draft_outcomes: the accepted draft at new token {j + 1} is not followed by its bonus")
        out.append((j, accepted))
        j += 2 if accepted else 1
    return out


@torch.no_grad()
def mtp_logits(model: Transformer, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced main and MTP logits in one forward, as ``Transformer.forward`` computes them in training:
    main [B, T, V] (position i predicts t_{i+1}) and MTP [B, T − 1, V] (position i, from h_i and Emb(t_{i+1}),
    predicts t_{i+2})."""
    _check_model(model, "mtp_logits")
    check_token_ids(idx, model.cfg.vocab_size, "idx", where="mtp_logits")
    if idx.shape[1] < 2:
        raise ValueError(f"mtp_logits: idx needs at least 2 tokens per row (the MTP module reads t_(i+1)), got "
                         f"{idx.shape[1]}")
    t = idx.shape[1]
    out = model(idx, return_hidden=True)
    freqs = model.freqs_cis(idx.device)[:t - 1]
    hm = model.mtp[0](out["hidden"][:, :-1], model.embed(idx[:, 1:]), freqs)
    return out["logits"], model.head(model.norm(hm))


def mtp_agreement(model: Transformer, idx: torch.Tensor) -> dict:
    """Teacher-forced accuracies on windows ``idx`` [B, T] (one forward):

    main_acc: argmax main_i == t_{i+1};   mtp_acc: argmax MTP_i == t_{i+2};
    agree: argmax MTP_i == argmax main_{i+1} — the acceptance event of speculative decoding (the draft is compared
    with the main model's choice, not with the data), here on real text instead of the model's own output.
    Each value is a float in [0, 1] over all positions of all rows.
    """
    was = model.training
    model.eval()
    try:
        main, mtp = mtp_logits(model, idx)
    finally:
        model.train(was)
    gm, gd = main.argmax(-1), mtp.argmax(-1)
    return {"main_acc": float((gm[:, :-1] == idx[:, 1:]).float().mean()),
            "mtp_acc": float((gd[:, :-1] == idx[:, 2:]).float().mean()),
            "agree": float((gd == gm[:, 1:]).float().mean())}


def mark_drafts(pieces: Sequence[str], kinds: Sequence[str], show_bonus: bool = False) -> str:
    """The text of new tokens ``pieces`` with each accepted draft in brackets ⟦…⟧ (and, with ``show_bonus``, each
    bonus token in braces {…}); "main" tokens stay plain."""
    if len(pieces) != len(kinds):
        raise ValueError(f"mark_drafts: {len(pieces)} pieces but {len(kinds)} kinds; give one kind per new token")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"mark_drafts: kind {bad[0]!r} is not one of {KINDS}")
    out = []
    for p, k in zip(pieces, kinds):
        if k == "draft":
            out.append(f"⟦{p}⟧")
        elif k == "bonus" and show_bonus:
            out.append(f"{{{p}}}")
        else:
            out.append(p)
    return "".join(out)


def speculative_view(model: Transformer, tok, prompt_ids: Sequence[int], n_tokens: int,
                     show_bonus: bool = False) -> dict:
    """The widget's logic: decode ``n_tokens`` after ``prompt_ids`` speculatively on the real model and report
    {"text" (prompt + marked continuation), "acceptance", "drafted", "accepted", "main_forwards",
    "plain_forwards" (= n_tokens, what plain greedy decoding needs), "saved" (forwards saved), "result"}."""
    dev = model.embed.weight.device
    idx = torch.tensor([list(prompt_ids)], dtype=torch.long, device=dev)
    r = speculative_generate(model, idx, n_tokens)
    new = r.tokens[0, r.prompt_len:].tolist()
    pieces = [tok.decode([t]) for t in new]
    return {"text": tok.decode(list(prompt_ids)) + mark_drafts(pieces, r.kinds, show_bonus),
            "acceptance": r.acceptance, "drafted": r.drafted, "accepted": r.accepted,
            "main_forwards": r.main_forwards, "plain_forwards": n_tokens, "saved": n_tokens - r.main_forwards,
            "result": r}
