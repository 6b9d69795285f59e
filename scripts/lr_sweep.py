"""A learning-rate sweep of a small course model on the three-domain mixture, several seeds per learning rate.

    python scripts/lr_sweep.py                       # the shipped result (defaults below; wall time in the file)
    python scripts/lr_sweep.py --lrs 1e-3 3e-3 1e-2 --seeds 0 1 2 3 --steps 300

Every run: ``ModelConfig.cpu(dim=128, n_layers=2, mtp_depth=0, max_seq_len=block)`` (the course model's width and
attention/MoE shapes, half its depth, no MTP: a sweep of 15 runs must fit a few CPU minutes), AdamW with the report's
β = (0.9, 0.95), weight decay 0.1 and clipping at 1.0, the course's warm-up–stable–decay schedule
(``helpers.optim.lr_at(schedule="wsd")``: linear warm-up, constant, cosine to lr/10 over the last 20% of the steps),
batches from ``helpers.batching.MixtureSampler`` with the default mixture, validation on fixed windows of each
domain (``helpers.batching.eval_batches``). For a given seed every learning rate starts from the same weights and
sees the same batches (a paired comparison). A run whose loss or gradient becomes non-finite is stopped by
``helpers.train.train`` and recorded as diverged (step and message) instead of ending the sweep.

Writes data/results/ch04_lr_sweep.json: the command, the config, the count-based bigram on the same validation windows
(the baseline a model must beat for its loss to mean anything), per run the final validation loss per domain, the
validation curve, the training loss and gradient norm (every ``--curve-every`` steps), gradient-norm spikes at full
resolution, timings (median step time, wall time), and per learning rate the mean ± std over seeds with the verdict
(a best learning rate is named only when its gap to the runner-up exceeds the seed spread). Also records the fp32
matmul peak measured at the start (for the notebook's MFU) and torch version, thread count, machine.
Deterministic on a CPU for a given seed and thread count (``--threads``, default 1).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from helpers.batching import DEFAULT_WEIGHTS, MixtureSampler, eval_batches, load_splits  # noqa: E402
from helpers.compute import measure_matmul_peak, training_flops_per_token  # noqa: E402
from helpers.config import ModelConfig  # noqa: E402
from helpers.report import seed_runs  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.objective import bigram_window_losses  # noqa: E402
from helpers.optim import AdamW, param_groups  # noqa: E402
from helpers.runtime import progress, seed_everything  # noqa: E402
from helpers.train import TrainConfig, train  # noqa: E402

OUT = ROOT / "data" / "results" / "ch04_lr_sweep.json"
DOMAINS = ("shakespeare", "code", "arithmetic")
#: The defaults of the shipped run. ``model`` holds the ModelConfig.cpu() overrides.
DEFAULTS = dict(steps=160, batch_size=16, block_size=64, warmup_steps=10, schedule="wsd", decay_frac=0.2,
                eval_every=20, eval_batches=2, curve_every=2, model=dict(dim=128, n_layers=2, mtp_depth=0))
#: A step whose gradient norm (before clipping) exceeds this multiple of the run's median gradient norm is a spike.
SPIKE_RATIO = 10.0


def default_lrs(lo: float = 1e-3, hi: float = 3e-2, n: int = 5) -> list[float]:
    """``n`` learning rates evenly spaced on a log scale from ``lo`` to ``hi`` (3 significant digits)."""
    if not (0 < lo < hi and isinstance(n, int) and n >= 2):
        raise ValueError(f"need 0 < lo < hi and an int n ≥ 2, got lo={lo!r}, hi={hi!r}, n={n!r}")
    return [float(f"{lo * (hi / lo) ** (i / (n - 1)):.3g}") for i in range(n)]


def val_windows(splits: dict, block_size: int, n_batches: int, batch_size: int = 16) -> dict:
    """The fixed validation windows of every run and of the bigram: per domain ``n_batches`` batches of
    ``batch_size`` windows of ``block_size`` tokens, evenly spaced over the domain's validation split."""
    return {d: eval_batches(splits, d, n_batches, batch_size, block_size) for d in DOMAINS}


def bigram_baseline(splits: dict, windows: dict, vocab_size: int) -> dict:
    """The bigram on exactly the validation windows (helpers.objective.bigram_window_losses over DOMAINS)."""
    return bigram_window_losses(splits, windows, vocab_size, DOMAINS)


