r"""Seeded synthetic graphs for speed measurements and quick experiments: batches of
binary trees (an arbitrary sparse graph) and document boundaries of packed sequences.

Both are plain tensors, so they plug into any PyG layer or into
:class:`~graphformer.graph.CausalGraph`::

    edge_index, batch = binary_tree_batch(1024, depth=4)            # sparse graph
    graph = CausalGraph.from_lengths([256] * 8)
    graph = graph.with_documents(packed_documents(8, 256, mean_length=64, seed=0))
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from graphformer.checks import check_int

__all__ = ["binary_tree_batch", "packed_documents"]


def binary_tree_batch(num_trees: int, depth: int, *, both_directions: bool = False,
                      self_loops: bool = True) -> Tuple[Tensor, Tensor]:
    r"""A batch of ``num_trees`` complete binary trees of depth ``depth`` (each with
    :math:`2^{d+1} - 1` nodes in heap order: root 0, children of :math:`i` at
    :math:`2i+1, 2i+2`), as in Tree-NeighborsMatch (Alon & Yahav 2021).

    Edges point from every child to its parent (messages flow to the root), plus the
    parent-to-child edges when ``both_directions``, plus one self-loop per node when
    ``self_loops``. Per tree that is :math:`2^{d+1} - 2` tree edges (twice that with
    both directions) and :math:`2^{d+1} - 1` loops.

    Args:
        num_trees (int): number of trees :math:`\geq 1`.
        depth (int): depth :math:`d \geq 0` of each tree.
        both_directions (bool, optional): add parent-to-child edges.
            (default: :obj:`False`)
        self_loops (bool, optional): add a self-loop to every node.
            (default: :obj:`True`)

    Returns:
        ``(edge_index [2, E], batch [N])``, with the nodes of tree ``t`` at
        ``t * n, ..., t * n + n - 1``.

    Example:
        >>> from graphformer.datasets.synthetic import binary_tree_batch
        >>> edge_index, batch = binary_tree_batch(2, depth=1)  # two trees of 3 nodes
        >>> edge_index  # child -> parent, then the self-loops
        tensor([[1, 2, 0, 1, 2, 4, 5, 3, 4, 5],
                [0, 0, 0, 1, 2, 3, 3, 3, 4, 5]])
        >>> batch
        tensor([0, 0, 0, 1, 1, 1])
    """
    num_trees = check_int("num_trees", num_trees, 1, error=ValueError)
    depth = check_int("depth", depth, 0, 20, error=ValueError)
    n = 2 ** (depth + 1) - 1
    child = torch.arange(1, n)
    parent = (child - 1) // 2
    parts = [torch.stack([child, parent])]
    if both_directions:
        parts.append(torch.stack([parent, child]))
    if self_loops:
        parts.append(torch.arange(n).repeat(2, 1))
    tree = torch.cat(parts, 1)
    offset = (torch.arange(num_trees) * n).repeat_interleave(tree.size(1))
    edge_index = tree.repeat(1, num_trees) + offset
    batch = torch.arange(num_trees).repeat_interleave(n)
    return edge_index, batch


def packed_documents(num_sequences: int, length: int, mean_length: float, *,
                     seed: int = 0) -> Tensor:
    r"""Document ids for ``num_sequences`` packed sequences of ``length`` tokens each,
    with documents of random length (a new document starts at each token with
    probability ``1 / mean_length``; every sequence starts a new one), for
    :meth:`~graphformer.graph.CausalGraph.with_documents`.

    Args:
        num_sequences (int): number of sequences.
        length (int): tokens per sequence.
        mean_length (float): mean document length in tokens (:math:`\geq 1`).
        seed (int, optional): the same seed gives the same documents. (default: :obj:`0`)

    Returns:
        ``[num_sequences * length]`` non-decreasing document ids.

    Example:
        >>> from graphformer import CausalGraph
        >>> from graphformer.datasets.synthetic import packed_documents
        >>> document = packed_documents(2, 8, mean_length=4.0)
        >>> document.shape, bool(document[8] > document[7])  # sequence 1 starts a document
        (torch.Size([16]), True)
        >>> graph = CausalGraph.from_lengths([8, 8])
        >>> graph.with_documents(document).num_edges < graph.num_edges
        True
    """
    if num_sequences < 1 or length < 1:
        raise ValueError(f"num_sequences and length must be positive, got "
                         f"{num_sequences} and {length}")
    if not mean_length >= 1:  # also refuses NaN
        raise ValueError(f"mean_length must be at least 1, got {mean_length}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.rand(num_sequences, length, generator=gen) < 1.0 / mean_length
    starts[:, 0] = True
    return starts.reshape(-1).long().cumsum(0) - 1
