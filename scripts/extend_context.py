"""Long-context extension of the base model (chapter 04.4, DeepSeek-V3 §4.3) → data/results/ch04_long_context.json

    python scripts/extend_context.py                     # the shipped results (7.8 CPU minutes at one thread)
    python scripts/extend_context.py --seeds-only 1 2    # + both arms with two more training seeds (7.0 CPU min)
    python scripts/extend_context.py --quick --base /tmp/pt_tiny/base.pt --out /tmp/lc.json   # a smoke run

The base model was pre-trained at T = 256 positions (``helpers.pretraining.BLOCK_SIZE``). This script measures
what happens past T and what a short YaRN extension buys, on the same tests for every model:

1. zero-training baselines: the base weights with plain RoPE at every length, and with YaRN (s = ``--factor``,
   original_seq_len = T) applied to the unchanged weights;
2. a staged extension like the report's two phases (4K → 32K → 128K, 1000 steps each, the same YaRN settings in
   both): from the base checkpoint, phase 1 trains at ``--blocks[0]`` positions, phase 2 continues at
   ``--blocks[1]``, both with YaRN at the one factor s, on the pre-training mixture built at that window
   (``pretraining_splits``: Shakespeare, code with FIM, arithmetic, passkey rows as long as the window), at a
   constant learning rate (the end of pre-training's, as the report extends at its final 7.3e-6);
3. the control: the same phases, same data, same steps, with plain RoPE — so YaRN's contribution is separated
   from "it was simply trained on longer rows".

Every model is scored by passkey retrieval (exact match of the five-digit key; chance ≈ 1/90000) at each length
and depth, by the mean negative log-likelihood of the key's tokens (a graded version of the same test), and by
next-token loss per position on long validation windows of Shakespeare, code and arithmetic (the loss at a length
L is the mean over the first L positions: the model is causal, so that is the loss of an L-token window).

Deterministic for a given machine and thread count (seeded sampler, fixed evaluation documents and windows).
The measurements are helpers.long_context's; tests/test_extend_context.py checks them and this script.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helpers import pretraining as P  # noqa: E402
from helpers.batching import MixtureSampler, eval_batches  # noqa: E402
from helpers.config import ModelConfig  # noqa: E402
from helpers.data import sha256_file  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.runtime import data_dir, get_device, seed_everything  # noqa: E402
from helpers.tokenizer import load_tokenizer  # noqa: E402
# the measurements live in helpers.long_context (notebook 04.4 uses them too)
from helpers.long_context import (CHANCE, evaluate_model, long_windows, passkey_table, rope_fields,  # noqa: E402
                                  with_rope)
from helpers.train import TrainConfig, checkpoint_config, load_checkpoint, train  # noqa: E402

T = P.BLOCK_SIZE
RESULTS = "results/ch04_long_context.json"


# ---- models -------------------------------------------------------------------------------------------

def load_model(base: str | Path | None = None, device="cpu", **overrides) -> Transformer:
    """The base checkpoint in eval mode with ModelConfig ``overrides`` (positions and YaRN fields):
    ``helpers.pretraining.load_base`` (checksum-verified) when ``base`` is None, else the file ``base``."""
    if base is None:
        return P.load_base(device=device, **overrides)
    cfg = ModelConfig(**{**checkpoint_config(base), **overrides})
    model = Transformer(cfg)
    load_checkpoint(base, model)
    return model.to(device).eval()


# ---- the extension ----------------------------------------------------------------------------------------

def splits_at(tok, block: int, base_splits: dict | None = None) -> dict:
    """The pre-training mixture at window ``block``: only the passkey rows depend on the window, so when
    ``base_splits`` (from ``pretraining_splits``) is given its other domains are reused."""
    if base_splits is None:
        return P.pretraining_splits(tok, block_size=block)
    pk = {s: P.passkey_rows(tok, P.N_PASSKEY_ROWS[s], block, P.PASSKEY_SEEDS[s]) for s in ("train", "val")}
    return {**base_splits, "passkey": pk}


def extend(model, splits: dict, block: int, steps: int, batch: int, lr: float, seed: int, warmup: int = 0,
           show_progress: bool = True) -> dict:
    """Train ``model`` (already built for ≥ ``block`` positions, with the rotary table of its arm) for ``steps``
    AdamW steps on the pre-training mixture at window ``block`` (``batch`` rows a step), constant ``lr`` after
    ``warmup`` steps; the optimizer starts fresh (the base checkpoint carries no optimizer state).
    Returns the training log."""
    seed_everything(seed)
    dev = next(model.parameters()).device
    sampler = MixtureSampler(splits, P.PRETRAIN_WEIGHTS, batch, block, seed=seed, aligned=("passkey",), device=dev)
    val = eval_batches(splits, "shakespeare", 1, 1, block, device=dev)
    warmup = min(warmup, steps // 2)
    tcfg = TrainConfig(steps=steps, lr=lr, schedule="constant", warmup_steps=warmup, eval_every=0, seed=seed)
    hist = train(model, sampler, tcfg, val_data=val, show_progress=show_progress)
    model.eval()
    return {"block": block, "steps": steps, "batch": batch, "lr": lr, "warmup": warmup, "seed": seed,
            "tokens": steps * batch * block, "train_loss": hist.train_loss, "wall_s": hist.wall_time,
            "final_val_shakespeare": hist.val_loss[-1] if hist.val_loss else None}


# ---- the script ---------------------------------------------------------------------------------------------

def run_arm(args, tok, splits: dict, arm: str, factor: float, seed: int, after_phase=None) -> list:
    """One arm of the staged extension from the base checkpoint: phase k trains at ``args.blocks[k-1]`` positions
    with YaRN factor ``factor`` (1 = plain RoPE), batches seeded ``seed + k`` (so both arms see the same rows).
    Calls ``after_phase(k, model, steps_so_far)`` after each phase; returns the phases' training logs."""
    model = load_model(args.base, device=getattr(args, "device", "cpu"), **rope_fields(args.blocks[0], factor))
    model.train()
    done, logs = 0, []
    for k, (block, steps, batch) in enumerate(zip(args.blocks, args.steps, args.batch), start=1):
        if block > model.cfg.max_seq_len:
            model = with_rope(model, block, factor).train()
        print(f"{arm} (seed {seed}): phase {k} at {block} positions, {steps} steps × {batch} rows")
        log = extend(model, splits_at(tok, block, splits), block, steps, batch, args.lr, seed + k, args.warmup)
        logs.append({"arm": arm, "phase": k, "rope_factor": factor, **log})
        done += steps
        if after_phase is not None:
            after_phase(k, model, done)
    return logs


