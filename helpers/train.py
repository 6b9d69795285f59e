"""The training loop every chapter trains with: forward → loss → backward → accumulate → clip → step → schedule.

One optimizer step with gradient accumulation over A micro-batches of size b:

    g = ∇ (1/A) Σ_a L(x_a)         which equals the gradient of the mean loss over one batch of A·b rows
                                   (every micro-batch has the same number of tokens)
    g ← g · min(1, clip_norm / ‖g‖)                 (global-norm clipping; the report clips at 1.0)
    θ ← AdamW(θ, g, lr(step))                         (helpers.optim)
    model.after_step()                                (if present: the aux-loss-free bias update, §2.1.2)

The model contract: ``out = model(x, targets=y)`` returns a dict with "loss" (what is backpropagated) and
other scalars that are logged ("main_loss", "mtp_loss", "aux_loss"). Evaluation reports "main_loss" when
present, so models with and without MTP are compared on the same quantity.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .optim import SCHEDULES, AdamW, clip_grad_norm_, lr_at, param_groups
from .runtime import progress

__all__ = ["TrainConfig", "History", "train", "evaluate", "save_checkpoint", "load_checkpoint", "CheckpointError"]


@dataclass
class TrainConfig:
    """Knobs of :func:`train`. Defaults follow the report where it has one (betas, weight decay, clipping)."""
    steps: int = 200
    lr: float = 3e-3
    min_lr: float | None = None            # None: lr / 10
    warmup_steps: int = 0
    schedule: str = "cosine"               # "cosine" | "constant" | "wsd"
    decay_frac: float = 0.2                # "wsd": share of steps spent decaying
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_accum_steps: int = 1
    clip_norm: float | None = 1.0          # None or inf: no clipping (the norm is still logged)
    eval_every: int = 50                   # 0: evaluate only at the end
    eval_batches: int = 8
    seed: int = 1234

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"TrainConfig: {msg}")
        need(isinstance(self.steps, int) and self.steps >= 1, f"steps must be an int ≥ 1, got {self.steps!r}")
        need(isinstance(self.grad_accum_steps, int) and self.grad_accum_steps >= 1,
             f"grad_accum_steps must be an int ≥ 1 (1 = no accumulation), got {self.grad_accum_steps!r}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.min_lr is None or 0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr], got {self.min_lr}")
        need(0 <= self.warmup_steps <= self.steps, f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.clip_norm is None or self.clip_norm > 0, f"clip_norm must be > 0 or None, got {self.clip_norm}")
        need(self.eval_every >= 0 and self.eval_batches >= 1,
             f"eval_every must be ≥ 0 and eval_batches ≥ 1, got {self.eval_every}, {self.eval_batches}")
        need(self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}")

    def lr_at(self, step: int) -> float:
        return lr_at(step, lr=self.lr, steps=self.steps, warmup_steps=self.warmup_steps, min_lr=self.min_lr,
                     schedule=self.schedule, decay_frac=self.decay_frac)


@dataclass
class History:
    """What happened during :func:`train`: per-step lists, validation points, speed."""
    step: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)       # mean "loss" over the step's micro-batches
    grad_norm: list = field(default_factory=list)        # global norm before clipping
    tokens: list = field(default_factory=list)           # tokens seen after the step
    metrics: dict = field(default_factory=dict)          # other scalars of the model's output, per step
    val_step: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)         # mean over all validation sets
    val_losses: dict = field(default_factory=dict)       # per validation set (e.g. per domain)
    wall_time: float = 0.0
    tokens_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def plot(self, ax=None, label: str = "", smooth: int = 10):
        """Training loss (running mean over ``smooth`` steps) and validation points against steps."""
        import matplotlib.pyplot as plt
        ax = ax or plt.gca()
        y = torch.tensor(self.train_loss, dtype=torch.float64)
        if smooth > 1 and len(y) >= smooth:
            c = torch.cat([torch.zeros(1, dtype=torch.float64), y.cumsum(0)])
            y = torch.cat([c[1:smooth] / torch.arange(1, smooth), (c[smooth:] - c[:-smooth]) / smooth])
        line, = ax.plot(self.step, y.tolist(), lw=1, label=f"{label} train".strip())
        if self.val_step:
            ax.plot(self.val_step, self.val_loss, "o-", color=line.get_color(), ms=3, label=f"{label} val".strip())
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        return ax


def _forward(model, x, y) -> dict:
    out = model(x, targets=y)
    if not isinstance(out, dict) or "loss" not in out:
        raise TypeError("the model must return a dict with a 'loss' entry from model(x, targets=y) "
                        f"(got {type(out).__name__}); see helpers.train's module docstring")
    return out


def _as_batches(get_batch_or_batches, n_batches: int | None, split: str) -> list:
    if callable(get_batch_or_batches):
        if n_batches is None or n_batches < 1:
            raise ValueError(f"n_batches must be ≥ 1 when a get_batch function is given, got {n_batches!r}")
        return [get_batch_or_batches(split) for _ in range(n_batches)]
    batches = list(get_batch_or_batches)
    if not batches:
        raise ValueError("evaluate: got an empty list of batches")
    return batches if n_batches is None else batches[:n_batches]


@torch.no_grad()
def evaluate(model, get_batch_or_batches, n_batches: int | None = None, split: str = "val") -> float:
    """Mean validation loss (the "main_loss" entry when present, else "loss") over ``n_batches`` batches.

    ``get_batch_or_batches`` is a function ``split -> (x, y)`` (called ``n_batches`` times) or a list of
    (x, y) batches (the first ``n_batches``, all when None), e.g. from ``helpers.batching.eval_batches``.
    Runs in eval mode without gradients and restores the model's mode.
    """
    batches = _as_batches(get_batch_or_batches, n_batches, split)
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for x, y in batches:
            out = _forward(model, x, y)
            total += float(out.get("main_loss", out["loss"]).detach())
        return total / len(batches)
    finally:
        model.train(was_training)


def train(model, get_batch: Callable, cfg: TrainConfig, *, optimizer=None, val_data=None,
          show_progress: bool = True, start_step: int = 0, callback: Callable | None = None) -> History:
    """Train ``model`` for ``cfg.steps`` optimizer steps on batches from ``get_batch("train")``.

    optimizer: default ``helpers.optim.AdamW`` over ``param_groups(model, cfg.weight_decay)`` (matrices
        decayed, norm gains not). Its learning rate is set from ``cfg``'s schedule before every step.
    val_data: what to evaluate every ``cfg.eval_every`` steps and at the end: a list of (x, y) batches, a
        dict {name: list of batches} (e.g. one per domain; ``val_loss`` is their mean), or None for
        ``cfg.eval_batches`` batches drawn once from ``get_batch("val")`` before training (the same batches
        at every evaluation, so the points are comparable).
    start_step: resume a run at this step (after :func:`load_checkpoint`): steps ``start_step … cfg.steps − 1``
        run with the same schedule as an uninterrupted run (batches continue from ``get_batch``'s state).
    callback: called as ``callback(step, history)`` after every step (for custom logging).

    Seeds torch with ``cfg.seed`` first (for models with randomness such as dropout; batches come from
    ``get_batch``'s own generator). The model is in train mode while training and left in eval mode.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not callable(get_batch):
        raise TypeError("get_batch must be a function split -> (x, y)")
    torch.manual_seed(cfg.seed)
    if optimizer is None:
        optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                          weight_decay=cfg.weight_decay)
    if val_data is None:
        val_data = {"val": [get_batch("val") for _ in range(cfg.eval_batches)]}
    elif not isinstance(val_data, dict):
        val_data = {"val": list(val_data)}
    hist = History(val_losses={k: [] for k in val_data})
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def run_eval(step):
        losses = {k: evaluate(model, b) for k, b in val_data.items()}
        hist.val_step.append(step)
        hist.val_loss.append(sum(losses.values()) / len(losses))
        for k, v in losses.items():
            hist.val_losses[k].append(v)

    model.train()
    tokens, t0 = 0, time.perf_counter()
    if not 0 <= start_step < cfg.steps:
        raise ValueError(f"start_step must be in [0, cfg.steps={cfg.steps}), got {start_step}")
    bar = progress(range(start_step, cfg.steps), desc="train", total=cfg.steps - start_step,
                   disable=None if show_progress else True)
    for step in bar:
        lr = cfg.lr_at(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss_sum, sums = 0.0, {}
        for _ in range(cfg.grad_accum_steps):
            x, y = get_batch("train")
            out = _forward(model, x, y)
            (out["loss"] / cfg.grad_accum_steps).backward()
            loss_sum += float(out["loss"].detach())
            tokens += y.numel()
            for k, v in out.items():
                if k != "loss" and torch.is_tensor(v) and v.dim() == 0:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
        loss = loss_sum / cfg.grad_accum_steps
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {step}; lower the learning rate "
                                     "or check the data (the model state is left as it was before this step)")
        gnorm = clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm else math.inf)
        optimizer.step()
        if hasattr(model, "after_step"):
            model.after_step()
        hist.step.append(step + 1)
        hist.lr.append(lr)
        hist.train_loss.append(loss)
        hist.grad_norm.append(float(gnorm))
        hist.tokens.append(tokens)
        for k, v in sums.items():
            hist.metrics.setdefault(k, []).append(v / cfg.grad_accum_steps)
        done = step + 1
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
            run_eval(step + 1)
        if hasattr(bar, "set_postfix") and (done % 10 == 0 or done == cfg.steps):
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{hist.val_loss[-1]:.3f}" if hist.val_loss else "-")
        if callback is not None:
            callback(step + 1, hist)
    hist.wall_time = time.perf_counter() - t0
    hist.tokens_per_s = tokens / max(hist.wall_time, 1e-9)
    model.eval()
    return hist


