"""Training throughput of the course model on this machine, and its model-FLOPs utilisation (MFU).

    python tools/bench_throughput.py                  # the course model (ModelConfig.cpu()), batch 16 × 128
    python tools/bench_throughput.py --preset gpu --batch 32 --seq 512 --device cuda

Two measurements, then a small table:
1. peak: FLOP/s of a large fp32 matrix multiply (n × n @ n × n = 2n³ FLOPs), best of several runs —
   what this machine can do at best for the kind of work training is made of;
2. training: tokens/s of full training steps (forward, backward, AdamW, bias update) of the model on
   random tokens, after warm-up steps.
MFU = 6 · N_active · tokens/s / peak, the usual estimate (2 FLOPs per active weight per token forward,
4 backward). N_active counts the weights a token multiplies by: active parameters without the
embedding table (a lookup, not a matmul); attention's own T²-terms are left out, as is customary.
Runs in well under a minute on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.model import ModelConfig, Transformer  # noqa: E402
from helpers.runtime import get_device, seed_everything  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an fp32 n×n matmul."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def train_throughput(cfg: ModelConfig, batch: int, seq: int, steps: int, warmup: int, device) -> dict:
    seed_everything(0)
    model = Transformer(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)
    y = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)

    def step():
        out = model(x, targets=y)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.after_step()

    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = time.perf_counter() - t
    counts = model.num_params()
    return {"tokens_per_s": steps * batch * seq / dt, "step_s": dt / steps, "counts": counts,
            "n_active_matmul": counts["active"] - counts["embedding"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=["cpu", "gpu", "dense_tiny"], default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--device", default=None)
    a = p.parse_args(argv)
    device = get_device(a.device)
    cfg = getattr(ModelConfig, a.preset)()
    if a.seq > cfg.max_seq_len:
        p.error(f"--seq {a.seq} exceeds the preset's max_seq_len {cfg.max_seq_len}")
    peak = matmul_peak(device, a.matmul_n)
    r = train_throughput(cfg, a.batch, a.seq, a.steps, a.warmup, device)
    achieved = 6 * r["n_active_matmul"] * r["tokens_per_s"]
    rows = [
        ("device", f"{device} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)),
        ("model", f"ModelConfig.{a.preset}(): {r['counts']['total']:,} params, {r['counts']['active']:,} active"),
        ("N_active (matmul weights)", f"{r['n_active_matmul']:,}"),
        ("batch × seq", f"{a.batch} × {a.seq} = {a.batch * a.seq:,} tokens/step"),
        ("step time", f"{r['step_s'] * 1e3:.1f} ms"),
        ("training tokens/s", f"{r['tokens_per_s']:,.0f}"),
        ("model FLOP/s (6·N·tok/s)", f"{achieved / 1e9:.2f} GFLOP/s"),
        (f"matmul peak (fp32 {a.matmul_n}³)", f"{peak / 1e9:.1f} GFLOP/s"),
        ("MFU", f"{achieved / peak:.1%}"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"| {'quantity'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    return {"tokens_per_s": r["tokens_per_s"], "peak_flops": peak, "mfu": achieved / peak, **r}


if __name__ == "__main__":
    main()
