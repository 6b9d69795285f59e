"""What a KV cache of a given size can hold (chapter 02.3): associative recall against d_c and the number of KV heads.

    python scripts/kv_rank_recall.py                     # the shipped run (defaults below), one process
    python scripts/kv_rank_recall.py --jobs 2            # two runs at a time (same numbers: every run seeds itself)
    python scripts/kv_rank_recall.py --arms mla4 mha --seeds 0 --steps 200 --out /tmp/x.json

On the corpora a small model is not limited by its cache: a bigram explains much of the text, and 02.3's trained
models at d_c = 4 … 64 land within seed noise of each other. Here the cache is the bottleneck by construction
(:func:`helpers.tasks.pair_recall`): a row holds P = ``n_pairs`` tokens, each a (key, value) pair, then the P keys
again as queries; to answer, attention must find the pair whose key matches and read its value. Everything the
model knows about a pair at query time is what the cache kept at the pair's position: (d_c + d_h^R) numbers per
token for MLA, 2·n_g·d_h for MHA (n_g = n_h), GQA (1 < n_g < n_h) and MQA (n_g = 1).

Arms: ``mla<d_c>`` for every d_c of ``--ranks``, ``mha`` and ``mqa`` (n_g = 1) by default, ``gqa`` (n_g = 2) on request
(``--arms``); every arm is the same one-block model (width 64, 4 heads, dense SwiGLU) with only the attention changed. For a given seed every arm
sees the same batches. Measured every ``--eval-every`` steps on 256 fixed validation rows: the accuracy on the
queries (chance 1 / n_values) and the loss on them.

Writes data/results/ch02_kv_rank_recall.json: the command, the model and task settings, per run the cache elements
per token and the curve, per arm the final accuracy's mean, sample sd, min and max over seeds, wall time, torch
version, threads and the CPU capability. Deterministic for a given seed, thread count and CPU kernel set.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from helpers.attention import cache_elements_per_token  # noqa: E402
from helpers.config import ModelConfig  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.runtime import get_device, seed_everything  # noqa: E402
from helpers.tasks import pair_recall, pair_recall_vocab, task_batches, train_on_task  # noqa: E402

OUT = ROOT / "data" / "results" / "ch02_kv_rank_recall.json"
DEFAULTS = dict(steps=600, batch_size=64, n_pairs=16, n_keys=32, n_values=32, lr=3e-3, warmup_steps=30,
                eval_every=100, eval_rows=256, ranks=(2, 4, 8, 16, 32), seeds=(0, 1, 2),
                model=dict(dim=64, n_heads=4, inter_dim=128))
BASELINES = ("mha", "mqa")


def arm_config(arm: str, n_pairs: int = DEFAULTS["n_pairs"], n_keys: int = DEFAULTS["n_keys"],
               n_values: int = DEFAULTS["n_values"], model: dict | None = None) -> ModelConfig:
    """The one-block dense model of ``arm`` ("mla<d_c>", "mha", "gqa" with 2 KV heads, "mqa") for the task."""
    model = DEFAULTS["model"] if model is None else model
    base = ModelConfig.cpu(vocab_size=pair_recall_vocab(n_keys, n_values), n_layers=1, n_dense_layers=1,
                           n_routed_experts=0, mtp_depth=0, balance="none", max_seq_len=2 * n_pairs,
                           q_lora_rank=0, **model)
    if arm.startswith("mla") and arm[3:].isdigit():
        return base.replace(kv_lora_rank=int(arm[3:]))
    if arm == "mha":
        return base.replace(attn="mha")
    if arm == "gqa":
        return base.replace(attn="gqa", n_kv_heads=2)
    if arm == "mqa":
        return base.replace(attn="gqa", n_kv_heads=1)
    raise ValueError(f"arm must be 'mla<d_c>' (e.g. mla8), 'mha', 'gqa' or 'mqa', got {arm!r}")


def run(arm: str, seed: int, steps: int = DEFAULTS["steps"], device: str = "cpu", settings: dict | None = None) -> dict:
    """Train ``arm`` from seed ``seed`` and return {"arm", "seed", "cache", "curve", "final_acc", "final_loss", "wall_s"}."""
    s = {**DEFAULTS, **(settings or {})}
    cfg = arm_config(arm, s["n_pairs"], s["n_keys"], s["n_values"], s["model"])
    seed_everything(seed)
    model = Transformer(cfg).to(device)
    batches = task_batches(pair_recall, s["batch_size"], seed=seed, n_pairs=s["n_pairs"], n_keys=s["n_keys"],
                           n_values=s["n_values"])
    t0 = time.perf_counter()
    curve = train_on_task(model, batches, steps, lr=s["lr"], warmup_steps=s["warmup_steps"],
                          eval_every=s["eval_every"], eval_rows=s["eval_rows"], seed=seed)
    return {"arm": arm, "seed": seed, "cache": cache_elements_per_token(cfg), "curve": curve,
            "final_acc": curve[-1]["acc"], "final_loss": curve[-1]["loss"], "wall_s": time.perf_counter() - t0}


def _call(job):
    fn, args, threads = job
    torch.set_num_threads(threads)
    return fn(*args)


def execute(fn, calls: list[tuple], jobs: int, threads: int, keep) -> None:
    """``keep(fn(*args))`` for every ``args`` of ``calls``: one after another here when ``jobs`` is 1, else ``jobs``
    at a time, each in its own (spawned) process with ``threads`` torch threads, kept in the order they finish.
    Every run seeds itself, so the results do not depend on ``jobs``. (Also drives scripts/rope_length.py.)"""
    if jobs == 1:
        for args in calls:
            keep(fn(*args))
        return
    with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        for f in cf.as_completed([pool.submit(_call, (fn, args, threads)) for args in calls]):
            keep(f.result())


def summarise(runs: list[dict]) -> dict:
    """Per arm: cache elements per token and the final accuracy's mean, sample sd (None for one seed), min, max."""
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        acc = [r["final_acc"] for r in runs if r["arm"] == arm]
        out[arm] = {"cache": next(r["cache"] for r in runs if r["arm"] == arm), "n": len(acc),
                    "mean": statistics.fmean(acc), "sd": statistics.stdev(acc) if len(acc) > 1 else None,
                    "min": min(acc), "max": max(acc)}
    return out