def spike_stats(grad_norm: list, ratio: float = SPIKE_RATIO) -> dict:
    """Gradient-norm spikes of one run, at full resolution: steps whose norm before clipping exceeds ``ratio`` × the
    run's median norm (a run that trains smoothly stays within a few × its median; clipping at 1.0 bounds the *step*,
    not the norm measured). {"grad_spikes", "first_grad_spike" (1-based step or None), "max_grad_ratio" (max / median)}.

    The training loss itself is a poor spike detector here: one batch of 16 rows holds a random share of each domain
    (arithmetic ~2.7 nats, code and Shakespeare ~5.4 at the bigram level), so single-step losses scatter by tenths of
    a nat. The notebook compares runs of the same seed instead (same batches: the scatter cancels)."""
    g = [v for v in grad_norm if math.isfinite(v)]
    med = statistics.median(g) if g else math.nan
    spikes = [i + 1 for i, v in enumerate(g) if v > ratio * med]
    return {"grad_spikes": len(spikes), "first_grad_spike": spikes[0] if spikes else None,
            "max_grad_ratio": max(g) / med if g and med > 0 else None}


class _Stop(Exception):
    """Raised by run_one's callback to end a run early (``stop_after``)."""


def build(lr: float, seed: int, *, steps: int, batch_size: int, block_size: int, warmup_steps: int, schedule: str,
          decay_frac: float, eval_every: int, eval_batches: int, model: dict, splits: dict | None = None) -> dict:
    """Everything one run needs, built in the order that fixes its randomness: seed_everything(seed), the model
    (initial weights from the seed), the optimizer, the sampler (its own generator, seeded), the windows."""
    splits = load_splits() if splits is None else splits
    seed_everything(seed)
    cfg = ModelConfig.cpu(**{"max_seq_len": block_size, **model})
    net = Transformer(cfg)
    tcfg = TrainConfig(steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=warmup_steps, schedule=schedule,
                       decay_frac=decay_frac, eval_every=eval_every, eval_batches=eval_batches, seed=seed)
    opt = AdamW(param_groups(net, tcfg.weight_decay), lr=tcfg.lr, betas=tcfg.betas, eps=tcfg.eps,
                weight_decay=tcfg.weight_decay)                       # what train() builds by default
    sampler = MixtureSampler(splits, DEFAULT_WEIGHTS, batch_size=batch_size, block_size=block_size, seed=seed)
    return {"model": net, "optimizer": opt, "sampler": sampler, "tcfg": tcfg,
            "val": val_windows(splits, block_size, eval_batches), "cfg": cfg}


