"""Fill-in-the-middle at rate 0.1 vs no FIM (DeepSeek-V3 §4.1): same model, same steps, same tokens, 3 seeds each.

    python scripts/fim_ablation.py                       # the shipped result (defaults below; ~8 min on one core)
    python scripts/fim_ablation.py --seeds 0 1 2 3 --steps 400

The report applies FIM (PSM order) to 10% of its pre-training documents and says the model learns to fill a
middle "without compromising" next-token prediction. Here a small member of the course model family is trained on
code chunks (helpers.fim.code_chunks of the shipped code train documents) turned into one token stream by
helpers.fim.fim_rate_stream at rate 0.1 or 0.0; every other setting is equal (initial weights and window draws
per seed, steps, batch, tokens). Each training pass over the chunks draws its own FIM documents and cut points.
Measured on held-out code (the validation documents, never trained on):

(a) left-to-right validation loss on fixed windows of the shipped code validation split (no FIM);
(b) FIM loss: the mean loss of the middle tokens of validation chunks cut at two uniform character positions,
    given prefix and suffix in PSM order — all middle tokens, the first 3 (where the middle must join the prefix)
    and the closing <|endoftext|> (where it must meet the suffix); beside it the same middle tokens given the
    prefix only, left to right (all a model without FIM can use), and the count-based bigram;
(c) greedy exact match of one-line middles (a whole line of a validation chunk, at most ``--line-tokens``
    tokens): in PSM order the greedy continuation must be exactly the line and then ``<|endoftext|>``; left to
    right (prefix only) it must be the line. Greedy decoding reproduces a sequence exactly when every one of its
    tokens is the argmax given the ones before, so this is computed in one teacher-forced forward pass.

A control arm (3 more runs) separates the two things a FIM arm changes at equal steps: it trains without FIM
on only as many steps as the FIM arm's left-to-right tokens fill (the FIM arm's stream holds ~12% PSM tokens), so
comparing it with the FIM arm on (a) tells whether FIM costs more than the left-to-right tokens it displaces.

Writes data/results/ch04_fim.json: per run the numbers above, per arm mean ± std over seeds, the bigram
baselines, a short seed-0 check run of both arms (re-run live by notebook 04.1), the config, the command, torch
version, threads and wall time. Deterministic on a CPU for a given thread count and kernel set.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from helpers.batching import eval_batches, load_splits, random_windows  # noqa: E402
from helpers.config import ModelConfig  # noqa: E402
from helpers.data import split_documents  # noqa: E402
from helpers.fim import code_chunks, encode_psm, fim_prompt_ids, fim_rate_stream, fim_split  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.objective import BigramModel  # noqa: E402
from helpers.runtime import progress  # noqa: E402
from helpers.tokenizer import load_tokenizer  # noqa: E402
from helpers.train import TrainConfig, evaluate, train  # noqa: E402

REPORT_RATE = 0.1
DEFAULTS = dict(steps=240, batch_size=8, block_size=256, dim=64, n_layers=2, lr=3e-3, warmup_steps=20,
                max_chars=700, n_fim_eval=128, n_line_eval=128, line_tokens=12, eval_seed=4_000, val_batches=8)


def model_config(dim: int = 64, n_layers: int = 2, block_size: int = 256) -> ModelConfig:
    """The ablation model: the family's small dense member (``ModelConfig.dense_tiny``: MHA + SwiGLU, no MoE, no
    MTP; chapter 01's model) at width ``dim`` — FIM is a property of the data, and the dense member trains the
    most tokens per CPU second."""
    return ModelConfig.dense_tiny(dim=dim, n_layers=n_layers, n_dense_layers=n_layers, inter_dim=3 * dim,
                                  max_seq_len=block_size)


# -- data ---------------------------------------------------------------------------------------------------------
def code_chunk_splits(max_chars: int = 700) -> dict[str, list[str]]:
    """Code chunks of the shipped train and validation documents (validation files are never trained on)."""
    docs = split_documents("code")
    return {s: [c for d in docs[s] for c in code_chunks(d, max_chars)] for s in ("train", "val")}


def train_stream(tok, chunks: list[str], rate: float, seed: int, n_tokens: int,
                 plain: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """Passes over ``chunks`` (pass k: fim_rate_stream with seed 1000·seed + k, so each pass draws its own FIM
    documents and cut points) until the stream holds ``n_tokens``. Returns (ids, number of FIM documents).
    ``plain``: the rate-0 encoding of ``chunks``, if already known (every rate-0 pass is that same stream)."""
    ids, n_fim, k = [], 0, 0
    while len(ids) < n_tokens:
        if rate == 0 and plain is not None:
            part, nf = plain, 0
        else:
            part, nf = fim_rate_stream(tok, chunks, rate=rate, seed=1000 * seed + k)
        if ids and ids[-1] != tok.eot_id:
            ids.append(tok.eot_id)
        ids += part
        n_fim += nf
        k += 1
    return torch.tensor(ids, dtype=torch.long), n_fim


def fim_eval_set(tok, chunks: list[str], n: int, block_size: int, seed: int) -> list[tuple[str, str, str]]:
    """Up to ``n`` (prefix, middle, suffix) cuts of validation chunks (uniform character cut points, non-empty
    middle) whose PSM document fits ``block_size + 1`` tokens. Seeded."""
    rng, out = random.Random(seed), []
    order = list(range(len(chunks)))
    rng.shuffle(order)
    for i in order:
        p, m, s = fim_split(chunks[i], rng)
        if m.strip() and len(encode_psm(tok, p, m, s)) <= block_size + 1:
            out.append((p, m, s))
        if len(out) == n:
            break
    return out


def line_eval_set(tok, chunks: list[str], n: int, max_tokens: int, block_size: int, seed: int) -> list[tuple[str, str, str]]:
    """Up to ``n`` one-line middles: (text before the line, the line with its line break, text after), one per
    validation chunk, a non-blank line of at most ``max_tokens`` tokens whose PSM document fits. Seeded."""
    rng, out = random.Random(seed), []
    order = list(range(len(chunks)))
    rng.shuffle(order)
    for i in order:
        lines = chunks[i].splitlines(keepends=True)
        ok = [j for j, ln in enumerate(lines) if ln.strip() and ln.endswith("\n") and len(tok.encode(ln)) <= max_tokens]
        if not ok:
            continue
        j = rng.choice(ok)
        p, m, s = "".join(lines[:j]), lines[j], "".join(lines[j + 1:])
        if len(encode_psm(tok, p, m, s)) <= block_size + 1:
            out.append((p, m, s))
        if len(out) == n:
            break
    return out


def middle_batch(tok, examples, order: str, with_eot: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows x, y with targets only on the middle tokens (and the closing ``<|endoftext|>`` when ``with_eot``).

    order="psm": ``<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle <|endoftext|>``;
    order="l2r": ``<|endoftext|> prefix middle`` (a document start, then the prefix only). Each piece is
    tokenized on its own, so both orders grade the same middle tokens. Rows are right-padded (pads are never
    attended to by earlier positions and carry target −1)."""
    rows, tgts = [], []
    for p, m, s in examples:
        mid = tok.encode(m)
        if order == "psm":
            ctx = fim_prompt_ids(tok, p, s)
        elif order == "l2r":
            ctx = [tok.eot_id] + tok.encode(p)
        else:
            raise ValueError(f"order must be 'psm' or 'l2r', got {order!r}")
        seq = ctx + mid + ([tok.eot_id] if with_eot else [])
        y = [-1] * (len(ctx) - 1) + seq[len(ctx):]
        rows.append(seq[:-1])
        tgts.append(y)
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), tok.eot_id, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, tgts)):
        x[i, :len(r)] = torch.tensor(r)
        y[i, :len(t)] = torch.tensor(t)
    return x, y


