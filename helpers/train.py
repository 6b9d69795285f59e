"""The training loop every chapter trains with: forward → loss → backward → accumulate → clip → step → schedule.

One optimizer step with gradient accumulation over A micro-batches; micro-batch a has n_a targets that
are not −1 (−1 = ignore_index: a masked position, e.g. a prompt token in supervised fine-tuning), N = Σ_a n_a:

    L_step = Σ_a (n_a / N) · L_a      L_a = main_a + λ·mtp_a + aux_a, the model's "loss" on micro-batch a
    g = ∇ L_step                      n_a·main_a is micro-batch a's sum of per-token losses, so the main term
                                      is the mean over all N target tokens of the step: the gradient of the
                                      one big batch, even when micro-batches hold different numbers of
                                      unmasked targets. The MTP and balance terms get the same weights n_a/N.
                                      Without masking (n_a = N/A) this is the plain mean (1/A) Σ_a L_a.
    g ← g · min(1, clip_norm / ‖g‖)   (global-norm clipping; the report clips at 1.0)
    θ ← AdamW(θ, g, lr(step))         (helpers.optim)
    model.after_step()                (if present: the aux-loss-free bias update, §2.1.2)

Precision (the report's map, chapter 01.3): weights, gradients, AdamW moments and the loss stay FP32; the
forward matmuls run under BF16 autocast on a CUDA GPU, and on a CPU only when
``helpers.runtime.probe_bf16`` measured BF16 faster there (several times faster with AMX/AVX-512-BF16,
hundreds of times slower on AVX2-only CPUs).

The model contract: ``out = model(x, targets=y)`` returns a dict with "loss" (what is backpropagated) and
other scalars that are logged ("main_loss", "mtp_loss", "aux_loss"). Evaluation reports "main_loss" when
present, so models with and without MTP are compared on the same quantity.

Bad input fails before harm: batches are checked (integer ids inside the vocabulary, rows no longer than
max_seq_len) before the forward pass, validation data before the first step, and a step whose loss or
gradient norm is not finite stops before ``optimizer.step()`` with the weights, optimizer state, router
biases and load counters as they were before that step.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .config import ModelConfig
from .model import check_token_ids
from .optim import SCHEDULES, AdamW, clip_grad_norm_, lr_at, param_groups
from .runtime import progress, training_autocast

__all__ = ["TrainConfig", "History", "train", "evaluate", "save_checkpoint", "load_checkpoint", "CheckpointError",
           "checkpoint_config"]


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

        def whole(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def finite(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(whole(self.steps) and self.steps >= 1, f"steps must be an int ≥ 1, got {self.steps!r}")
        need(whole(self.grad_accum_steps) and self.grad_accum_steps >= 1,
             f"grad_accum_steps must be an int ≥ 1 (1 = no accumulation), got {self.grad_accum_steps!r}")
        need(finite(self.lr) and self.lr > 0,
             f"lr must be a finite number > 0, got {self.lr!r}; typical values are 1e-4 … 1e-2")
        need(self.min_lr is None or (finite(self.min_lr) and 0 <= self.min_lr <= self.lr),
             f"min_lr must be in [0, lr = {self.lr}] (or None for lr / 10), got {self.min_lr!r}")
        need(whole(self.warmup_steps) and 0 <= self.warmup_steps <= self.steps,
             f"warmup_steps must be an int in [0, steps = {self.steps}], got {self.warmup_steps!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(finite(self.decay_frac) and 0 < self.decay_frac <= 1,
             f"decay_frac must be in (0, 1] (the share of steps the 'wsd' schedule spends decaying), "
             f"got {self.decay_frac!r}; e.g. 0.2")
        need(finite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be a finite number ≥ 0, got {self.weight_decay!r}; use 0 for no decay (report: 0.1)")
        need(isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
             and all(finite(b) and 0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), got {self.betas!r}; the report uses (0.9, 0.95)")
        need(finite(self.eps) and self.eps > 0, f"eps must be a finite number > 0, got {self.eps!r}; e.g. 1e-8")
        need(self.clip_norm is None or (isinstance(self.clip_norm, (int, float)) and self.clip_norm > 0),
             f"clip_norm must be > 0, or None / inf for no clipping, got {self.clip_norm!r}; the report clips at 1.0")
        need(whole(self.eval_every) and self.eval_every >= 0,
             f"eval_every must be an int ≥ 0 (0 = evaluate only at the end), got {self.eval_every!r}")
        need(whole(self.eval_batches) and self.eval_batches >= 1,
             f"eval_batches must be an int ≥ 1, got {self.eval_batches!r}")
        need(whole(self.seed), f"seed must be an int, got {self.seed!r}")

    def lr_at(self, step: int) -> float:
        return lr_at(step, lr=self.lr, steps=self.steps, warmup_steps=self.warmup_steps, min_lr=self.min_lr,
                     schedule=self.schedule, decay_frac=self.decay_frac)


@dataclass
class History:
    """What happened during :func:`train`: per-step lists, validation points, speed."""
    step: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)       # the step's loss L_step (see the module docstring)
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


def _check_batch(model, batch, where: str) -> tuple:
    """``batch`` as (x, y), checked before any work: a pair; for the course model (a ``cfg`` with vocab_size
    and max_seq_len) integer [B, T] ids inside the vocabulary (targets may be −1), rows ≤ max_seq_len."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"{where}: a batch must be a pair (x, y) of token-id tensors, got {type(batch).__name__}; "
                        "get_batch(split) and every validation batch should give x, y")
    x, y = batch
    cfg = getattr(_core(model), "cfg", None)
    if isinstance(cfg, ModelConfig):
        check_token_ids(x, cfg.vocab_size, "x", where)
        check_token_ids(y, cfg.vocab_size, "y", where, allow_ignore=True)
        if y.shape != x.shape:
            raise ValueError(f"{where}: x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape; "
                             "y[b, i] is the token after x[b, i]")
        if x.shape[1] > cfg.max_seq_len:
            raise ValueError(f"{where}: rows of {x.shape[1]} tokens are longer than the model's max_seq_len = "
                             f"{cfg.max_seq_len}; use a block_size ≤ {cfg.max_seq_len} or build the model with "
                             f"max_seq_len ≥ {x.shape[1]}")
    return x, y


