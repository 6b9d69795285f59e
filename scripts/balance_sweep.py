"""Load balancing at equal compute (chapter 02.5): what does each way of balancing cost, and what does it buy?

    python scripts/balance_sweep.py --device cuda --jobs 12                       # 7 arms × seeds 0 1 2
    python scripts/balance_sweep.py --device cuda --jobs 12 --seeds 3 4 5 --merge # then 3 more seeds, same file

Arms (everything not named is equal: for a given seed every arm starts from the same weights and sees the same
batches in the same order, so arms are compared seed by seed):

- ``none``: no balancing (no bias update, no loss). The classic loss at α = 0.
- ``aux_1e-3``, ``aux_1e-2``, ``aux_1e-1``: the classic batch-wise (Switch/GShard) auxiliary loss
  α·N_r Σ_i f_i P_i at three weights α: the balance-vs-quality trade-off that motivates aux-loss-free balancing.
- ``seq_1e-2``: the sequence-wise balance loss alone, α = 0.01 (the report's aux-loss-based baselines, §4.5.2–4.5.3).
- ``free``: aux-loss-free balancing alone: the bias update with speed γ (default the report's 0.001).
- ``v3``: DeepSeek-V3's combination: the bias update (γ) + the sequence-wise loss with α = 1e-4 (§2.1.2).

Every arm uses the course model's group-limited routing (``ModelConfig.cpu``: 8 routed experts in 2 groups, each
token choosing its top-2 inside 1 group; 1 shared expert), with both blocks MoE and no MTP, at T = ``block_size``.
Data: the three-domain mixture (``helpers.batching.MixtureSampler``, ``DEFAULT_WEIGHTS``).

Measured per run: every ``curve_every`` steps the training loss (main next-token loss), the balance loss and the
MaxVio of the step's expert loads (mean over MoE layers); every ``eval_every`` steps and at the end, on fixed
validation windows of each domain: the next-token loss, the MaxVio of the loads over all validation tokens (batch
view) and the mean per-sequence MaxVio (:func:`helpers.moe.seq_max_violation`, what the sequence-wise loss
evens out); at the end the tokens each expert received from each domain. Baselines in the file: the count-based
bigram on the same windows, and the MaxVio a router that picks experts at random would have on the same number of
tokens (:func:`helpers.moe.random_routing_maxvio`).

Verdicts (:func:`summarize`, recomputed by the notebook from the per-seed numbers):

- every arm against ``none``, paired by seed (:func:`ablations.compare`: a winner only when the gap exceeds the
  seed spread), on the loss and on MaxVio;
- "no loss cost" as a statistical statement (:func:`loss_cost`): the one-sided 95% upper confidence bound of the
  mean paired loss difference (arm − none, Student t with n − 1 degrees of freedom) must lie below a margin δ
  (``--margin``, default 0.02 nats/token). It fails when the arm costs more than δ, and also when the seeds are too
  few or too noisy to rule that out ("undecided"); "costs" when even the lower bound is above 0;
- the V3 combination against each classic α, paired, on loss and MaxVio.

Writes data/results/ch02_balance.json: the command, the configs, the baselines, per run the final numbers and the
curves, the summary and verdicts, wall time, torch version, thread count, device and autocast dtype. Deterministic for
a given seed, device and thread count (``--threads``); the numbers do not depend on ``--jobs``.
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
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import ablations  # noqa: E402  (its statistics, validation windows and bigram baseline; chapter 04.5)
from helpers.batching import DEFAULT_WEIGHTS, MixtureSampler, load_splits  # noqa: E402
from helpers.config import ModelConfig  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.moe import max_violation, random_routing_maxvio, seq_max_violation  # noqa: E402
from helpers.report import seed_runs  # noqa: E402
from helpers.runtime import autocast_dtype, progress, seed_everything  # noqa: E402
from helpers.train import TrainConfig, train  # noqa: E402

OUT = ROOT / "data" / "results" / "ch02_balance.json"
DOMAINS = ablations.DOMAINS
ARMS = ("none", "aux_1e-3", "aux_1e-2", "aux_1e-1", "seq_1e-2", "free", "v3")
#: the classic loss's α per arm of the sweep (α = 0 is "none")
CLASSIC_ALPHA = {"none": 0.0, "aux_1e-3": 1e-3, "aux_1e-2": 1e-2, "aux_1e-1": 1e-1}
#: The defaults of the shipped (GPU) run. ``model`` holds the ModelConfig.cpu() overrides shared by every arm.
DEFAULTS = dict(steps=800, batch_size=16, block_size=128, lr=5e-3, warmup_steps=30, decay_frac=0.2, eval_every=100,
                eval_batches=4, curve_every=5, gamma=0.001, v3_alpha=1e-4, seq_alpha=1e-2, margin=0.02,
                model=dict(dim=128, n_layers=2, n_dense_layers=0))


def arm_overrides(arm: str, gamma: float = DEFAULTS["gamma"], v3_alpha: float = DEFAULTS["v3_alpha"],
                  seq_alpha: float = DEFAULTS["seq_alpha"]) -> dict:
    """The ModelConfig balance fields of ``arm`` (see the module docstring); MTP is off in every arm."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    for name, v in (("gamma", gamma), ("v3_alpha", v3_alpha), ("seq_alpha", seq_alpha)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if arm == "none":
        return dict(balance="none")
    if arm in CLASSIC_ALPHA:
        return dict(balance="aux", aux_loss_alpha=CLASSIC_ALPHA[arm])
    if arm == "seq_1e-2":
        return dict(balance="seq_aux", seq_aux_alpha=seq_alpha)
    if arm == "free":
        return dict(balance="aux_free", bias_update_speed=gamma)
    return dict(balance="aux_free+seq_aux", bias_update_speed=gamma, seq_aux_alpha=v3_alpha)


