r"""Argument checks shared by the whole package: one implementation of "an int, not a
bool, in range", so that every function refuses the same values with the same words."""
import numbers

__all__ = ['check_int', 'is_int']


def is_int(value: object) -> bool:
    r"""``True`` for a Python or numpy integer, ``False`` for anything else, ``bool``
    included: ``True`` is an ``int`` in Python, but ``heads=True`` or ``window=True`` is a
    mistake, not a 1.

    Example:
        >>> import numpy as np
        >>> from graphformer.checks import is_int
        >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
        (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _describe(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"an int in [{low}, {high}]"
    if low == 1:
        return "a positive int"
    if low is not None:
        return f"an int >= {low}"
    if high is not None:
        return f"an int <= {high}"
    return "an int"


def check_int(name: str, value: object, low: int | None = None,
              high: int | None = None, *, error: type[Exception] = TypeError,
              hint: str = "") -> int:
    r"""Returns :obj:`value` as a Python ``int`` if it is an integer (Python or numpy, not a
    ``bool``, not a float, however round) in ``[low, high]``; else raises, with a message
    that names the argument, what it must be and the value given, e.g.
    ``"depth must be a positive int, got 2.5"``.

    Args:
        name (str): how the message names the argument (it may carry a prefix, such as
            ``"TrainConfig.seed"`` or ``"AttentionConv: heads"``).
        value: the value to check.
        low (int, optional): the smallest value allowed. (default: no bound)
        high (int, optional): the largest value allowed. (default: no bound)
        error (type, optional): the exception for a value that is not an int at all;
            out of range is always a :class:`ValueError`. Functions that have always
            raised one :class:`ValueError` for any bad value pass :class:`ValueError`.
            (default: :class:`TypeError`)
        hint (str, optional): appended to the message, e.g. ``"; None means no window"``.

    Example:
        >>> from graphformer.checks import check_int
        >>> check_int("depth", 3, low=1)
        3
        >>> check_int("depth", 2.5, low=1)
        Traceback (most recent call last):
        TypeError: depth must be a positive int, got 2.5
    """
    want = _describe(low, high)
    if not is_int(value):
        raise error(f"{name} must be {want}, got {value!r}{hint}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {want}, got {value}{hint}")
    return value