def _as_batches(get_batch_or_batches, n_batches: int | None, split: str) -> list:
    if n_batches is not None and not (isinstance(n_batches, int) and not isinstance(n_batches, bool) and n_batches >= 1):
        raise ValueError(f"evaluate: n_batches must be an int ≥ 1 (or None for all batches), got {n_batches!r}")
    if callable(get_batch_or_batches):
        if n_batches is None:
            raise ValueError("evaluate: n_batches must be ≥ 1 when a get_batch function is given, got None; "
                             "pass n_batches=8, say, or a list of (x, y) batches")
        return [get_batch_or_batches(split) for _ in range(n_batches)]
    batches = list(get_batch_or_batches)
    if not batches:
        raise ValueError("evaluate: got an empty list of batches; pass at least one (x, y) batch "
                         "(e.g. from helpers.batching.eval_batches)")
    return batches if n_batches is None else batches[:n_batches]


@torch.no_grad()
def evaluate(model, get_batch_or_batches, n_batches: int | None = None, split: str = "val") -> float:
    """Mean validation loss (the "main_loss" entry when present, else "loss") over ``n_batches`` batches.

    ``get_batch_or_batches`` is a function ``split -> (x, y)`` (called ``n_batches`` times) or a list of
    (x, y) batches (the first ``n_batches``, all when None), e.g. from ``helpers.batching.eval_batches``.
    Runs in eval mode without gradients and restores the model's mode.
    """
    batches = [_check_batch(model, b, "evaluate") for b in _as_batches(get_batch_or_batches, n_batches, split)]
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


def _val_sets(model, val_data, get_batch, cfg) -> dict:
    """``val_data`` as {name: non-empty list of checked batches} (see :func:`train`), checked before training."""
    if val_data is None:
        val_data = {"val": [get_batch("val") for _ in range(cfg.eval_batches)]}
    elif isinstance(val_data, dict):
        val_data = {k: list(v) for k, v in val_data.items()}
    else:
        val_data = {"val": list(val_data)}
    if not val_data:
        raise ValueError("train: val_data is an empty dict; give {name: [(x, y), ...]}, a list of batches, "
                         "or None (cfg.eval_batches batches drawn from get_batch('val'))")
    for name, batches in val_data.items():
        if not batches:
            raise ValueError(f"train: validation set {name!r} holds no batches, so it could not be evaluated after "
                             "training; give it at least one (x, y) batch, or val_data=None to draw "
                             "cfg.eval_batches from get_batch('val')")
        val_data[name] = [_check_batch(model, b, f"train: validation set {name!r}") for b in batches]
    return val_data


