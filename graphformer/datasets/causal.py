r"""Causal sequence tasks on the token DAG: the failure cases of Barbero et
al., `"Transformers need glasses! Information over-squashing in language
tasks" <https://arxiv.org/abs/2406.04267>`_ (NeurIPS 2024).

On a causal DAG the first token reaches the last position through
:math:`\binom{n+L-2}{L-1}` paths and the last token through exactly one
(its self-loop chain), while a single read-out must summarize the whole
sequence. The three tasks probe these extremes:

* :class:`CopyFirstToken` -- the label is the first token;
* :class:`CopyLastToken` -- the label is the last token (with
  :obj:`background="ones"`, Barbero et al.'s
  :math:`1\dots1\,x` sequences whose representations collapse);
* :class:`CountOnes` -- the label is the number of ones in a 0/1 sequence.

Every example is one sequence of :obj:`length` tokens, stored PyG style as a
:class:`~torch_geometric.data.Data` with token ids :obj:`x: [T]` (one node
per token), a label :obj:`y: [1]`, and the read-out node (the last position)
as :obj:`root_index` / :obj:`root_mask`, like the over-squashing graph data
sets. No edges are stored: a mini-batch gets its causal DAG from
:func:`causal_graph` (a :class:`~graphformer.graph.CausalGraph` over the
:obj:`batch` vector). Labels are class-balanced (counts differ by at most
one) and shuffled with the seed.
"""
from typing import Callable, Optional

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphformer.datasets.base import (
    GeneratedDataset,
    check_int,
    collate_same_topology,
)
from graphformer.graph import CausalGraph

__all__ = ['causal_graph', 'CopyFirstToken', 'CopyLastToken', 'CountOnes']


def causal_graph(data: Data, *, window: Optional[int] = None) -> CausalGraph:
    r"""The causal token DAG of one sequence or of a mini-batch of sequences
    (from :obj:`data.batch`; one sequence when there is no :obj:`batch`).

    Args:
        data (Data): A sequence or a batch of sequences.
        window (int, optional): Sliding-window width. (default: :obj:`None`)

    Example:
        >>> from torch_geometric.loader import DataLoader
        >>> from graphformer.datasets import CopyFirstToken, causal_graph
        >>> dataset = CopyFirstToken(length=6, num_sequences=100)
        >>> batch = next(iter(DataLoader(dataset, batch_size=4)))
        >>> causal_graph(batch)
        CausalGraph(num_nodes=24, num_sequences=4, max_length=6)
        >>> causal_graph(dataset[0], window=2)
        CausalGraph(num_nodes=6, num_sequences=1, max_length=6, window=2)
    """
    batch = getattr(data, 'batch', None)
    if batch is None:
        return CausalGraph.from_lengths([data.num_nodes], window=window)
    return CausalGraph.from_batch(batch, window=window)