def sweep_arguments(p: argparse.ArgumentParser, defaults: dict, out: Path, argv=None) -> argparse.Namespace:
    """Add the options every task sweep shares (--seeds, --steps, --jobs, --threads, --device, --out) to ``p``,
    parse ``argv`` and check them (``p.error`` on a bad one). Also used by scripts/rope_length.py."""
    p.add_argument("--seeds", nargs="+", type=int, default=list(defaults["seeds"]))
    p.add_argument("--steps", type=int, default=defaults["steps"])
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--out", type=Path, default=out)
    a = p.parse_args(argv)
    if a.jobs < 1 or a.threads < 1 or a.steps < 1:
        p.error("--jobs, --threads and --steps must be ≥ 1")
    return a


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=None, help="default: mla<d_c> for every --ranks, then mha mqa")
    p.add_argument("--ranks", nargs="+", type=int, default=list(DEFAULTS["ranks"]))
    a = sweep_arguments(p, DEFAULTS, OUT, argv)
    arms = a.arms or [f"mla{r}" for r in a.ranks] + list(BASELINES)
    for arm in arms:
        arm_config(arm)                                   # fail on a bad arm name before any training
    device = str(get_device(a.device))
    torch.set_num_threads(a.threads)
    jobs = [(arm, s) for s in a.seeds for arm in arms]
    t0 = time.perf_counter()
    runs: list[dict] = []

    def result(partial: bool) -> dict:
        done = sorted(runs, key=lambda r: (a.seeds.index(r["seed"]), arms.index(r["arm"])))
        return {"command": "python scripts/kv_rank_recall.py " + " ".join(sys.argv[1:] if argv is None else argv),
                "settings": {**{k: v for k, v in DEFAULTS.items() if k not in ("ranks", "seeds")}, "steps": a.steps},
                "chance": 1 / DEFAULTS["n_values"], "arms": arms, "seeds": a.seeds, "partial": partial, "runs": done,
                "summary": summarise(done) if done else {}, "wall_s": time.perf_counter() - t0,
                "torch": torch.__version__, "threads": a.threads, "jobs": a.jobs, "device": device,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}

    def keep(r: dict) -> None:            # every finished run is written at once: a stopped sweep keeps its runs
        runs.append(r)
        print(f"[{len(runs)}/{len(jobs)}] {r['arm']} seed {r['seed']}: acc {r['final_acc']:.3f} ({r['wall_s']:.0f} s)",
              flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result(len(runs) < len(jobs)), indent=1) + "\n")

    execute(run, [(arm, seed, a.steps, device) for arm, seed in jobs], a.jobs, a.threads, keep)
    final = result(False)
    for arm, s in final["summary"].items():
        sd = f" ± {s['sd']:.3f}" if s["sd"] is not None else ""
        print(f"{arm:6s} cache {s['cache']:4d}/token  acc {s['mean']:.3f}{sd}  [{s['min']:.3f}, {s['max']:.3f}]")
    print(f"wrote {a.out} ({final['wall_s'] / 60:.1f} min)")
    return final


if __name__ == "__main__":
    main()