def _core(model):
    """The model itself, also when wrapped in ``DistributedDataParallel`` (which keeps it as ``.module``)."""
    return getattr(model, "module", model)


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sync_loads(model) -> None:
    """Data parallel: sum every MoE layer's step load over the processes, so that each applies the same
    aux-loss-free bias update — the one a single process would compute from the whole global batch."""
    if _world() > 1:
        for m in _moe_loads(model):
            torch.distributed.all_reduce(m[0].step_load)


def _moe_loads(model) -> list:
    """The MoE layers' load counters (``step_load``), to restore them when a step fails."""
    model = _core(model)
    layers = model.moe_layers() if hasattr(model, "moe_layers") else []
    return [(m, m.step_load.clone()) for m in layers]


def _undo_step(optimizer, loads) -> None:
    """Undo what a failed step did before ``optimizer.step()``: its gradients and the loads it counted."""
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for m, load in loads:
            m.step_load.copy_(load)


def train(model, get_batch: Callable, cfg: TrainConfig, *, optimizer=None, val_data=None,
          show_progress: bool = True, start_step: int = 0, callback: Callable | None = None) -> History:
    """Train ``model`` for ``cfg.steps`` optimizer steps on batches from ``get_batch("train")``.

    optimizer: default ``helpers.optim.AdamW`` over ``param_groups(model, cfg.weight_decay)`` (matrices
        decayed, norm gains not). Its learning rate is set from ``cfg``'s schedule before every step.
    val_data: what to evaluate every ``cfg.eval_every`` steps and at the end: a list of (x, y) batches, a
        dict {name: list of batches} (e.g. one per domain; ``val_loss`` is their mean), or None for
        ``cfg.eval_batches`` batches drawn once from ``get_batch("val")`` before training (the same batches
        at every evaluation, so the points are comparable). Checked before the first step.
    start_step: resume a run at this step (after :func:`load_checkpoint`): steps ``start_step … cfg.steps − 1``
        run with the same schedule as an uninterrupted run (batches continue from ``get_batch``'s state).
    callback: called as ``callback(step, history)`` after every step (for custom logging).

    Each step draws its ``cfg.grad_accum_steps`` micro-batches first (their unmasked target counts weight
    the losses, see the module docstring), checks them, then runs the forward and backward passes. A
    non-finite loss or gradient norm raises ``FloatingPointError`` before the optimizer step, leaving the
    model as it was before that step.

    Data parallel (``torchrun``, see scripts/pretrain.py): pass the model wrapped in
    ``DistributedDataParallel`` and a ``get_batch`` that gives each process its own rows of the global batch.
    DDP averages the gradients over the processes; the MoE load counts are summed over them before the bias
    update, so every process updates its router biases alike. (The n_a/N weights are per process, so the
    result equals one process's only when every process's rows hold the same number of unmasked targets,
    as in pre-training.)

    Seeds torch with ``cfg.seed`` first (for models with randomness such as dropout; batches come from
    ``get_batch``'s own generator). The model is in train mode while training and left in eval mode.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}; build one with TrainConfig(steps=...)")
    if not callable(get_batch):
        raise TypeError("get_batch must be a function split -> (x, y), e.g. a helpers.batching.MixtureSampler")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function callback(step, history) or None, got {type(callback).__name__}")
    if not (isinstance(start_step, int) and not isinstance(start_step, bool) and 0 <= start_step < cfg.steps):
        raise ValueError(f"start_step must be an int in [0, cfg.steps={cfg.steps}), got {start_step!r}; "
                         "use the step load_checkpoint returned, or 0 for a new run")
    torch.manual_seed(cfg.seed)
    val_data = _val_sets(model, val_data, get_batch, cfg)      # checked before the first step
    if optimizer is None:
        optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                          weight_decay=cfg.weight_decay)
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
    kept = "the model state is left as it was before this step"
    bar = progress(range(start_step, cfg.steps), desc="train", total=cfg.steps - start_step,
                   disable=None if show_progress else True)
    for step in bar:
        lr = cfg.lr_at(step)
        micro = [_check_batch(model, get_batch("train"), f"train step {step}") for _ in range(cfg.grad_accum_steps)]
        counts = [int((y != -1).sum()) for _, y in micro]          # unmasked targets n_a
        total = sum(counts)                                         # N
        if total == 0:
            raise ValueError(f"train step {step}: every target of the step's batches is −1 (ignored), so there is "
                             "nothing to learn from; check the loss mask (at least one target must be a token id)")
        loads = _moe_loads(model)
        optimizer.zero_grad(set_to_none=True)
        loss_sum, sums = 0.0, {}
        for a, ((x, y), n) in enumerate(zip(micro, counts)):
            tokens += y.numel()
            if n == 0:
                continue                                            # weight n_a / N = 0: nothing to backpropagate
            with training_autocast(x.device):   # bf16 matmuls only where a probe measured them faster (§3.3 map)
                out = _forward(model, x, y)
            loss_a = float(out["loss"].detach())
            if not math.isfinite(loss_a):
                _undo_step(optimizer, loads)
                raise FloatingPointError(f"training loss became {loss_a} at step {step} (micro-batch {a}); lower the "
                                         f"learning rate or check the data ({kept})")
            (out["loss"] / (total / n)).backward()                  # weight n_a / N (exactly 1/A when n_a = N/A)
            loss_sum += loss_a * n
            for k, v in out.items():
                if k != "loss" and torch.is_tensor(v) and v.dim() == 0:
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        loss = loss_sum / total
        gnorm = float(clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm else math.inf))
        if not math.isfinite(gnorm):
            _undo_step(optimizer, loads)
            raise FloatingPointError(f"gradient norm became {gnorm} at step {step} although the loss was finite "
                                     f"({loss:.4g}); lower the learning rate or look for an overflow, e.g. float16 "
                                     f"without loss scaling ({kept})")
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.step()
        if hasattr(_core(model), "after_step"):
            _sync_loads(model)
            _core(model).after_step()
        hist.step.append(step + 1)
        hist.lr.append(lr)
        hist.train_loss.append(loss)
        hist.grad_norm.append(gnorm)
        hist.tokens.append(tokens)
        for k, v in sums.items():
            hist.metrics.setdefault(k, []).append(v / total)
        done = step + 1
        hist.wall_time = time.perf_counter() - t0                  # so far (a callback may save it mid-run)
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
    """A checkpoint file is missing, unreadable, cannot be written, or does not fit the model it is loaded into."""


_FORMAT = "course-checkpoint-v2"          # v2 records the model's ModelConfig ("config"); v1 did not
_OLD_FORMATS = ("course-checkpoint-v1",)   # still read, with a warning that only tensor shapes can be checked
# Fields that may differ between a checkpoint and the model it is loaded into: they do not change what the
# weights compute (init_std only draws the initial weights; "naive"/"absorb" are the same attention function;
# the balancing method, γ, α and λ only shape how training goes on: fine-tuning may change them).
# Context extension (§4.3) is applied to trained weights by design: the table of positions (max_seq_len) and
# YaRN's rescaling of the rotary frequencies may differ from the run that saved the weights.
_CONFIG_FREE = ("init_std", "attn_impl", "balance", "bias_update_speed", "seq_aux_alpha", "aux_loss_alpha",
                "mtp_lambda", "max_seq_len", "original_seq_len", "rope_factor", "beta_fast", "beta_slow", "mscale")
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _model_config(model) -> dict | None:
    cfg = getattr(model, "cfg", None)
    return cfg.to_dict() if isinstance(cfg, ModelConfig) else None


def _check_plain(value, where: str) -> None:
    """Raise unless ``value`` is tensors and plain containers only (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"save_checkpoint: {where} has a key {k!r} of type {type(k).__name__}; "
                                "use str or int keys")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"save_checkpoint: {where} is a {type(value).__name__}; a checkpoint holds only tensors and "
                        "plain values (dict, list, tuple, str, int, float, bool, None) so that it loads with "
                        "weights_only=True; convert it (torch.as_tensor(a), a.tolist(), str(x))")


