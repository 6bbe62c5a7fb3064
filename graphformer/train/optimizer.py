r"""The optimizer of a run: AdamW with decoupled weight decay on the >= 2-D weights only,
and the dynamics' scalars in a group of their own."""
from __future__ import annotations

import torch
from torch import nn

from graphformer.train.config import TrainConfig

__all__ = ["configure_optimizer", "is_dynamics_scalar", "set_lr"]


def is_dynamics_scalar(name: str) -> bool:
    r"""Whether a qualified parameter name is one of the dynamics' learned scalars
    (``mu``, ``beta``, ``gamma`` of :class:`~graphformer.nn.Nesterov` and
    :class:`~graphformer.nn.HeavyBall`, stored as ``*_raw``); the velocity LayerNorms
    under ``.dynamics.`` are ordinary norms.

    Example:
        >>> from graphformer.train import is_dynamics_scalar
        >>> is_dynamics_scalar("transformer.h.dynamics.0.mu_raw")
        True
        >>> is_dynamics_scalar("transformer.h.0.attn.c_attn.weight")
        False
    """
    in_dynamics = name.startswith("dynamics.") or ".dynamics." in name
    return in_dynamics and name.rsplit(".", 1)[-1] in ("mu_raw", "beta_raw", "gamma_raw")


def configure_optimizer(model: nn.Module, config: TrainConfig,
                        device_type: str = "cpu") -> torch.optim.AdamW:
    r"""AdamW with three parameter groups: the >= 2-D weights (decayed), the other tensors
    (norms, biases: not decayed) and the dynamics' scalars (not decayed, learning rate
    ``scalar_lr``). Every group keeps its peak learning rate in ``"peak_lr"``.

    Example:
        >>> from graphformer.models import GPT, GPTConfig
        >>> from graphformer.train import TrainConfig, configure_optimizer
        >>> model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2,
        ...                       n_embd=16, method="nesterov"))
        >>> optimizer = configure_optimizer(model, TrainConfig())
        >>> [(group["name"], len(group["params"])) for group in optimizer.param_groups]
        [('decay', 10), ('no_decay', 16), ('dynamics', 3)]
    """
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
    # the fused kernel (one pass per tensor) on CUDA and CPU: AdamW's arithmetic, with
    # less overhead than the per-tensor loop (measured on CPU at nanoGPT's configuration:
    # docs/results_lm.md); elsewhere the default
    kwargs = {"fused": True} if device_type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=config.learning_rate,
                             betas=(config.beta1, config.beta2), **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float, peak_lr: float) -> None:
    r"""Scale every group's peak learning rate (``"peak_lr"``) by ``lr / peak_lr``: the
    schedule of the main group, followed by every group."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * lr / peak_lr
