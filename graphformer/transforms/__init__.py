r"""Graph rewiring as PyG ``BaseTransform``\ s: pause tokens on the causal DAG,
a fully-adjacent last layer, and PyG's ``VirtualNode`` (the graph analogue of a
pause or register token: one extra node that every node reads from and writes
to)."""
from graphformer.transforms.pause import AddPauseTokens, PausedGraph, pause_layout
from graphformer.transforms.rewiring import (
    FullyAdjacentLastLayer,
    VirtualNode,
    fully_adjacent_edges,
)

__all__ = [
    'AddPauseTokens',
    'PausedGraph',
    'pause_layout',
    'FullyAdjacentLastLayer',
    'fully_adjacent_edges',
    'VirtualNode',
]
