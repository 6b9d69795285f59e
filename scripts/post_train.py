"""Post-train the base model (chapter 06): supervised fine-tuning → data/checkpoints/sft.pt + sft.json.

    python scripts/post_train.py sft                    # the shipped SFT model (see sft.json for its time)
    python scripts/post_train.py sft --steps 40 --out /tmp/s   # a short run through the same code path
    python scripts/post_train.py mask-ablation          # data/results/ch06_sft_mask.json (3 seeds × 2 arms)
    python scripts/post_train.py reward-model           # data/checkpoints/rm.pt + rm.json (Bradley–Terry)
    python scripts/post_train.py distill-ablation       # data/results/ch06_distill.json (3 seeds × 2 arms)

``sft``: the base checkpoint fine-tuned on chat conversations (``helpers.posttraining.sft_conversations``)
with the loss on assistant tokens only (``helpers.chat``), by ``helpers.train.train`` (AdamW, clipping at 1.0,
warm-up then cosine decay). The log holds the command, arguments, the loss curve, the validation loss on
assistant tokens, and the held-out greedy accuracy (by number of operations) and format compliance of the
base model (its own ``Q:/A:`` format) and of the SFT model (the chat template). Writing to data/checkpoints
records both files' checksums in data/SHA256SUMS.

``mask-ablation``: the same SFT with and without the loss mask, ``--seeds`` seeds each, at ``--steps`` steps;
per run the held-out accuracy, format compliance, and the probability the model gives to *starting a user
turn* right after its own ``<|end|>`` (what the unmasked model learns from multi-turn data).

``reward-model``: a Bradley–Terry reward model (``helpers.rewards.RewardModel``, initialised from the SFT
checkpoint) on preference pairs made by the SFT model itself: ``--n-problems`` fresh problems, 8 answers each
sampled at temperature 1, one verified-right answer chosen over one wrong answer per problem where both occur.
The log holds the loss curve and the pairwise accuracy on pairs made the same way from the held-out test problems.

``distill-ablation``: SFT from the base model on the programmatic teacher's worked steps vs on the answers alone, at
equal assistant tokens per step (the answer-only arm's batch is larger by the ratio of mean reply lengths), ``--seeds``
seeds each, at ``--steps`` steps; per run the held-out greedy accuracy by number of operations.

Deterministic for a given seed, device and thread count.
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
sys.path.insert(0, str(ROOT))

from helpers import posttraining as PT  # noqa: E402
from helpers.chat import SFTSampler, pad_batch, sft_example  # noqa: E402
from helpers.data import record_checksum, sha256_file  # noqa: E402
from helpers.pretraining import arithmetic_accuracy, arithmetic_test_set, load_base  # noqa: E402
from helpers.runtime import data_dir, get_device, seed_everything  # noqa: E402
from helpers.tokenizer import load_tokenizer  # noqa: E402
from helpers.train import TrainConfig, save_checkpoint, train  # noqa: E402

N_TRAIN, N_VAL = 12_000, 256


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=("sft", "mask-ablation", "reward-model", "distill-ablation"))
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (sft: 300, mask-ablation: 150)")
    ap.add_argument("--batch", type=int, default=32, help="conversations per step")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (SFT: 1e-3, reward model: 1e-4)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="mask-ablation: seeds per arm")
    ap.add_argument("--n-test", type=int, default=100, help="held-out problems per number of operations")
    ap.add_argument("--n-problems", type=int, default=2000, help="reward-model: problems to make pairs from")
    ap.add_argument("--out", default=None, help="folder for the checkpoint and its log (default data/checkpoints)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = {"sft": 300, "mask-ablation": 150, "reward-model": 150, "distill-ablation": 150}[args.stage]
    if args.lr is None:
        args.lr = 1e-4 if args.stage == "reward-model" else 1e-3
    return args


def sft_data(tok, seed: int = PT.SFT_SEED) -> dict:
    convs = PT.sft_conversations(N_TRAIN + N_VAL, seed)
    return {"train": convs[:N_TRAIN], "val": convs[N_TRAIN:]}


def val_batches(tok, convs, batch: int = 64) -> list:
    rows = [sft_example(tok, c) for c in convs]
    return [pad_batch(rows[i:i + batch], tok.eot_id) for i in range(0, len(rows), batch)]


def run_sft(tok, data, args, seed: int, mask: bool, device, show_progress: bool = True, batch: int | None = None):
    seed_everything(seed)
    model = load_base(device=device)
    sampler = SFTSampler(tok, data, batch_size=batch or args.batch, seed=seed, mask_prompt=mask, device=device)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, warmup_steps=min(args.warmup, args.steps), schedule="cosine",
                      weight_decay=0.1, eval_every=max(args.steps // 6, 1), seed=seed)
    vb = [(x.to(device), y.to(device)) for x, y in val_batches(tok, data["val"])]
    hist = train(model, sampler, cfg, val_data={"assistant tokens": vb}, show_progress=show_progress)
    return model, hist, cfg


def graded(model, tok, problems) -> dict:
    acc = PT.chat_accuracy(model, tok, problems)
    acc["user_turn_p"] = PT.user_turn_probability(model, tok, problems, acc["replies"])
    return acc


def _save(out: Path, name: str, model, step: int, log: dict, meta: dict, source: str) -> None:
    save_checkpoint(out / f"{name}.pt", model, step=step,
                    extra={"tokenizer_sha256": meta["tokenizer_sha256"], "log": f"{name}.json", "from": source})
    (out / f"{name}.json").write_text(json.dumps(log, indent=1))
    if out.resolve() == (data_dir() / "checkpoints").resolve():
        for f in (f"checkpoints/{name}.pt", f"checkpoints/{name}.json"):
            record_checksum(f)


def reward_model_stage(tok, args, meta, device, t0) -> dict:
    import copy

    from helpers.arithmetic import generate_problems
    from helpers.rewards import RewardModel, preference_pairs, score_answers, train_reward_model
    seed_everything(args.seed)
    sft = PT.load_sft(device=device)
    test = arithmetic_test_set(args.n_test)
    probs = generate_problems(args.n_problems, PT.RM_SEED, min_ops=1, max_ops=4, exclude={p.question for p in test})
    g = torch.Generator().manual_seed(args.seed)
    pairs = preference_pairs(probs, PT.chat_generate(sft, tok, probs, temperature=1.0, samples=8, generator=g),
                             seed=args.seed)
    held = preference_pairs(test, PT.chat_generate(sft, tok, test, temperature=1.0, samples=8, generator=g),
                            seed=args.seed + 1)
    rm = RewardModel(copy.deepcopy(sft)).to(device)
    losses = train_reward_model(rm, tok, pairs, steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed)
    sc = score_answers(rm, tok, [p for p, _, _ in held], [c for _, c, _ in held])
    sr = score_answers(rm, tok, [p for p, _, _ in held], [r for _, _, r in held])
    log = {**meta, "config": rm.cfg.to_dict(), "n_pairs": len(pairs), "n_problems": len(probs),
           "losses": losses, "held_out_pairs": len(held), "held_out_pairwise_accuracy": float((sc > sr).float().mean()),
           "total_wall_s": time.perf_counter() - t0}
    _save(Path(args.out) if args.out else data_dir() / "checkpoints", "rm", rm, args.steps, log, meta, "sft.pt")
    print(f"reward model: {len(pairs)} training pairs, held-out pairwise accuracy {log['held_out_pairwise_accuracy']:.3f} "
          f"on {len(held)} pairs, {log['total_wall_s'] / 60:.1f} min")
    return log


def distill_stage(tok, args, meta, device, problems, t0) -> dict:
    """Worked steps vs answers only, at equal assistant tokens per step."""
    data = {style: {"train": (c := PT.sft_conversations(N_TRAIN + N_VAL, style=style))[:N_TRAIN], "val": c[N_TRAIN:]}
            for style in ("steps", "answer")}

    def mean_reply_tokens(convs):
        rows = [sft_example(tok, m) for m in convs[:2000]]
        return sum(int((y != -1).sum()) for _, y in rows) / len(rows)
    per = {style: mean_reply_tokens(d["train"]) for style, d in data.items()}
    batches = {"steps": args.batch, "answer": round(args.batch * per["steps"] / per["answer"])}
    runs = []
    for style in ("steps", "answer"):
        for k in range(args.seeds):
            seed = args.seed + k
            model, hist, _ = run_sft(tok, data[style], args, seed, True, device, show_progress=False,
                                     batch=batches[style])
            acc = PT.chat_accuracy(model, tok, problems)
            runs.append({"style": style, "seed": seed, "batch": batches[style], "all": acc["all"],
                         "by_ops": acc["by_ops"], "format": acc["format"], "wall_s": hist.wall_time,
                         "assistant_tokens_per_step": batches[style] * per[style],
                         "samples": [acc["replies"][i] for i in (0, 150, 250, 350)]})
            print(f"{style} seed={seed} batch={batches[style]}: acc {acc['all']:.3f} {acc['by_ops']}", flush=True)
    log = {**meta, "reply_tokens": per, "batches": batches, "runs": runs, "total_wall_s": time.perf_counter() - t0}
    out = data_dir() / "results" / "ch06_distill.json"
    out.write_text(json.dumps(log, indent=1))
    print(f"wrote {out} in {log['total_wall_s'] / 60:.1f} min")
    return log


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = get_device(args.device)
    tok = load_tokenizer()
    data = sft_data(tok)
    problems = arithmetic_test_set(args.n_test)
    t0 = time.perf_counter()
    meta = {"command": "python scripts/post_train.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "args": vars(args), "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "tokenizer_sha256": sha256_file(data_dir() / "tokenizer.json"),
            "n_train_conversations": N_TRAIN, "n_val_conversations": N_VAL}
    if args.stage == "sft":
        base = load_base(device=device)
        base_acc = arithmetic_accuracy(base, tok, problems)
        model, hist, cfg = run_sft(tok, data, args, args.seed, True, device)
        acc = graded(model, tok, problems)
        log = {**meta, "config": model.cfg.to_dict(), "train_config": {k: v for k, v in vars(cfg).items()},
               "history": hist.to_dict(), "train_wall_s": hist.wall_time,
               "base": {"all": base_acc["all"], "by_ops": base_acc["by_ops"]},
               "sft": {k: acc[k] for k in ("all", "by_ops", "format", "user_turn_p")},
               "samples": [{"question": p.question, "reply": r} for p, r in zip(problems[::50], acc["replies"][::50])]}
        log["total_wall_s"] = time.perf_counter() - t0
        out = Path(args.out) if args.out else data_dir() / "checkpoints"
        _save(out, "sft", model, args.steps, log, meta, "base.pt")
        print(f"base {base_acc['all']:.3f} → SFT {acc['all']:.3f} (format {acc['format']:.2f}); wrote {out / 'sft.pt'} "
              f"in {log['total_wall_s'] / 60:.1f} min")
        return log
    if args.stage == "reward-model":
        return reward_model_stage(tok, args, meta, device, t0)
    if args.stage == "distill-ablation":
        return distill_stage(tok, args, meta, device, problems, t0)
    runs = []
    for mask in (True, False):
        for k in range(args.seeds):
            seed = args.seed + k
            model, hist, _ = run_sft(tok, data, args, seed, mask, device, show_progress=False)
            acc = graded(model, tok, problems)
            runs.append({"mask": mask, "seed": seed, "val_loss_assistant": hist.val_loss[-1],
                         **{k2: acc[k2] for k2 in ("all", "by_ops", "format", "user_turn_p")},
                         "wall_s": hist.wall_time})
            print(f"mask={mask} seed={seed}: acc {acc['all']:.3f}, format {acc['format']:.2f}, "
                  f"P(user turn) {acc['user_turn_p']:.3f}, val loss {hist.val_loss[-1]:.3f}", flush=True)
    log = {**meta, "runs": runs, "total_wall_s": time.perf_counter() - t0}
    out = data_dir() / "results" / "ch06_sft_mask.json"
    out.write_text(json.dumps(log, indent=1))
    print(f"wrote {out} in {log['total_wall_s'] / 60:.1f} min")
    return log


if __name__ == "__main__":
    main()
