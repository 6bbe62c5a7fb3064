r"""The one learning-rate schedule of the project: a linear warm-up, then a cosine decay
(the language models' :func:`graphformer.train.get_lr` and the fast budget of the
over-squashing trees both use it)."""
import math


def warmup_cosine(step: int, total: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    r"""The learning-rate factor after ``step`` steps: linear from ``1 / w`` to 1 over
    the first ``w = warmup_steps`` steps, then a cosine from 1 down to ``min_ratio`` at
    ``total``, then ``min_ratio``.

    .. math::
        f(t) = \begin{cases} (t + 1) / w & t < w \\
        m + \tfrac12 (1 + \cos \pi r) (1 - m), \ r = \min\!\big(1, \tfrac{t - w}{T - w}\big)
        & t \ge w \end{cases}

    Example:
        >>> from graphformer.schedule import warmup_cosine
        >>> [round(warmup_cosine(t, total=100, warmup_steps=10), 3) for t in (0, 9, 55, 100)]
        [0.1, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total <= warmup_steps:
        return min_ratio
    ratio = min(1.0, (step - warmup_steps) / (total - warmup_steps))
    return min_ratio + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - min_ratio)
