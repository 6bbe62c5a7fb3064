r"""The settings of a training run (:class:`TrainConfig`) and what it measured
(:class:`TrainResult`)."""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

from graphformer.checks import check_int
from graphformer.device import check_device_name

__all__ = ["TrainConfig", "TrainResult", "MAX_SEED", "check_fits"]


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
        beta1, beta2 (float): AdamW's betas (``beta2 = 0.99``, nanoGPT's value for its
            character-level configuration, whose batches are small).
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

    Example:
        >>> from graphformer.train import TrainConfig
        >>> config = TrainConfig(max_iters=100, warmup_iters=10)  # nanoGPT's char defaults
        >>> config.tokens_per_iter, config.resolved().min_lr      # 12 x 64; learning_rate / 10
        (768, 0.0001)
        >>> TrainConfig(beta2=1.0)
        Traceback (most recent call last):
        ValueError: TrainConfig.beta2 must be in [0, 1), got 1.0
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
    beta2: float = 0.99
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


def check_fits(cfg: TrainConfig, model: Any, corpus: Any, world_size: int = 1) -> None:
    r"""Raise a ValueError when the run's settings do not fit the model, the corpus or the
    number of processes (checked before a byte is written)."""
    corpus.check_block_size(cfg.block_size)
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is the global batch and must be "
                         f"divisible by the number of processes {world_size}")
    mcfg = getattr(model, "config", None)
    m_vocab = getattr(mcfg, "vocab_size", None)
    if m_vocab is not None and m_vocab < corpus.vocab_size:
        raise ValueError(f"the corpus has {corpus.vocab_size} symbols but the model's "
                         f"vocab_size is {m_vocab}")
    m_block = getattr(mcfg, "block_size", None)
    if m_block is not None and m_block < cfg.block_size:
        raise ValueError(f"TrainConfig.block_size {cfg.block_size} is larger than the model's "
                         f"block_size {m_block}")
