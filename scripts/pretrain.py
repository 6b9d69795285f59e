"""Pre-train the course's base model (chapter 04) and write data/checkpoints/base.pt + base.json.

    python scripts/pretrain.py                          # the shipped base model (see base.json for its time)
    python scripts/pretrain.py --steps 60 --out /tmp/b  # a short run through the same code path
    python scripts/pretrain.py --resume                 # continue an interrupted run from its last save
    torchrun --nproc_per_node 2 scripts/pretrain.py ... # data parallel (DDP; gloo on CPU, NCCL on GPUs)

What it does (every piece lives in helpers, so the notebooks use the same code):
1. the mixture of ``helpers.pretraining`` (Shakespeare, code chunks with FIM at rate 0.1, shipped + fresh
   arithmetic, passkey rows), drawn by a ``MixtureSampler`` with ``PRETRAIN_WEIGHTS``;
2. ``helpers.train.train`` with the report's optimizer settings (AdamW β = (0.9, 0.95), weight decay 0.1,
   clipping at 1.0) and the report's schedule shape (warm-up, constant, late cosine decay to lr/10: "wsd");
3. a resumable save every ``--save-every`` steps (weights, optimizer, sampler state, history), written
   atomically; at the end the base weights + config (``base.pt``, loadable with ``weights_only=True``) and the
   log (``base.json``: command, config, curves, per-domain train/val losses and bits per byte beside the
   bigram baseline, arithmetic accuracy by number of operations, passkey accuracy, samples, time, tokens/s);
   when writing to data/checkpoints it records both files' checksums in data/SHA256SUMS.

Deterministic for a given seed, device and thread count. Under torchrun every process draws the same
global batch from the same sampler and keeps its own rows (rank r of W takes rows r·B/W … (r+1)·B/W − 1),
DDP averages gradients, and the MoE loads are summed over processes before the bias update — so W processes
follow the single-process run up to floating-point summation order (tests/test_pretrain.py checks it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import pretraining as P  # noqa: E402
from helpers.batching import MixtureSampler, eval_batches  # noqa: E402
from helpers.data import record_checksum, sha256_file  # noqa: E402
from helpers.model import Transformer  # noqa: E402
from helpers.objective import BigramModel  # noqa: E402
from helpers.optim import AdamW, param_groups  # noqa: E402
from helpers.runtime import data_dir, get_device, seed_everything  # noqa: E402
from helpers.tokenizer import load_tokenizer  # noqa: E402
from helpers.train import TrainConfig, load_checkpoint, save_checkpoint, train  # noqa: E402

TINY = dict(dim=32, n_layers=2, n_heads=2, inter_dim=64, moe_inter_dim=16, q_lora_rank=16, kv_lora_rank=16,
            qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=4, n_activated_experts=2)


_SPLITS: dict = {}


class _Interrupted(Exception):
    """--stop-after: end the run early, as a crash would, after saving the resumable checkpoint."""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16, help="global batch (rows of --block tokens)")
    ap.add_argument("--block", type=int, default=P.BLOCK_SIZE)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default min(100, steps // 10))")
    ap.add_argument("--decay-frac", type=float, default=0.3, help="share of steps in the final cosine decay")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--out", default=None, help="folder for base.pt/base.json (default data/checkpoints)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/base.resume.pt")
    ap.add_argument("--device", default=None)
    ap.add_argument("--tiny", action="store_true", help="a tiny model and short evaluations (tests)")
    ap.add_argument("--no-final-eval", action="store_true", help="skip the graded tests (tests)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="save a resumable checkpoint after this step and stop, as an interruption would (tests)")
    ap.add_argument("--n-fresh-arithmetic", type=int, default=P.N_FRESH_ARITHMETIC)
    args = ap.parse_args(argv)
    for name in ("steps", "batch", "block", "eval_batches", "save_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    if args.warmup is None:
        args.warmup = min(100, args.steps // 10)
    if not 0 <= args.warmup <= args.steps:
        ap.error(f"--warmup must be between 0 and --steps = {args.steps}, got {args.warmup}")
    return args


def setup_distributed(device):
    """(rank, world) — initialises torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), world


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    device = get_device(args.device)
    rank, world = setup_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} is not divisible by the {world} processes; choose a multiple of {world}")
    out = Path(args.out) if args.out else data_dir() / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    resume_path = out / "base.resume.pt"
    if args.resume and not resume_path.is_file():
        raise SystemExit(f"--resume: no {resume_path} to continue from; run without --resume to start")
    t_start = time.perf_counter()

    seed_everything(args.seed)
    tok = load_tokenizer()
    key = (args.block, args.n_fresh_arithmetic)
    if key not in _SPLITS:                         # built once per process (tests call main() several times)
        _SPLITS[key] = P.pretraining_splits(tok, block_size=args.block, n_fresh_arithmetic=args.n_fresh_arithmetic)
    splits = _SPLITS[key]
    cfg = P.base_config(max_seq_len=args.block, **(TINY if args.tiny else {}))
    model = Transformer(cfg).to(device)
    sampler = MixtureSampler(splits, P.PRETRAIN_WEIGHTS, args.batch, args.block, seed=args.seed, device=device,
                             aligned=("passkey",))
    per = args.batch // world

    def get_batch(split="train"):
        x, y = sampler(split)
        return x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]

    val = {d: eval_batches(splits, d, args.eval_batches, 16, args.block, device=device) for d in splits}
    tcfg = TrainConfig(steps=args.steps, lr=args.lr, warmup_steps=args.warmup, schedule="wsd",
                       decay_frac=args.decay_frac, eval_every=args.eval_every, seed=args.seed)
    optimizer = AdamW(param_groups(model, tcfg.weight_decay), lr=tcfg.lr, betas=tcfg.betas, eps=tcfg.eps,
                      weight_decay=tcfg.weight_decay)
    start, past = 0, None
    if args.resume:
        info = load_checkpoint(resume_path, model, optimizer, map_location=device)
        start, past = info["step"], info["extra"]["history"]
        sampler.load_state_dict(info["extra"]["sampler"])
        if info["extra"]["args"]["steps"] != args.steps:
            raise SystemExit(f"--resume: the saved run planned {info['extra']['args']['steps']} steps, this one "
                             f"{args.steps}; resume with the same --steps (the schedule depends on it)")
        if rank == 0:
            print(f"resuming at step {start} of {args.steps}")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)

    def merged(hist) -> dict:
        h = hist.to_dict()
        if past:
            for k, v in h.items():
                if isinstance(v, list):
                    h[k] = past[k] + v
                elif isinstance(v, dict):
                    h[k] = {n: past[k].get(n, []) + vv for n, vv in v.items()}
            h["wall_time"] += past["wall_time"]
        return h

    def callback(step, hist):
        stop = args.stop_after is not None and step == args.stop_after
        if rank == 0 and (step % args.save_every == 0 or stop) and step < args.steps:
            save_checkpoint(resume_path, model, optimizer, step,
                            extra={"sampler": sampler.state_dict(), "history": merged(hist), "args": vars(args)})
        if stop:
            raise _Interrupted(step)

    try:
        hist = train(net, get_batch, tcfg, optimizer=optimizer, val_data=val, start_step=start, callback=callback,
                     show_progress=rank == 0)
    except _Interrupted as e:
        if world > 1:
            torch.distributed.destroy_process_group()
        print(f"stopped after step {e.args[0]} as asked; continue with --resume")
        return None
    if world > 1:
        torch.distributed.barrier()
    h = merged(hist)
    if rank != 0:
        torch.distributed.destroy_process_group()
        return None

    log = {"command": "python scripts/pretrain.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "config": cfg.to_dict(), "args": vars(args), "world_size": world, "device": str(device),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
           "tokenizer_sha256": sha256_file(data_dir() / "tokenizer.json"), "weights": P.PRETRAIN_WEIGHTS,
           "fim_rate": P.FIM_RATE, "params": model.num_params(),
           "train_tokens": {d: len(s["train"]) for d, s in splits.items()},
           "history": h, "train_wall_s": h["wall_time"],
           "tokens_per_s": args.steps * args.batch * args.block / max(h["wall_time"], 1e-9)}
    if not args.no_final_eval:
        log["final"] = final_eval(model, tok, splits, args, device)
    log["total_wall_s"] = time.perf_counter() - t_start
    save_checkpoint(out / "base.pt", model, step=args.steps,
                    extra={"tokenizer_sha256": log["tokenizer_sha256"], "log": "base.json"})
    (out / "base.json").write_text(json.dumps(log, indent=1))
    if out.resolve() == (data_dir() / "checkpoints").resolve():
        for name in ("checkpoints/base.pt", "checkpoints/base.json"):
            record_checksum(name)
    resume_path.unlink(missing_ok=True)
    print(f"wrote {out / 'base.pt'} and base.json in {log['total_wall_s'] / 60:.1f} min "
          f"({log['tokens_per_s']:,.0f} tokens/s)")
    if world > 1:
        torch.distributed.destroy_process_group()
    return log