@torch.no_grad()
def middle_scores(model, x: torch.Tensor, y: torch.Tensor, stop_id: int, n_first: int = 3, batch: int = 32) -> dict:
    """Scores on the graded targets (y ≠ −1) of rows x, where a target equal to ``stop_id`` is the closing
    ``<|endoftext|>`` and every other graded target a middle token:

    loss / acc: mean loss (nats/token) and argmax accuracy over the middle tokens; first: mean loss over the first
    ``n_first`` middle tokens of each row (where the middle has to join the prefix); stop: mean loss of the closing
    token (None when not graded); exact_mid: share of rows whose middle tokens are all the argmax; exact: the same
    with the closing token too — i.e. greedy decoding would write exactly the middle and then stop."""
    model.eval()
    sums = {"loss": 0.0, "acc": 0.0, "first": 0.0, "stop": 0.0}
    counts = {"loss": 0, "first": 0, "stop": 0}
    exact_mid, exact = [], []
    for s in range(0, len(x), batch):
        xb, yb = x[s:s + batch], y[s:s + batch]
        logits = model(xb)["logits"].float()
        graded = yb != -1
        stop = graded & (yb == stop_id)
        mid = graded & ~stop
        first = mid & (mid.long().cumsum(1) <= n_first)
        nll = -torch.log_softmax(logits, -1).gather(-1, yb.clamp_min(0)[..., None]).squeeze(-1)
        hit = logits.argmax(-1) == yb
        sums["loss"] += float(nll[mid].sum())
        sums["acc"] += float(hit[mid].sum())
        sums["first"] += float(nll[first].sum())
        sums["stop"] += float(nll[stop].sum())
        counts["loss"] += int(mid.sum())
        counts["first"] += int(first.sum())
        counts["stop"] += int(stop.sum())
        exact_mid += (hit | ~mid).all(1).tolist()
        exact += (hit | ~graded).all(1).tolist()
    return {"loss": sums["loss"] / counts["loss"], "acc": sums["acc"] / counts["loss"],
            "first": sums["first"] / counts["first"], "stop": sums["stop"] / counts["stop"] if counts["stop"] else None,
            "exact_mid": sum(exact_mid) / len(exact_mid), "exact": sum(exact) / len(exact), "n": len(exact)}


