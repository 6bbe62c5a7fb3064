r"""Where a run's processes run: the process group of ``torchrun`` (``batch_size`` is the
global batch; every process takes its own rows), the device of each process, and bf16
autocast on CUDA."""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from graphformer.device import resolve_device

__all__ = ["Dist", "setup_distributed", "run_device", "autocast_context", "all_reduce_mean",
           "elapsed"]


@dataclass
class Dist:
    r"""This process's place in the run."""

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


def setup_distributed(device_str: str) -> Dist:
    r"""The process group of the run: the one already initialised (by the caller, e.g.
    ``benchmarks/lm.py`` under ``torchrun``, or a test's one-process group), else one
    created from ``torchrun``'s environment when ``WORLD_SIZE > 1``, else none."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        return Dist(rank, local_rank, dist.get_world_size(), created=False, group=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = device_str != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), local_rank, dist.get_world_size(), created=True, group=True)


def run_device(device: str, ddp: Dist) -> torch.device:
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


def autocast_context(dtype: str, device: torch.device) -> tuple[str, Any]:
    r"""The dtype a run computes in (``"auto"``: bf16 on CUDA when supported, else float32)
    and the autocast context that gives it."""
    if dtype == "auto":
        dtype = ("bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported()
                 else "float32")
    if dtype == "bfloat16":
        if device.type != "cuda":
            raise ValueError("dtype='bfloat16' autocast is used on CUDA only; use 'float32' "
                             f"(or 'auto') on {device.type}")
        return dtype, torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return dtype, nullcontext()


def all_reduce_mean(t: torch.Tensor, ddp: Dist) -> torch.Tensor:
    r"""The mean of :obj:`t` over the processes (:obj:`t` itself with one)."""
    if ddp.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ddp.world_size
    return t


def elapsed(t0: float, device: torch.device) -> float:
    r"""Seconds since :obj:`t0`, after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time() - t0