def final_eval(model, tok, splits, args, device) -> dict:
    """The graded tests of the base model, each beside its baseline."""
    model.eval()
    nb = 2 if args.tiny else 8
    val = P.domain_losses(model, splits, nb, 16, args.block)
    trn = P.domain_losses(model, splits, nb, 16, args.block, split="train")
    bigram = {}
    for d in splits:
        bg = BigramModel(model.cfg.vocab_size).fit(splits[d]["train"])
        batches = eval_batches(splits, d, nb, 16, args.block)    # the windows the model was scored on
        xs, ys = (torch.cat([b[i].flatten() for b in batches]) for i in (0, 1))
        row = bg.counts.sum(-1, dtype=torch.float64)
        lp = (bg.counts[xs, ys].double() + bg.k).log() - (row[xs] + bg.k * bg.V).log()
        bigram[d] = float(-lp.mean())
    bpb = {d: val[d] / math.log(2) / P.bytes_per_token(d) for d in ("shakespeare", "code", "arithmetic")}
    problems = P.arithmetic_test_set(10 if args.tiny else 100)
    arith = P.arithmetic_accuracy(model, tok, problems)
    passkey = {n: P.passkey_accuracy(model, tok, n, n=8 if args.tiny else 64) for n in (128, args.block)}
    g = torch.Generator().manual_seed(0)
    samples = {}
    for name, prompt in (("shakespeare", "ROMEO:\n"), ("code", "def "), ("arithmetic", problems[-1].prompt())):
        x = torch.tensor([tok.encode(prompt)], device=device)
        samples[name] = tok.decode(model.generate(x, 60, temperature=0.8, top_k=50, generator=g)[0].tolist())
    return {"val_loss": val, "train_loss": trn, "bigram_val_loss": bigram, "val_bpb": bpb,
            "arithmetic": {k: v for k, v in arith.items() if k != "completions"},
            "arithmetic_examples": [(p.prompt(), c) for p, c in zip(problems[::40], arith["completions"][::40])],
            "passkey": passkey, "samples": samples}


if __name__ == "__main__":
    main()