def bigram_middle_loss(bigram: BigramModel, x: torch.Tensor, y: torch.Tensor) -> float:
    """The bigram's mean loss on the graded tokens (each conditioned on the token before it)."""
    m = y != -1
    lp = bigram.log_probs(x[m])
    return float(-lp.gather(-1, y[m][:, None]).mean())


# -- one run ---------------------------------------------------------------------------------------------------------
def prepare(args: dict) -> dict:
    """Everything shared by the runs: tokenizer, chunks, validation windows and evaluation sets, bigram baselines."""
    tok = load_tokenizer()
    chunks = code_chunk_splits(args["max_chars"])
    splits = load_splits()
    val = eval_batches(splits, "code", args["val_batches"], args["batch_size"], args["block_size"])
    fim_set = fim_eval_set(tok, chunks["val"], args["n_fim_eval"], args["block_size"], args["eval_seed"])
    line_set = line_eval_set(tok, chunks["val"], args["n_line_eval"], args["line_tokens"], args["block_size"],
                             args["eval_seed"] + 1)
    sets = {"fim_psm": middle_batch(tok, fim_set, "psm", with_eot=True),
            "fim_l2r": middle_batch(tok, fim_set, "l2r", with_eot=False),
            "line_psm": middle_batch(tok, line_set, "psm", with_eot=True),
            "line_l2r": middle_batch(tok, line_set, "l2r", with_eot=False)}
    bigram = BigramModel(tok.vocab_size).fit(splits["code"]["train"])
    x, y = sets["fim_l2r"]
    first = (y != -1) & ((y != -1).long().cumsum(1) <= 3)
    base = {"val_l2r": sum(bigram_middle_loss(bigram, xb, yb) for xb, yb in val) / len(val),
            "fim_l2r": bigram_middle_loss(bigram, x, y),
            "fim_l2r_first": bigram_middle_loss(bigram, x, torch.where(first, y, torch.full_like(y, -1)))}
    plain, _ = fim_rate_stream(tok, chunks["train"], rate=0.0)
    return {"tok": tok, "chunks": chunks, "plain": plain, "val": val, "sets": sets, "bigram": base,
            "n_fim_eval": len(fim_set), "n_line_eval": len(line_set), "fim_examples": fim_set[:3],
            "line_examples": line_set[:3]}


