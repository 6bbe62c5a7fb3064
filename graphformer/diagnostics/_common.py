r"""Input handling shared by the diagnostics."""
from typing import Optional, Tuple, Type, Union

import torch
from torch import Tensor

from graphformer.checks import check_int
from graphformer.graph import CausalGraph, as_edge_index, check_edge_index

GraphLike = Union[Tensor, CausalGraph]


def resolve_graph(edge_index: GraphLike,
                  num_nodes: Optional[int] = None) -> Tuple[Tensor, int]:
    r"""Returns ``(edge_index [2, E] long, num_nodes)`` for a tensor or a
    :class:`~graphformer.graph.CausalGraph`, with a clear error on bad input."""
    if isinstance(edge_index, CausalGraph):
        if num_nodes is not None and int(num_nodes) != edge_index.num_nodes:
            raise ValueError(f"num_nodes={num_nodes} but the CausalGraph has "
                             f"{edge_index.num_nodes} nodes")
        num_nodes = edge_index.num_nodes
        edge_index = as_edge_index(edge_index)
    if num_nodes is None:
        raise ValueError("num_nodes is required when edge_index is a tensor")
    num_nodes = check_node_int(num_nodes, "num_nodes", 0, error=ValueError)
    check_edge_index(edge_index, num_nodes)
    return edge_index.long(), num_nodes


def check_node_int(value, name: str, low: Optional[int] = None,
                   high: Optional[int] = None, *,
                   error: Type[Exception] = TypeError) -> int:
    r""":func:`~graphformer.checks.check_int` that also takes a 0-dim integer tensor (a
    node index read off a tensor): ``value`` as a Python int, refusing floats and bools
    (which ``int()`` would silently turn into another node or count)."""
    if isinstance(value, Tensor) and value.dim() == 0 and not (
            value.is_floating_point() or value.dtype == torch.bool):
        value = int(value)
    return check_int(name, value, low, high, error=error)


def dense_adjacency(edge_index: Tensor, num_nodes: int,
                    dtype: torch.dtype = torch.float64) -> Tensor:
    r"""``A[i, j]`` = number of edges ``j -> i`` (row = target, column = source)."""
    A = torch.zeros(num_nodes, num_nodes, dtype=dtype, device=edge_index.device)
    ones = torch.ones(edge_index.size(1), dtype=dtype, device=edge_index.device)
    A.index_put_((edge_index[1], edge_index[0]), ones, accumulate=True)
    return A


def symmetric_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    r"""The 0/1 adjacency of the undirected simple graph underlying
    ``edge_index``: an edge in either direction joins two nodes, duplicates
    count once, self-loops are dropped."""
    A = dense_adjacency(edge_index, num_nodes)
    A = ((A + A.t()) > 0).to(torch.float64)
    A.fill_diagonal_(0.0)
    return A