# -- checkpoints ------------------------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model it is loaded into."""


_FORMAT = "course-checkpoint-v1"


def save_checkpoint(path, model, optimizer=None, step: int = 0, extra: dict | None = None) -> Path:
    """Save model weights (and optimizer state, step, ``extra``: plain Python values/tensors) to ``path``.

    The file loads with ``torch.load(weights_only=True)``: only tensors and plain containers, no pickled code.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": _FORMAT, "model": model.state_dict(), "step": int(step), "extra": extra or {}}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)      # atomic: a crash mid-save never leaves a half-written checkpoint at ``path``
    return path


def load_checkpoint(path, model, optimizer=None, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    Returns {"step", "extra"}. Raises :class:`CheckpointError` saying what is wrong when the file is missing,
    corrupt, not a course checkpoint, or its tensors do not fit the model (missing/unexpected/reshaped keys).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: check the path, or train and save_checkpoint() first")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated file?): {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a course checkpoint (expected format {_FORMAT!r}); "
                              "write it with helpers.train.save_checkpoint")
    state, own = ckpt["model"], model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        parts = [f"{name} {len(keys)}: {keys[:3]}{' …' if len(keys) > 3 else ''}"
                 for name, keys in (("reshaped", reshaped), ("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(f"{path} does not fit this model (saved from a different ModelConfig?): " + "; ".join(parts))
    model.load_state_dict(state)
    if optimizer is not None:
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{path} holds no optimizer state; load it without an optimizer")
        optimizer.load_state_dict(ckpt["optimizer"])
    return {"step": ckpt.get("step", 0), "extra": ckpt.get("extra", {})}
