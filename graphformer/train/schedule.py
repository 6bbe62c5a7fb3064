r"""The learning-rate schedule of a training run: :func:`graphformer.schedule.warmup_cosine`
(the project's one warm-up/cosine schedule, which the over-squashing studies use too) scaled
from ``learning_rate`` down to ``min_lr``, as nanoGPT's ``get_lr``."""
from __future__ import annotations

from typing import Any

from graphformer.schedule import warmup_cosine

__all__ = ["lr_at", "get_lr"]


def lr_at(step: int, *, learning_rate: float, min_lr: float, warmup_iters: int,
          decay_iters: int) -> float:
    r"""The learning rate of step :obj:`step`: linear warm-up over ``warmup_iters`` steps
    (reaching ``learning_rate`` at step ``warmup_iters - 1``), then a cosine from
    ``learning_rate`` down to ``min_lr`` at ``decay_iters``, then ``min_lr``.

    .. math::
        \eta_t = \eta_{\max} \, f\big(t;\, t_d,\, t_w,\, \eta_{\min} / \eta_{\max}\big)

    with :math:`f` the factor of :func:`~graphformer.schedule.warmup_cosine`.

    Example:
        >>> from graphformer.train import lr_at
        >>> [round(lr_at(t, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10,
        ...              decay_iters=100), 6) for t in (0, 9, 55, 100)]
        [0.0001, 0.001, 0.00055, 0.0001]
    """
    return learning_rate * warmup_cosine(step, decay_iters, warmup_iters,
                                         min_lr / learning_rate)


def get_lr(it: int, config: Any) -> float:
    r"""The learning rate of step :obj:`it` of a run with a
    :class:`~graphformer.train.TrainConfig` (:func:`lr_at` with its fields).

    Example:
        >>> from graphformer.train import TrainConfig, get_lr
        >>> config = TrainConfig(max_iters=100, warmup_iters=10)  # min_lr: learning_rate / 10
        >>> get_lr(9, config), get_lr(100, config)
        (0.001, 0.0001)
    """
    config = config.resolved()
    return lr_at(it, learning_rate=config.learning_rate, min_lr=config.min_lr,
                 warmup_iters=config.warmup_iters, decay_iters=config.lr_decay_iters)