def arm_config(arm: str, block_size: int = DEFAULTS["block_size"], model: dict | None = None, **knobs) -> ModelConfig:
    """``ModelConfig.cpu(max_seq_len=block_size, mtp_depth=0, **model, **arm_overrides(arm, **knobs))``."""
    model = DEFAULTS["model"] if model is None else model
    return ModelConfig.cpu(**{"max_seq_len": block_size, "mtp_depth": 0, **model, **arm_overrides(arm, **knobs)})


# ---- statistics: a confidence bound that can rule a cost in or out -------------------------------------------

def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF, the density integrated by
    Simpson's rule on a substitution that maps (−∞, x] to a finite interval). Exact to ~1e-7."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if not (isinstance(df, int) and df >= 1):
        raise ValueError(f"df must be an int ≥ 1, got {df!r}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x):                                  # 1/2 + ∫_0^x f(t) dt, t = x·u, Simpson on u ∈ [0, 1]
        n = 2000
        h = 1.0 / n
        s = 0.0
        for i in range(n + 1):
            u = i * h
            w = 1 if i in (0, n) else (4 if i % 2 else 2)
            s += w * c * (1 + (x * u) ** 2 / df) ** (-(df + 1) / 2)
        return 0.5 + x * s * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def loss_cost(diffs, margin: float = DEFAULTS["margin"], conf: float = 0.95) -> dict:
    """Is the paired loss difference (arm − reference, one per seed) below ``margin``? A real test: a non-inferiority
    bound. mean d̄, s.e. = s_d/√n, t = t_quantile(conf, n − 1); upper = d̄ + t·s.e., lower = d̄ − t·s.e.
    (one-sided ``conf`` bounds). "no_loss_cost": upper < margin (a cost of ``margin`` or more is ruled out);
    "costs": lower > 0 (a cost is shown); "verdict": "no cost ≥ δ" / "costs" / "undecided" (both can be false)."""
    d = [float(x) for x in diffs]
    if len(d) < 2:
        raise ValueError(f"loss_cost: need at least 2 paired differences (seeds), got {len(d)}")
    if not margin > 0:
        raise ValueError(f"loss_cost: margin must be > 0, got {margin!r}")
    n, m = len(d), statistics.fmean(d)
    se = statistics.stdev(d) / math.sqrt(n)
    t = t_quantile(conf, n - 1)
    up, lo = m + t * se, m - t * se
    no_cost, costs = up < margin, lo > 0
    verdict = "no cost ≥ δ" if no_cost else ("costs" if costs else "undecided")
    text = (f"paired {m:+.4f} ± {se:.4f} s.e. over {n} seeds; one-sided {conf:.0%} bounds [{lo:+.4f}, {up:+.4f}] "
            f"(t = {t:.3f}) vs margin δ = {margin} → "
            + {"no cost ≥ δ": f"a loss cost of {margin} nats or more is ruled out",
               "costs": "a loss cost is shown (even the lower bound is above 0)",
               "undecided": f"undecided: a cost of {margin} nats is neither ruled out nor shown"}[verdict])
    return {"n": n, "mean": m, "se": se, "t": t, "lower": lo, "upper": up, "margin": margin, "conf": conf,
            "no_loss_cost": no_cost, "costs": costs, "verdict": verdict, "text": text}


# ---- one run ------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_balance(model, windows: dict) -> dict:
    """One pass over the validation windows: next-token loss per domain (and "mean" over domains), MaxVio of the
    loads over all tokens ("maxvio", batch view; also per domain in "maxvio_by_domain"), the mean per-sequence MaxVio
    ("seq_maxvio"), each averaged over the MoE layers, and the expert loads per domain ("loads": {domain:
    [layers][N_r] counts})."""
    layers = model.moe_layers()
    n_exp = layers[0].n_routed_experts
    captured: list = []
    hooks = [m.gate.register_forward_hook(lambda mod, i, o: captured.append(o[1].detach())) for m in layers]
    was = model.training
    model.eval()
    losses, loads, per_dom, seq = {}, {}, {}, []
    try:
        for d, batches in windows.items():
            loss_sum, load = 0.0, torch.zeros(len(layers), n_exp, dtype=torch.float64)
            for x, y in batches:
                captured.clear()
                logits = model(x)["logits"]
                loss_sum += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                  ignore_index=-1))
                for li, idx in enumerate(captured):
                    idx = idx.view(x.shape[0], x.shape[1], -1)
                    load[li] += torch.bincount(idx.flatten().cpu(), minlength=n_exp).double()
                    seq.append(seq_max_violation(idx, n_exp))
            losses[d] = loss_sum / len(batches)
            loads[d] = load
            per_dom[d] = statistics.fmean(max_violation(load))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    losses["mean"] = statistics.fmean(losses[d] for d in windows)
    total = sum(loads.values())
    return {"losses": losses, "maxvio": statistics.fmean(max_violation(total)), "maxvio_by_domain": per_dom,
            "seq_maxvio": statistics.fmean(seq), "loads": {d: v.tolist() for d, v in loads.items()}}