def run_one(lr: float, seed: int, *, steps: int, batch_size: int, block_size: int, warmup_steps: int,
            schedule: str, decay_frac: float, eval_every: int, eval_batches: int, curve_every: int, model: dict,
            stop_after: int | None = None, splits: dict | None = None, keep_state: bool = False,
            show_progress: bool = False) -> dict:
    """Train one run of the sweep (see the module docstring); ``stop_after``: stop after that many steps of the
    *same* schedule (the first steps of the full run, bit for bit at the same thread count).

    Returns {"lr", "seed", "steps", "steps_done", "diverged" (None or {"step", "error"}), "final_val",
    "final_val_by_domain" (None if it diverged or stopped before an evaluation), "val_steps", "val_curve",
    "val_curves" (per domain), "curve_steps", "train_curve", "grad_norm_curve" (every ``curve_every`` steps),
    "max_grad_norm", spike statistics, "median_step_s", "wall_s", "tokens"}; with ``keep_state`` also "state"
    (model, optimizer, sampler, val windows: to continue from the trained point)."""
    if stop_after is not None and not (isinstance(stop_after, int) and 1 <= stop_after <= steps):
        raise ValueError(f"stop_after must be None or an int in [1, steps = {steps}], got {stop_after!r}")
    if not (isinstance(curve_every, int) and curve_every >= 1):
        raise ValueError(f"curve_every must be an int ≥ 1, got {curve_every!r}")
    b = build(lr, seed, steps=steps, batch_size=batch_size, block_size=block_size, warmup_steps=warmup_steps,
              schedule=schedule, decay_frac=decay_frac, eval_every=eval_every, eval_batches=eval_batches,
              model=model, splits=splits)
    box, stamps = {}, [time.perf_counter()]

    def callback(step, hist):
        box["hist"] = hist
        stamps.append(time.perf_counter())
        if stop_after is not None and step >= stop_after:
            raise _Stop

    diverged = None
    t0 = time.perf_counter()
    try:
        train(b["model"], b["sampler"], b["tcfg"], optimizer=b["optimizer"], val_data=b["val"],
              show_progress=show_progress, callback=callback)
    except _Stop:
        pass
    except FloatingPointError as e:
        diverged = {"step": len(box["hist"].step) + 1 if "hist" in box else 1, "error": str(e)}
    wall = time.perf_counter() - t0
    h = box.get("hist")
    done = len(h.step) if h else 0
    evaluated_last = bool(h and h.val_step and h.val_step[-1] == done and diverged is None)
    dts = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    keep = [i for i in range(done) if (i + 1) % curve_every == 0 or i == 0]
    out = {"lr": lr, "seed": seed, "steps": steps, "steps_done": done, "diverged": diverged,
           "final_val": h.val_loss[-1] if evaluated_last else None,
           "final_val_by_domain": {d: v[-1] for d, v in h.val_losses.items()} if evaluated_last else None,
           "val_steps": list(h.val_step) if h else [], "val_curve": list(h.val_loss) if h else [],
           "val_curves": {d: list(v) for d, v in h.val_losses.items()} if h else {},
           "curve_steps": [i + 1 for i in keep], "train_curve": [h.train_loss[i] for i in keep],
           "grad_norm_curve": [h.grad_norm[i] for i in keep],
           "max_grad_norm": max(h.grad_norm) if h and h.grad_norm else None,
           **spike_stats(h.grad_norm if h else []),
           "median_step_s": dts[len(dts) // 2] if dts else None, "wall_s": wall,
           "tokens": done * batch_size * block_size}
    if keep_state:
        out["state"] = {"model": b["model"], "optimizer": b["optimizer"], "sampler": b["sampler"], "val": b["val"]}
    return out


def summarize(runs: list, bigram: dict) -> dict:
    """Per learning rate (in increasing order): {"lr", "n", "n_diverged", "mean", "std" (sample std over the seeds
    that did not diverge; None with fewer than 2), "min", "max", "by_domain" {d: mean}, "beats_bigram" (every
    finished seed below the bigram's loss), "max_grad_spikes", "max_grad_ratio" (worst seed)}, plus "verdict" (see :func:`verdict`)."""
    by_lr = {}
    for r in runs:
        by_lr.setdefault(r["lr"], []).append(r)
    rows = []
    for lr in sorted(by_lr):
        rs = by_lr[lr]
        ok = [r for r in rs if r["final_val"] is not None]
        v = [r["final_val"] for r in ok]
        rows.append({"lr": lr, "n": len(rs), "n_diverged": sum(r["diverged"] is not None for r in rs),
                     "mean": statistics.mean(v) if v else None, "std": statistics.stdev(v) if len(v) > 1 else None,
                     "min": min(v) if v else None, "max": max(v) if v else None,
                     "by_domain": {d: statistics.mean(r["final_val_by_domain"][d] for r in ok) for d in DOMAINS} if ok else None,
                     "beats_bigram": bool(ok) and all(x < bigram["val_loss"] for x in v),
                     "max_grad_spikes": max(r["grad_spikes"] for r in rs),
                     "max_grad_ratio": max(r["max_grad_ratio"] or 0.0 for r in rs),
                     "seeds": [r["seed"] for r in rs],
                     "per_seed": {r["seed"]: r["final_val"] for r in rs}})
    return {"per_lr": rows, "verdict": verdict(rows)}


def verdict(rows: list) -> dict:
    """Name the best learning rate only if it is resolved: among the learning rates with no diverged seed and at
    least 3 finished seeds, the one with the lowest mean loss is "resolved" when its gap to the runner-up (second
    lowest mean) exceeds the larger of their two seed spreads (std); else the best and runner-up are "within the
    spread". The paired per-seed differences (runner-up − best, same seed = same initial weights and batches) are
    reported too. {"best", "runner_up", "gap", "spread", "resolved", "paired_diffs", "flat_range" (the learning
    rates whose mean lies within the best's mean + spread), "text"}."""
    ok = [r for r in rows if r["n_diverged"] == 0 and r["mean"] is not None and r["std"] is not None and r["n"] >= 3]
    if len(ok) < 2:
        return {"best": None, "runner_up": None, "gap": None, "spread": None, "resolved": False, "paired_diffs": None,
                "flat_range": [], "text": "fewer than two learning rates with ≥ 3 finished seeds: no winner named"}
    ranked = sorted(ok, key=lambda r: r["mean"])
    best, second = ranked[0], ranked[1]
    gap, spread = second["mean"] - best["mean"], max(best["std"], second["std"])
    common = sorted(set(best["per_seed"]) & set(second["per_seed"]), key=str)
    diffs = [second["per_seed"][s] - best["per_seed"][s] for s in common]
    flat = [r["lr"] for r in ok if r["mean"] <= best["mean"] + spread]
    resolved = gap > spread
    text = (f"best lr {best['lr']:g}: {best['mean']:.4f} ± {best['std']:.4f}; runner-up {second['lr']:g}: "
            f"{second['mean']:.4f} ± {second['std']:.4f}; gap {gap:.4f} "
            + (f"> spread {spread:.4f}: resolved" if resolved else f"≤ spread {spread:.4f}: no measurable difference "
               f"between them (flat range {', '.join(f'{x:g}' for x in flat)})"))
    return {"best": best["lr"], "runner_up": second["lr"], "gap": gap, "spread": spread, "resolved": resolved,
            "paired_diffs": diffs, "flat_range": flat, "text": text}


def sweep_curves(result: dict, lr: float, domain: str = "mean", kind: str = "val") -> list:
    """The curves of every seed at learning rate ``lr`` from a sweep result (the sweep widget's logic).

    ``kind`` "val": validation loss at the evaluation steps (``domain`` "mean" or one of the domains); "train":
    training loss; "grad_norm": gradient norm (every ``curve_every`` steps). Returns [(seed, steps, values,
    diverged step or None)], seeds in the file's order."""
    out = []
    for r in seed_runs(result, "lr", lr, kind, ("val", "train", "grad_norm"), domain, DOMAINS, "sweep_curves",
                        source="sweep"):
        if kind == "val":
            y = r["val_curve"] if domain == "mean" else r["val_curves"].get(domain, [])
            out.append((r["seed"], list(r["val_steps"]), list(y), (r["diverged"] or {}).get("step")))
        else:
            y = r["train_curve"] if kind == "train" else r["grad_norm_curve"]
            out.append((r["seed"], list(r["curve_steps"]), list(y), (r["diverged"] or {}).get("step")))
    return out


def probe_lr(state: dict, lr: float, steps: int = 5) -> dict:
    """Continue a trained run for ``steps`` steps at a constant learning rate ``lr`` (the tolerance widget's logic).

    Works on copies: the model, the optimizer (its moments come along) and the sampler's generator state are
    copied, so every call starts from the same trained point and sees the same next batches. Returns
    {"lr", "train_loss" [steps], "val_before", "val_after" (None if it diverged), "diverged" (None or step)}."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"probe_lr: lr must be a finite number > 0, got {lr!r}; e.g. 3e-3")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ValueError(f"probe_lr: steps must be an int ≥ 1, got {steps!r}")
    from helpers.train import evaluate
    model, opt = copy.deepcopy((state["model"], state["optimizer"]))    # one deepcopy: the moments keep their params
    src = state["sampler"]
    sampler = MixtureSampler(src.splits, {d: src.weights[d] for d in src.domains}, batch_size=src.batch_size,
                             block_size=src.block_size, seed=src.seed)
    sampler.load_state_dict(src.state_dict())
    val = state["val"]
    before = sum(evaluate(model, v) for v in val.values()) / len(val)
    box = {}
    try:
        h = train(model, sampler, TrainConfig(steps=steps, lr=lr, schedule="constant", eval_every=0, eval_batches=1),
                  optimizer=opt, val_data=val, show_progress=False, callback=lambda s, hist: box.update(h=hist))
        return {"lr": lr, "train_loss": list(h.train_loss), "val_before": before, "val_after": h.val_loss[-1],
                "diverged": None}
    except FloatingPointError:
        done = box["h"].train_loss if "h" in box else []
        return {"lr": lr, "train_loss": list(done), "val_before": before, "val_after": None, "diverged": len(done) + 1}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lrs", type=float, nargs="+", default=default_lrs(), help="peak learning rates (default: 5 "
                   "log-spaced from 1e-3 to 3e-2, a span of 30x)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for k in ("steps", "batch_size", "block_size", "warmup_steps", "eval_every", "eval_batches", "curve_every"):
        p.add_argument("--" + k.replace("_", "-"), type=int, default=DEFAULTS[k])
    p.add_argument("--schedule", default=DEFAULTS["schedule"], choices=["wsd", "cosine", "constant"])
    p.add_argument("--decay-frac", type=float, default=DEFAULTS["decay_frac"])
    for k, v in DEFAULTS["model"].items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=v, help=f"ModelConfig.cpu({k}=...)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (results are reproducible for a given count)")
    p.add_argument("--out", default=str(OUT))
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    if len(a.seeds) < 3:
        print("warning: fewer than 3 seeds: the file will name no best learning rate", flush=True)
    torch.set_num_threads(a.threads)
    model = {k: getattr(a, k) for k in DEFAULTS["model"]}
    kw = dict(steps=a.steps, batch_size=a.batch_size, block_size=a.block_size, warmup_steps=a.warmup_steps,
              schedule=a.schedule, decay_frac=a.decay_frac, eval_every=a.eval_every, eval_batches=a.eval_batches,
              curve_every=a.curve_every, model=model)
    t0 = time.perf_counter()
    peak = measure_matmul_peak()
    splits = load_splits()
    cfg = ModelConfig.cpu(**{"max_seq_len": a.block_size, **model})
    bigram = bigram_baseline(splits, val_windows(splits, a.block_size, a.eval_batches), cfg.vocab_size)
    print(f"bigram baseline on the validation windows: {bigram['val_loss']:.4f} "
          f"({', '.join(f'{d} {v:.3f}' for d, v in bigram['val_losses'].items())})", flush=True)
    print(f"fp32 matmul peak at {peak['threads']} thread(s): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    runs = []
    jobs = [(lr, s) for lr in sorted(a.lrs) for s in a.seeds]
    for lr, seed in progress(jobs, desc="runs", disable=False):
        r = run_one(lr, seed, splits=splits, **kw)
        runs.append(r)
        tail = (f"val {r['final_val']:.4f}" if r["final_val"] is not None
                else f"DIVERGED at step {r['diverged']['step']}")
        print(f"lr {lr:<8g} seed {seed}: {tail} (bigram {bigram['val_loss']:.4f}); grad-norm spikes {r['grad_spikes']}, "
              f"max grad norm {r['max_grad_norm'] or float('nan'):.3g}; {r['wall_s']:.0f} s", flush=True)
    summary = summarize(runs, bigram)
    out = {"what": "learning-rate sweep of a small course model on the three-domain mixture (chapter 04.2)",
           "command": " ".join(["python scripts/lr_sweep.py", *argv]).strip(),
           "config": {**kw, "lrs": sorted(a.lrs), "seeds": a.seeds, "threads": a.threads,
                      "model_config": cfg.to_dict(), "weights": DEFAULT_WEIGHTS, "min_lr": "lr / 10",
                      "optimizer": "AdamW betas (0.9, 0.95), weight decay 0.1, clip 1.0",
                      "spike_ratio": SPIKE_RATIO},
           "flops_per_token": training_flops_per_token(cfg, a.block_size, mtp=model.get("mtp_depth", 0) > 0),
           "matmul_peak": peak, "bigram": bigram, "summary": summary, "runs": runs,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "wall_s": time.perf_counter() - t0}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"\n{'lr':>8} | {'val loss mean ± std over seeds':>30} | diverged | grad spikes | max/median grad norm | bigram {bigram['val_loss']:.4f}")
    for r in summary["per_lr"]:
        ms = f"{r['mean']:.4f} ± {r['std']:.4f}" if r["std"] is not None else (f"{r['mean']:.4f}" if r["mean"] else "—")
        print(f"{r['lr']:>8g} | {ms:>30} | {r['n_diverged']}/{r['n']:<6} | {r['max_grad_spikes']:>11} | {r['max_grad_ratio']:>20.1f}")
    print(summary["verdict"]["text"])
    print(f"wall time {out['wall_s']:.0f} s -> {a.out}")
    return out


if __name__ == "__main__":
    main()