class _CausalSequenceTask(GeneratedDataset):
    default_test_fraction = 0.2

    def __init__(
        self,
        length: int,
        num_sequences: int = 1000,
        seed: int = 0,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
    ) -> None:
        self.length = check_int('length', length, self._min_length)
        self.num_sequences = check_int('num_sequences', num_sequences, 1)
        self.seed = int(seed)
        self._num_classes = self._classes()
        if self.num_sequences < 2 * self._num_classes:
            raise ValueError(
                f"num_sequences={num_sequences} is too small: a split holding "
                f"every one of the {self._num_classes} classes on both sides "
                f"needs at least {2 * self._num_classes} sequences")
        super().__init__(None, transform, pre_transform)
        gen = torch.Generator().manual_seed(self.seed)
        S = self.num_sequences
        y = torch.arange(S) % self._num_classes
        y = y[torch.randperm(S, generator=gen)]
        tokens = self._generate(y, gen)
        data, slices = collate_same_topology(tokens, None, y, self.length - 1)
        self._store(data, slices)

    _min_length = 1

    def _classes(self) -> int:
        raise NotImplementedError

    def _generate(self, y: Tensor, gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    @property
    def tokens(self) -> Tensor:
        r"""The sequences as token ids, :obj:`[len(self), length]` (of the
        selected sequences only, for a subset)."""
        return self._select(self._data.x.view(-1, self.length))

    @property
    def vocab_size(self) -> int:
        return 2

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(length={self.length}, '
                f'num_sequences={len(self)}, num_classes={self.num_classes})')


_ARGS = r"""

    Args:
        length (int): Sequence length :math:`T`.
        num_sequences (int, optional): Number of sequences. (default:
            :obj:`1000`)
        seed (int, optional): Seed of the tokens, the class order and the
            default split. (default: :obj:`0`)
        transform (callable, optional): Applied on access.
        pre_transform (callable, optional): Applied once to every sequence.
"""


class _CopyTask(_CausalSequenceTask):
    r"""A copy task: one class per token of the vocabulary."""

    @property
    def vocab_size(self) -> int:
        return self._vocab

    def _classes(self) -> int:
        return self._vocab


class CopyFirstToken(_CopyTask):
    __doc__ = r"""Copy the first token to the last position: random tokens
    :math:`t_0, \dots, t_{T-1} \in \{0, \dots, V-1\}`, label :math:`y =
    t_0`, read out at position :math:`T-1`. The first token is the best
    connected source of the causal DAG, but its signal is mixed with every
    other token's on the way (Barbero et al., 2024).""" + _ARGS + r"""        vocab_size (int, optional): :math:`V`, also the number of classes.
            (default: :obj:`2`)

    Example:
        >>> import torch
        >>> from graphformer.datasets import CopyFirstToken
        >>> dataset = CopyFirstToken(length=6, num_sequences=100, vocab_size=4)
        >>> dataset
        CopyFirstToken(length=6, num_sequences=100, num_classes=4)
        >>> dataset[0]  # token ids, the label, the read-out at the last position
        Data(x=[6], y=[1], root_mask=[6], root_index=[1])
        >>> torch.equal(dataset.tokens[:, 0], torch.cat([data.y for data in dataset]))
        True
"""

    def __init__(self, length: int, num_sequences: int = 1000, seed: int = 0,
                 vocab_size: int = 2, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None) -> None:
        self._vocab = check_int('vocab_size', vocab_size, 2)
        super().__init__(length, num_sequences, seed, transform, pre_transform)

    def _generate(self, y: Tensor, gen: torch.Generator) -> Tensor:
        tokens = torch.randint(self._vocab, (y.numel(), self.length),
                               generator=gen)
        tokens[:, 0] = y
        return tokens


class CopyLastToken(_CopyTask):
    __doc__ = r"""Copy the last token: label :math:`y = t_{T-1}`, read out
    at position :math:`T-1` itself. With :obj:`background="random"` the
    other tokens are random; with :obj:`background="ones"` they are all
    :math:`1` (token ids :math:`1 \dots 1\, y`), Barbero et al.'s
    representational-collapse case: as :math:`T` grows the last state of
    :math:`1\dots1\,0` and :math:`1\dots1\,1` become indistinguishable in
    finite precision, because the last token is one of :math:`T` inputs
    averaged by attention.""" + _ARGS + r"""        vocab_size (int, optional): :math:`V`, also the number of classes.
            (default: :obj:`2`)
        background (str, optional): :obj:`"random"` or :obj:`"ones"`.
            (default: :obj:`"random"`)

    Example:
        >>> import torch
        >>> from graphformer.datasets import CopyLastToken
        >>> dataset = CopyLastToken(length=5, num_sequences=10, background="ones")
        >>> dataset.tokens[:, :-1].unique()  # 1 ... 1 y
        tensor([1])
        >>> torch.equal(dataset.tokens[:, -1], torch.cat([data.y for data in dataset]))
        True
"""

    def __init__(self, length: int, num_sequences: int = 1000, seed: int = 0,
                 vocab_size: int = 2, background: str = 'random',
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None) -> None:
        self._vocab = check_int('vocab_size', vocab_size, 2)
        if background not in ('random', 'ones'):
            raise ValueError(f"background must be 'random' or 'ones', got "
                             f"{background!r}")
        self.background = background
        super().__init__(length, num_sequences, seed, transform, pre_transform)

    def _generate(self, y: Tensor, gen: torch.Generator) -> Tensor:
        if self.background == 'ones':
            tokens = torch.ones(y.numel(), self.length, dtype=torch.long)
        else:
            tokens = torch.randint(self._vocab, (y.numel(), self.length),
                                   generator=gen)
        tokens[:, -1] = y
        return tokens


class CountOnes(_CausalSequenceTask):
    __doc__ = r"""Count the ones of a 0/1 sequence: label
    :math:`y = \sum_i t_i \in \{0, \dots, T\}` (:math:`T+1` classes), read
    out at position :math:`T-1`. The count is drawn uniformly (balanced
    classes) and the ones are placed at random positions. Counting needs
    the read-out to keep a sum of :math:`T` inputs apart, which a softmax
    average cannot do exactly (Barbero et al., 2024).""" + _ARGS + r"""
    Example:
        >>> import torch
        >>> from graphformer.datasets import CountOnes
        >>> dataset = CountOnes(length=4, num_sequences=10)
        >>> dataset
        CountOnes(length=4, num_sequences=10, num_classes=5)
        >>> torch.equal(dataset.tokens.sum(1), torch.cat([data.y for data in dataset]))
        True
"""

    def _classes(self) -> int:
        return self.length + 1

    def _generate(self, y: Tensor, gen: torch.Generator) -> Tensor:
        S, T = y.numel(), self.length
        # the y[s] smallest of T random keys mark the ones: a uniform subset
        rank = torch.rand(S, T, generator=gen).argsort(1).argsort(1)
        return (rank < y.view(-1, 1)).long()
