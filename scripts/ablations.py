"""Ablations at equal compute (chapter 04.5): which of DeepSeek-V3's training choices are structural wins here?

    python scripts/ablations.py                      # arms A, B, B_flops, C × seeds 0 1 2 (defaults below)
    python scripts/ablations.py --arms N --merge     # then add the no-balancing reference N to the same file
    python scripts/ablations.py --seeds 0 1 2 3 4 --steps 200 --arms A B C

The shipped file was made by the first two commands: 13.4 + 1.7 min on one core of a busy shared 2-core machine
(load 5–6). The same network (B, N) took 49 s per run during the first and 34 s during the second, when the machine
was less busy: on an idle core expect well under the 15 min measured.

Arms (everything not named is equal; for a given seed every arm starts from the same main-model weights
(:func:`build_model`) and sees the same batches in the same order: a paired comparison):

- ``A``: the V3 recipe: MTP depth D = 1 (λ = 0.3) + aux-loss-free balancing (bias update speed γ).
- ``B``: MTP off (D = 0), the same number of steps, hence the same training tokens: the report's protocol (§4.5.1;
  the MTP module is dropped at inference, so inference cost is equal).
- ``B_flops``: MTP off with the extra steps that the MTP module's training FLOPs would have paid for
  (``helpers.compute.run_flops``), the same schedule shape stretched over the longer run: equal training FLOPs.
- ``C``: the classic (batch-wise, Switch/GShard) auxiliary balance loss with weight α instead of the bias, MTP as in A.
- ``N``: a reference for the balance measurements: B without any balancing (no bias update, no loss), so that
  B vs N shows what the bias does to the load and C vs A compares the two ways of balancing.

The model is a small member of the course family, ``ModelConfig.cpu(**model)`` at T = ``block_size``; data: the
three-domain mixture (``helpers.batching.MixtureSampler``, ``DEFAULT_WEIGHTS``). Measured per run: the main head's
next-token validation loss per domain on fixed windows (``helpers.train.evaluate`` reports "main_loss": the MTP head is
not used), the MaxVio of the step's expert loads (max load / mean load − 1, chapter 02.5; mean over the main model's
MoE layers) at every step, MaxVio of the loads over all validation tokens, and training throughput (tokens/s from the
median step time). The count-based bigram on the same windows is the baseline printed beside every number.

A difference is called measurable only when the gap between two arms' means exceeds the larger of their seed spreads
(sample standard deviation over seeds); otherwise "no measurable difference", with the number of seeds it would take
to resolve a gap the size of the report's (0.005 nats) from the paired per-seed differences.

Writes data/results/ch04_ablations.json: the command, the configs, the bigram, per run the final numbers, the curves
(subsampled every ``--curve-every`` steps) and timings, the per-arm summary, the comparisons and verdicts, wall time,
torch version, thread count, CPU capability and the training autocast dtype ("None" = fp32 throughout; a CPU whose
bf16 matmuls measure faster trains in bf16, see helpers.runtime.probe_bf16). Deterministic for a given seed and
thread count (``--threads``).
"""
from __future__ import annotations

import argparse
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
import torch.nn.functional as F  # noqa: E402

from helpers.report import seed_runs  # noqa: E402
from helpers.batching import DEFAULT_WEIGHTS, MixtureSampler, eval_batches, load_splits  # noqa: E402
from helpers.compute import run_flops  # noqa: E402
from helpers.config import ModelConfig  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.moe import max_violation  # noqa: E402
from helpers.objective import bigram_window_losses  # noqa: E402
from helpers.runtime import autocast_dtype, get_device, progress, seed_everything  # noqa: E402
from helpers.train import TrainConfig, train  # noqa: E402

OUT = ROOT / "data" / "results" / "ch04_ablations.json"
DOMAINS = ("shakespeare", "code", "arithmetic")
ARMS = ("A", "B", "B_flops", "C", "N")
#: The report's loss-level ablation gaps are about this size (nats/token; §4.5.2–4.5.3: 2.258 → 2.253, 2.085 → 2.080).
REPORT_GAP = 0.005
#: The defaults of the shipped run. ``model`` holds the ModelConfig.cpu() overrides shared by every arm.
DEFAULTS = dict(steps=120, batch_size=8, block_size=128, lr=5e-3, warmup_steps=10, decay_frac=0.2, eval_every=40,
                eval_batches=2, curve_every=2, gamma=0.01, aux_alpha=0.01, mtp_lambda=0.3, model=dict(dim=128, n_layers=2))