def build_model(cfg: ModelConfig, seed: int) -> Transformer:
    """``Transformer(cfg)`` after ``seed_everything(seed)``: the balance fields draw no random numbers, so every arm of
    a seed starts from the same weights (checked in tests/test_balance_sweep.py)."""
    seed_everything(seed)
    return Transformer(cfg)


def run_arm(arm: str, seed: int, *, steps: int, batch_size: int, block_size: int, lr: float, warmup_steps: int,
            decay_frac: float, eval_every: int, eval_batches: int, curve_every: int, gamma: float, v3_alpha: float,
            seq_alpha: float, model: dict, splits: dict | None = None, windows: dict | None = None,
            stop_after: int | None = None, keep_model: bool = False, device=None, **_ignored) -> dict:
    """Train one arm for one seed and measure it (see the module docstring).

    ``stop_after``: stop after that many steps of the same schedule (the first steps of the full run). Returns
    {"arm", "seed", "steps", "steps_done", "tokens", "final" (the last evaluation's :func:`evaluate_balance`
    without the loads; None if stopped between evaluations), "loads" (final per-domain expert loads), "val_steps",
    "val_curves" {domain|"mean": [...]}, "val_maxvio_curve", "val_seq_maxvio_curve", "curve_steps", "train_curve",
    "bal_curve" (balance loss, α included), "maxvio_curve", "maxvio_last" (mean step MaxVio over the last 20% of the
    steps done), "bias_final" (per layer; zeros without the bias update), "median_step_s", "tokens_per_s",
    "wall_s"}; with ``keep_model`` also "model"."""
    if stop_after is not None and not (isinstance(stop_after, int) and stop_after >= 1):
        raise ValueError(f"stop_after must be None or an int ≥ 1, got {stop_after!r}")
    splits = load_splits() if splits is None else splits
    device = torch.device("cpu") if device is None else torch.device(device)
    windows = ablations.val_windows(splits, block_size, eval_batches, device=device) if windows is None else windows
    cfg = arm_config(arm, block_size, model, gamma=gamma, v3_alpha=v3_alpha, seq_alpha=seq_alpha)
    net = build_model(cfg, seed).to(device)
    sampler = MixtureSampler(splits, DEFAULT_WEIGHTS, batch_size=batch_size, block_size=block_size, seed=seed,
                             device=device)
    tcfg = TrainConfig(steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=warmup_steps, schedule="wsd",
                       decay_frac=decay_frac, eval_every=0, seed=seed)
    mv, stamps, box, evals = [], [time.perf_counter()], {}, []

    def callback(step, hist):
        box["hist"] = hist
        mv.append(statistics.fmean(max_violation(net.expert_loads("step"))))
        stamps.append(time.perf_counter())
        if step % eval_every == 0 or step == steps:
            evals.append((step, evaluate_balance(net, windows)))
        if stop_after is not None and step >= stop_after:
            raise ablations._Stop

    x0, y0 = next(iter(windows.values()))[0]          # train()'s own end-of-run evaluation: one 8-token row
    t0 = time.perf_counter()
    try:
        train(net, sampler, tcfg, val_data=[(x0[:1, :8], y0[:1, :8])], show_progress=False, callback=callback)
    except ablations._Stop:
        pass
    wall = time.perf_counter() - t0
    h = box["hist"]
    done = len(h.step)
    dts = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    med = dts[len(dts) // 2]
    keep = [i for i in range(done) if (i + 1) % curve_every == 0 or i == 0]
    last = evals[-1][1] if evals and evals[-1][0] == done else None
    aux = h.metrics.get("aux_loss", [0.0] * done)
    main = h.metrics.get("main_loss", h.train_loss)
    out = {"arm": arm, "seed": seed, "steps": steps, "steps_done": done, "tokens": done * batch_size * block_size,
           "final": {k: v for k, v in last.items() if k != "loads"} if last else None,
           "loads": last["loads"] if last else None,
           "val_steps": [e[0] for e in evals],
           "val_curves": {k: [e[1]["losses"][k] for e in evals] for k in (*DOMAINS, "mean")},
           "val_maxvio_curve": [e[1]["maxvio"] for e in evals],
           "val_seq_maxvio_curve": [e[1]["seq_maxvio"] for e in evals],
           "curve_steps": [i + 1 for i in keep], "train_curve": [main[i] for i in keep],
           "bal_curve": [aux[i] for i in keep], "maxvio_curve": [mv[i] for i in keep],
           "maxvio_last": statistics.fmean(mv[-max(1, done // 5):]),
           "bias_final": [m.gate.bias.detach().cpu().tolist() for m in net.moe_layers()],
           "median_step_s": med, "tokens_per_s": batch_size * block_size / med, "wall_s": wall}
    if keep_model:
        out["model"] = net
    return out


# ---- summary and verdicts ------------------------------------------------------------------------------------

def per_seed(runs: list, arm: str, key: str) -> dict:
    """{seed: value} of ``arm``'s runs; key "loss" (final mean val loss), "maxvio_last", "val_maxvio", "seq_maxvio"."""
    get = {"loss": lambda r: r["final"]["losses"]["mean"], "maxvio_last": lambda r: r["maxvio_last"],
           "val_maxvio": lambda r: r["final"]["maxvio"], "seq_maxvio": lambda r: r["final"]["seq_maxvio"]}[key]
    return {r["seed"]: get(r) for r in runs if r["arm"] == arm}


def summarize(runs: list, bigram: dict, margin: float = DEFAULTS["margin"]) -> dict:
    """Per arm: stats (mean, sample std over seeds) of the final val loss (mean and per domain), step MaxVio (last
    20% of steps), val MaxVio, per-sequence val MaxVio, "beats_bigram" (every seed below the bigram's mean loss).
    "vs_none": every other arm against ``none`` paired by seed: "loss" and "maxvio" (:func:`ablations.compare`),
    "cost" (:func:`loss_cost` with ``margin``). "v3_vs_aux": the V3 combination against each classic α (loss,
    MaxVio, cost). "tradeoff": the classic α sweep, α = 0 (none) included, as rows {arm, alpha, loss, maxvio,
    dloss (paired vs none; None for none)}."""
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
            row[k] = ablations.stats([r["final"]["losses"][k] for r in rs])
        for k in ("maxvio_last", "val_maxvio", "seq_maxvio"):
            row[k] = ablations.stats(list(per_seed(runs, arm, k).values()))
        row["tokens_per_s"] = ablations.stats([r["tokens_per_s"] for r in rs])
        row["beats_bigram"] = all(r["final"]["losses"]["mean"] < bigram["val_loss"] for r in rs)
        arms[arm] = row
    out = {"arms": arms, "vs_none": {}, "v3_vs_aux": {}, "tradeoff": [], "margin": margin}
    if "none" not in arms or arms["none"]["n"] < 2:
        return out

    def pair(ref, arm):
        L0, L1 = per_seed(runs, ref, "loss"), per_seed(runs, arm, "loss")
        common = sorted(set(L0) & set(L1))
        return {"loss": ablations.compare(L0, L1, arm, ref, ablations.REPORT_GAP),
                "maxvio": ablations.compare(per_seed(runs, ref, "maxvio_last"), per_seed(runs, arm, "maxvio_last"),
                                            arm, ref, None),
                "seq_maxvio": ablations.compare(per_seed(runs, ref, "seq_maxvio"), per_seed(runs, arm, "seq_maxvio"),
                                                arm, ref, None),
                "cost": loss_cost([L1[s] - L0[s] for s in common], margin)}

    for arm in arms:
        if arm != "none" and arms[arm]["n"] >= 2:
            out["vs_none"][arm] = pair("none", arm)
    if "v3" in arms and arms["v3"]["n"] >= 2:
        for arm in CLASSIC_ALPHA:
            if arm != "none" and arm in arms and arms[arm]["n"] >= 2:
                out["v3_vs_aux"][arm] = pair(arm, "v3")
    for arm, alpha in CLASSIC_ALPHA.items():
        if arm in arms:
            c = out["vs_none"].get(arm)
            out["tradeoff"].append({"arm": arm, "alpha": alpha, "loss": arms[arm]["mean"]["mean"],
                                    "loss_std": arms[arm]["mean"]["std"], "maxvio": arms[arm]["maxvio_last"]["mean"],
                                    "maxvio_std": arms[arm]["maxvio_last"]["std"],
                                    "dloss": c["cost"]["mean"] if c else None, "dloss_se": c["cost"]["se"] if c else None})
    return out


def claims(summary: dict) -> list:
    """The report's balancing claims beside our verdicts (for chapter 07's scoreboard)."""
    out, vs = [], summary["vs_none"]
    for arm, name in (("v3", "DeepSeek-V3's combination (bias + sequence-wise α = 1e-4)"), ("free", "the bias alone")):
        if arm not in vs:
            continue
        m, c = vs[arm]["maxvio"], vs[arm]["cost"]
        out.append({"claim": f"aux-loss-free balancing balances the load ({name}) (§2.1.2)",
                    "report": "balanced expert loads (§4.5.2 plots them)",
                    "measured": "MaxVio of the step's loads, last 20% of steps, vs no balancing",
                    "ours": {k: m[k] for k in ("gap", "spread", "paired_mean", "paired_se", "same_sign", "measurable",
                                                "winner")},
                    "verdict": m["text"]})
        out.append({"claim": f"... without hurting the model ({name}) (§2.1.2, §4.5.2)",
                    "report": "aux-loss-free better than aux-loss-based: val loss 1B 2.258 → 2.253, 3B 2.085 → 2.080",
                    "measured": f"val loss vs no balancing, non-inferiority margin {c['margin']} nats",
                    "ours": {k: c[k] for k in ("mean", "se", "lower", "upper", "margin", "verdict")},
                    "verdict": c["text"]})
    return out


def arm_curves(result: dict, arm: str, kind: str = "maxvio", domain: str = "mean") -> list:
    """The curves of every seed of ``arm`` in a result file (the notebook widget's logic): kind "val" (validation
    loss at the evaluation steps, ``domain`` "mean" or a domain), "train" (training loss), "maxvio" (step MaxVio),
    "bal" (balance loss). Returns [(seed, steps, values)]."""
    out = []
    for r in seed_runs(result, "arm", arm, kind, ("val", "train", "maxvio", "bal"), domain, DOMAINS, "arm_curves",
                       ARMS.index, "sweep"):
        if kind == "val":
            out.append((r["seed"], list(r["val_steps"]), list(r["val_curves"][domain])))
        else:
            out.append((r["seed"], list(r["curve_steps"]), list(r[f"{kind}_curve"])))
    return out


def _pool_run(job: tuple) -> dict:
    """One (arm, seed) run in a worker process of ``--jobs``: its own data, windows and thread count."""
    arm, seed, device, threads, kw = job
    torch.set_num_threads(threads)
    splits = load_splits()
    windows = ablations.val_windows(splits, kw["block_size"], kw["eval_batches"], device=device)
    return run_arm(arm, seed, splits=splits, windows=windows, device=device, **kw)


def _fmt(s: dict, digits: int = 4) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["std"] is not None else f"{s['mean']:.{digits}f}"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ablations.run_arguments(p, DEFAULTS, ("lr", "decay_frac", "gamma", "v3_alpha", "seq_alpha", "margin"), OUT)
    p.add_argument("--merge", action="store_true", help="keep the runs of --out (same config) whose (arm, seed) this "
                   "command does not train, e.g. --seeds 3 4 5 --merge adds seeds; the file records every command")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    device, model, knobs, kw = ablations.run_settings(p, a, DEFAULTS, ("gamma", "v3_alpha", "seq_alpha"))
    t0 = time.perf_counter()
    runs, old = [], None
    if a.merge:
        old = json.loads(Path(a.out).read_text())
        mismatch = {k: (old["config"].get(k), v) for k, v in kw.items() if old["config"].get(k) != v}
        same_env = (old["threads"], old["device"], old["torch"]) == (a.threads, device.type, torch.__version__)
        if mismatch or not same_env:
            p.error(f"--merge: {a.out} was made with another config or machine (file vs now: {mismatch}; threads, "
                    f"device, torch {old['threads']}, {old['device']}, {old['torch']}); run without --merge")
        todo = {(arm, s) for s in a.seeds for arm in a.arms}
        runs = [r for r in old["runs"] if (r["arm"], r["seed"]) not in todo]
    splits = load_splits()
    windows = ablations.val_windows(splits, a.block_size, a.eval_batches)
    cfgs = {arm: arm_config(arm, a.block_size, model, **knobs) for arm in ARMS}
    bigram = ablations.bigram_baseline(splits, windows, cfgs["none"].vocab_size)
    c0 = cfgs["none"]
    n_val_tokens = 3 * a.eval_batches * 16 * a.block_size
    floor = {"step": random_routing_maxvio(a.batch_size * a.block_size, c0.n_routed_experts, c0.n_activated_experts,
                                           c0.n_expert_groups, c0.n_limited_groups, trials=200, seed=0),
             "val": random_routing_maxvio(n_val_tokens, c0.n_routed_experts, c0.n_activated_experts,
                                          c0.n_expert_groups, c0.n_limited_groups, trials=50, seed=0),
             "seq": random_routing_maxvio(a.block_size, c0.n_routed_experts, c0.n_activated_experts,
                                          c0.n_expert_groups, c0.n_limited_groups, trials=200, seed=0)}
    print(f"bigram on the validation windows: {bigram['val_loss']:.4f}; MaxVio of random routing: step "
          f"{floor['step']['mean']:.3f}, val {floor['val']['mean']:.3f}, per sequence {floor['seq']['mean']:.3f}",
          flush=True)
    jobs = [(arm, s) for s in a.seeds for arm in a.arms]
    if a.jobs == 1:
        on_dev = windows if device.type == "cpu" else ablations.val_windows(splits, a.block_size, a.eval_batches,
                                                                            device=device)
        done = (run_arm(arm, seed, splits=splits, windows=on_dev, device=device, **kw) for arm, seed in jobs)
    else:                                   # fresh processes (spawn: CUDA cannot be forked), results in job order
        import concurrent.futures as cf
        import multiprocessing as mp
        pool = cf.ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn"))
        done = pool.map(_pool_run, [(arm, seed, str(device), a.threads, kw) for arm, seed in jobs])
    for r in progress(done, total=len(jobs), desc="runs", disable=False):
        runs.append(r)
        f = r["final"]
        print(f"{r['arm']:9s} seed {r['seed']}: val {f['losses']['mean']:.4f} (bigram {bigram['val_loss']:.4f}), "
              f"MaxVio step {r['maxvio_last']:.3f} val {f['maxvio']:.3f} seq {f['seq_maxvio']:.3f}, "
              f"{r['tokens_per_s']:.0f} tok/s, {r['wall_s']:.0f} s", flush=True)
    order = {k: i for i, k in enumerate(ARMS)}
    runs.sort(key=lambda r: (r["seed"], order[r["arm"]]))
    summary = summarize(runs, bigram, a.margin)
    command = " ".join(["python scripts/balance_sweep.py", *argv]).strip()
    seeds = sorted({r["seed"] for r in runs})
    out = {"what": "load balancing at equal compute: none, the classic loss at three α, the sequence-wise loss, "
                   "the aux-loss-free bias, and DeepSeek-V3's bias + sequence-wise α = 1e-4 (chapter 02.5)",
           "command": f"{old['command']} && {command}" if old else command,
           "config": {**kw, "margin": a.margin, "arms": [k for k in ARMS if any(r["arm"] == k for r in runs)],
                      "seeds": seeds, "threads": a.threads, "weights": DEFAULT_WEIGHTS,
                      "schedule": "wsd: linear warm-up, constant, cosine to lr/10 over the last decay_frac of the steps",
                      "optimizer": "AdamW betas (0.9, 0.95), weight decay 0.1, clip 1.0", "device": device.type},
           "model_configs": {arm: c.to_dict() for arm, c in cfgs.items()},
           "bigram": bigram, "random_maxvio": floor, "summary": summary, "claims": claims(summary), "runs": runs,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "autocast": str(autocast_dtype(device)), "device": device.type,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "wall_s": time.perf_counter() - t0 + (old["wall_s"] if old else 0.0)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"\n{'arm':9s} | {'val loss (mean of domains)':>26s} | {'MaxVio step':>15s} | {'MaxVio seq':>15s}")
    print(f"{'bigram':9s} | {bigram['val_loss']:>26.4f} | {floor['step']['mean']:>15.3f} | {floor['seq']['mean']:>15.3f}"
          "   (MaxVio columns: random routing)")
    for arm, row in summary["arms"].items():
        print(f"{arm:9s} | {_fmt(row['mean']):>26s} | {_fmt(row['maxvio_last'], 3):>15s} | {_fmt(row['seq_maxvio'], 3):>15s}")
    for arm, c in summary["vs_none"].items():
        print(f"{arm:9s} vs none: loss {c['loss']['text']}\n{'':20s}cost: {c['cost']['text']}\n"
              f"{'':20s}MaxVio: {c['maxvio']['text']}")
    print(f"wall time {out['wall_s']:.0f} s -> {a.out}")
    return out


if __name__ == "__main__":
    main()
