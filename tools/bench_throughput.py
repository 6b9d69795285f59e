"""Training throughput of the course model on this machine, its model-FLOPs utilisation (MFU), and the
speed-up of the fast path over the written-out reference path.

    python tools/bench_throughput.py                  # the course model (ModelConfig.cpu()), batch 16 × 128
    python tools/bench_throughput.py --preset gpu --batch 32 --seq 512 --device cuda
    python tools/bench_throughput.py --no-reference   # only the fast path
    python tools/bench_throughput.py --compile        # also time torch.compile(model) (cold compile reported)
    python tools/bench_throughput.py --profile 3      # then torch.profiler over 3 fast-path steps: the top operators

What it measures:
1. peak: FLOP/s of a large matrix multiply (n × n @ n × n = 2n³ FLOPs), best of several runs, in the dtype
   training actually computes in: fp32, or bf16 when ``helpers.runtime.training_autocast`` turns bf16
   autocast on (always on CUDA; on a CPU only if its probe measured bf16 matmuls faster than fp32);
2. training: tokens/s of full training steps (forward under that autocast, backward, gradient clipping,
   AdamW, the MoE bias update) on random tokens, after warm-up steps. The fast path (default) and the
   reference path (``use_fast_path(False)``) train the same model in alternating rounds of ``--steps``
   steps, and each path's best round counts, so a busy shared machine slows both alike;
MFU = 6 · N_active · tokens/s / peak, the usual estimate (2 FLOPs per active weight per token forward,
4 backward). N_active counts the weights a token multiplies by: active parameters without the
embedding table (a lookup, not a matmul); attention's own T²-terms and the MTP module's second pass
through the output head are left out, as is customary (so the true utilisation is a little higher);
3. the work itself: the FLOPs of one forward + backward, counted operator by operator
   (``torch.utils.flop_counter``), and the time that work takes at the measured peak. Each path's "step at
   peak / step" is the share of its step spent on useful matmul work at full speed; the reference step divided
   by the time at peak is the largest speed-up any path doing the same arithmetic could reach.
Runs in about a minute on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.model import ModelConfig, Transformer  # noqa: E402
from helpers.runtime import (autocast_dtype, get_device, probe_bf16, seed_everything,  # noqa: E402
                             training_autocast, use_fast_path)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, n: int, dtype=torch.float32, repeats: int = 5) -> float:
    """Best FLOP/s of an n×n matmul in ``dtype``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def step_flops(model, x, y) -> int:
    """FLOPs of one forward + backward pass, counted operator by operator (``torch.utils.flop_counter``) on the
    reference path, whose attention is written out in matmuls the counter sees (SDPA kernels may be missed)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with use_fast_path(False), counter:
        model(x, targets=y)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def make_step(model, opt, x, y, device):
    """One full training step (forward in the training autocast, backward, clip, AdamW, bias update)."""
    def step():
        with training_autocast(device):
            out = model(x, targets=y)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.after_step()
    return step


def train_throughput(cfg: ModelConfig, batch: int, seq: int, steps: int, warmup: int, device, rounds: int = 3,
                     paths=(True, False), compile_model: bool = False, profile: int = 0,
                     deterministic: bool = True) -> dict:
    """tokens/s of each path in ``paths`` (True = fast, False = reference), best of ``rounds`` interleaved rounds.
    ``profile`` > 0: then that many fast-path steps under ``torch.profiler``; "profile" holds its operator table
    (sorted by the device's own time on CUDA, by CPU time otherwise). ``deterministic``: ``seed_everything``'s
    request for deterministic kernels (the course default; on CUDA some deterministic kernels are slower)."""
    seed_everything(0, deterministic=deterministic)
    model = Transformer(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)
    y = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)
    runs = {p: make_step(model, opt, x, y, device) for p in paths}
    extra = {}
    if compile_model:
        compiled = torch.compile(model)
        t = time.perf_counter()
        try:
            with use_fast_path(True):
                make_step(compiled, opt, x, y, device)()
            sync(device)
            extra["compile_s"] = time.perf_counter() - t
            runs["compiled"] = make_step(compiled, opt, x, y, device)
        except Exception as e:  # noqa: BLE001 - report and carry on without it
            extra["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    for key, step in runs.items():
        with use_fast_path(key is not False):
            for _ in range(warmup):
                step()
    best = {key: float("inf") for key in runs}
    for _ in range(rounds):
        for key, step in runs.items():
            with use_fast_path(key is not False):
                sync(device)
                t = time.perf_counter()
                for _ in range(steps):
                    step()
                sync(device)
                best[key] = min(best[key], (time.perf_counter() - t) / steps)
    if profile > 0:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with use_fast_path(True), torch_profile(activities=acts) as prof:
            for _ in range(profile):
                runs[True]()
            sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        extra["profile"] = prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=48)
    counts = model.num_params()
    extra["step_flops"] = step_flops(model, x, y)
    return {"step_s": best, "tokens_per_s": {k: batch * seq / v for k, v in best.items()}, "counts": counts,
            "n_active_matmul": counts["active"] - counts["embedding"], **extra}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=["cpu", "gpu", "dense_tiny"], default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per path (best counts)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--device", default=None)
    p.add_argument("--no-reference", action="store_true", help="time the fast path only")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model) on the fast path")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="then profile this many fast-path steps (torch.profiler) and print the top operators")
    p.add_argument("--no-deterministic", action="store_true",
                   help="do not ask torch for deterministic kernels (the course asks; on CUDA some are slower)")
    a = p.parse_args(argv)
    device = get_device(a.device)
    cfg = getattr(ModelConfig, a.preset)()
    if a.seq > cfg.max_seq_len:
        p.error(f"--seq {a.seq} exceeds the preset's max_seq_len {cfg.max_seq_len}")
    dtype = autocast_dtype(device) or torch.float32
    probe = probe_bf16(device) if device.type == "cpu" else None
    peak = matmul_peak(device, a.matmul_n, dtype)
    paths = (True,) if a.no_reference else (True, False)
    if a.profile < 0:
        p.error(f"--profile must be ≥ 0 steps, got {a.profile}")
    r = train_throughput(cfg, a.batch, a.seq, a.steps, a.warmup, device, a.rounds, paths, a.compile, a.profile,
                         not a.no_deterministic)
    names = {True: "fast path", False: "reference path", "compiled": "fast path + torch.compile"}
    tps = r["tokens_per_s"]
    rows = [
        ("device", f"{device} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)),
        ("model", f"ModelConfig.{a.preset}(): {r['counts']['total']:,} params, {r['counts']['active']:,} active"),
        ("N_active (matmul weights)", f"{r['n_active_matmul']:,}"),
        ("batch × seq", f"{a.batch} × {a.seq} = {a.batch * a.seq:,} tokens/step"),
        ("deterministic kernels requested", "no" if a.no_deterministic else "yes"),
        ("compute dtype", f"{str(dtype).replace('torch.', '')}" + (
            f" (bf16/fp32 matmul time {probe['ratio']:.2f}× in the probe)" if probe else " (autocast)")),
        (f"matmul peak ({str(dtype).replace('torch.', '')} {a.matmul_n}³)", f"{peak / 1e9:.1f} GFLOP/s"),
    ]
    for key, v in tps.items():
        achieved = 6 * r["n_active_matmul"] * v
        rows.append((f"{names[key]}: step time", f"{r['step_s'][key] * 1e3:.1f} ms"))
        rows.append((f"{names[key]}: tokens/s", f"{v:,.0f}  (MFU {achieved / peak:.1%})"))
    at_peak = r["step_flops"] / peak
    rows.append(("work per step (counted, fwd + bwd)", f"{r['step_flops'] / 1e9:.2f} GFLOP = {at_peak * 1e3:.1f} ms "
                                                        "at the matmul peak"))
    for key in tps:
        rows.append((f"{names[key]}: step at peak / step", f"{at_peak / r['step_s'][key]:.1%}"))
    if False in tps:
        rows.append(("speed-up fast / reference", f"{tps[True] / tps[False]:.2f}×"))
        rows.append(("ceiling: reference step / step at peak", f"{r['step_s'][False] / at_peak:.2f}× (no path can "
                                                                 "beat it without doing less work)"))
    if "compile_s" in r:
        rows.append(("torch.compile: first step (cold compile)", f"{r['compile_s']:.1f} s"))
    if "compile_error" in r:
        rows.append(("torch.compile", f"failed, not used: {r['compile_error']}"))
    w = max(len(k) for k, _ in rows)
    print(f"| {'quantity'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    if "profile" in r:
        print(f"\ntorch.profiler, {a.profile} fast-path step(s):\n{r['profile']}")
    fast = tps[True]
    return {**r, "tokens_per_s": fast, "reference_tokens_per_s": tps.get(False), "peak_flops": peak,
            "mfu": 6 * r["n_active_matmul"] * fast / peak, "dtype": str(dtype)}


if __name__ == "__main__":
    main()