#: The arms the shipped run trains (N, the no-balancing reference, on request: ``--arms A B B_flops C N``).
DEFAULT_ARMS = ("A", "B", "B_flops", "C")


def arm_overrides(arm: str, gamma: float = DEFAULTS["gamma"], aux_alpha: float = DEFAULTS["aux_alpha"],
                  mtp_lambda: float = DEFAULTS["mtp_lambda"]) -> dict:
    """The ModelConfig fields that define ``arm`` (on top of the shared model): MTP depth/λ and the balancing.

    A: D = 1, λ, aux-loss-free with speed γ; B and B_flops: D = 0, the same balancing; C: D = 1, λ, the classic
    auxiliary loss with weight α (no bias update); N: D = 0, no balancing at all."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    for name, v in (("gamma", gamma), ("aux_alpha", aux_alpha), ("mtp_lambda", mtp_lambda)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    mtp = dict(mtp_depth=1, mtp_lambda=mtp_lambda)
    free = dict(balance="aux_free", bias_update_speed=gamma)
    if arm == "A":
        return {**mtp, **free}
    if arm in ("B", "B_flops"):
        return dict(mtp_depth=0, mtp_lambda=mtp_lambda, **free)
    if arm == "N":
        return dict(mtp_depth=0, mtp_lambda=mtp_lambda, balance="none", bias_update_speed=gamma)
    return {**mtp, "balance": "aux", "aux_loss_alpha": aux_alpha, "bias_update_speed": gamma}


def arm_config(arm: str, block_size: int = DEFAULTS["block_size"], model: dict | None = None, **knobs) -> ModelConfig:
    """``ModelConfig.cpu(max_seq_len=block_size, **model, **arm_overrides(arm, **knobs))``."""
    model = DEFAULTS["model"] if model is None else model
    return ModelConfig.cpu(**{"max_seq_len": block_size, **model, **arm_overrides(arm, **knobs)})


def equal_flops_steps(cfg_mtp: ModelConfig, cfg_plain: ModelConfig, steps: int, batch_size: int,
                      block_size: int) -> dict:
    """Steps that give the MTP-off model the training FLOPs of ``steps`` steps of the MTP model.

    F = tokens · (6·N_main + attention + MTP module) per ``helpers.compute.run_flops``; the MTP-off run gets
    round(steps · F_mtp / F_plain) steps of the same batch. {"steps", "ratio" (F_mtp / F_plain per token),
    "flops_mtp", "flops_plain" (of the equal-FLOPs run), "flops_per_token_mtp", "flops_per_token_plain"}."""
    a = run_flops(cfg_mtp, batch_size, block_size, steps)
    ratio = a["flops_per_token"]["total"] / run_flops(cfg_plain, batch_size, block_size, 1)["flops_per_token"]["total"]
    n = round(steps * ratio)
    b = run_flops(cfg_plain, batch_size, block_size, n)
    return {"steps": n, "ratio": ratio, "flops_mtp": a["flops"], "flops_plain": b["flops"],
            "flops_per_token_mtp": a["flops_per_token"], "flops_per_token_plain": b["flops_per_token"]}


def stats(values) -> dict:
    """{"n", "mean", "std" (sample, n − 1; None for n < 2), "se" (std/√n), "min", "max"} of a list of numbers."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("stats: got no values")
    sd = statistics.stdev(v) if len(v) > 1 else None
    return {"n": len(v), "mean": statistics.fmean(v), "std": sd, "se": sd / math.sqrt(len(v)) if sd is not None else None,
            "min": min(v), "max": max(v)}


def seeds_needed(sd: float | None, delta: float = REPORT_GAP, z: float = 2.0) -> int | None:
    """Seeds n for the standard error sd/√n of a mean (paired) difference to reach δ/z: n = ⌈(z·sd/δ)²⌉.

    With z = 2 a true gap of δ then sits two standard errors from 0. None when sd is unknown."""
    if sd is None:
        return None
    if not (delta > 0 and z > 0):
        raise ValueError(f"seeds_needed: delta and z must be > 0, got {delta!r}, {z!r}")
    return max(2, math.ceil((z * sd / delta) ** 2 - 1e-9))     # − 1e-9: 16.000000001 from rounding is 16