def save_checkpoint(path, model, optimizer=None, step: int = 0, extra: dict | None = None) -> Path:
    """Save model weights, the model's ModelConfig (when it has one), optimizer state, step and ``extra``
    (plain Python values/tensors) to ``path``, creating its folder if needed.

    The file loads with ``torch.load(weights_only=True)``: only tensors and plain containers, no pickled code.
    Raises :class:`CheckpointError` naming the path when it cannot be written; a failed save leaves neither
    a partial file nor a ``.tmp`` behind.
    """
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        raise ValueError(f"save_checkpoint: step must be an int ≥ 0 (optimizer steps done), got {step!r}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"save_checkpoint: extra must be a dict of plain values or None, got {type(extra).__name__}; "
                        "wrap it, e.g. extra={'note': value}")
    _check_plain(extra or {}, "extra")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {path}: it is a folder; give a file path such as "
                              f"{path / 'model.pt'}")
    ckpt = {"format": _FORMAT, "config": _model_config(model), "model": model.state_dict(), "step": step,
            "extra": extra or {}}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, tmp)
        tmp.replace(path)      # atomic: a crash mid-save never leaves a half-written checkpoint at ``path``
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"could not write the checkpoint {path} ({type(e).__name__}: {e}); check that its "
                              "folder can be created and written to (permissions, a file in the way, disk space) "
                              "or choose another path") from e
    finally:
        try:
            tmp.unlink(missing_ok=True)       # no stale .tmp after a failed save
        except OSError:
            pass
    return path


