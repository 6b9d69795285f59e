"""How much the course model learns in a fixed wall-clock budget: validation nats per character on Shakespeare.

    python tools/bench_quality.py                       # 120 s, ModelConfig.cpu_fast(), batch 24 × 64, lr 6e-3
    python tools/bench_quality.py --seconds 300
    python tools/bench_quality.py --preset cpu --batch 16 --seq 128 --lr 3e-3   # the course model as it is
    python tools/bench_quality.py --seconds 60 --set dim=96 n_layers=2 --seed 2

Data. Shakespeare only: the training split is the first ~90% of ``data/tinyshakespeare.txt`` (cut at the
first blank line after 90%, ``helpers.data.split_documents``), the validation split the rest, both as
tokenized by the shipped course tokenizer (``data/tokens.npz``, built with ``data/tokenizer.json``).
The tokenizer was trained (``scripts/build_data.py tokenizer``, ``helpers.tokenizer.training_documents``)
on the *training* splits of the three domains only, so it never saw the last 10% of Shakespeare: the
validation text is held out from the tokenizer as well as from the model. Its merges are shared with code
and arithmetic text, so Shakespeare gets about 3.4 characters per token, a little less than a tokenizer
fitted to Shakespeare alone would give.

Metric. The validation tokens are cut into non-overlapping windows of ``--seq`` tokens; the model
predicts every token of a window from the ones before it inside that window (the first token of the
split has no prediction). nats/char = (total negative log-likelihood of those predictions, nats) ÷
(number of characters of the validation text). It is comparable across tokenizers (a byte/char-level
model's loss per character is the same quantity); nanoGPT's character-level Shakespeare model reaches
about 1.47 on its own split (a different last 10%, cut without regard for blank lines).

Training. ``helpers.train.train`` (the course's loop: AdamW, cosine schedule to lr/10, clipping at 1.0),
on the fast path, in the training autocast of ``helpers.runtime`` (fp32 on a CPU without fast bf16).
That loop runs a fixed number of steps, so the budget is turned into steps first: twelve steps of that same
loop on a throwaway copy measure the step time (the median of the last seven), steps = budget / step time,
then the real run starts from the seed. Later steps run a little slower, so a run ends a few per cent past its
budget (more on a busy machine): the wall time (and the process's CPU time) actually used is printed next to the
result. ``--steps N`` skips the
timing and trains exactly N steps (to compare configurations by steps when the machine is shared).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.batching import load_splits, random_windows  # noqa: E402
from helpers.data import split_documents  # noqa: E402
from helpers.model import ModelConfig, Transformer  # noqa: E402
from helpers.runtime import seed_everything  # noqa: E402
from helpers.tokenizer import load_tokenizer  # noqa: E402
from helpers.train import TrainConfig, train  # noqa: E402


def shakespeare():
    """(train tokens, val tokens, number of characters of the validation text)."""
    tok = load_splits()["shakespeare"]
    eot = load_tokenizer().eot_id
    train_t, val_t = tok["train"], tok["val"]
    train_t, val_t = (t[:-1] if int(t[-1]) == eot else t for t in (train_t, val_t))
    val_chars = len(split_documents("shakespeare")["val"][0])
    return train_t, val_t, val_chars


@torch.no_grad()
def nats_per_char(model, val: torch.Tensor, seq: int, n_chars: int, batch: int = 32) -> float:
    """Total NLL over non-overlapping windows of ``seq`` tokens ÷ characters."""
    model.eval()
    n_win = (len(val) - 1) // seq
    x = val[:n_win * seq].view(n_win, seq)
    y = val[1:n_win * seq + 1].view(n_win, seq)
    total, count = 0.0, 0
    for i in range(0, n_win, batch):
        logits = model(x[i:i + batch])["logits"].float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[i:i + batch].flatten(), reduction="sum")
        total, count = total + float(nll), count + y[i:i + batch].numel()
    rest = val[n_win * seq:]                                        # the tail shorter than a window
    if len(rest) > 1:
        logits = model(rest[None, :-1])["logits"].float()
        total += float(torch.nn.functional.cross_entropy(logits[0], rest[1:], reduction="sum"))
        count += len(rest) - 1
    return total / n_chars, count


def parse_set(items) -> dict:
    """``["dim=96", "attn=mha"]`` → ``{"dim": 96, "attn": "mha"}``, each value cast to the field's type."""
    fields = ModelConfig().to_dict()
    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep or k not in fields:
            raise ValueError(f"--set {it!r}: expected FIELD=VALUE with FIELD one of ModelConfig's fields "
                             f"({', '.join(fields)})")
        kind = type(fields[k])
        try:
            out[k] = v if kind is str else kind(float(v)) if kind is float else int(v)
        except ValueError:
            raise ValueError(f"--set {it!r}: {k} takes a {kind.__name__}, got {v!r}") from None
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--preset", choices=["cpu_fast", "cpu"], default="cpu_fast",
                   help="ModelConfig preset (cpu_fast: 3 blocks, no MTP, what a short budget rewards)")
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=6e-3)
    p.add_argument("--warmup-frac", type=float, default=0.02, help="linear warm-up, share of the steps")
    p.add_argument("--min-lr", type=float, default=None, help="end of the cosine decay (default lr / 10)")
    p.add_argument("--beta2", type=float, default=0.95, help="AdamW's β₂ (the report's 0.95)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--set", nargs="*", help="overrides of the preset's fields, e.g. dim=96 n_layers=2")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=None,
                   help="train exactly this many steps instead of fitting --seconds (for sweeps on a busy machine)")
    a = p.parse_args(argv)
    if a.seconds <= 0 or (a.steps is not None and a.steps < 1):
        p.error(f"--seconds must be > 0 and --steps ≥ 1, got {a.seconds} and {a.steps}")
    try:
        overrides = parse_set(a.set)
    except ValueError as e:
        p.error(str(e))
    cfg = getattr(ModelConfig, a.preset)(**overrides)
    train_t, val_t, val_chars = shakespeare()

    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        return lambda split="train": random_windows(train_t, a.batch, a.seq, generator=g)

    # 1. measure the step time of the real loop (helpers.train.train) on a throwaway model: 4 warm-up steps,
    #    then the median of the last 7 step times (a callback reads the loop's clock after every step)
    step_s, steps = None, a.steps
    if steps is None:
        seed_everything(a.seed)
        clock = []
        train(Transformer(cfg), batches(a.seed + 1),
              TrainConfig(steps=12, lr=a.lr, weight_decay=a.weight_decay, eval_every=0, eval_batches=1, seed=a.seed),
              val_data=[random_windows(val_t, 1, a.seq, generator=torch.Generator().manual_seed(0))],
              show_progress=False, callback=lambda step, h: clock.append(h.wall_time))
        step_s = sorted(b - a_ for a_, b in zip(clock[4:], clock[5:]))[3]
        steps = max(10, int(a.seconds / step_s))

    # 2. the real run, from the seed
    seed_everything(a.seed)
    model = Transformer(cfg)
    tcfg = TrainConfig(steps=steps, lr=a.lr, min_lr=a.min_lr, warmup_steps=max(1, int(a.warmup_frac * steps)),
                       weight_decay=a.weight_decay, betas=(0.9, a.beta2), eval_every=0, eval_batches=1, seed=a.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    hist = train(model, batches(a.seed), tcfg, val_data=[random_windows(val_t, 4, a.seq,
                                                                        generator=torch.Generator().manual_seed(0))],
                 show_progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    npc, n_pred = nats_per_char(model, val_t, a.seq, val_chars)
    tokens = steps * a.batch * a.seq
    res = {"nats_per_char": npc, "bits_per_char": npc / math.log(2), "tokens_per_s": tokens / wall, "steps": steps,
           "wall_s": wall, "cpu_s": cpu, "tokens": tokens, "params": model.num_params()["total"], "step_s_probe": step_s,
           "train_loss_end": sum(hist.train_loss[-10:]) / len(hist.train_loss[-10:]),
           "val_tokens": n_pred, "val_chars": val_chars, "preset": a.preset, "config": overrides, "batch": a.batch,
           "seq": a.seq, "lr": a.lr, "min_lr": tcfg.min_lr, "beta2": a.beta2, "weight_decay": a.weight_decay}
    timing = f"budget {a.seconds:.0f} s, probe {step_s:.2f} s/step" if step_s else "--steps given"
    print(f"nats/char {npc:.4f} (bits/char {npc / math.log(2):.3f}) | {tokens / wall:,.0f} tokens/s | "
          f"{steps} steps in {wall:.0f} s wall, {cpu:.0f} s CPU ({timing}) | batch {a.batch}×{a.seq} lr {a.lr} "
          f"(→ {tcfg.min_lr if tcfg.min_lr is not None else a.lr / 10:g}) β₂ {a.beta2} wd {a.weight_decay} "
          f"| {res['params']:,} params | {a.preset}() overrides {overrides or '-'} "
          f"| train loss end {res['train_loss_end']:.3f} "
          f"| val: {n_pred:,} tokens, {val_chars:,} chars")
    return res


if __name__ == "__main__":
    main()