def run(rate: float, seed: int, steps: int, args: dict, prep: dict, show_progress: bool = False,
        fim_eval: bool = True) -> dict:
    """Train one model on the code chunk stream at FIM ``rate`` (seeded: initial weights, FIM draws, windows) and
    evaluate it (``fim_eval=False``: the left-to-right validation loss only). Returns one row of the result file."""
    t0 = time.perf_counter()
    tok, B, T = prep["tok"], args["batch_size"], args["block_size"]
    stream, n_fim = train_stream(tok, prep["chunks"]["train"], rate, seed, steps * B * (T + 1), prep["plain"])
    torch.manual_seed(seed)
    model = Transformer(model_config(args["dim"], args["n_layers"], T))
    gen = torch.Generator().manual_seed(10_000 + seed)

    def get_batch(split="train"):
        return random_windows(stream, B, T, gen)

    cfg = TrainConfig(steps=steps, lr=args["lr"], warmup_steps=min(args["warmup_steps"], steps), eval_every=0,
                      seed=seed)
    hist = train(model, get_batch, cfg, val_data=prep["val"][:1], show_progress=show_progress)
    out = {"rate": rate, "seed": seed, "steps": steps, "tokens": hist.tokens[-1], "fim_documents": n_fim,
           "fim_token_share": fim_token_share(stream, tok), "train_loss_end": statistics.mean(hist.train_loss[-10:]),
           "val_l2r": evaluate(model, prep["val"])}
    for k, (x, y) in (prep["sets"] if fim_eval else {}).items():
        sc = middle_scores(model, x, y, stop_id=tok.eot_id)
        for m in ("loss", "acc", "first", "stop", "exact_mid", "exact"):
            if sc[m] is not None:
                out[f"{k}_{m}"] = sc[m]
    out["seconds"] = time.perf_counter() - t0
    return out


def fim_token_share(stream: torch.Tensor, tok) -> float:
    """Share of the stream's tokens that belong to PSM documents (from a <|fim_prefix|> to its <|endoftext|>)."""
    start = tok.special_tokens["<|fim_prefix|>"]
    s = stream.tolist()
    inside, n = False, 0
    for t in s:
        if t == start:
            inside = True
        if inside:
            n += 1
        if t == tok.eot_id:
            inside = False
    return n / len(s)


METRICS = ("val_l2r", "fim_psm_loss", "fim_l2r_loss", "fim_psm_first", "fim_l2r_first", "fim_psm_stop", "fim_psm_acc",
           "fim_l2r_acc", "line_psm_loss", "line_l2r_loss", "line_psm_stop", "line_psm_exact_mid", "line_l2r_exact_mid",
           "line_psm_exact")


