r"""The training loop. It reads as nanoGPT's ``train.py`` does: set up (or resume), then
at every step evaluate, sample and checkpoint when due, take one optimisation step, log.
A SIGTERM or a Ctrl-C stops it between two steps with the last checkpoint kept."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from graphformer.datasets.text import Corpus
from graphformer.device import check_compile
from graphformer.io import remove_stale_temps
from graphformer.train.checkpoint import (CHECKPOINT_NAME, check_finite, check_resume,
                                          checkpoint_state, finished_result, load_checkpoint,
                                          model_config_of, restore, rng_state,
                                          save_checkpoint, seed_all)
from graphformer.train.config import TrainConfig, TrainResult, check_fits
from graphformer.train.distributed import (Dist, all_reduce_mean, autocast_context, elapsed,
                                           run_device, setup_distributed)
from graphformer.train.evaluation import estimate_loss, sample_text
from graphformer.train.log import LOG_NAME, Log, model_flops_per_token, read_log, show
from graphformer.train.optimizer import configure_optimizer, set_lr
from graphformer.train.schedule import get_lr
from graphformer.train.signals import StopSignals

__all__ = ["train", "VOCAB_NAME"]

VOCAB_NAME = "vocab.json"
#: every file a run writes in ``out_dir``: their temporary files are removed at start
RUN_FILES = [CHECKPOINT_NAME, LOG_NAME, VOCAB_NAME]


def train(model: nn.Module, corpus: Corpus, config: TrainConfig | None = None, *,
          resume: bool = False) -> TrainResult:
    r"""Train :obj:`model` on :obj:`corpus`; see :mod:`graphformer.train`.

    Args:
        model (nn.Module): ``logits, loss = model(x, targets)``; ``model.config`` (a dataclass
            or dict) is saved with the checkpoint and checked on resume; ``model.generate`` is
            used for samples.
        corpus (Corpus): the data; its vocabulary is saved with the run.
        config (TrainConfig, optional): the run (default :class:`TrainConfig()`).
        resume (bool): continue from ``out_dir/ckpt.pt`` exactly where it stopped; a run that
            had finished is reported from its checkpoint and log, and no file is written.

    Returns:
        :class:`TrainResult` (process 0 holds the history; the losses agree on every process).

    Raises:
        TrainingInterrupted: a SIGTERM or a Ctrl-C stopped the run between two steps; the
            last checkpoint is kept and ``resume=True`` continues from it.

    Example:
        >>> from graphformer.datasets import TextCorpus
        >>> from graphformer.models import GPT, GPTConfig
        >>> from graphformer.train import TrainConfig, train
        >>> corpus = TextCorpus.generated(20_000, seed=0)
        >>> model = GPT(GPTConfig(vocab_size=corpus.vocab_size, block_size=16, n_layer=1,
        ...                       n_head=2, n_embd=16))
        >>> config = TrainConfig(max_iters=10, batch_size=4, block_size=16, warmup_iters=2,
        ...                      eval_interval=5, eval_iters=2, out_dir=None, progress=False)
        >>> result = train(model, corpus, config)               # out_dir=None: writes nothing
        >>> result.iters, result.num_params
        (10, 4400)
        >>> [h["iter"] for h in result.history if h["event"] == "eval"]  # the evaluations
        [0, 5, 10]
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    ddp = setup_distributed(config.device)
    try:
        with StopSignals() as stop:
            return _train(model, corpus, config, resume, ddp, stop)
    finally:
        if ddp.created:
            dist.destroy_process_group()


@dataclass
class Run:
    r"""Everything a run carries from step to step (what nanoGPT keeps in globals)."""

    cfg: TrainConfig
    ddp: Dist
    corpus: Corpus
    device: torch.device
    autocast: Any
    raw: nn.Module  # the model itself: its weights are saved
    fwd: nn.Module  # the model as called for evaluation (compiled or not)
    step_model: nn.Module  # the model as called for training (compiled, in DDP or not)
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    ckpt_path: Path | None
    log: Log
    bar: Any
    start_iter: int
    mfu_flops: float | None  # training FLOPs per token, when peak_flops is given
    t_wall: float  # when this session began
    wall_before: float = 0.0  # wall time of the earlier sessions of a resumed run
    best_val: float = math.inf
    val_loss: float = math.nan
    train_loss: float = math.nan
    train_time: float = 0.0  # seconds of training steps, all sessions
    train_time_at_start: float = 0.0
    it: int = 0
    pending: float = 0.0  # training seconds not yet logged
    t_step: float = 0.0  # when the current stretch of training steps began
    it_last: int = 0  # the step of the last training log
    ckpt_iter: int | None = None  # the step of the last checkpoint on disk