def compare(base: dict, other: dict, name: str = "X", base_name: str = "A", delta: float | None = REPORT_GAP) -> dict:
    """Compare two arms' per-seed values ({seed: value}; lower is better).

    The course's rule: gap = mean(other) − mean(base); spread = the larger of the two sample stds; "measurable" when
    |gap| > spread (then "winner" is the lower arm, else None). Paired by seed (same initial weights and batches):
    the per-seed differences, their mean, std and standard error, and whether all have the same sign
    ("same_sign"). Power: the seeds it would take for the standard error of the difference to reach δ/2, with δ =
    ``delta`` (the size of the report's gaps): paired ⌈(2 s_d/δ)²⌉ (:func:`seeds_needed`), unpaired ⌈2 (2 s/δ)²⌉
    with s = spread (two independent means: s.e. = s·√(2/n)); None when ``delta`` is None. "text": the verdict."""
    seeds = sorted(set(base) & set(other), key=str)
    if len(seeds) < 2:
        raise ValueError(f"compare: need at least 2 seeds common to both arms, got {seeds}")
    a, b = stats([base[s] for s in seeds]), stats([other[s] for s in seeds])
    diffs = [other[s] - base[s] for s in seeds]
    d = stats(diffs)
    gap, spread = b["mean"] - a["mean"], max(a["std"], b["std"])
    measurable = abs(gap) > spread
    winner = (base_name if gap > 0 else name) if measurable else None
    same_sign = all(x > 0 for x in diffs) or all(x < 0 for x in diffs)
    need = seeds_needed(d["std"], delta) if delta is not None else None
    need_unpaired = seeds_needed(spread * math.sqrt(2), delta) if delta is not None else None
    text = (f"{name} − {base_name}: {gap:+.4f}, seed spread {spread:.4f} → "
            + (f"{winner} is better" if measurable else "no measurable difference")
            + f" (paired {d['mean']:+.4f} ± {d['se']:.4f} s.e., {'same sign in every seed' if same_sign else 'mixed signs'})"
            + (f"; to resolve {delta} nats: ~{need} seeds paired, ~{need_unpaired} unpaired"
               if need is not None and not measurable else ""))
    return {"seeds": seeds, "gap": gap, "spread": spread, "measurable": measurable, "winner": winner,
            "paired_diffs": diffs, "paired_mean": d["mean"], "paired_std": d["std"], "paired_se": d["se"],
            "same_sign": same_sign, "seeds_needed": need, "seeds_needed_unpaired": need_unpaired, "delta": delta,
            "text": text}


def val_windows(splits: dict, block_size: int, n_batches: int, batch_size: int = 16, device=None) -> dict:
    """Fixed validation windows per domain: ``n_batches`` batches of ``batch_size`` evenly spaced windows."""
    return {d: eval_batches(splits, d, n_batches, batch_size, block_size, device=device) for d in DOMAINS}


def bigram_baseline(splits: dict, windows: dict, vocab_size: int) -> dict:
    """The bigram on exactly the validation windows (helpers.objective.bigram_window_losses over DOMAINS)."""
    return bigram_window_losses(splits, windows, vocab_size, DOMAINS)


def n_main_moe(cfg: ModelConfig) -> int:
    """MoE layers of the main model (the MTP module's block is not counted, so arms with and without MTP compare)."""
    return sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers))


def step_maxvio(model) -> float:
    """MaxVio of the last optimizer step's loads, mean over the main model's MoE layers."""
    n = n_main_moe(model.cfg)
    return statistics.fmean(max_violation(model.expert_loads("step")[:n]))


@torch.no_grad()
def evaluate_arm(model, windows: dict) -> tuple[dict, dict]:
    """One pass over the validation windows: the main head's mean next-token loss per domain (nats/token; the MTP
    module is not run: only ``model(x)``'s logits are used, as at inference) and the MaxVio of the expert loads
    summed over each domain's windows and over all of them (mean over the main model's MoE layers).

    Returns ({domain: loss, "mean": mean over domains}, {"all": MaxVio, domain: MaxVio}). Same number as
    ``helpers.train.evaluate``'s "main_loss", without computing the MTP loss beside it."""
    n = n_main_moe(model.cfg)
    was = model.training
    model.eval()
    losses, per, total = {}, {}, 0
    try:
        for d, batches in windows.items():
            loss_sum, load = 0.0, 0
            for x, y in batches:
                logits = model(x)["logits"]
                loss_sum += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                  ignore_index=-1))
                load = load + model.expert_loads("last")[:n]
            losses[d] = loss_sum / len(batches)
            per[d] = statistics.fmean(max_violation(load))
            total = total + load
    finally:
        model.train(was)
    losses["mean"] = statistics.fmean(losses[d] for d in windows)
    return losses, {"all": statistics.fmean(max_violation(total)), **per}