def _read(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: check the path, or train and save_checkpoint() first")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated file?): {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (_FORMAT, *_OLD_FORMATS) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a course checkpoint (expected format {_FORMAT!r}); "
                              "write it with helpers.train.save_checkpoint")
    return ckpt


def checkpoint_config(path) -> dict | None:
    """The ModelConfig fields a checkpoint was saved with (None for v1 files, which did not record them).

    Build the matching model with ``Transformer(ModelConfig(**checkpoint_config(path)))``.
    """
    return _read(path).get("config")


def _config_diff(saved: dict | None, own: dict | None) -> list[str]:
    if saved is None or own is None:
        return []
    # a field added to ModelConfig after the file was saved reads as its default (defaults keep old behaviour)
    defaults = {k: f.default for k, f in ModelConfig.__dataclass_fields__.items()}
    saved = {**{k: defaults[k] for k in own if k not in saved and k in defaults}, **saved}
    return [f"{k}: file {saved.get(k, '(absent)')!r} vs model {own.get(k, '(absent)')!r}"
            for k in sorted(set(saved) | set(own)) if k not in _CONFIG_FREE and saved.get(k) != own.get(k)]


def load_checkpoint(path, model, optimizer=None, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    Returns {"step", "extra", "config"}. Raises :class:`CheckpointError` saying what is wrong when the file is
    missing, corrupt, not a course checkpoint, its tensors do not fit the model (missing/unexpected/reshaped
    keys), or it was saved from a different ModelConfig (each differing field is named; the fields in
    ``_CONFIG_FREE``, which do not change what the weights compute, may differ). Nothing is loaded unless everything fits. A v1 file (no config recorded) loads
    with a warning: only its tensor shapes can be checked.
    """
    path = Path(path)
    ckpt = _read(path, map_location)
    saved_cfg, own_cfg = ckpt.get("config"), _model_config(model)
    diff = _config_diff(saved_cfg, own_cfg)
    state, own = ckpt["model"], model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        parts = [f"{name} {len(keys)}: {keys[:3]}{' …' if len(keys) > 3 else ''}"
                 for name, keys in (("reshaped", reshaped), ("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(f"{path} does not fit this model (saved from a different ModelConfig?): " + "; ".join(parts)
                              + (f". The configs differ in: {'; '.join(diff)}" if diff else "")
                              + "; build the model with the file's config: Transformer(ModelConfig(**checkpoint_config(path)))")
    if diff:
        raise CheckpointError(f"{path} was saved from a different ModelConfig than this model's: {'; '.join(diff)}. "
                              "Same tensor shapes, different function: build the model with the file's config, "
                              "Transformer(ModelConfig(**checkpoint_config(path))), or load a checkpoint of this config")
    if ckpt["format"] in _OLD_FORMATS:
        warnings.warn(f"{path} is a {ckpt['format']} checkpoint: it records no ModelConfig, so only tensor shapes "
                      "were checked; save it again with save_checkpoint to record the config", stacklevel=2)
    if optimizer is not None and "optimizer" not in ckpt:
        raise CheckpointError(f"{path} holds no optimizer state; load it without an optimizer "
                              "(load_checkpoint(path, model)) and start a fresh optimizer")
    if optimizer is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: its optimizer state does not fit this optimizer ({e}); build the optimizer "
                                  "the same way as when saving (same parameter groups), or load without it") from e
    model.load_state_dict(state)      # cannot fail: keys and shapes were checked above
    return {"step": ckpt.get("step", 0), "extra": ckpt.get("extra", {}), "config": saved_cfg}
