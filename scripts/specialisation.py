"""Expert specialisation per domain under each way of balancing (chapter 07.4; the report's Appendix C, Figure 9).

    python scripts/specialisation.py                  # 4 arms × seeds 0 1 2 (defaults below), ~20 min on one core
    python scripts/specialisation.py --arms aux_free seq_aux --seeds 0 --steps 40    # a quick look

The report compares the expert load of an aux-loss-free model with an auxiliary-loss-based one on domains of the
Pile and finds "greater expert specialisation patterns" without the loss (Figure 9); §4.5.3 adds why: a
sequence-wise balance loss asks every *sequence* to be balanced, so a sequence that is all code cannot send its tokens
to code experts; batch-wise balance (the bias, or a loss over the whole batch) only asks the *batch* to be balanced.

Arms (for a seed, every arm starts from the same weights and sees the same batches in the same order; every training
row comes from a single domain, as a Pile document does):

- ``aux_free``: the bias update with speed γ (``balance="aux_free"``), no balance loss — DeepSeek-V3's way;
- ``batch_aux``: the classic batch-wise auxiliary loss with weight α, no bias;
- ``seq_aux``: the sequence-wise balance loss of §2.1.2 with weight α (the report's baseline form), no bias;
- ``none``: no balancing at all (the reference: how much a router specialises on its own).

Measured per run, on fixed held-out windows of each domain: the main head's loss (nats/token) beside the count-based
bigram on the same windows; the routed slots per (MoE layer, domain, expert) (``helpers.moe.domain_expert_loads``);
their specialisation I(domain; expert) in bits (``helpers.moe.specialisation``; 0 = domain-blind, log₂ 3 = each
domain on experts of its own) at every evaluation, and MaxVio of the load over all held-out tokens. Deterministic for a
given seed and thread count. Writes data/results/ch07_specialisation.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

from ablations import DOMAINS, bigram_baseline, build_model, evaluate_arm, stats, val_windows  # noqa: E402
from helpers.batching import DEFAULT_WEIGHTS, MixtureSampler, load_splits  # noqa: E402
from helpers.config import ModelConfig  # noqa: E402
from helpers.moe import domain_expert_loads, max_violation, specialisation  # noqa: E402
from helpers.runtime import progress  # noqa: E402
from helpers.train import TrainConfig, train  # noqa: E402

OUT = ROOT / "data" / "results" / "ch07_specialisation.json"
ARMS = ("aux_free", "batch_aux", "seq_aux", "none")
DEFAULTS = dict(steps=500, batch_size=16, block_size=64, lr=3e-3, warmup_steps=20, decay_frac=0.2, eval_every=100,
                eval_batches=4, gamma=0.01, alpha=0.01, model=dict(dim=128, n_layers=3, mtp_depth=0))


def arm_config(arm: str, block_size: int, model: dict, gamma: float, alpha: float) -> ModelConfig:
    """``ModelConfig.cpu`` with the arm's balancing: the bias (γ), a batch-wise or sequence-wise loss (α), or none."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    bal = {"aux_free": dict(balance="aux_free", bias_update_speed=gamma),
           "batch_aux": dict(balance="aux", aux_loss_alpha=alpha),
           "seq_aux": dict(balance="seq_aux", seq_aux_alpha=alpha),
           "none": dict(balance="none")}[arm]
    return ModelConfig.cpu(**{"max_seq_len": block_size, **model, **bal})


def measure(net, windows: dict) -> dict:
    """Held-out losses per domain, the per-domain expert loads and their specialisation, MaxVio over all tokens."""
    losses, _ = evaluate_arm(net, windows)
    loads = domain_expert_loads(net, windows)
    spec = specialisation(loads)
    total = sum(loads.values())
    return {"loss": losses, "bits": spec["bits"], "bits_mean": statistics.fmean(spec["bits"]),
            "maxvio": statistics.fmean(max_violation(total)),
            "relative": {d: v.tolist() for d, v in spec["relative"].items()},
            "loads": {d: v.tolist() for d, v in loads.items()}}


def run_arm(arm: str, seed: int, splits: dict, windows: dict, a) -> dict:
    """Train one arm for one seed; measure at every ``eval_every`` steps and at the end."""
    cfg = arm_config(arm, a.block_size, DEFAULTS["model"], a.gamma, a.alpha)
    net = build_model(cfg, seed)
    sampler = MixtureSampler(splits, DEFAULT_WEIGHTS, batch_size=a.batch_size, block_size=a.block_size, seed=seed)
    tcfg = TrainConfig(steps=a.steps, lr=a.lr, min_lr=a.lr / 10, warmup_steps=a.warmup_steps, schedule="wsd",
                       decay_frac=a.decay_frac, eval_every=0, seed=seed)
    curve = [{"step": 0, **{k: v for k, v in measure(net, windows).items() if k in ("bits", "bits_mean", "maxvio")}}]

    def callback(step, hist):
        if step % a.eval_every == 0 and step < a.steps:
            m = measure(net, windows)
            curve.append({"step": step, **{k: m[k] for k in ("bits", "bits_mean", "maxvio")}})

    x0, y0 = next(iter(windows.values()))[0]
    t0 = time.perf_counter()
    train(net, sampler, tcfg, val_data=[(x0[:1, :8], y0[:1, :8])], show_progress=False, callback=callback)
    wall = time.perf_counter() - t0
    final = measure(net, windows)
    curve.append({"step": a.steps, **{k: final[k] for k in ("bits", "bits_mean", "maxvio")}})
    return {"arm": arm, "seed": seed, "config": cfg.to_dict(), "final": final, "curve": curve, "wall_s": wall,
            "tokens": a.steps * a.batch_size * a.block_size}