def _train(model: nn.Module, corpus: Corpus, config: TrainConfig, resume: bool, ddp: Dist,
           stop: StopSignals) -> TrainResult:
    r"""The loop: at every step evaluate, sample and checkpoint when due, then one
    optimisation step, its log line, and a look for a stop signal."""
    cfg = config.resolved()
    ckpt = _prepare(model, corpus, cfg, resume, ddp)
    if ckpt is not None and ckpt["iter_num"] >= cfg.max_iters:
        return finished_result(model, ckpt, cfg.tokens_per_iter,
                               read_log(Path(cfg.out_dir) / LOG_NAME, ckpt["iter_num"]))
    run = _setup(model, corpus, cfg, resume, ddp, ckpt)
    while True:
        last = run.it >= cfg.max_iters
        at_resume_point = resume and run.it == run.start_iter  # evaluated and saved there
        do_eval = not at_resume_point and (run.it % cfg.eval_interval == 0 or last)
        do_sample = (run.ddp.master and not at_resume_point and cfg.sample_interval > 0
                     and run.it > 0 and (run.it % cfg.sample_interval == 0 or last))
        do_ckpt = run.it > run.start_iter and (run.it % cfg.checkpoint_interval == 0 or last)
        if do_eval or do_sample or do_ckpt:  # tokens/s counts training steps only
            run.pending += elapsed(run.t_step, run.device)
        if do_eval:
            _evaluate(run)
        if do_sample:
            text = sample_text(run.raw, corpus, cfg.sample_prompt, cfg.sample_tokens,
                               cfg.seed + run.it, run.device)
            run.log(event="sample", iter=run.it, text=text)
            run.bar.write(f"--- sample at step {run.it} ---\n{text}\n---")
        if do_ckpt:
            _checkpoint(run, evaluated=do_eval)
        if do_eval or do_sample or do_ckpt:
            run.t_step = time.time()
        if last:
            break
        loss, lr = _optimisation_step(run)
        if run.it % cfg.log_interval == 0 or run.it == cfg.max_iters:
            _log_training(run, loss, lr)
        stop.check(run.it, run.ckpt_iter, run.ckpt_path, ddp, run.device,
                   every=cfg.log_interval)  # a SIGTERM or Ctrl-C came: stop here
    run.bar.close()
    return _result(run)


# --- set-up and resume ----------------------------------------------------------------------

def _prepare(model: nn.Module, corpus: Corpus, cfg: TrainConfig, resume: bool,
             ddp: Dist) -> dict | None:
    r"""Everything that is checked before a byte is written; the checkpoint to resume."""
    if cfg.compile:
        check_compile(run_device(cfg.device, ddp))
    check_fits(cfg, model, corpus, ddp.world_size)
    ckpt_path = Path(cfg.out_dir) / CHECKPOINT_NAME if cfg.out_dir is not None else None
    if not resume:
        if ckpt_path is not None and ckpt_path.exists() and not cfg.overwrite:
            raise ValueError(f"{ckpt_path} already exists: pass resume=True to continue that "
                             f"run, overwrite=True to replace it, or another out_dir")
        return None
    if ckpt_path is None:
        raise ValueError("resume=True needs an out_dir to resume from")
    ckpt = load_checkpoint(ckpt_path, map_location=run_device(cfg.device, ddp))
    check_resume(ckpt, ckpt_path, model, corpus, cfg)
    return ckpt


def _setup(model: nn.Module, corpus: Corpus, cfg: TrainConfig, resume: bool, ddp: Dist,
           ckpt: dict | None) -> Run:
    r"""Build the run: the device, the optimizer, the state of a resumed run (or fresh
    seeds), the compiled and distributed model, the log and the progress bar."""
    t_wall = time.time()
    device = run_device(cfg.device, ddp)
    dtype, autocast = autocast_context(cfg.dtype, device)
    out = Path(cfg.out_dir) if cfg.out_dir is not None else None
    if out is not None and ddp.master:
        remove_stale_temps(out, RUN_FILES)  # left by a process killed while writing
    raw = model.to(device)
    optimizer = configure_optimizer(raw, cfg, device.type)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    state = {}
    if ckpt is not None:
        state = restore(ckpt, out / CHECKPOINT_NAME, raw, optimizer, data_gen, ddp)
        del ckpt
    else:
        seed_all(cfg.seed + ddp.rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    fwd = torch.compile(raw) if cfg.compile else raw
    step_model = fwd
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        step_model = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)

    start_iter = state.get("start_iter", 0)
    log = Log(out / LOG_NAME if (out is not None and ddp.master) else None,
              keep_until=start_iter if resume else None)
    if ddp.master and out is not None and not resume and corpus.tokenizer is not None:
        corpus.tokenizer.save(out / VOCAB_NAME)
    num_params = sum(p.numel() for p in raw.parameters())
    mfu_flops = model_flops_per_token(raw, cfg.block_size) if cfg.peak_flops else None
    if ddp.master:
        log(event="start", iter=start_iter, resume=resume, num_params=num_params,
            world_size=ddp.world_size, device=str(device), dtype=dtype,
            corpus=corpus.describe(), model_config=model_config_of(raw),
            train_config=dataclasses.asdict(cfg))

    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.max_iters, initial=start_iter, disable=not (ddp.master and cfg.progress),
               dynamic_ncols=True, desc="train")
    state.pop("start_iter", None)
    run = Run(cfg=cfg, ddp=ddp, corpus=corpus, device=device, autocast=autocast, raw=raw,
              fwd=fwd, step_model=step_model, optimizer=optimizer, data_gen=data_gen,
              ckpt_path=out / CHECKPOINT_NAME if out is not None else None, log=log, bar=bar,
              start_iter=start_iter, mfu_flops=mfu_flops, t_wall=t_wall, it=start_iter,
              it_last=start_iter, ckpt_iter=start_iter if resume else None, **state)
    run.train_time_at_start = run.train_time
    step_model.train()
    run.t_step = time.time()
    return run


