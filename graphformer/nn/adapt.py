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
    own, or any module that sets ``accepts_causal_graph = True``)."""
    return bool(getattr(module, "accepts_causal_graph", False))


def call_conv(conv: nn.Module, x: Tensor, edge_index: Union[Tensor, CausalGraph],
              **kwargs: Any) -> Tensor:
    r"""Calls ``conv(x, edge_index, **kwargs)``, handing a :class:`CausalGraph` to layers
    that understand it and its ``[2, E]`` edge list to every other PyG layer."""
    if not accepts_causal_graph(conv):
        edge_index = as_edge_index(edge_index)
    return conv(x, edge_index, **kwargs)
