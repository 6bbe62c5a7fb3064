r"""A training loop for language models on the causal DAG, in the style of nanoGPT's
``train.py``, that loses nothing.

:func:`train` fits any model with nanoGPT's interface, ``logits, loss = model(x, targets)``
(and ``model.generate(idx, max_new_tokens)`` for samples), on a
:class:`~graphformer.datasets.Corpus`:

* AdamW with decoupled weight decay on the >= 2-D weights only; norms, biases and the
  dynamics' scalars (parameters named ``*.dynamics.*``) are not decayed, and the scalars get
  their own learning rate ``scalar_lr``;
* linear warmup, then cosine decay to ``min_lr``; gradient clipping; gradient accumulation;
  bf16 autocast on CUDA; optional :func:`torch.compile`;
* evaluation on the validation split every ``eval_interval`` steps, samples, a JSONL log and a
  tqdm bar with the loss and tokens/s;
* checkpoints with everything a run needs to continue exactly (model, optimizer, step, the RNG
  states of torch, numpy and Python, the data generator, the model config and the vocabulary),
  written atomically; ``resume=True`` continues bitwise on CPU;
* several processes with ``torch.distributed`` (launched by ``torchrun``): ``batch_size`` is the
  global batch, every process draws the same window starts and takes its own rows, so a run
  gives the same losses on one process or on many.

Example::

    from graphformer.datasets import TextCorpus
    from graphformer.models import GPT, GPTConfig
    from graphformer.train import TrainConfig, train

    corpus = TextCorpus.generated(seed=0)
    model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=64, n_layer=4, n_head=4,
                          n_embd=128))
    result = train(model, corpus, TrainConfig(max_iters=2000, out_dir="out/stories"))
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import random
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from graphformer.checks import check_int
from graphformer.datasets.text import CharTokenizer, Corpus
from graphformer.device import check_compile, check_device_name, resolve_device
from graphformer.schedule import warmup_cosine
from graphformer.io import atomic_write, write_text_atomic

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "get_lr",
    "configure_optimizer",
    "is_dynamics_scalar",
    "estimate_loss",
    "save_checkpoint",
    "load_checkpoint",
    "flops_per_token",
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "VOCAB_NAME",
]

CHECKPOINT_NAME = "ckpt.pt"
LOG_NAME = "log.jsonl"
VOCAB_NAME = "vocab.json"


#: The largest ``TrainConfig.seed``: numpy's seed range (``< 2**32``), less room for the
#: seed of every process (``seed + rank``) and of the validation batches (``seed + 1``).
MAX_SEED = 2**32 - 1 - 2**16


def _check_real(name: str, value: Any, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"TrainConfig.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        want = "a positive" if positive else "a non-negative"
        raise ValueError(f"TrainConfig.{name} must be {want} finite number, got {value}")


@dataclass
class TrainConfig:
    r"""Everything :func:`train` needs besides the model and the corpus. Every field is
    checked when the config is made: a value of the wrong type or out of range (a negative
    ``min_lr``, a ``beta2`` of 1, an unknown device name, ...) raises a :class:`TypeError`
    or :class:`ValueError` that names the field.

    Args:
        max_iters (int): optimizer steps.
        batch_size (int): rows of the **global** batch per micro-step (all processes together;
            each of ``W`` processes gets ``batch_size / W`` rows).
        block_size (int): tokens per row.
        grad_accum (int): micro-steps per optimizer step (tokens per step =
            ``batch_size * grad_accum * block_size``).
        learning_rate (float): peak learning rate.
        min_lr (float, optional): final learning rate (default ``learning_rate / 10``).
        warmup_iters (int): linear warmup steps.
        lr_decay_iters (int, optional): steps of the cosine decay (default ``max_iters``).
        weight_decay (float): decoupled weight decay of the >= 2-D weights.
        beta1, beta2 (float): AdamW's betas.
        grad_clip (float): clip the gradient norm to this (0 = off).
        scalar_lr (float, optional): peak learning rate of the dynamics' scalars (default
            ``learning_rate``); it follows the same schedule.
        eval_interval (int): evaluate on the validation split every this many steps (and at
            the end).
        eval_iters (int): batches per evaluation (the same batches every time, so the
            evaluations are comparable).
        log_interval (int): log the training loss every this many steps.
        sample_interval (int): sample from the model every this many steps and at the end
            (0 = never).
        sample_tokens (int): tokens per sample.
        sample_prompt (str): the prompt of the samples (its first character if not in the
            vocabulary: token 0).
        checkpoint_interval (int, optional): write a checkpoint every this many steps (default
            ``eval_interval``) and at the end.
        compile (bool): :func:`torch.compile` the model.
        dtype (str): ``"auto"`` (bf16 autocast on CUDA when supported, else float32),
            ``"float32"`` or ``"bfloat16"`` (CUDA only).
        device (str): ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; under
            ``torchrun`` on CUDA each process takes ``cuda:LOCAL_RANK``.
        seed (int): seed of the data order and of dropout.
        out_dir (str, optional): where the checkpoint, the log and the vocabulary go (``None``:
            write nothing).
        overwrite (bool): a fresh run (``resume=False``) may replace a checkpoint already in
            ``out_dir``; without it that is an error, so that no run is lost by accident.
        progress (bool): show a tqdm bar (process 0 only).
        peak_flops (float, optional): peak FLOP/s of one device, to log the model FLOPs
            utilisation (e.g. ``989e12`` for an H100 in bf16).
    """

    max_iters: int = 2000
    batch_size: int = 12
    block_size: int = 64
    grad_accum: int = 1
    learning_rate: float = 1e-3
    min_lr: float | None = None
    warmup_iters: int = 100
    lr_decay_iters: int | None = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    scalar_lr: float | None = None
    eval_interval: int = 250
    eval_iters: int = 200
    log_interval: int = 10
    sample_interval: int = 0
    sample_tokens: int = 200
    sample_prompt: str = "\n"
    checkpoint_interval: int | None = None
    compile: bool = False
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 1337
    out_dir: str | None = "out"
    overwrite: bool = False
    progress: bool = True
    peak_flops: float | None = None

    def __post_init__(self):
        # every field, so that a bad value fails here and not deep inside a run
        for name in ("max_iters", "batch_size", "block_size", "grad_accum", "eval_interval",
                     "eval_iters", "log_interval"):
            check_int(f"TrainConfig.{name}", getattr(self, name), 1)
        for name in ("warmup_iters", "sample_interval", "sample_tokens"):
            check_int(f"TrainConfig.{name}", getattr(self, name), 0)
        for name, low in (("lr_decay_iters", 0), ("checkpoint_interval", 1)):
            if getattr(self, name) is not None:
                check_int(f"TrainConfig.{name}", getattr(self, name), low)
        check_int("TrainConfig.seed", self.seed, 0, MAX_SEED)
        _check_real("learning_rate", self.learning_rate, positive=True)
        for name in ("min_lr", "scalar_lr", "weight_decay", "grad_clip"):
            if getattr(self, name) is not None:
                _check_real(name, getattr(self, name))
        if self.min_lr is not None and self.min_lr > self.learning_rate:
            raise ValueError(f"TrainConfig.min_lr ({self.min_lr}) is larger than the peak "
                             f"learning_rate ({self.learning_rate}): the schedule decays "
                             f"from learning_rate down to min_lr")
        for name in ("beta1", "beta2"):
            _check_real(name, getattr(self, name))
            if not getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got "
                                 f"{getattr(self, name)}")
        if self.peak_flops is not None:
            _check_real("peak_flops", self.peak_flops, positive=True)
        for name in ("compile", "overwrite", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TrainConfig.{name} must be True or False, got "
                                f"{getattr(self, name)!r}")
        if not isinstance(self.sample_prompt, str):
            raise TypeError(f"TrainConfig.sample_prompt must be a string, got "
                            f"{type(self.sample_prompt).__name__}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"TrainConfig.dtype must be 'auto', 'float32' or 'bfloat16', got "
                             f"{self.dtype!r}")
        check_device_name(self.device)
        if self.out_dir is not None and not isinstance(self.out_dir, (str, os.PathLike)):
            raise TypeError(f"TrainConfig.out_dir must be a path or None, got "
                            f"{type(self.out_dir).__name__}")

    def resolved(self) -> "TrainConfig":
        r"""A copy with the defaults that depend on other fields filled in (``min_lr``,
        ``lr_decay_iters``, ``scalar_lr``, ``checkpoint_interval``)."""
        return dataclasses.replace(
            self,
            min_lr=self.learning_rate / 10 if self.min_lr is None else self.min_lr,
            lr_decay_iters=self.max_iters if self.lr_decay_iters is None
            else self.lr_decay_iters,
            scalar_lr=self.learning_rate if self.scalar_lr is None else self.scalar_lr,
            checkpoint_interval=self.eval_interval if self.checkpoint_interval is None
            else self.checkpoint_interval)

    @property
    def tokens_per_iter(self) -> int:
        return self.batch_size * self.grad_accum * self.block_size


@dataclass
class TrainResult:
    r"""What a run of :func:`train` measured.

    ``train_time`` (seconds of training steps, evaluation excluded) and ``wall_time``
    (seconds of the whole run, evaluation included) are summed over the sessions of a resumed
    run; work lost to a kill after the last checkpoint is not counted. ``tokens_per_sec`` is
    the rate of this session's steps, or of the whole run when this session made none (a
    finished run resumed).
    """

    iters: int
    best_val_loss: float
    val_loss: float
    train_loss: float
    num_params: int
    train_time: float
    wall_time: float
    tokens_per_sec: float
    history: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------

def is_dynamics_scalar(name: str) -> bool:
    r"""Whether a qualified parameter name is one of the dynamics' learned scalars
    (``mu``, ``beta``, ``gamma`` of :class:`~graphformer.nn.Nesterov` and
    :class:`~graphformer.nn.HeavyBall`, stored as ``*_raw``); the velocity LayerNorms
    under ``.dynamics.`` are ordinary norms."""
    in_dynamics = name.startswith("dynamics.") or ".dynamics." in name
    return in_dynamics and name.rsplit(".", 1)[-1] in ("mu_raw", "beta_raw", "gamma_raw")


def configure_optimizer(model: nn.Module, config: TrainConfig,
                        device_type: str = "cpu") -> torch.optim.AdamW:
    r"""AdamW with three parameter groups: the >= 2-D weights (decayed), the other tensors
    (norms, biases: not decayed) and the dynamics' scalars (not decayed, learning rate
    ``scalar_lr``). Every group keeps its peak learning rate in ``"peak_lr"``."""
    config = config.resolved()
    decay, no_decay, scalars = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_dynamics_scalar(name):
            scalars.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "peak_lr": config.learning_rate,
         "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "peak_lr": config.learning_rate,
         "name": "no_decay"},
        {"params": scalars, "weight_decay": 0.0, "peak_lr": config.scalar_lr,
         "name": "dynamics"},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.learning_rate,
                             betas=(config.beta1, config.beta2), **kwargs)


def get_lr(it: int, config: TrainConfig) -> float:
    r"""The learning rate of step :obj:`it`: linear warmup for ``warmup_iters`` steps (to
    ``learning_rate`` at step ``warmup_iters - 1``), then a cosine from ``learning_rate``
    down to ``min_lr`` at ``lr_decay_iters``, then ``min_lr``
    (:func:`graphformer.schedule.warmup_cosine`).

    .. math::
        \eta_t = \eta_{\min} + \tfrac12 (1 + \cos(\pi r)) (\eta_{\max} - \eta_{\min}),
        \quad r = \frac{t - t_w}{t_d - t_w}
    """
    config = config.resolved()
    lr, min_lr = config.learning_rate, config.min_lr
    return lr * warmup_cosine(it, config.lr_decay_iters, config.warmup_iters, min_lr / lr)


def flops_per_token(num_params: int, n_layer: int, n_head: int, n_embd: int,
                    block_size: int) -> float:
    r"""Training FLOPs per token of a GPT (PaLM appendix B, as nanoGPT's ``estimate_mfu``):
    :math:`6N + 12 L H Q T` with :math:`Q = d / H`."""
    return 6 * num_params + 12 * n_layer * n_head * (n_embd // n_head) * block_size


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    r"""Write :obj:`state` with :func:`torch.save` atomically: a temporary file in the same
    folder, flushed to disk, then renamed over :obj:`path`. A crash leaves either the old file
    or the new one, never a torn one."""
    atomic_write(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    r"""Read a checkpoint written by :func:`train` (tensors and plain Python objects only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a torn or foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


def _rng_state(data_generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "data": data_generator.get_state(),
    }


def _set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    data_generator.set_state(state["data"])


def _model_config(model: nn.Module) -> dict | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, dict):
        return dict(cfg)
    return None


def _vocab(corpus: Corpus) -> dict | None:
    return corpus.tokenizer.to_dict() if corpus.tokenizer is not None else None


def _check_resume(ckpt: dict, path: Path, model: nn.Module, corpus: Corpus,
                  config: TrainConfig) -> None:
    r"""Raise a ValueError that says what differs when a checkpoint does not fit this run."""
    if ckpt.get("vocab_size") != corpus.vocab_size:
        raise ValueError(f"{path}: the vocabulary differs: {ckpt.get('vocab_size')} symbols in "
                         f"the checkpoint, {corpus.vocab_size} in this corpus")
    if ckpt.get("vocab") is not None and corpus.tokenizer is not None:
        saved = CharTokenizer.from_dict(ckpt["vocab"])
        if saved != corpus.tokenizer:
            raise ValueError(f"{path}: the vocabulary differs from the checkpoint's "
                             f"(checkpoint vs this corpus: "
                             f"{saved.difference(corpus.tokenizer)})")
    cls = type(model).__qualname__
    if ckpt.get("model_class") != cls:
        raise ValueError(f"{path}: the checkpoint holds a {ckpt.get('model_class')} model, "
                         f"this run builds a {cls}")
    old, new = ckpt.get("model_config"), _model_config(model)
    if old != new:
        if isinstance(old, dict) and isinstance(new, dict):
            diff = [f"{k}={old.get(k, '<absent>')!r} in the checkpoint, "
                    f"{new.get(k, '<absent>')!r} in this run"
                    for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise ValueError(f"{path}: the checkpoint is of another architecture: "
                             + "; ".join(diff))
        raise ValueError(f"{path}: the checkpoint's model config {old!r} differs from this "
                         f"run's {new!r}")
    ours = model.state_dict()
    theirs = ckpt["model"]
    bad = [k for k in sorted(set(ours) | set(theirs))
           if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape]
    if bad:
        raise ValueError(f"{path}: the checkpoint's parameters do not fit the model (another "
                         f"architecture?): {bad[:5]}")
    if ckpt.get("data", {}).get("corpus") not in (None, corpus.describe()):
        warnings.warn(f"{path}: the corpus differs from the checkpoint's "
                      f"({ckpt['data']['corpus']} vs {corpus.describe()})", stacklevel=5)
    old_cfg = ckpt.get("train_config", {})
    changed = [k for k in ("batch_size", "block_size", "grad_accum", "learning_rate",
                           "min_lr", "warmup_iters", "lr_decay_iters", "seed")
               if k in old_cfg and old_cfg[k] != getattr(config, k)]
    if changed:
        warnings.warn(f"{path}: resuming with changed {', '.join(changed)}; the run will not "
                      f"equal an uninterrupted one", stacklevel=5)


# --------------------------------------------------------------------------------------------
# Distributed set-up
# --------------------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    created: bool = False  # we called init_process_group, so we tear it down
    group: bool = False  # a process group is in use (even one of a single process)

    @property
    def enabled(self) -> bool:
        return self.group

    @property
    def master(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_str: str) -> _Dist:
    r"""The process group of the run: the one already initialised (by the caller, e.g.
    ``benchmarks/lm.py`` under ``torchrun``, or a test's one-process group), else one
    created from ``torchrun``'s environment when ``WORLD_SIZE > 1``, else none."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        return _Dist(rank, local_rank, dist.get_world_size(), created=False, group=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = device_str != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), local_rank, dist.get_world_size(), created=True, group=True)


def _resolve_device(device: str, ddp: _Dist) -> torch.device:
    r"""The device of this process: :func:`~graphformer.device.resolve_device`, and under
    ``torchrun`` on CUDA ``cuda:LOCAL_RANK``."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        if ddp.enabled:
            dev = torch.device("cuda", ddp.local_rank)
        elif dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def _autocast(config: TrainConfig, device: torch.device):
    dtype = config.dtype
    if dtype == "auto":
        dtype = ("bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported()
                 else "float32")
    if dtype == "bfloat16":
        if device.type != "cuda":
            raise ValueError("dtype='bfloat16' autocast is used on CUDA only; use 'float32' "
                             f"(or 'auto') on {device.type}")
        return dtype, torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return dtype, nullcontext()


def _elapsed(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time() - t0


def _check_finite(model: nn.Module, it: int, val_loss: float | None) -> None:
    r"""Raise FloatingPointError, before a checkpoint is written, when the model has diverged:
    a non-finite parameter, or a non-finite validation loss (``None``: not evaluated)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(f"parameter {bad[0]} is not finite at step {it} ({len(bad)} "
                                 f"tensor(s) in all); no checkpoint was written, the last one "
                                 f"is kept")
    if val_loss is not None and not math.isfinite(val_loss):
        raise FloatingPointError(f"the validation loss is {val_loss} at step {it}; no "
                                 f"checkpoint was written, the last one is kept")


def _all_reduce_mean(t: torch.Tensor, ddp: _Dist) -> torch.Tensor:
    if ddp.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ddp.world_size
    return t


# --------------------------------------------------------------------------------------------
# Evaluation and sampling
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def estimate_loss(model: nn.Module, corpus: Corpus, split: str = "val", *, eval_iters: int,
                  batch_size: int, block_size: int, seed: int = 0,
                  device: torch.device | str = "cpu", autocast=None, rank: int = 0,
                  world_size: int = 1) -> float:
    r"""Mean loss over :obj:`eval_iters` random batches of a split, drawn from a generator
    seeded with :obj:`seed` (the same batches at every call). With several processes, each
    evaluates its rows of every batch and the means are averaged."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros((), device=device)
    for _ in range(eval_iters):
        x, y = corpus.get_batch(split, batch_size, block_size, gen, rank=rank,
                                world_size=world_size, device=device)
        with autocast if autocast is not None else nullcontext():
            _, loss = model(x, y)
        total += loss.float()
    total /= eval_iters
    if world_size > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        total /= world_size
    model.train(was_training)
    return total.item()


def _sample(model: nn.Module, corpus: Corpus, config: TrainConfig, device: torch.device,
            it: int) -> str:
    if not hasattr(model, "generate"):
        return ""
    tok = corpus.tokenizer
    prompt = [tok.stoi[c] for c in config.sample_prompt if c in tok.stoi] if tok else []
    prompt = prompt or [0]
    idx = torch.tensor([prompt], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):  # leave the run's RNG alone
        torch.manual_seed(config.seed + it)
        out = model.generate(idx, config.sample_tokens)
    model.train(was_training)
    ids = out[0].tolist()
    return tok.decode(ids) if tok is not None else " ".join(map(str, ids))


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

class _Log:
    r"""The JSONL log of a run (process 0 only)."""

    def __init__(self, path: Path | None, keep_until: int | None):
        self.path = path
        self.records: list[dict] = []
        if path is None:
            return
        if keep_until is not None and path.is_file():  # resume: drop what came after the ckpt
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if rec.get("iter", 0) <= keep_until:
                    self.records.append(rec)
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in self.records))

    def __call__(self, **rec) -> dict:
        self.records.append(rec)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        return rec


def train(model: nn.Module, corpus: Corpus, config: TrainConfig | None = None, *,
          resume: bool = False) -> TrainResult:
    r"""Train :obj:`model` on :obj:`corpus`; see the module docstring.

    Args:
        model (nn.Module): ``logits, loss = model(x, targets)``; ``model.config`` (a dataclass
            or dict) is saved with the checkpoint and checked on resume; ``model.generate`` is
            used for samples.
        corpus (Corpus): the data; its vocabulary is saved with the run.
        config (TrainConfig, optional): the run (default :class:`TrainConfig()`).
        resume (bool): continue from ``out_dir/ckpt.pt`` exactly where it stopped.

    Returns:
        :class:`TrainResult` (process 0 holds the history; the losses agree on every process).
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    ddp = _setup_distributed(config.device)
    try:
        return _train(model, corpus, config, resume, ddp)
    finally:
        if ddp.created:
            dist.destroy_process_group()


def _train(model: nn.Module, corpus: Corpus, config: TrainConfig, resume: bool,
           ddp: _Dist) -> TrainResult:
    r"""The loop, as nanoGPT's ``train.py`` reads: set up (or resume), then at every step
    evaluate, sample and checkpoint when due, take one optimisation step, log."""
    run = _setup(model, corpus, config, resume, ddp)
    cfg = run.cfg
    while True:
        last = run.it >= cfg.max_iters
        at_resume_point = resume and run.it == run.start_iter  # evaluated and saved there
        do_eval = not at_resume_point and (run.it % cfg.eval_interval == 0 or last)
        do_sample = (run.master and not at_resume_point and cfg.sample_interval > 0
                     and run.it > 0 and (run.it % cfg.sample_interval == 0 or last))
        do_ckpt = run.it > run.start_iter and (run.it % cfg.checkpoint_interval == 0 or last)
        if do_eval or do_sample or do_ckpt:
            # tokens/s counts training only: the clock stops for evaluation, samples and
            # checkpoints
            run.pending += _elapsed(run.t_step, run.device)
        if do_eval:
            _evaluate(run)
        if do_sample:
            _log_sample(run)
        if do_ckpt:
            _checkpoint(run, evaluated=do_eval)
        if do_eval or do_sample or do_ckpt:
            run.t_step = time.time()
        if last:
            break
        loss, lr = _optimisation_step(run)
        if run.it % cfg.log_interval == 0 or run.it == cfg.max_iters:
            _log_training(run, loss, lr)
    run.bar.close()
    return _result(run)


@dataclass
class _Run:
    r"""Everything a run carries from step to step (what nanoGPT keeps in globals)."""

    cfg: TrainConfig
    ddp: _Dist
    corpus: Corpus
    device: torch.device
    dtype: str
    autocast: Any
    raw: nn.Module  # the model itself: its weights are saved
    fwd: nn.Module  # the model as called for evaluation (compiled or not)
    step_model: nn.Module  # the model as called for training (compiled, in DDP or not)
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    ckpt_path: Path | None
    log: _Log
    bar: Any
    start_iter: int
    num_params: int
    mfu_flops: float | None  # training FLOPs per token, when peak_flops is given
    t_wall: float  # when this session began
    wall_before: float  # wall time of the earlier sessions of a resumed run
    best_val: float = math.inf
    val_loss: float = math.nan
    train_loss: float = math.nan
    train_time: float = 0.0  # seconds of training steps, all sessions
    train_time_at_start: float = 0.0
    it: int = 0
    pending: float = 0.0  # training seconds not yet logged
    t_step: float = 0.0  # when the current stretch of training steps began
    it_last: int = 0  # the step of the last training log

    @property
    def master(self) -> bool:
        return self.ddp.master


# --- set-up and resume ----------------------------------------------------------------------

def _check_run(model: nn.Module, corpus: Corpus, cfg: TrainConfig, ddp: _Dist) -> None:
    r"""Everything that can be checked before a byte is written."""
    corpus.check_block_size(cfg.block_size)
    if cfg.batch_size % ddp.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is the global batch and must be "
                         f"divisible by the number of processes {ddp.world_size}")
    mcfg = getattr(model, "config", None)
    m_vocab = getattr(mcfg, "vocab_size", None)
    if m_vocab is not None and m_vocab < corpus.vocab_size:
        raise ValueError(f"the corpus has {corpus.vocab_size} symbols but the model's "
                         f"vocab_size is {m_vocab}")
    m_block = getattr(mcfg, "block_size", None)
    if m_block is not None and m_block < cfg.block_size:
        raise ValueError(f"TrainConfig.block_size {cfg.block_size} is larger than the model's "
                         f"block_size {m_block}")


def _setup(model: nn.Module, corpus: Corpus, config: TrainConfig, resume: bool,
           ddp: _Dist) -> _Run:
    r"""Check the run, then build it: the device, the optimizer, the state of a resumed run
    (or fresh seeds), the compiled and distributed model, the log and the progress bar."""
    t_wall = time.time()
    cfg = config.resolved()
    device = _resolve_device(cfg.device, ddp)
    dtype, autocast = _autocast(cfg, device)
    if cfg.compile:
        check_compile(device)
    _check_run(model, corpus, cfg, ddp)
    out = Path(cfg.out_dir) if cfg.out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    ckpt = None
    if resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs an out_dir to resume from")
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        _check_resume(ckpt, ckpt_path, model, corpus, cfg)
    elif ckpt_path is not None and ckpt_path.exists() and not cfg.overwrite:
        raise ValueError(f"{ckpt_path} already exists: pass resume=True to continue that run, "
                         f"overwrite=True to replace it, or another out_dir")

    raw = model.to(device)
    optimizer = configure_optimizer(raw, cfg, device.type)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    state = dict(start_iter=0, best_val=math.inf, val_loss=math.nan, train_time=0.0,
                 wall_before=0.0)
    if ckpt is not None:
        state = _restore(ckpt, ckpt_path, raw, optimizer, data_gen, ddp)
        del ckpt
    else:
        torch.manual_seed(cfg.seed + ddp.rank)
        np.random.seed(cfg.seed + ddp.rank)
        random.seed(cfg.seed + ddp.rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    fwd = torch.compile(raw) if cfg.compile else raw
    step_model = fwd
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        step_model = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)

    start_iter = state["start_iter"]
    log = _Log(out / LOG_NAME if (out is not None and ddp.master) else None,
               keep_until=start_iter if resume else None)
    if ddp.master and out is not None and not resume and corpus.tokenizer is not None:
        corpus.tokenizer.save(out / VOCAB_NAME)
    num_params = sum(p.numel() for p in raw.parameters())
    mcfg = getattr(model, "config", None)
    mfu_flops = None
    if cfg.peak_flops and all(hasattr(mcfg, k) for k in ("n_layer", "n_head", "n_embd")):
        n = raw.get_num_params() if hasattr(raw, "get_num_params") else num_params
        mfu_flops = flops_per_token(n, mcfg.n_layer, mcfg.n_head, mcfg.n_embd, cfg.block_size)
    if ddp.master:
        log(event="start", iter=start_iter, resume=resume, num_params=num_params,
            world_size=ddp.world_size, device=str(device), dtype=dtype,
            corpus=corpus.describe(), model_config=_model_config(raw),
            train_config=dataclasses.asdict(cfg))

    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.max_iters, initial=start_iter, disable=not (ddp.master and cfg.progress),
               dynamic_ncols=True, desc="train")
    run = _Run(cfg=cfg, ddp=ddp, corpus=corpus, device=device, dtype=dtype, autocast=autocast,
               raw=raw, fwd=fwd, step_model=step_model, optimizer=optimizer,
               data_gen=data_gen, ckpt_path=ckpt_path, log=log, bar=bar,
               start_iter=start_iter, num_params=num_params, mfu_flops=mfu_flops,
               t_wall=t_wall, wall_before=state["wall_before"], best_val=state["best_val"],
               val_loss=state["val_loss"], train_time=state["train_time"],
               train_time_at_start=state["train_time"], it=start_iter, it_last=start_iter)
    step_model.train()
    run.t_step = time.time()
    return run


def _restore(ckpt: dict, ckpt_path: Path, raw: nn.Module, optimizer: torch.optim.Optimizer,
             data_gen: torch.Generator, ddp: _Dist) -> dict:
    r"""Load a checkpoint's weights, optimizer and RNG states; return where the run was."""
    raw.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    rng = ckpt["rng"]
    if len(rng) != ddp.world_size:
        warnings.warn(f"{ckpt_path}: written by {len(rng)} process(es), resumed by "
                      f"{ddp.world_size}; dropout will not repeat the same masks",
                      stacklevel=5)
    _set_rng_state(rng[ddp.rank % len(rng)], data_gen)
    return dict(start_iter=int(ckpt["iter_num"]), best_val=float(ckpt["best_val_loss"]),
                val_loss=float(ckpt.get("val_loss", math.nan)),
                train_time=float(ckpt.get("train_time", 0.0)),
                wall_before=float(ckpt.get("wall_time", 0.0)))


# --- one optimisation step ------------------------------------------------------------------

def _optimisation_step(run: _Run) -> tuple[torch.Tensor, float]:
    r"""Set the learning rate of the step, accumulate the gradients of ``grad_accum``
    micro-batches, clip, step. Returns the summed micro-batch losses (on the device, not
    synchronised) and the learning rate."""
    cfg, ddp = run.cfg, run.ddp
    lr = get_lr(run.it, cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = group["peak_lr"] * lr / cfg.learning_rate
    loss_sum = torch.zeros((), device=run.device)
    for micro in range(cfg.grad_accum):
        x, y = run.corpus.get_batch("train", cfg.batch_size, cfg.block_size, run.data_gen,
                                    rank=ddp.rank, world_size=ddp.world_size,
                                    device=run.device)
        if ddp.enabled:  # all-reduce the gradients on the last micro-step only
            run.step_model.require_backward_grad_sync = micro == cfg.grad_accum - 1
        with run.autocast:
            _, loss = run.step_model(x, y)
        (loss / cfg.grad_accum).backward()
        loss_sum += loss.detach().float()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.raw.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.it += 1
    run.bar.update(1)
    return loss_sum, lr


# --- evaluation -----------------------------------------------------------------------------

def _evaluate(run: _Run) -> None:
    r"""The validation loss on the fixed evaluation batches; keep the best."""
    cfg = run.cfg
    run.val_loss = estimate_loss(
        run.fwd, run.corpus, "val", eval_iters=cfg.eval_iters, batch_size=cfg.batch_size,
        block_size=cfg.block_size, seed=cfg.seed + 1, device=run.device,
        autocast=run.autocast, rank=run.ddp.rank, world_size=run.ddp.world_size)
    run.best_val = min(run.best_val, run.val_loss)
    if run.master:
        run.log(event="eval", iter=run.it, val_loss=run.val_loss, best_val_loss=run.best_val,
                time=time.time() - run.t_wall)
        _show(run)


def _log_sample(run: _Run) -> None:
    text = _sample(run.raw, run.corpus, run.cfg, run.device, run.it)
    run.log(event="sample", iter=run.it, text=text)
    run.bar.write(f"--- sample at step {run.it} ---\n{text}\n---")


# --- checkpoint -----------------------------------------------------------------------------

def _checkpoint(run: _Run, evaluated: bool) -> None:
    r"""Write everything the run needs to continue exactly, atomically (process 0); never
    over a good checkpoint with a diverged model."""
    if run.ckpt_path is None:
        return
    cfg, ddp, it = run.cfg, run.ddp, run.it
    # every process raises: the weights are the same everywhere and the validation loss
    # is all-reduced
    _check_finite(run.raw, it, run.val_loss if evaluated else None)
    rng = [_rng_state(run.data_gen)]  # every process's RNG (dropout differs between them)
    if ddp.enabled:
        rng = [None] * ddp.world_size
        dist.all_gather_object(rng, _rng_state(run.data_gen))
    if not run.master:
        return
    save_checkpoint({
        "model": run.raw.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "iter_num": it,
        "schedule": {"lr": get_lr(it, cfg), "warmup_iters": cfg.warmup_iters,
                     "lr_decay_iters": cfg.lr_decay_iters, "min_lr": cfg.min_lr},
        "best_val_loss": run.best_val,
        "val_loss": run.val_loss,
        "train_time": run.train_time,
        "wall_time": run.wall_before + time.time() - run.t_wall,
        "rng": rng,
        "data": {"corpus": run.corpus.describe()},
        "model_class": type(run.raw).__qualname__,
        "model_config": _model_config(run.raw),
        "vocab_size": run.corpus.vocab_size,
        "vocab": _vocab(run.corpus),
        "train_config": dataclasses.asdict(cfg),
        "world_size": ddp.world_size,
    }, run.ckpt_path)


# --- logging --------------------------------------------------------------------------------

def _log_training(run: _Run, loss_sum: torch.Tensor, lr: float) -> None:
    r"""Average the training loss over the micro-batches (and processes), stop on a
    non-finite one, and log it with the rate of the steps since the last log."""
    cfg, it = run.cfg, run.it
    run.train_loss = _all_reduce_mean(loss_sum / cfg.grad_accum, run.ddp).item()
    if not math.isfinite(run.train_loss):
        raise FloatingPointError(f"the training loss is {run.train_loss} at step {it} "
                                 f"(learning rate {lr:.3g}); no checkpoint was written")
    now = time.time()  # .item() above waited for the device
    run.pending += now - run.t_step
    run.train_time += run.pending
    tps = (it - run.it_last) * cfg.tokens_per_iter / max(run.pending, 1e-9)
    run.pending, run.t_step, run.it_last = 0.0, now, it
    if run.master:
        rec = dict(event="train", iter=it, loss=run.train_loss, lr=lr, tokens_per_sec=tps,
                   time=now - run.t_wall)
        if run.mfu_flops is not None:
            rec["mfu"] = run.mfu_flops * tps / (cfg.peak_flops * run.ddp.world_size)
        run.log(**rec)
        _show(run, tps)


def _show(run: _Run, tokens_per_sec: float | None = None) -> None:
    r"""The progress bar's figures: only those that have a value yet (no ``loss=nan``
    before the first training loss is averaged)."""
    shown = {"loss": run.train_loss, "val": run.val_loss}
    postfix = {k: f"{v:.4f}" for k, v in shown.items() if math.isfinite(v)}
    if tokens_per_sec is not None:
        postfix["tok_s"] = f"{tokens_per_sec:,.0f}"
    run.bar.set_postfix(postfix)


def _result(run: _Run) -> TrainResult:
    cfg, it = run.cfg, run.it
    seconds = run.train_time - run.train_time_at_start  # this session's steps
    if it > run.start_iter and seconds > 0:
        tps = (it - run.start_iter) * cfg.tokens_per_iter / seconds
    else:  # nothing left to do (a finished run resumed): the whole run's rate
        tps = it * cfg.tokens_per_iter / run.train_time if run.train_time > 0 else 0.0
    return TrainResult(
        iters=it, best_val_loss=run.best_val, val_loss=run.val_loss,
        train_loss=run.train_loss, num_params=run.num_params, train_time=run.train_time,
        wall_time=run.wall_before + time.time() - run.t_wall, tokens_per_sec=tps,
        history=run.log.records)