def build_model(cfg: ModelConfig, seed: int) -> Transformer:
    """The arm's model with the main model's initial weights shared by every arm of a seed.

    Building a module draws random numbers in its constructors, so a model with an MTP module would otherwise start
    from other main-model weights than the same model without it. Here the weights of ``cfg`` without MTP are drawn
    first (after ``seed_everything(seed)``) and copied into the arm's model; only the MTP module keeps its own
    (seeded) initial weights. Checked: nothing but ``mtp.*`` is left out of the copy."""
    seed_everything(seed)
    init = Transformer(cfg.replace(mtp_depth=0)).state_dict()
    seed_everything(seed)
    net = Transformer(cfg)
    res = net.load_state_dict(init, strict=False)
    if res.unexpected_keys or any(not k.startswith("mtp.") for k in res.missing_keys):
        raise RuntimeError(f"build_model: main-model weights do not fit: {res}")
    return net


class _Stop(Exception):
    """Raised by the callback to end a run after ``stop_after`` steps."""


def run_arm(arm: str, seed: int, *, steps: int, batch_size: int, block_size: int, lr: float, warmup_steps: int,
            decay_frac: float, eval_every: int, eval_batches: int, curve_every: int, gamma: float, aux_alpha: float,
            mtp_lambda: float,
            model: dict, splits: dict | None = None, windows: dict | None = None, stop_after: int | None = None,
            flops_steps: int | None = None, keep_model: bool = False, device=None) -> dict:
    """Train one arm for one seed and measure it (see the module docstring).

    ``steps`` is arm A's step count; ``B_flops`` trains ``flops_steps`` steps (default: from
    :func:`equal_flops_steps`) with warm-up and evaluation points scaled in proportion. ``stop_after``: stop after
    that many steps of the same schedule (the first steps of the full run, bit for bit at the same thread count).
    Evaluation (:func:`evaluate_arm`) every ``eval_every`` steps and after the last step, from the training callback.
    Returns {"arm", "seed", "steps", "steps_done", "tokens", "final" {domain: loss, "mean"} (None if stopped between
    evaluations), "val_steps", "val_curves" {domain|"mean": [...]}, "val_maxvio_curve", "curve_steps", "train_curve",
    "maxvio_curve" (every ``curve_every`` steps), "maxvio_last" (mean step MaxVio over the last 20% of the steps
    done), "val_maxvio" (at the last evaluation), "median_step_s", "tokens_per_s" (from the median step time),
    "wall_s", "eval_s", "n_params"}; with ``keep_model`` also "model". ``device``: where the model, its batches and
    the validation windows live (default the CPU; ``windows``, when given, must already be there).
    """
    if stop_after is not None and not (isinstance(stop_after, int) and stop_after >= 1):
        raise ValueError(f"stop_after must be None or an int ≥ 1, got {stop_after!r}")
    splits = load_splits() if splits is None else splits
    device = torch.device("cpu") if device is None else torch.device(device)
    windows = val_windows(splits, block_size, eval_batches, device=device) if windows is None else windows
    knobs = dict(gamma=gamma, aux_alpha=aux_alpha, mtp_lambda=mtp_lambda)
    cfg = arm_config(arm, block_size, model, **knobs)
    n_steps, warm, every = steps, warmup_steps, eval_every
    if arm == "B_flops":
        if flops_steps is None:
            flops_steps = equal_flops_steps(arm_config("A", block_size, model, **knobs), cfg, steps, batch_size,
                                            block_size)["steps"]
        scale = flops_steps / steps
        n_steps, warm, every = flops_steps, round(warmup_steps * scale), max(1, round(eval_every * scale))
    net = build_model(cfg, seed).to(device)
    sampler = MixtureSampler(splits, DEFAULT_WEIGHTS, batch_size=batch_size, block_size=block_size, seed=seed,
                             device=device)
    tcfg = TrainConfig(steps=n_steps, lr=lr, min_lr=lr / 10, warmup_steps=warm, schedule="wsd", decay_frac=decay_frac,
                       eval_every=0, seed=seed)
    mv, stamps, box, evals = [], [time.perf_counter()], {}, []
    eval_s = [0.0]

    def callback(step, hist):
        box["hist"] = hist
        mv.append(step_maxvio(net))
        stamps.append(time.perf_counter())
        if step % every == 0 or step == n_steps:
            t = time.perf_counter()
            evals.append((step, *evaluate_arm(net, windows)))
            eval_s[0] += time.perf_counter() - t
        if stop_after is not None and step >= stop_after:
            raise _Stop

    # train()'s own end-of-run evaluation gets one 8-token row (it must evaluate something); ours is in the callback
    x0, y0 = next(iter(windows.values()))[0]
    t0 = time.perf_counter()
    try:
        train(net, sampler, tcfg, val_data=[(x0[:1, :8], y0[:1, :8])], show_progress=False, callback=callback)
    except _Stop:
        pass
    wall = time.perf_counter() - t0
    h = box["hist"]
    done = len(h.step)
    dts = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    med = dts[len(dts) // 2]
    keep = [i for i in range(done) if (i + 1) % curve_every == 0 or i == 0]
    last = evals[-1] if evals and evals[-1][0] == done else None
    tail = mv[-max(1, done // 5):]
    out = {"arm": arm, "seed": seed, "steps": n_steps, "steps_done": done, "warmup_steps": warm, "eval_every": every,
           "tokens": done * batch_size * block_size, "final": last[1] if last else None,
           "val_steps": [e[0] for e in evals],
           "val_curves": {k: [e[1][k] for e in evals] for k in (*DOMAINS, "mean")},
           "val_maxvio_curve": [e[2]["all"] for e in evals],
           "curve_steps": [i + 1 for i in keep], "train_curve": [h.train_loss[i] for i in keep],
           "maxvio_curve": [mv[i] for i in keep], "maxvio_last": statistics.fmean(tail),
           "val_maxvio": last[2] if last else None, "median_step_s": med,
           "tokens_per_s": batch_size * block_size / med, "wall_s": wall, "eval_s": eval_s[0],
           "n_params": net.num_params()}
    if keep_model:
        out["model"] = net
    return out


def summarize(runs: list, bigram: dict, delta: float = REPORT_GAP) -> dict:
    """Per arm: {"n", "steps", "tokens", per domain and "mean": stats of the final loss (+ "per_seed"),
    "maxvio_last", "val_maxvio" (all tokens), "tokens_per_s": stats, "beats_bigram" (every seed's mean loss below
    the bigram's)}; "comparisons": B, B_flops, C each against A (:func:`compare`) on the mean and on every domain
    loss, and C against A on MaxVio (step MaxVio of the last 20% of the steps); N against B (what balancing by the
    bias does, MTP off in both) on the losses and on MaxVio."""
    by_arm: dict = {}
    for r in runs:
        if r["final"] is None:
            raise ValueError(f"summarize: run {r['arm']}/{r['seed']} stopped before its last evaluation")
        by_arm.setdefault(r["arm"], []).append(r)
    arms = {}
    for arm in [a for a in ARMS if a in by_arm]:
        rs = by_arm[arm]
        row = {"n": len(rs), "seeds": [r["seed"] for r in rs], "steps": rs[0]["steps"], "tokens": rs[0]["tokens"]}
        for k in (*DOMAINS, "mean"):
            row[k] = {**stats([r["final"][k] for r in rs]), "per_seed": {r["seed"]: r["final"][k] for r in rs}}
        row["maxvio_last"] = {**stats([r["maxvio_last"] for r in rs]), "per_seed": {r["seed"]: r["maxvio_last"] for r in rs}}
        row["val_maxvio"] = stats([r["val_maxvio"]["all"] for r in rs])
        row["tokens_per_s"] = stats([r["tokens_per_s"] for r in rs])
        row["beats_bigram"] = all(r["final"]["mean"] < bigram["val_loss"] for r in rs)
        row["beats_bigram_by_domain"] = {d: all(r["final"][d] < bigram["val_losses"][d] for r in rs) for d in DOMAINS}
        arms[arm] = row
    comps = {}
    if "A" in arms:
        for other in ("B", "B_flops", "C"):
            if other in arms and arms["A"]["n"] >= 2 and arms[other]["n"] >= 2:
                comps[f"{other}_vs_A"] = {k: compare(arms["A"][k]["per_seed"], arms[other][k]["per_seed"], other, "A",
                                                     delta) for k in (*DOMAINS, "mean")}
        if "C" in arms and arms["A"]["n"] >= 2 and arms["C"]["n"] >= 2:
            comps["C_vs_A"]["maxvio_last"] = compare(arms["A"]["maxvio_last"]["per_seed"],
                                                     arms["C"]["maxvio_last"]["per_seed"], "C", "A", None)
    if "B" in arms and "N" in arms and arms["B"]["n"] >= 2 and arms["N"]["n"] >= 2:
        comps["N_vs_B"] = {k: compare(arms["B"][k]["per_seed"], arms["N"][k]["per_seed"], "N", "B", delta)
                           for k in (*DOMAINS, "mean")}
        comps["N_vs_B"]["maxvio_last"] = compare(arms["B"]["maxvio_last"]["per_seed"],
                                                 arms["N"]["maxvio_last"]["per_seed"], "N", "B", None)
    return {"arms": arms, "comparisons": comps}


def claims(summary: dict, eq: dict) -> list:
    """The report's ablation claims beside our verdicts (for chapter 07's scoreboard): one entry per comparison that
    was run, {"claim", "report", "ours" (gap, spread, paired mean ± s.e., seeds needed), "verdict"}."""
    comps, out = summary["comparisons"], []
    rows = [("B_vs_A", "MTP (D = 1) improves the model at equal training tokens; the module is dropped at inference "
             "(§4.5.1, Table 4)", "better on most benchmarks at 15.7B and 228.7B total parameters"),
            ("B_flops_vs_A", "MTP at equal training FLOPs (the MTP-off model gets the module's FLOPs as extra steps)",
             f"not reported; the module adds ×{eq['ratio']:.3f} training FLOPs per token here"),
            ("C_vs_A", "aux-loss-free balancing is at least as good as an auxiliary balance loss (§4.5.2–4.5.3)",
             "Pile BPB 0.727 → 0.724 (15.7B), 0.656 → 0.652 (228.7B); val loss 1B: batch-aux 2.253 = aux-free 2.253, "
             "3B: 2.080 = 2.080 (seq-aux 2.258, 2.085)")]
    for key, claim, report in rows:
        if key not in comps:
            continue
        c = comps[key]["mean"]
        out.append({"claim": claim, "report": report, "measured": "main-head validation loss, mean of 3 domains, "
                    "nats/token; lower is better; A = MTP + aux-free", "ours": {k: c[k] for k in (
                        "gap", "spread", "paired_mean", "paired_se", "same_sign", "seeds_needed", "seeds_needed_unpaired",
                        "measurable", "winner")},
                    "verdict": c["text"]})
    for key, claim in (("N_vs_B", "aux-loss-free balancing balances the expert load (§2.1.2): bias vs no balancing"),
                       ("C_vs_A", "aux-loss-free vs auxiliary-loss balancing: expert load")):
        if key not in comps or "maxvio_last" not in comps[key]:
            continue
        c = comps[key]["maxvio_last"]
        out.append({"claim": claim, "report": "balanced loads (§4.5.2 plots the expert loads)",
                    "measured": "MaxVio of the step's loads, last 20% of steps, main-model MoE layers",
                    "ours": {k: c[k] for k in ("gap", "spread", "paired_mean", "paired_se", "same_sign", "measurable",
                                                "winner")},
                    "verdict": c["text"]})
    return out


def arm_curves(result: dict, arm: str, domain: str = "mean", kind: str = "val") -> list:
    """The curves of every seed of ``arm`` in a result file (the notebook widget's logic).

    ``kind`` "val": validation loss at the evaluation steps (``domain`` "mean" or a domain); "train": training loss;
    "maxvio": step MaxVio (both every ``curve_every`` steps). Returns [(seed, steps, values)] in the file's order."""
    out = []
    for r in seed_runs(result, "arm", arm, kind, ("val", "train", "maxvio"), domain, DOMAINS, "arm_curves", ARMS.index):
        if kind == "val":
            out.append((r["seed"], list(r["val_steps"]), list(r["val_curves"][domain])))
        else:
            out.append((r["seed"], list(r["curve_steps"]), list(r["train_curve" if kind == "train" else "maxvio_curve"])))
    return out


def _pool_run(job: tuple) -> dict:
    """One (arm, seed) run in a worker process of ``--jobs``: its own data, windows and thread count."""
    arm, seed, flops_steps, device, threads, kw = job
    torch.set_num_threads(threads)
    splits = load_splits()
    windows = val_windows(splits, kw["block_size"], kw["eval_batches"], device=device)
    return run_arm(arm, seed, splits=splits, windows=windows, flops_steps=flops_steps, device=device, **kw)


def _fmt(s: dict) -> str:
    return f"{s['mean']:.4f} ± {s['std']:.4f}" if s["std"] is not None else f"{s['mean']:.4f}"


def run_arguments(p: argparse.ArgumentParser, defaults: dict, float_keys, out) -> None:
    """The command-line options shared by the paired-seed training sweeps (this script, scripts/balance_sweep.py):
    --seeds, the run lengths and evaluation points, the float knobs ``float_keys``, the model overrides of
    ``defaults["model"]``, --threads, --device, --jobs and --out (default ``out``)."""
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for k in ("steps", "batch_size", "block_size", "warmup_steps", "eval_every", "eval_batches", "curve_every"):
        p.add_argument("--" + k.replace("_", "-"), type=int, default=defaults[k])
    for k in float_keys:
        p.add_argument("--" + k.replace("_", "-"), type=float, default=defaults[k])
    for k, v in defaults["model"].items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=v, help=f"ModelConfig.cpu({k}=...)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (results are reproducible for a given count)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (a CUDA GPU when present); on CUDA "
                   "the runs train under bf16 autocast (helpers.runtime.training_autocast)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process with --threads "
                   "threads (every run is seeded on its own, so the numbers do not depend on --jobs)")
    p.add_argument("--out", default=str(out))


def run_settings(p: argparse.ArgumentParser, a: argparse.Namespace, defaults: dict, knob_keys) -> tuple:
    """Check the options of :func:`run_arguments` (``p.error`` on bad ones), set the thread count, and return
    ``(device, model overrides, knobs, kw)``: the knobs named by ``knob_keys``, and ``kw`` every run setting the
    result file records as its config (a ``--merge`` must match it)."""
    if a.steps % a.eval_every:
        p.error(f"--steps {a.steps} must be a multiple of --eval-every {a.eval_every} (evaluations at fixed points)")
    if a.jobs < 1:
        p.error(f"--jobs must be ≥ 1, got {a.jobs}")
    device = get_device(None if a.device == "auto" else a.device)
    torch.set_num_threads(a.threads)
    model = {k: getattr(a, k) for k in defaults["model"]}
    knobs = {k: getattr(a, k) for k in knob_keys}
    kw = dict(steps=a.steps, batch_size=a.batch_size, block_size=a.block_size, lr=a.lr, warmup_steps=a.warmup_steps,
              decay_frac=a.decay_frac, eval_every=a.eval_every, eval_batches=a.eval_batches, curve_every=a.curve_every,
              model=model, **knobs)
    return device, model, knobs, kw


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=ARMS)
    run_arguments(p, DEFAULTS, ("lr", "decay_frac", "gamma", "aux_alpha", "mtp_lambda"), OUT)
    p.add_argument("--merge", action="store_true", help="keep the runs of --out (same config and seeds) and add the "
                   "arms given by --arms to them, e.g. --arms N --merge; the file records both commands")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    if len(a.seeds) < 3:
        print("warning: fewer than 3 seeds: the file will name no winner worth trusting", flush=True)
    device, model, knobs, kw = run_settings(p, a, DEFAULTS, ("gamma", "aux_alpha", "mtp_lambda"))
    t0 = time.perf_counter()
    splits = load_splits()
    windows = val_windows(splits, a.block_size, a.eval_batches)
    cfgs = {arm: arm_config(arm, a.block_size, model, **knobs) for arm in ARMS}
    eq = equal_flops_steps(cfgs["A"], cfgs["B"], a.steps, a.batch_size, a.block_size)
    bigram = bigram_baseline(splits, windows, cfgs["A"].vocab_size)
    print(f"bigram on the validation windows: {bigram['val_loss']:.4f} "
          f"({', '.join(f'{d} {v:.3f}' for d, v in bigram['val_losses'].items())})", flush=True)
    print(f"MTP module: ×{eq['ratio']:.3f} training FLOPs per token → B_flops trains {eq['steps']} steps "
          f"(A, B, C: {a.steps})", flush=True)
    runs, old = [], None
    if a.merge:
        old = json.loads(Path(a.out).read_text())
        mismatch = {k: (old["config"].get(k), v) for k, v in kw.items() if old["config"].get(k) != v}
        if mismatch or old["config"]["seeds"] != a.seeds or old["threads"] != a.threads:
            p.error(f"--merge: {a.out} was made with another config (file vs now: {mismatch}, seeds "
                    f"{old['config']['seeds']} vs {a.seeds}, threads {old['threads']} vs {a.threads}); run without --merge")
        runs = [r for r in old["runs"] if r["arm"] not in a.arms]
    jobs = [(arm, s) for s in a.seeds for arm in a.arms]
    if a.jobs == 1:
        on_dev = windows if device.type == "cpu" else val_windows(splits, a.block_size, a.eval_batches, device=device)
        done = (run_arm(arm, seed, splits=splits, windows=on_dev, flops_steps=eq["steps"], device=device, **kw)
                for arm, seed in jobs)
    else:                                   # fresh processes (spawn: CUDA cannot be forked), results in job order
        import concurrent.futures as cf
        import multiprocessing as mp
        pool = cf.ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn"))
        done = pool.map(_pool_run, [(arm, seed, eq["steps"], str(device), a.threads, kw) for arm, seed in jobs])
    for r in progress(done, total=len(jobs), desc="runs", disable=False):
        runs.append(r)
        per = ", ".join(f"{d} {r['final'][d]:.3f}" for d in DOMAINS)
        print(f"{r['arm']:7s} seed {r['seed']}: {r['steps']} steps, val {r['final']['mean']:.4f} "
              f"({per}; bigram {bigram['val_loss']:.4f}), "
              f"MaxVio {r['maxvio_last']:.3f}, {r['tokens_per_s']:.0f} tok/s, {r['wall_s']:.0f} s", flush=True)
    summary = summarize(runs, bigram)
    arms_done = [k for k in ARMS if any(r["arm"] == k for r in runs)]
    command = " ".join(["python scripts/ablations.py", *argv]).strip()
    out = {"what": "ablations at equal compute: MTP on/off and aux-loss-free vs auxiliary-loss balancing (chapter 04.5)",
           "command": f"{old['command']} && {command}" if old else command,
           "config": {**kw, "arms": arms_done, "seeds": a.seeds, "threads": a.threads, "weights": DEFAULT_WEIGHTS,
                      "schedule": "wsd: linear warm-up, constant, cosine to lr/10 over the last decay_frac of the steps",
                      "min_lr": "lr / 10",
                      "optimizer": "AdamW betas (0.9, 0.95), weight decay 0.1, clip 1.0",
                      "check_steps": a.eval_every, "report_gap": REPORT_GAP, "device": device.type},
           "model_configs": {arm: c.to_dict() for arm, c in cfgs.items()},
           "equal_flops": eq, "bigram": bigram, "summary": summary, "claims": claims(summary, eq), "runs": runs,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "autocast": str(autocast_dtype(device)), "device": device.type,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "wall_s": time.perf_counter() - t0 + (old["wall_s"] if old else 0.0)}
    if old and (old["cpu_capability"], old["autocast"], old["torch"], old.get("device", "cpu")) != (
            out["cpu_capability"], out["autocast"], out["torch"], out["device"]):
        p.error("--merge: the file's runs used another torch, CPU capability or autocast dtype; run without --merge")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"\n{'arm':8s} | " + " | ".join(f"{d:>17s}" for d in (*DOMAINS, "mean")) + f" | {'MaxVio':>13s} | tok/s")
    print(f"{'bigram':8s} | " + " | ".join(f"{bigram['val_losses'][d]:>17.4f}" for d in DOMAINS)
          + f" | {bigram['val_loss']:>17.4f} |")
    for arm, row in summary["arms"].items():
        print(f"{arm:8s} | " + " | ".join(f"{_fmt(row[k]):>17s}" for k in (*DOMAINS, "mean"))
              + f" | {_fmt(row['maxvio_last']):>13s} | {row['tokens_per_s']['mean']:.0f}")
    for name, comp in summary["comparisons"].items():
        for k, c in comp.items():
            print(f"{name:10s} {k:12s} {c['text']}")
    print(f"wall time {out['wall_s']:.0f} s -> {a.out}")
    return out


if __name__ == "__main__":
    main()
