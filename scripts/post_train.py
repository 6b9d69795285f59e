"""Post-train the base model (chapter 06): supervised fine-tuning → data/checkpoints/sft.pt + sft.json.

    python scripts/post_train.py sft                    # the shipped SFT model (see sft.json for its time)
    python scripts/post_train.py sft --steps 40 --out /tmp/s   # a short run through the same code path
    python scripts/post_train.py mask-ablation          # data/results/ch06_sft_mask.json (3 seeds × 2 arms)
    python scripts/post_train.py reward-model           # data/checkpoints/rm.pt + rm.json (Bradley–Terry)
    python scripts/post_train.py distill-ablation       # data/results/ch06_distill.json (3 seeds × 2 arms)
    python scripts/post_train.py pair-judge             # data/results/ch07_judge_position.json + pair_judge.pt

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
import copy
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import posttraining as PT  # noqa: E402
from helpers.arithmetic import check_answer, generate_problems  # noqa: E402
from helpers.optim import AdamW, lr_at, param_groups  # noqa: E402
from helpers.chat import SFTSampler, pad_batch, sft_example  # noqa: E402
from helpers.data import record_checksum, sha256_file  # noqa: E402
from helpers.pretraining import arithmetic_accuracy, arithmetic_test_set, load_base  # noqa: E402
from helpers.runtime import data_dir, get_device, seed_everything  # noqa: E402
from helpers.tokenizer import load_tokenizer  # noqa: E402
from helpers.train import TrainConfig, save_checkpoint, train  # noqa: E402

N_TRAIN, N_VAL = 12_000, 256


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=("sft", "mask-ablation", "reward-model", "distill-ablation", "grpo",
                                      "rejection-sampling", "judge", "pair-judge"))
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps (sft: 300, mask-ablation, reward-model, distill-ablation, judge, pair-judge: 150, "
                         "grpo: 60; rejection-sampling: see --round-steps)")
    ap.add_argument("--style", choices=("steps", "mixed"), default="steps",
                    help="sft: the replies, worked steps (→ sft.pt) or mixed with bare answers (→ sft_mix.pt)")
    ap.add_argument("--init", choices=("sft_mix", "sft"), default="sft_mix",
                    help="grpo, rejection-sampling: the checkpoint to start from")
    ap.add_argument("--prompts", type=int, default=16, help="grpo: problems per step (P)")
    ap.add_argument("--group", type=int, default=8, help="grpo: replies sampled per problem (G)")
    ap.add_argument("--beta", type=float, default=0.04, help="grpo: weight of the KL penalty to the start model")
    ap.add_argument("--updates", type=int, default=2, help="grpo: optimizer steps per sampled batch (μ)")
    ap.add_argument("--eval-every", type=int, default=10, help="grpo: steps between held-out evaluations")
    ap.add_argument("--rounds", type=int, default=3, help="rejection-sampling: rounds of sample → filter → fine-tune")
    ap.add_argument("--round-problems", type=int, default=640, help="rejection-sampling: fresh problems per round")
    ap.add_argument("--k", type=int, default=4, help="rejection-sampling, judge: replies sampled per problem")
    ap.add_argument("--round-steps", type=int, default=20,
                    help="rejection-sampling, judge: SFT steps on the kept replies per round")
    ap.add_argument("--batch", type=int, default=32, help="conversations per step")
    ap.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (SFT: 1e-3, reward model and rejection sampling: 1e-4, GRPO: 2e-5)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="warm-up steps (20; grpo: 10; rejection-sampling: --round-steps, a linear ramp per round)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="mask-ablation: seeds per arm")
    ap.add_argument("--n-test", type=int, default=100, help="held-out problems per number of operations")
    ap.add_argument("--n-problems", type=int, default=2000,
                    help="reward-model: problems to make pairs from; judge, pair-judge: problems to make graded candidates or pairs from")
    ap.add_argument("--out", default=None, help="folder for the checkpoint and its log (default data/checkpoints)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = {"sft": 300, "mask-ablation": 150, "reward-model": 150, "distill-ablation": 150,
                      "grpo": 60, "rejection-sampling": 0, "judge": 150, "pair-judge": 150}[args.stage]
    if args.warmup is None:           # rejection rounds: each round's fresh AdamW ramps up over all its steps
        args.warmup = {"grpo": 10, "rejection-sampling": args.round_steps}.get(args.stage, 20)
    if args.lr is None:
        args.lr = {"reward-model": 1e-4, "grpo": 2e-5, "rejection-sampling": 1e-4}.get(args.stage, 1e-3)
    for name in ("batch", "prompts", "group", "updates", "eval_every", "seeds", "rounds", "round_problems", "k",
                 "round_steps") + (("steps",) if args.stage != "rejection-sampling" else ()):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    if args.group < 2:
        ap.error(f"--group must be ≥ 2 (a group is its own baseline), got {args.group}")
    return args


def sft_data(tok, seed: int = PT.SFT_SEED, style: str = "steps") -> dict:
    convs = PT.sft_conversations(N_TRAIN + N_VAL, seed, style=style)
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


def evaluate_policy(model, tok, test, generator) -> dict:
    """Held-out greedy accuracy (by operations), the share of bare answers, mean reply tokens, and the accuracy of
    one sample at temperature 1 (2 per problem)."""
    acc = PT.chat_accuracy(model, tok, test)
    sampled = PT.chat_generate(model, tok, test, temperature=1.0, samples=2, generator=generator)
    return {"all": acc["all"], "by_ops": acc["by_ops"], "format": acc["format"],
            "answer_only": PT.bare_share(acc["replies"]),
            "reply_tokens": sum(len(tok.encode(r)) for r in acc["replies"]) / len(test),
            "sampled": sum(check_answer(p, r) for p, rs in zip(test, sampled) for r in rs) / (2 * len(test))}


def grpo_run(tok, args, device, seed: int, pool, test, show_progress: bool = True):
    """GRPO from ``args.init`` with one seed: returns (model, per-step stats, evaluations)."""
    seed_everything(seed)
    model = PT.load_chat_model(f"checkpoints/{args.init}.pt", device)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = AdamW(param_groups(model, 0.0), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng, gen = random.Random(seed), torch.Generator(device=device).manual_seed(seed)
    eval_gen = torch.Generator(device=device).manual_seed(10_000 + seed)
    steps, evals = [], [{"step": 0, **evaluate_policy(model, tok, test, eval_gen)}]
    for step in tqdm(range(args.steps), desc=f"GRPO from {args.init}, seed {seed}", disable=not show_progress):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr=args.lr, steps=args.steps, warmup_steps=min(args.warmup, args.steps),
                            schedule="constant")
        st = PT.grpo_step(model, ref, opt, tok, rng.sample(pool, args.prompts), args.group, beta=args.beta,
                          updates=args.updates, generator=gen)
        steps.append({"step": step + 1, **st})
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            evals.append({"step": step + 1, **evaluate_policy(model, tok, test, eval_gen)})
            if not show_progress:
                e = evals[-1]
                print(f"  {args.init} seed={seed} step {step + 1}: greedy {e['all']:.3f}, sampled {e['sampled']:.3f}, "
                      f"bare answers {e['answer_only']:.2f}", flush=True)
    return model, steps, evals


def grpo_stage(tok, args, meta, device, t0) -> dict:
    test = arithmetic_test_set(args.n_test)
    pool = generate_problems(30_000, PT.GRPO_SEED, min_ops=1, max_ops=4, exclude={p.question for p in test})
    runs = []
    for k in range(args.seeds):
        seed = args.seed + k
        model, steps, evals = grpo_run(tok, args, device, seed, pool, test, show_progress=args.seeds == 1)
        runs.append({"seed": seed, "steps": steps, "evals": evals, "wall_s": time.perf_counter() - t0})
        e0, e1 = evals[0], evals[-1]
        print(f"{args.init} seed={seed}: greedy {e0['all']:.3f} → {e1['all']:.3f}, sampled {e0['sampled']:.3f} → "
              f"{e1['sampled']:.3f}, bare answers {e0['answer_only']:.2f} → {e1['answer_only']:.2f}", flush=True)
        if k == 0 and args.init == "sft_mix":
            first = (model, runs[0])
    log = {**meta, "init": args.init, "n_prompts_pool": len(pool), "runs": runs,
           "total_wall_s": time.perf_counter() - t0}
    out = Path(args.out) if args.out else data_dir() / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ch06_grpo_{args.init}.json").write_text(json.dumps(log, indent=1))
    if args.init == "sft_mix":
        model, run = first
        ck = Path(args.out) if args.out else data_dir() / "checkpoints"
        _save(ck, "rl", model, args.steps, {**meta, "config": model.cfg.to_dict(), "from": "sft_mix.pt", **run},
              meta, "sft_mix.pt")
    print(f"wrote {out / f'ch06_grpo_{args.init}.json'} in {log['total_wall_s'] / 60:.1f} min")
    return log


def rejection_run(tok, args, device, seed: int, accept, rounds_problems, test, keep=None, label: str = "") -> list[dict]:
    """Rounds of: sample ``args.k`` replies per fresh problem, keep one (verified or not), fine-tune on the kept
    conversations (masked SFT with a fresh AdamW per round, lr ramped linearly over ``args.warmup`` steps, by default
    the whole round, then constant); the held-out greedy accuracy after every round.
    ``accept``: the filter of ``helpers.posttraining.rejection_sample``.
    ``keep``: per round, how many of the kept conversations to train on (the unverified arm matches the verified
    arm's count)."""
    seed_everything(seed)
    model = PT.load_chat_model(f"checkpoints/{args.init}.pt", device)
    gen = torch.Generator(device=device).manual_seed(seed)
    acc = PT.chat_accuracy(model, tok, test)
    rounds = [{"round": 0, "all": acc["all"], "by_ops": acc["by_ops"],
               "answer_only": PT.bare_share(acc["replies"])}]
    for k, problems in enumerate(rounds_problems, 1):
        t = time.perf_counter()
        convs, stats = PT.rejection_sample(model, tok, problems, args.k, accept=accept, generator=gen,
                                           max_keep=None if keep is None else keep[k - 1])
        if convs:                                        # a round that kept nothing leaves the model as it was
            sampler = SFTSampler(tok, {"train": convs}, batch_size=args.batch, seed=seed + 100 * k, device=device)
            cfg = TrainConfig(steps=args.round_steps, lr=args.lr, warmup_steps=min(args.warmup, args.round_steps),
                              schedule="constant", weight_decay=0.0, eval_every=0, seed=seed)
            train(model, sampler, cfg, val_data=[sampler("train")], show_progress=False)
        model.eval()
        acc = PT.chat_accuracy(model, tok, test)
        rounds.append({"round": k, **stats, "trained_on": len(convs), "all": acc["all"], "by_ops": acc["by_ops"],
                       "answer_only": PT.bare_share(acc["replies"]),
                       "wall_s": time.perf_counter() - t})
        print(f"  {label or accept} seed={seed} round {k}: kept {len(convs)} "
              f"(right {stats['kept_right']:.2f}, bare {stats['kept_bare']:.2f}) → greedy {acc['all']:.3f}, "
              f"bare answers {rounds[-1]['answer_only']:.2f}", flush=True)
    return rounds


def rejection_rounds(args, test) -> list[list]:
    """The fresh problems of each rejection-sampling round (none from the held-out test)."""
    pool = generate_problems(args.rounds * args.round_problems, PT.RS_SEED, min_ops=1, max_ops=4,
                             exclude={p.question for p in test})
    return [pool[i * args.round_problems:(i + 1) * args.round_problems] for i in range(args.rounds)]


def rejection_stage(tok, args, meta, device, t0) -> dict:
    test = arithmetic_test_set(args.n_test)
    rounds_problems = rejection_rounds(args, test)
    runs = []
    for k in range(args.seeds):
        seed = args.seed + k
        verified = rejection_run(tok, args, device, seed, "verifier", rounds_problems, test)
        unverified = rejection_run(tok, args, device, seed, "all", rounds_problems, test,
                                   keep=[r["trained_on"] for r in verified[1:]])     # as many examples per round
        runs += [{"seed": seed, "verify": True, "rounds": verified}, {"seed": seed, "verify": False, "rounds": unverified}]
    log = {**meta, "init": args.init, "runs": runs, "total_wall_s": time.perf_counter() - t0}
    out = Path(args.out) if args.out else data_dir() / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ch06_rejection.json").write_text(json.dumps(log, indent=1))
    print(f"wrote {out / 'ch06_rejection.json'} in {log['total_wall_s'] / 60:.1f} min")
    return log


def judge_candidates(tok, problems, device, seed: int) -> tuple[list, list[str], list[str]]:
    """One reply at temperature 1 from sft_mix and one from sft per problem: (problems, candidates, source)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    ps, cs, src = [], [], []
    for name in ("sft_mix", "sft"):
        model = PT.load_chat_model(f"checkpoints/{name}.pt", device)
        cs += [r[0] for r in PT.chat_generate(model, tok, problems, temperature=1.0, generator=gen)]
        ps += list(problems)
        src += [name] * len(problems)
    return ps, cs, src


def _split_judge_data(convs: list, seed: int) -> dict:
    """A seeded train / validation split of judging conversations (the validation part: min(N_VAL, 10%))."""
    order = random.Random(seed).sample(range(len(convs)), len(convs))
    n_val = min(N_VAL, max(1, len(convs) // 10))
    return {"train": [convs[i] for i in order[n_val:]], "val": [convs[i] for i in order[:n_val]]}


def _train_judge(tok, data: dict, args, seed: int, device):
    """A judge fine-tuned from the SFT checkpoint on ``data``'s judging conversations (SFT recipe, ``args.steps``)."""
    seed_everything(seed)
    judge = PT.load_sft(device)
    sampler = SFTSampler(tok, data, batch_size=args.batch, seed=seed, device=device)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, warmup_steps=min(args.warmup, args.steps),
                      schedule="cosine", weight_decay=0.1, eval_every=max(args.steps // 5, 1), seed=seed)
    vb = [(x.to(device), y.to(device)) for x, y in val_batches(tok, data["val"])]
    hist = train(judge, sampler, cfg, val_data={"judge replies": vb}, show_progress=False)
    judge.eval()
    return judge, hist


def judge_stage(tok, args, meta, device, t0) -> dict:
    """Judges fine-tuned from the SFT model (with a rationale, or the verdict alone), ``--seeds`` each: agreement
    with the verifier on held-out candidates, and one rejection-sampling round from sft_mix filtered by each judge
    (the same samples as round 1 of ``rejection-sampling`` for the same seed)."""
    from helpers import judge as J
    test = arithmetic_test_set(args.n_test)
    train_problems = generate_problems(args.n_problems, J.JUDGE_SEED, min_ops=1, max_ops=4,
                                       exclude={p.question for p in test})
    tr_p, tr_c, _ = judge_candidates(tok, train_problems, device, J.JUDGE_SEED)
    ho_p, ho_c, ho_src = judge_candidates(tok, test, device, J.JUDGE_SEED + 1)
    truth = [check_answer(p, c) for p, c in zip(ho_p, ho_c)]
    rs_args = parse_args(["rejection-sampling", "--rounds", "1", "--round-problems", str(args.round_problems),
                          "--k", str(args.k), "--round-steps", str(args.round_steps), "--n-test", str(args.n_test)])
    round1 = rejection_rounds(rs_args, test)
    runs = []
    for style in ("rationale", "verdict"):
        data = _split_judge_data(J.judge_conversations(tr_p, tr_c, rationale=style == "rationale"), J.JUDGE_SEED)
        for k in range(args.seeds):
            seed = args.seed + k
            judge, hist = _train_judge(tok, data, args, seed, device)
            verdicts, replies = J.judge_verdicts(judge, tok, ho_p, ho_c)
            by_source = {name: J.agreement([v for v, s in zip(verdicts, ho_src) if s == name],
                                           [t for t, s in zip(truth, ho_src) if s == name]) for name in ("sft_mix", "sft")}
            overall = J.agreement(verdicts, truth)
            accept = lambda ps, rs, judge=judge: [v is True for v in J.judge_verdicts(judge, tok, ps, rs)[0]]
            rounds = rejection_run(tok, rs_args, device, seed, accept, round1, test, label=f"judge ({style})")
            runs.append({"style": style, "seed": seed, "val_loss": hist.val_loss[-1], "agreement": overall,
                         "by_source": by_source, "filter_rounds": rounds, "wall_s": hist.wall_time,
                         "samples": [{"question": p.question, "candidate": c, "reply": r}
                                     for p, c, r in list(zip(ho_p, ho_c, replies))[::100]]})
            print(f"judge ({style}) seed={seed}: accuracy {overall['accuracy']:.3f}, precision {overall['precision']:.3f}, "
                  f"recall {overall['recall']:.3f} (base rate {overall['base_rate']:.3f}); filtered round → "
                  f"{rounds[-1]['all']:.3f}", flush=True)
            if style == "rationale" and k == 0 and not args.out:
                _save(data_dir() / "checkpoints", "judge", judge, args.steps,
                      {**meta, "config": judge.cfg.to_dict(), "history": hist.to_dict(), **runs[-1]}, meta, "sft.pt")
    log = {**meta, "n_train_candidates": len(tr_c), "n_held_out_candidates": len(ho_c), "runs": runs,
           "total_wall_s": time.perf_counter() - t0}
    out = Path(args.out) if args.out else data_dir() / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ch06_judge.json").write_text(json.dumps(log, indent=1))
    print(f"wrote {out / 'ch06_judge.json'} in {log['total_wall_s'] / 60:.1f} min")
    return log


#: arm: (judge writes a rationale, share of training pairs with the right reply shown first)
PAIR_ARMS = {"rationale": (True, 0.5), "verdict": (False, 0.5), "verdict_skewed": (False, 0.75)}


def right_wrong_pairs(tok, problems, device, seed: int, samples: int = 2) -> tuple[list, list[str], list[str]]:
    """For each problem, ``samples`` replies at temperature 1 from sft_mix and from sft; where both a right and a
    wrong reply occur, one of each (the first in a seeded shuffle): (problems, right replies, wrong replies)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    pool = [[] for _ in problems]
    for name in ("sft_mix", "sft"):
        model = PT.load_chat_model(f"checkpoints/{name}.pt", device)
        for k, rs in enumerate(PT.chat_generate(model, tok, problems, temperature=1.0, samples=samples, generator=gen)):
            pool[k] += rs
    rng = random.Random(seed)
    ps, rights, wrongs = [], [], []
    for p, rs in zip(problems, pool):
        rng.shuffle(rs)
        r = [x for x in rs if check_answer(p, x)]
        w = [x for x in rs if not check_answer(p, x)]
        if r and w:
            ps.append(p), rights.append(r[0]), wrongs.append(w[0])
    return ps, rights, wrongs


def _both_orders(J, judge, tok, ps, a, b, rationale: bool) -> tuple[list, list]:
    """The judge's choices with ``a`` shown first and then with ``b`` shown first."""
    n = 64 if rationale else 8
    return J.pair_choices(judge, tok, ps, a, b, n)[0], J.pair_choices(judge, tok, ps, b, a, n)[0]


def pair_judge_stage(tok, args, meta, device, t0) -> dict:
    """Pairwise judges fine-tuned from the SFT model (chapter 07.3), ``--seeds`` each, in three arms: with a
    rationale or the verdict alone, trained with the right reply first in half of the pairs, and verdict-only
    trained with it first in 75% (a position that carries information). Each judge judges every held-out pair in
    both orders (:func:`helpers.judge.position_bias`), and the pairs of the RL model's and the SFT model's greedy
    replies where exactly one is right, as an open-ended benchmark would pit two models (the win rate of RL).
    Writes data/results/ch07_judge_position.json with every choice, and the verdict-only judge of seed 0 as
    data/checkpoints/pair_judge.pt."""
    from helpers import judge as J
    test = arithmetic_test_set(args.n_test)
    train_problems = generate_problems(args.n_problems, J.PAIR_SEED, min_ops=1, max_ops=4,
                                       exclude={p.question for p in test})
    tr = right_wrong_pairs(tok, train_problems, device, J.PAIR_SEED)
    ho = right_wrong_pairs(tok, test, device, J.PAIR_SEED + 1)
    replies = {name: PT.chat_accuracy(PT.load_chat_model(f"checkpoints/{name}.pt", device), tok, test)["replies"]
               for name in ("rl", "sft")}
    duel = [(p, x, y, check_answer(p, x)) for p, x, y in zip(test, replies["rl"], replies["sft"])
            if check_answer(p, x) != check_answer(p, y)]
    print(f"{len(tr[0])} training pairs, {len(ho[0])} held-out pairs, {len(duel)} rl-vs-sft pairs with one right",
          flush=True)
    runs = []
    for arm, (rationale, share) in PAIR_ARMS.items():
        data = _split_judge_data(J.pair_conversations(*tr, first_share=share, rationale=rationale, seed=J.PAIR_SEED),
                                 J.PAIR_SEED)
        for k in range(args.seeds):
            seed = args.seed + k
            judge, hist = _train_judge(tok, data, args, seed, device)
            rf, rs = _both_orders(J, judge, tok, ho[0], ho[1], ho[2], rationale)
            pb = J.position_bias(rf, rs)
            dp = [d[0] for d in duel]
            rl_first, sft_first = _both_orders(J, judge, tok, dp, [d[1] for d in duel], [d[2] for d in duel], rationale)
            runs.append({"arm": arm, "rationale": rationale, "first_share": share, "seed": seed,
                         "val_loss": hist.val_loss[-1], "wall_s": hist.wall_time, "held_out": pb,
                         "right_first": rf, "right_second": rs, "duel_rl_first": rl_first, "duel_sft_first": sft_first})
            print(f"{arm} seed={seed}: a1 {pb['acc_first']:.3f}, a2 {pb['acc_second']:.3f}, bias {pb['bias']:+.3f}, "
                  f"consistency {pb['consistency']:.3f}, swap {pb['swap_accuracy']:.3f} ({hist.wall_time:.0f} s)",
                  flush=True)
            if arm == "verdict" and k == 0 and not args.out:
                _save(data_dir() / "checkpoints", "pair_judge", judge, args.steps,
                      {**meta, "config": judge.cfg.to_dict(), "history": hist.to_dict(),
                       **{k2: v for k2, v in runs[-1].items()
                          if k2 in ("arm", "seed", "held_out", "val_loss", "wall_s")}},
                      meta, "sft.pt")
    log = {**meta, "n_train_pairs": len(tr[0]), "n_held_out_pairs": len(ho[0]),
           "held_out": [{"question": p.question, "right": r, "wrong": w} for p, r, w in zip(*ho)],
           "duel": [{"question": p.question, "rl": x, "sft": y, "rl_right": ok} for p, x, y, ok in duel],
           "runs": runs, "total_wall_s": time.perf_counter() - t0}
    out = Path(args.out) if args.out else data_dir() / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ch07_judge_position.json").write_text(json.dumps(log, indent=1))
    print(f"wrote {out / 'ch07_judge_position.json'} in {log['total_wall_s'] / 60:.1f} min")
    return log


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = get_device(args.device)
    tok = load_tokenizer()
    data = sft_data(tok, style=args.style)
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
               "answer_only": PT.bare_share(acc["replies"]),
               "samples": [{"question": p.question, "reply": r} for p, r in zip(problems[::50], acc["replies"][::50])]}
        log["total_wall_s"] = time.perf_counter() - t0
        out = Path(args.out) if args.out else data_dir() / "checkpoints"
        name = "sft" if args.style == "steps" else "sft_mix"
        _save(out, name, model, args.steps, log, meta, "base.pt")
        print(f"base {base_acc['all']:.3f} → SFT {acc['all']:.3f} (format {acc['format']:.2f}); wrote {out / (name + '.pt')} "
              f"in {log['total_wall_s'] / 60:.1f} min")
        return log
    if args.stage == "reward-model":
        return reward_model_stage(tok, args, meta, device, t0)
    if args.stage == "distill-ablation":
        return distill_stage(tok, args, meta, device, problems, t0)
    if args.stage == "grpo":
        return grpo_stage(tok, args, meta, device, t0)
    if args.stage == "rejection-sampling":
        return rejection_stage(tok, args, meta, device, t0)
    if args.stage == "judge":
        return judge_stage(tok, args, meta, device, t0)
    if args.stage == "pair-judge":
        return pair_judge_stage(tok, args, meta, device, t0)
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
