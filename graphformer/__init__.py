r"""graphformer: a Transformer is a graph neural network.

Attention is message passing on a causal DAG of tokens (:class:`CausalGraph`); attention,
Deep Sets and GNN layers share PyG's ``MessagePassing`` interface.
"""
from graphformer.graph import CausalGraph, as_edge_index

__version__ = "0.1.0"
__all__ = ["CausalGraph", "as_edge_index", "__version__"]
