r"""Seeded, stratified train/test splits shared by the generated data sets."""
from typing import Tuple

import torch
from torch import Tensor


def stratified_split(
    y: Tensor,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Tuple[Tensor, Tensor]:
    r"""Splits example indices into a train and a test set, class by class.

    For every class :math:`c` with :math:`n_c` examples, the test set takes

    .. math::
        t_c = \min\bigl(n_c - 1, \max(1, \operatorname{round}(f \, n_c))\bigr)

    examples drawn at random (:math:`f` = :obj:`test_fraction`), the train set
    the rest, so that both sets hold every class that has at least two
    examples and the class proportions match up to rounding. Both index
    tensors are shuffled (not sorted by class), and the same :obj:`seed`
    gives the same split.

    Args:
        y (torch.Tensor): Integer labels, shape :obj:`[num_examples]`.
        test_fraction (float, optional): Share of each class that goes to
            the test set, in :math:`(0, 1)`. (default: :obj:`0.2`)
        seed (int, optional): Seed of the shuffle. (default: :obj:`0`)

    Returns:
        (train_idx, test_idx), two :obj:`LongTensor` index vectors.

    Example:
        >>> import torch
        >>> from graphformer.datasets import stratified_split
        >>> y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
        >>> train_idx, test_idx = stratified_split(y, test_fraction=0.2, seed=0)
        >>> len(train_idx), len(test_idx), y[test_idx].sort().values  # one of each class
        (8, 2, tensor([0, 1]))
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a Tensor of labels, got {type(y).__name__}")
    if y.dim() > 1 and not (y.dim() == 2 and y.size(1) == 1):
        raise ValueError(f"y must be one label per example [num_examples], got "
                         f"shape {list(y.shape)}")
    y = y.view(-1)
    if y.numel() == 0:
        raise ValueError("y is empty: there is nothing to split")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must lie in (0, 1), got {test_fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c in torch.unique(y.cpu()).tolist():
        idx = (y.cpu() == c).nonzero().view(-1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n = idx.numel()
        if n < 2:
            raise ValueError(
                f"class {c} has {n} example(s); a stratified split needs at "
                f"least 2 per class")
        n_test = min(n - 1, max(1, int(round(test_fraction * n))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx = torch.cat(train)
    test_idx = torch.cat(test)
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=gen)]
    test_idx = test_idx[torch.randperm(test_idx.numel(), generator=gen)]
    return train_idx, test_idx
