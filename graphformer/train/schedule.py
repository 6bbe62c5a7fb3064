r"""The learning-rate schedule: linear warm-up, then a cosine decay to a floor (nanoGPT's
``get_lr``). Self-contained: plain numbers in, a number out."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["lr_at", "get_lr"]


def lr_at(step: int, *, learning_rate: float, min_lr: float, warmup_iters: int,
          decay_iters: int) -> float:
    r"""The learning rate of step :obj:`step`: linear warm-up for ``warmup_iters`` steps,
    then a cosine from ``learning_rate`` down to ``min_lr`` at ``decay_iters``, then
    ``min_lr``.

    .. math::
        \eta_t = \eta_{\min} + \tfrac12 (1 + \cos(\pi r)) (\eta_{\max} - \eta_{\min}),
        \quad r = \frac{t - t_w}{t_d - t_w}
    """
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters or decay_iters <= warmup_iters:
        return min_lr
    ratio = (step - warmup_iters) / (decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def get_lr(it: int, config: Any) -> float:
    r"""The learning rate of step :obj:`it` of a run with a
    :class:`~graphformer.train.TrainConfig` (:func:`lr_at` with its fields)."""
    config = config.resolved()
    return lr_at(it, learning_rate=config.learning_rate, min_lr=config.min_lr,
                 warmup_iters=config.warmup_iters, decay_iters=config.lr_decay_iters)