def seed_runs(args, tok, splits: dict, windows: dict, seeds) -> list:
    """Both arms again with other training seeds (``100 · seed`` + phase), each final model scored on the same
    passkey documents (lengths up to the last phase) and the same validation windows cut to the last phase's
    length — the spread of these numbers is the training-seed spread of the comparison."""
    L = args.blocks[-1]
    cut = {d: [(x[:, :L], y[:, :L]) for x, y in w] for d, w in windows.items()}
    out = []
    for seed in seeds:
        for arm, factor in (("yarn", args.factor), ("rope", 1.0)):
            final = {}
            logs = run_arm(args, tok, splits, arm, factor, 100 * seed,
                           after_phase=lambda k, m, done: final.update(model=m) if k == len(args.blocks) else None)
            r = evaluate_model(final["model"], tok, cut, [T, L], args.depths, args.n_per_depth, args.bucket,
                               passkey_lengths=[L // 2, L])
            out.append({"seed": seed, "arm": arm, "rope_factor": factor, "passkey": r["passkey"],
                        "loss_at": {d: p["loss_at"] for d, p in r["loss"].items()},
                        "train_loss_last10": [sum(g["train_loss"][-10:]) / 10 for g in logs]})
            print(f"  seed {seed} {arm}: passkey " + "  ".join(f"{k}: {v['acc']:.2f}" for k, v in r["passkey"].items())
                  + "   loss@" + str(L) + " " + " ".join(f"{d} {p['loss_at'][str(L)]:.3f}" for d, p in r["loss"].items()))
    return out



def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default=None, help="checkpoint to extend (default: the shipped data/checkpoints/base.pt)")
    ap.add_argument("--out", default=None, help=f"results file (default data/{RESULTS})")
    ap.add_argument("--factor", type=float, default=4.0, help="YaRN's s, the same in both phases (as the report)")
    ap.add_argument("--blocks", type=int, nargs=2, default=[512, 1024], help="the two phases' windows")
    ap.add_argument("--steps", type=int, nargs=2, default=[40, 40], help="steps of each phase")
    ap.add_argument("--batch", type=int, nargs=2, default=[4, 2], help="rows per step of each phase")
    ap.add_argument("--lr", type=float, default=3e-4, help="constant LR (the base run's final LR = 3e-3 / 10)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048],
                    help="evaluation lengths (passkey and loss)")
    ap.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    ap.add_argument("--n-per-depth", type=int, default=14)
    ap.add_argument("--windows", type=int, default=3, help="validation windows per domain for the loss profile")
    ap.add_argument("--bucket", type=int, default=128)
    ap.add_argument("--no-control", action="store_true", help="skip the plain-RoPE extension control")
    ap.add_argument("--seeds-only", type=int, nargs="+", default=None, metavar="SEED",
                    help="add both arms trained with these extra seeds (1, 2, ...) to the existing --out file")
    ap.add_argument("--quick", action="store_true", help="tiny everything (smoke test)")
    ap.add_argument("--device", default="cpu", help="cpu (default: the shipped ×4 run), cuda, or auto (a CUDA GPU when "
                    "present); on CUDA the extension trains under bf16 autocast (helpers.runtime.training_autocast)")
    args = ap.parse_args(argv)
    args.device = str(get_device(None if args.device == "auto" else args.device))
    if args.quick:
        args.steps, args.batch, args.lengths = [2, 2], [1, 1], [256, 512]
        args.blocks, args.n_per_depth, args.windows, args.depths = [384, 512], 2, 1, [0.5]
    if args.factor < 1:
        ap.error(f"--factor must be ≥ 1 (YaRN's s), got {args.factor}")
    if not T < args.blocks[0] <= args.blocks[1]:
        ap.error(f"--blocks must grow from past T = {T}: got {args.blocks}")
    if min(args.steps) < 1 or min(args.batch) < 1 or args.n_per_depth < 1 or args.windows < 1:
        ap.error("--steps, --batch, --n-per-depth and --windows must be ≥ 1")
    if max(args.lengths) % args.bucket:
        ap.error(f"the longest --lengths {max(args.lengths)} must be a multiple of --bucket {args.bucket}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(args.seed)
    tok = load_tokenizer()
    L_max, s = max(args.lengths), args.factor
    base = load_model(args.base, device=args.device, max_seq_len=L_max)  # plain RoPE, every position
    base_path = Path(args.base) if args.base else data_dir() / P.BASE_PATH
    print(f"base: {base_path} ({base.num_params()['total']:,} parameters), T = {T}, YaRN s = {s}")
    splits = splits_at(tok, args.blocks[-1])
    windows = long_windows(splits, args.windows, L_max, device=args.device)
    ev = dict(lengths=args.lengths, depths=args.depths, n_per_depth=args.n_per_depth, bucket=args.bucket)
    out = Path(args.out) if args.out else data_dir() / RESULTS
    if args.seeds_only:
        result = json.loads(out.read_text())
        mine = {k: v for k, v in vars(args).items() if k not in ("out", "seeds_only")}
        if {k: result["config"].get(k, "cpu" if k == "device" else None) for k in mine} != mine:  # older files: CPU
            raise SystemExit(f"--seeds-only: {out} was made with other settings ({result['config']}); pass the same ones")
        result["seed_runs"] = [r for r in result.get("seed_runs", []) if r["seed"] not in args.seeds_only]
        result["seed_runs"] += seed_runs(args, tok, splits, windows, args.seeds_only)
        result["seed_command"] = " ".join(["python scripts/extend_context.py", *(sys.argv[1:] if argv is None else argv)])
        result["seed_wall_s"], result["seed_cpu_s"] = time.perf_counter() - t_start, time.process_time() - cpu_start
        out.write_text(json.dumps(result, indent=1))
        print(f"added seeds {args.seeds_only} to {out} in {result['seed_wall_s'] / 60:.1f} min "
              f"({result['seed_cpu_s'] / 60:.1f} CPU min)")
        return result

    models, stages = {}, []

    def record(name, model, desc, **meta):
        print(f"evaluating {name}: {desc}")
        r = evaluate_model(model, tok, windows, **ev)
        models[name] = {"desc": desc, "rope_factor": model.cfg.rope_factor, "original_seq_len": model.cfg.original_seq_len,
                        **meta, **r}
        print("  passkey " + "  ".join(f"{L}: {v['acc']:.2f}" for L, v in r["passkey"].items())
              + f"   ({r['eval_s']:.0f} s)")

    record("base_rope", base, "base weights, plain RoPE", trained_at=T, extension_steps=0)
    record(f"base_yarn_s{s:g}", with_rope(base, L_max, s), f"base weights, YaRN s = {s:g}, no training",
           trained_at=T, extension_steps=0)

    arms = [("yarn", s)] + ([] if args.no_control else [("rope", 1.0)])
    for arm, factor in arms:
        def scored(k, model, done, arm=arm, factor=factor):
            if arm == "yarn" or k == len(args.blocks):      # the control is scored after its last phase only
                label = "YaRN" if factor > 1 else "plain RoPE"
                record(f"{arm}_phase{k}", with_rope(model, L_max, factor),
                       f"{label}{f' s = {factor:g}' if factor > 1 else ''}, extended to {args.blocks[k - 1]} "
                       f"({done} steps)", trained_at=args.blocks[k - 1], extension_steps=done)
        stages += run_arm(args, tok, splits, arm, factor, args.seed, after_phase=scored)

    result = {
        "command": " ".join(["python scripts/extend_context.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "T": T, "chance": CHANCE, "base": str(base_path.relative_to(ROOT)) if base_path.is_relative_to(ROOT) else str(base_path),
        "base_sha256": sha256_file(base_path), "torch": torch.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None, "models": models, "stages": stages,
        "measured": (f"passkey: exact match of the key, {args.n_per_depth} documents at each depth {args.depths} per "
                     f"length; loss: {args.windows} validation windows of {L_max} tokens per domain, mean over the "
                     "first L positions"),
    }
    result["wall_s"] = time.perf_counter() - t_start
    result["cpu_s"] = time.process_time() - cpu_start         # CPU seconds: wall time on an otherwise idle core
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(passkey_table(result))
    print(f"wrote {out} in {result['wall_s'] / 60:.1f} min ({result['cpu_s'] / 60:.1f} CPU min)")
    return result


if __name__ == "__main__":
    main()
