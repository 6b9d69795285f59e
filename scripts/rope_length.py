"""RoPE past the trained length (chapter 02.2): induction at offsets a model never saw in training.

    python scripts/rope_length.py                    # the shipped run (defaults below), one process
    python scripts/rope_length.py --jobs 2           # two runs at a time (same numbers: every run seeds itself)
    python scripts/rope_length.py --arms mha --seeds 0 --steps 300 --out /tmp/x.json

On the corpora a small model trained on short windows barely uses long-range attention, so its loss past the
trained length says little about RoPE. Here attention at a given offset is the whole task by construction
(:func:`helpers.tasks.induction_copy`): a row is L distinct symbols, SEP, and the same L symbols again; each symbol
of the second copy must be predicted from its earlier occurrence, L positions back. Training draws L from
``min_length`` … ``train_length`` (so the longest offset the model ever attends over is ``train_length`` and the
longest window 2·train_length + 1); grading uses fixed L from ``EVAL_LENGTHS``, inside and far outside that range.

Arms (everything else equal: a two-block dense model, width 64, 4 heads; for a given seed both arms see the same
batches):

- ``mla``: the course model's MLA: RoPE only on the decoupled d_h^R = 16 query/key dimensions, the 32 content
  dimensions per head (from the d_c = 32 latent) carry no position at all.
- ``mha``: multi-head attention with RoPE on every one of its d_h = 16 head dimensions, like most models.

Measured per run: the training curve (accuracy on 128 validation rows from the training distribution every
``--eval-every`` steps), then the accuracy at every L of ``EVAL_LENGTHS`` (the same 128 rows per L for every run),
and at L = ``PREFIX_LENGTH`` after a prefix of P distinct filler symbols for every P of ``PREFIXES``: the same
offsets at later absolute positions. RoPE makes attention depend on offsets only, so the prefix should cost
little; unseen offsets are what break a model.

Writes data/results/ch02_rope_length.json: the command, settings, per run the curve and both accuracy tables, per
arm the mean, sample sd, min and max over seeds of each, wall time, torch version, threads and the CPU
capability. Deterministic for a given seed, thread count and CPU kernel set.
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

from kv_rank_recall import execute, sweep_arguments  # noqa: E402  (what both task sweeps share)
from helpers.config import ModelConfig  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.runtime import get_device, seed_everything  # noqa: E402
from helpers.tasks import induction_copy, masked_accuracy, task_batches, train_on_task, vocab_size  # noqa: E402

OUT = ROOT / "data" / "results" / "ch02_rope_length.json"
DEFAULTS = dict(steps=1500, batch_size=32, n_symbols=512, min_length=8, train_length=32, lr=3e-3, warmup_steps=30,
                eval_every=100, eval_rows=128, grade_rows=128, seeds=(0, 1, 2), model=dict(dim=64, n_heads=4, inter_dim=128))
ARMS = ("mla", "mha")
EVAL_LENGTHS = (8, 16, 24, 32, 40, 48, 64, 96, 128, 192, 256)
PREFIX_LENGTH, PREFIXES = 24, (0, 64, 128, 256, 448)
EVAL_SEED = 2024


def arm_config(arm: str, n_symbols: int = DEFAULTS["n_symbols"], model: dict | None = None) -> ModelConfig:
    """The two-block dense model of ``arm`` ("mla" or "mha"), with RoPE tables for windows up to 1,024 tokens."""
    model = DEFAULTS["model"] if model is None else model
    base = ModelConfig.cpu(vocab_size=vocab_size(n_symbols), n_layers=2, n_dense_layers=2, n_routed_experts=0,
                           mtp_depth=0, balance="none", max_seq_len=1024, q_lora_rank=0, **model)
    if arm == "mla":
        return base
    if arm == "mha":
        return base.replace(attn="mha")
    raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")


def eval_rows(length: int, prefix: int = 0, n: int | None = None, n_symbols: int = DEFAULTS["n_symbols"]):
    """The fixed grading rows (``grade_rows`` of them) at copy length ``length`` after ``prefix`` filler symbols: the
    same rows for every run."""
    g = torch.Generator().manual_seed(EVAL_SEED + 1009 * length + prefix)
    return induction_copy(DEFAULTS["grade_rows"] if n is None else n, length, n_symbols, prefix=prefix, generator=g)


@torch.no_grad()
def accuracy(model, length: int, prefix: int = 0, n_symbols: int = DEFAULTS["n_symbols"]) -> float:
    """Masked accuracy of ``model`` on :func:`eval_rows` (eval mode, on the model's device)."""
    was = model.training
    model.eval()
    x, y = eval_rows(length, prefix, n_symbols=n_symbols)
    dev = next(model.parameters()).device
    acc = masked_accuracy(model(x.to(dev))["logits"].float(), y.to(dev))
    model.train(was)
    return acc


@torch.no_grad()
def position_probe(model, length: int, row: int = 0, n_symbols: int = DEFAULTS["n_symbols"]) -> dict:
    """What notebook 02.2's slider shows for one trained model at copy length ``length``: on grading row ``row`` of
    :func:`eval_rows`, the probability the model gives the right symbol at each graded position of the second copy
    (``p_correct``, s_2 … s_L, every one L positions after its source) and whether it is the argmax (``hit``); and
    the accuracy over all the grading rows at that length (``acc``)."""
    if not (isinstance(length, int) and 2 <= length <= n_symbols):
        raise ValueError(f"length must be an int in [2, {n_symbols}], got {length!r}")
    if not (isinstance(row, int) and 0 <= row < DEFAULTS["grade_rows"]):
        raise ValueError(f"row must be an int in [0, {DEFAULTS['grade_rows']}), got {row!r}")
    was = model.training
    model.eval()
    x, y = eval_rows(length, n_symbols=n_symbols)
    dev = next(model.parameters()).device
    logits = model(x.to(dev))["logits"].float().cpu()
    model.train(was)
    graded = y[row] != -1
    p = logits[row, graded].softmax(-1)
    target = y[row, graded]
    return {"p_correct": p.gather(1, target[:, None]).squeeze(1).tolist(),
            "hit": (p.argmax(-1) == target).tolist(), "acc": masked_accuracy(logits, y)}


def train_arm(arm: str, seed: int, steps: int, device: str = "cpu", settings: dict | None = None):
    """Train ``arm`` from ``seed`` on L ∈ [min_length, train_length]; returns (model, curve)."""
    s = {**DEFAULTS, **(settings or {})}
    seed_everything(seed)
    model = Transformer(arm_config(arm, s["n_symbols"], s["model"])).to(device)
    batches = task_batches(induction_copy, s["batch_size"], seed=seed, length=s["train_length"],
                           min_length=s["min_length"], n_symbols=s["n_symbols"])
    curve = train_on_task(model, batches, steps, lr=s["lr"], warmup_steps=s["warmup_steps"],
                          eval_every=s["eval_every"], eval_rows=s["eval_rows"], seed=seed)
    return model, curve


def run(arm: str, seed: int, steps: int = DEFAULTS["steps"], device: str = "cpu", settings: dict | None = None) -> dict:
    """Train ``arm`` from ``seed`` and grade it: {"arm", "seed", "curve", "by_length", "by_prefix", "wall_s"}."""
    s = {**DEFAULTS, **(settings or {})}
    t0 = time.perf_counter()
    model, curve = train_arm(arm, seed, steps, device, s)
    by_length = {str(L): accuracy(model, L, n_symbols=s["n_symbols"]) for L in EVAL_LENGTHS}
    by_prefix = {str(P): accuracy(model, PREFIX_LENGTH, P, s["n_symbols"]) for P in PREFIXES}
    return {"arm": arm, "seed": seed, "curve": curve, "by_length": by_length, "by_prefix": by_prefix,
            "wall_s": time.perf_counter() - t0}


def summarise(runs: list[dict]) -> dict:
    """Per arm, for each L of ``by_length`` and each P of ``by_prefix``: mean, sample sd (None for one seed), min, max."""
    def stats(v):
        return {"n": len(v), "mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else None,
                "min": min(v), "max": max(v)}
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        out[arm] = {table: {k: stats([r[table][k] for r in mine]) for k in mine[0][table]}
                    for table in ("by_length", "by_prefix")}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    a = sweep_arguments(p, DEFAULTS, OUT, argv)
    device = str(get_device(a.device))
    torch.set_num_threads(a.threads)
    jobs = [(arm, s) for s in a.seeds for arm in a.arms]
    t0 = time.perf_counter()
    runs: list[dict] = []

    def result(partial: bool) -> dict:
        done = sorted(runs, key=lambda r: (a.seeds.index(r["seed"]), a.arms.index(r["arm"])))
        return {"command": "python scripts/rope_length.py " + " ".join(sys.argv[1:] if argv is None else argv),
                "settings": {**{k: v for k, v in DEFAULTS.items() if k != "seeds"}, "steps": a.steps},
                "eval_lengths": list(EVAL_LENGTHS), "prefix_length": PREFIX_LENGTH, "prefixes": list(PREFIXES),
                "arms": a.arms, "seeds": a.seeds, "partial": partial, "runs": done,
                "summary": summarise(done) if done else {}, "wall_s": time.perf_counter() - t0,
                "torch": torch.__version__, "threads": a.threads, "jobs": a.jobs, "device": device,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}

    def keep(r: dict) -> None:            # every finished run is written at once: a stopped sweep keeps its runs
        runs.append(r)
        acc = ", ".join(f"L = {L} {v:.3f}" for L, v in r["by_length"].items() if int(L) in (32, 64, 256))
        print(f"[{len(runs)}/{len(jobs)}] {r['arm']} seed {r['seed']}: accuracy at {acc} ({r['wall_s']:.0f} s)", flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result(len(runs) < len(jobs)), indent=1) + "\n")

    execute(run, [(arm, seed, a.steps, device) for arm, seed in jobs], a.jobs, a.threads, keep)
    final = result(False)
    for arm, s in final["summary"].items():
        print(f"{arm}: " + "  ".join(f"L={L} {v['mean']:.3f}" for L, v in s["by_length"].items()))
    print(f"wrote {a.out} ({final['wall_s'] / 60:.1f} min)")
    return final


if __name__ == "__main__":
    main()