# --- one optimisation step ------------------------------------------------------------------

def _optimisation_step(run: Run) -> tuple[torch.Tensor, float]:
    r"""Set the learning rate of the step, accumulate the gradients of ``grad_accum``
    micro-batches, clip, step. Returns the summed micro-batch losses (on the device, not
    synchronised) and the learning rate."""
    cfg, ddp = run.cfg, run.ddp
    lr = get_lr(run.it, cfg)
    set_lr(run.optimizer, lr, cfg.learning_rate)
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


# --- evaluation, checkpoint, logging --------------------------------------------------------

def _evaluate(run: Run) -> None:
    r"""The validation loss on the fixed evaluation batches; keep the best."""
    cfg = run.cfg
    run.val_loss = estimate_loss(
        run.fwd, run.corpus, "val", eval_iters=cfg.eval_iters, batch_size=cfg.batch_size,
        block_size=cfg.block_size, seed=cfg.seed + 1, device=run.device,
        autocast=run.autocast, rank=run.ddp.rank, world_size=run.ddp.world_size)
    run.best_val = min(run.best_val, run.val_loss)
    if run.ddp.master:
        run.log(event="eval", iter=run.it, val_loss=run.val_loss, best_val_loss=run.best_val,
                time=time.time() - run.t_wall)
        show(run.bar, run.train_loss, run.val_loss)


def _checkpoint(run: Run, evaluated: bool) -> None:
    r"""Write everything the run needs to continue exactly, atomically (process 0); never
    over a good checkpoint with a diverged model."""
    if run.ckpt_path is None:
        return
    cfg, ddp, it = run.cfg, run.ddp, run.it
    # every process raises: the weights are the same everywhere and the validation loss
    # is all-reduced
    check_finite(run.raw, it, run.val_loss if evaluated else None)
    rng = [rng_state(run.data_gen)]  # every process's RNG (dropout differs between them)
    if ddp.enabled:
        rng = [None] * ddp.world_size
        dist.all_gather_object(rng, rng_state(run.data_gen))
    if ddp.master:
        save_checkpoint(checkpoint_state(
            run.raw, run.optimizer, it, cfg, run.corpus, rng, best_val_loss=run.best_val,
            val_loss=run.val_loss, train_loss=run.train_loss, train_time=run.train_time,
            wall_time=run.wall_before + time.time() - run.t_wall, world_size=ddp.world_size),
            run.ckpt_path)
    run.ckpt_iter = it


def _log_training(run: Run, loss_sum: torch.Tensor, lr: float) -> None:
    r"""Average the training loss over the micro-batches (and processes), stop on a
    non-finite one, and log it with the rate of the steps since the last log."""
    cfg, it = run.cfg, run.it
    run.train_loss = all_reduce_mean(loss_sum / cfg.grad_accum, run.ddp).item()
    if not math.isfinite(run.train_loss):
        raise FloatingPointError(f"the training loss is {run.train_loss} at step {it} "
                                 f"(learning rate {lr:.3g}); no checkpoint was written")
    now = time.time()  # .item() above waited for the device
    run.pending += now - run.t_step
    run.train_time += run.pending
    tps = (it - run.it_last) * cfg.tokens_per_iter / max(run.pending, 1e-9)
    run.pending, run.t_step, run.it_last = 0.0, now, it
    if run.ddp.master:
        rec = dict(event="train", iter=it, loss=run.train_loss, lr=lr, tokens_per_sec=tps,
                   time=now - run.t_wall)
        if run.mfu_flops is not None:
            rec["mfu"] = run.mfu_flops * tps / (cfg.peak_flops * run.ddp.world_size)
        run.log(**rec)
        show(run.bar, run.train_loss, run.val_loss, tps)


def _result(run: Run) -> TrainResult:
    cfg, it = run.cfg, run.it
    seconds = run.train_time - run.train_time_at_start  # this session's steps
    tps = (it - run.start_iter) * cfg.tokens_per_iter / seconds if seconds > 0 else 0.0
    return TrainResult(
        iters=it, best_val_loss=run.best_val, val_loss=run.val_loss,
        train_loss=run.train_loss, num_params=sum(p.numel() for p in run.raw.parameters()),
        train_time=run.train_time, wall_time=run.wall_before + time.time() - run.t_wall,
        tokens_per_sec=tps, history=run.log.records)