def summarize(runs: list[dict]) -> dict:
    """Per arm and metric: mean, std (over seeds), min, max, per-seed values (seeds in increasing order)."""
    out = {}
    for arm in dict.fromkeys(x["arm"] for x in runs):
        rr = sorted((x for x in runs if x["arm"] == arm), key=lambda x: x["seed"])
        out[arm] = {m: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                        "min": min(v), "max": max(v), "per_seed": v}
                    for m in METRICS if all(m in x for x in rr) for v in [[x[m] for x in rr]]}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rates", type=float, nargs="+", default=[0.0, REPORT_RATE])
    p.add_argument("--check-steps", type=int, default=20, help="short seed-0 runs of each arm, re-run live by the notebook")
    p.add_argument("--no-control", action="store_true", help="skip the control arm (no FIM, trained on as many "
                   "left-to-right tokens as the FIM arm saw)")
    p.add_argument("--threads", type=int, default=1)
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    p.add_argument("--out", default=str(ROOT / "data" / "results" / "ch04_fim.json"))
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    if len(a.seeds) < 3:
        p.error("give at least 3 seeds: a comparison that names a winner needs a spread")
    if any(not 0.0 <= r <= 1.0 for r in a.rates):
        p.error(f"rates must be in [0, 1], got {a.rates}")
    torch.set_num_threads(a.threads)
    args = {k: getattr(a, k) for k in DEFAULTS}
    t0 = time.perf_counter()
    prep = prepare(args)
    print(f"evaluation sets: {prep['n_fim_eval']} FIM cuts, {prep['n_line_eval']} one-line middles of validation "
          f"chunks; bigram: val {prep['bigram']['val_l2r']:.4f}, middles {prep['bigram']['fim_l2r']:.4f}", flush=True)
    runs = []
    control = REPORT_RATE in a.rates and 0.0 in a.rates and not a.no_control
    jobs = [(s, r) for s in a.seeds for r in a.rates] + ([(s, "control") for s in a.seeds] if control else [])
    for seed, rate in progress(jobs, desc="runs", disable=False):
        if rate == "control":    # no FIM, only as many steps as the FIM arm's left-to-right (non-PSM) tokens fill
            share = next(x["fim_token_share"] for x in runs if x["seed"] == seed and x["rate"] == REPORT_RATE)
            r = run(0.0, seed, round(a.steps * (1 - share)), args, prep, fim_eval=False)
            r["arm"] = "control"
        else:
            r = run(rate, seed, a.steps, args, prep)
            r["arm"] = str(rate)
        runs.append(r)
        if rate == "control":
            print(f"seed {seed} control ({r['steps']} steps, no FIM): val {r['val_l2r']:.4f} ({r['seconds']:.0f} s)", flush=True)
            continue
        print(f"seed {seed} rate {rate}: val {r['val_l2r']:.4f} | middle loss psm {r['fim_psm_loss']:.4f} "
              f"l2r {r['fim_l2r_loss']:.4f}, first 3 psm {r['fim_psm_first']:.4f} l2r {r['fim_l2r_first']:.4f}, stop "
              f"{r['fim_psm_stop']:.4f} | one-line exact psm {r['line_psm_exact']:.3f} (middle only "
              f"{r['line_psm_exact_mid']:.3f}) l2r {r['line_l2r_exact_mid']:.3f} ({r['seconds']:.0f} s)", flush=True)
    check = [run(r, a.seeds[0], a.check_steps, args, prep) for r in a.rates]
    summary = summarize(runs)
    out = {"claim": "FIM (PSM) at rate 0.1 teaches filling a middle without hurting next-token prediction "
                    "(DeepSeek-V3 §4.1, after DeepSeekCoder-V2)",
           "report": {"fim_rate": REPORT_RATE, "order": "PSM", "left_to_right": "not compromised"},
           "measured": "code: the shipped code train documents cut into chunks (helpers.fim.code_chunks, "
                       f"max_chars={a.max_chars}), FIM at the given rate per chunk (helpers.fim.fim_rate_stream); "
                       f"model ModelConfig.cpu(dim={a.dim}, n_layers={a.n_layers}, inter_dim={3 * a.dim}, "
                       f"max_seq_len={a.block_size}, mtp_depth=0); {a.steps} steps of {a.batch_size}x{a.block_size} "
                       f"random windows, lr {a.lr} cosine with {a.warmup_steps} warm-up steps; val_l2r: main loss on "
                       f"{a.val_batches}x{a.batch_size} fixed windows of the shipped code validation split; fim_*: "
                       "middle tokens of uniform two-point cuts of validation chunks (psm: given prefix and suffix; "
                       "l2r: given the prefix only); line_*: one-line middles, exact = greedy reproduces the line "
                       "(psm: and then <|endoftext|>)",
           "seeds": a.seeds, "rates": a.rates, "runs": runs, "summary": summary, "bigram": prep["bigram"],
           "check_runs": check, "eval_sets": {"n_fim": prep["n_fim_eval"], "n_line": prep["n_line_eval"]},
           "config": {**args, "check_steps": a.check_steps, "model": model_config(a.dim, a.n_layers, a.block_size).to_dict()},
           "command": " ".join(["python scripts/fim_ablation.py", *argv]).strip(),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "wall_s": time.perf_counter() - t0}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    for r, s in summary.items():
        print(f"arm {r}: " + ", ".join(f"{m} {s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m in METRICS if m in s))
    print(f"wall time {out['wall_s']:.0f} s -> {a.out}")
    return out


if __name__ == "__main__":
    main()