def summarize(runs: list, bigram: dict) -> dict:
    """Per arm: stats over seeds of the specialisation (mean over layers), MaxVio and the losses; whether every
    seed's mean loss is below the bigram's."""
    out = {}
    for arm in ARMS:
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue
        out[arm] = {"bits": stats(r["final"]["bits_mean"] for r in rs),
                    "maxvio": stats(r["final"]["maxvio"] for r in rs),
                    "loss": {d: stats(r["final"]["loss"][d] for r in rs) for d in (*DOMAINS, "mean")},
                    "beats_bigram": all(r["final"]["loss"]["mean"] < bigram["val_loss"] for r in rs),
                    "seeds": [r["seed"] for r in rs]}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    for k in ("steps", "batch_size", "block_size", "warmup_steps", "eval_every", "eval_batches"):
        p.add_argument("--" + k.replace("_", "-"), type=int, default=DEFAULTS[k])
    for k in ("lr", "decay_frac", "gamma", "alpha"):
        p.add_argument("--" + k.replace("_", "-"), type=float, default=DEFAULTS[k])
    p.add_argument("--threads", type=int, default=1, help="torch threads (results are deterministic per count)")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    if a.steps < a.eval_every or min(a.steps, a.batch_size, a.block_size, a.eval_every, a.eval_batches) < 1:
        p.error("steps, batch-size, block-size, eval-every and eval-batches must be ≥ 1, and steps ≥ eval-every")
    if not (a.gamma > 0 and a.alpha > 0 and a.lr > 0):
        p.error("gamma, alpha and lr must be > 0")
    torch.set_num_threads(a.threads)
    splits = load_splits()
    windows = val_windows(splits, a.block_size, a.eval_batches)
    cfg0 = arm_config("none", a.block_size, DEFAULTS["model"], a.gamma, a.alpha)
    bigram = bigram_baseline(splits, windows, cfg0.vocab_size)
    t0 = time.perf_counter()
    runs = []
    jobs = [(arm, s) for s in a.seeds for arm in a.arms]
    for arm, seed in progress(jobs, desc="specialisation runs"):
        r = run_arm(arm, seed, splits, windows, a)
        runs.append(r)
        f = r["final"]
        print(f"{arm:9s} seed {seed}: I = {f['bits_mean']:.3f} bits (layers {', '.join(f'{b:.3f}' for b in f['bits'])}), "
              f"MaxVio {f['maxvio']:.2f}, loss {f['loss']['mean']:.3f} (bigram {bigram['val_loss']:.3f}), "
              f"{r['wall_s']:.0f} s", flush=True)
    out = {"what": "expert specialisation per domain under aux-loss-free, batch-wise and sequence-wise balancing "
                   "(chapter 07.4; report Appendix C, Figure 9, and §4.5.3)",
           "command": "python scripts/specialisation.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "args": {k: v for k, v in vars(a).items() if k != "out"}, "model": DEFAULTS["model"],
           "domains": list(DOMAINS), "weights": DEFAULT_WEIGHTS, "bigram": bigram,
           "max_bits": specialisation({d: [1.0] for d in DOMAINS})["max_bits"],
           "summary": summarize(runs, bigram), "runs": runs,
           "report": {"claim": "the auxiliary-loss-free model demonstrates greater expert specialisation patterns "
                               "than the auxiliary-loss-based one (Appendix C, Figure 9; Pile domains, 16B models)",
                      "why": "sequence-wise balance forces in-domain balance within every sequence; batch-wise balance "
                             "does not (§4.5.3)"},
           "torch": torch.__version__, "threads": a.threads, "python": platform.python_version(),
           "wall_s": time.perf_counter() - t0}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    for arm, s in out["summary"].items():
        print(f"{arm:9s}: I = {s['bits']['mean']:.3f} [{s['bits']['min']:.3f}, {s['bits']['max']:.3f}] bits, "
              f"MaxVio {s['maxvio']['mean']:.2f}, loss {s['loss']['mean']['mean']:.3f}, beats bigram {s['beats_bigram']}")
    print(f"wall time {out['wall_s']:.0f} s -> {a.out}")
    return out


if __name__ == "__main__":
    main()
