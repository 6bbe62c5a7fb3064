r"""The one place where a :class:`~graphformer.graph.CausalGraph` is turned into what a
plain PyG layer needs, so that ``GCNConv``, ``GINConv``, ``GATConv`` or
``GatedGraphConv`` run unchanged on the same graphs as graphformer's own layers."""
from __future__ import annotations

from typing import Any, Union

from torch import Tensor, nn

from graphformer.graph import CausalGraph, as_edge_index

__all__ = ["accepts_causal_graph", "call_conv"]


def accepts_causal_graph(module: nn.Module) -> bool:
    r"""``True`` for layers that take a :class:`CausalGraph` directly (graphformer's
    own, or any module that sets ``accepts_causal_graph = True``).

    Example:
        >>> from torch_geometric.nn import GCNConv
        >>> from graphformer.nn import AttentionConv, accepts_causal_graph
        >>> accepts_causal_graph(AttentionConv(16, 4)), accepts_causal_graph(GCNConv(16, 16))
        (True, False)
    """
    return bool(getattr(module, "accepts_causal_graph", False))


def call_conv(conv: nn.Module, x: Tensor, edge_index: Union[Tensor, CausalGraph],
              **kwargs: Any) -> Tensor:
    r"""Calls ``conv(x, edge_index, **kwargs)``, handing a :class:`CausalGraph` to layers
    that understand it and its ``[2, E]`` edge list to every other PyG layer.

    Example:
        >>> import torch
        >>> from torch_geometric.nn import GCNConv
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import call_conv
        >>> graph = CausalGraph.from_lengths([3, 5])
        >>> call_conv(GCNConv(16, 32), torch.randn(8, 16), graph).shape  # gets graph.edge_index
        torch.Size([8, 32])
    """
    if not accepts_causal_graph(conv):
        edge_index = as_edge_index(edge_index)
    return conv(x, edge_index, **kwargs)
