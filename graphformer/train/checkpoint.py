r"""Checkpoints: everything a run needs to continue exactly (model, optimizer, step, the
RNG states of torch, numpy and Python, the data generator, the model config and the
vocabulary), written atomically; and the checks that a checkpoint fits the run that
resumes it."""
from __future__ import annotations

import dataclasses
import math
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphformer.datasets.text import CharTokenizer, Corpus
from graphformer.io import atomic_write
from graphformer.train.config import TrainConfig, TrainResult
from graphformer.train.distributed import Dist
from graphformer.train.schedule import get_lr

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint", "check_resume",
           "restore", "check_finite", "finished_result", "checkpoint_state", "rng_state", "seed_all", "model_config_of", "vocab_of"]

CHECKPOINT_NAME = "ckpt.pt"


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    r"""Write :obj:`state` with :func:`torch.save` atomically: a temporary file in the same
    folder, flushed to disk, then renamed over :obj:`path`. A crash leaves either the old file
    or the new one, never a torn one; a full disk raises ``OSError(ENOSPC)`` naming
    :obj:`path`, with the old file intact.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from graphformer.train import load_checkpoint, save_checkpoint
        >>> path = Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> save_checkpoint({"iter_num": 3, "best_val_loss": 1.9}, path)
        >>> load_checkpoint(path)
        {'iter_num': 3, 'best_val_loss': 1.9}
    """
    atomic_write(path, lambda f: torch.save(state, f), binary=True)


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, iter_num: int,
                     cfg: TrainConfig, corpus: Corpus, rng: list, **measured: float) -> dict:
    r"""Everything a run needs to continue exactly from step :obj:`iter_num`; ``measured``
    holds its figures (``best_val_loss``, ``val_loss``, ``train_loss``, ``train_time``,
    ``wall_time``, ``world_size``)."""
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter_num": iter_num,
        "schedule": {"lr": get_lr(iter_num, cfg), "warmup_iters": cfg.warmup_iters,
                     "lr_decay_iters": cfg.lr_decay_iters, "min_lr": cfg.min_lr},
        **measured, "rng": rng, "data": {"corpus": corpus.describe()},
        "model_class": type(model).__qualname__, "model_config": model_config_of(model),
        "vocab_size": corpus.vocab_size, "vocab": vocab_of(corpus),
        "train_config": dataclasses.asdict(cfg),
    }


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    r"""Read a checkpoint written by :func:`train` (tensors and plain Python objects only).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from graphformer.train import load_checkpoint
        >>> load_checkpoint(Path(tempfile.mkdtemp()) / "ckpt.pt")    # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: .../ckpt.pt: no checkpoint to resume from
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a torn or foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


def seed_all(seed: int) -> None:
    r"""Seed torch, numpy and Python's ``random`` (a fresh run)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state(data_generator: torch.Generator) -> dict:
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


def set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    data_generator.set_state(state["data"])


def model_config_of(model: nn.Module) -> dict | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, dict):
        return dict(cfg)
    return None


def vocab_of(corpus: Corpus) -> dict | None:
    return corpus.tokenizer.to_dict() if corpus.tokenizer is not None else None


def check_resume(ckpt: dict, path: Path, model: nn.Module, corpus: Corpus,
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
    old, new = ckpt.get("model_config"), model_config_of(model)
    if isinstance(old, dict) and isinstance(new, dict):
        # a field added to the config since the checkpoint was written, at its default,
        # is the architecture the checkpoint had
        cfg = getattr(model, "config", None)
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)
                    if f.default is not dataclasses.MISSING} if dataclasses.is_dataclass(cfg) else {}
        old = {**{k: v for k, v in defaults.items() if k not in old and k in new}, **old}
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


def restore(ckpt: dict, ckpt_path: Path, raw: nn.Module, optimizer: torch.optim.Optimizer,
            data_gen: torch.Generator, ddp: Dist) -> dict:
    r"""Load a checkpoint's weights, optimizer and RNG states; return where the run was."""
    raw.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    rng = ckpt["rng"]
    if len(rng) != ddp.world_size:
        warnings.warn(f"{ckpt_path}: written by {len(rng)} process(es), resumed by "
                      f"{ddp.world_size}; dropout will not repeat the same masks",
                      stacklevel=5)
    set_rng_state(rng[ddp.rank % len(rng)], data_gen)
    return dict(start_iter=int(ckpt["iter_num"]), best_val=float(ckpt["best_val_loss"]),
                val_loss=float(ckpt.get("val_loss", math.nan)),
                train_loss=float(ckpt.get("train_loss", math.nan)),
                train_time=float(ckpt.get("train_time", 0.0)),
                wall_before=float(ckpt.get("wall_time", 0.0)))


def check_finite(model: nn.Module, it: int, val_loss: float | None) -> None:
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


def finished_result(model: nn.Module, ckpt: dict, tokens_per_iter: int,
                    history: list[dict]) -> TrainResult:
    r"""The result of a run that had finished, from its checkpoint and log (a finished run
    resumed writes nothing); the model gets its weights."""
    model.load_state_dict(ckpt["model"])
    it, train_time = int(ckpt["iter_num"]), float(ckpt.get("train_time", 0.0))
    return TrainResult(
        iters=it, best_val_loss=float(ckpt["best_val_loss"]),
        val_loss=float(ckpt.get("val_loss", math.nan)),
        train_loss=float(ckpt.get("train_loss", math.nan)),
        num_params=sum(p.numel() for p in model.parameters()), train_time=train_time,
        wall_time=float(ckpt.get("wall_time", 0.0)),
        tokens_per_sec=it * tokens_per_iter / train_time if train_time > 0 else 0.0,
        history=history)
