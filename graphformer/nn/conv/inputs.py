r"""The inputs every graphformer layer takes, as PyG layers take them, checked and brought
to one form: node features ``x`` (or a bipartite pair ``(x_src, x_dst)``), and the graph
as a ``[2, E]`` ``edge_index``, a :class:`~graphformer.graph.CausalGraph`, a
``torch_sparse.SparseTensor`` or a ``torch.sparse`` adjacency ``adj_t`` (``[N_dst,
N_src]``, row = target, as PyG's ``propagate`` reads it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, to_edge_index

from graphformer.checks import check_int, is_int
from graphformer.graph import CausalGraph, check_edge_index

__all__ = ["GraphLike", "LayerInputs", "check_input", "check_features", "prepare_inputs",
           "is_sparse_adjacency", "edge_attr_rows", "check_sizes"]

GraphLike = Union[Tensor, CausalGraph]
Channels = Union[int, Tuple[int, int]]


def check_sizes(layer: str, **sizes: object) -> None:
    r"""Refuses a layer size that is not a positive ``int`` (``None`` passes: a default);
    a ``(source, target)`` pair is checked entry by entry, and ``in_channels`` may be
    ``-1`` (PyG's lazy initialisation). A ``bool`` is refused too: ``heads=True`` is a
    mistake, not one head."""
    for name, value in sizes.items():
        lazy_ok = name == "in_channels"
        pair = isinstance(value, (tuple, list))
        for i, v in enumerate(value if pair else (value,)):
            if v is None or (lazy_ok and is_int(v) and v == -1):
                continue
            check_int(f"{layer}: {name}[{i}]" if pair else f"{layer}: {name}", v, 1,
                      error=ValueError, hint="; -1 means lazy initialisation" if lazy_ok else "")


def is_sparse_adjacency(edge_index: object) -> bool:
    r"""``True`` for a ``torch.sparse`` tensor or a ``torch_sparse.SparseTensor``."""
    return isinstance(edge_index, SparseTensor) or (
        isinstance(edge_index, Tensor) and is_torch_sparse_tensor(edge_index))


def check_features(x: object, channels: int, name: str = "x",
                   weight_dtype: Optional[torch.dtype] = None) -> None:
    r"""Clear errors for a node-feature matrix that does not fit a layer: not a floating
    tensor, not 2-D, the wrong width (``channels <= 0``: lazy, any width), or another
    floating type than the layer's weights outside autocast."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [num_nodes, channels], "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [num_nodes, {channels}], got {list(x.shape)}")
    if channels > 0 and x.size(1) != channels:
        raise ValueError(f"{name} has {x.size(1)} channels but the layer expects {channels}")
    if (weight_dtype is not None and weight_dtype.is_floating_point and x.dtype != weight_dtype
            and not torch.is_autocast_enabled(x.device.type)):
        raise TypeError(
            f"{name} is {x.dtype} but the layer's weights are {weight_dtype}: cast one to "
            f"the other (x.to({weight_dtype}) or layer.to({x.dtype})) or run the layer "
            f"under torch.autocast")


def check_input(x: Tensor, edge_index: GraphLike, in_channels: int,
                weight_dtype: Optional[torch.dtype] = None) -> None:
    r"""Clear errors for node features that do not fit a layer or its graph."""
    check_features(x, in_channels, weight_dtype=weight_dtype)
    if isinstance(edge_index, CausalGraph):
        if edge_index.num_nodes != x.size(0):
            raise ValueError(f"x has {x.size(0)} rows but the CausalGraph has "
                             f"{edge_index.num_nodes} nodes")
        if edge_index.device != x.device:
            raise ValueError(f"x is on {x.device} but the CausalGraph is on "
                             f"{edge_index.device}: call graph.to(x.device)")
    else:
        check_edge_index(edge_index, x.size(0))


@dataclass
class LayerInputs:
    r"""A layer's inputs in one form.

    Attributes:
        x_src, x_dst: source and target features (the same tensor unless bipartite).
            ``x_src`` is ``None`` in a bipartite pair whose sources have no features
            (to_hetero's form for a node type that is only ever a source): then no
            message is sent, every target is treated as a node without incoming edges.
        graph: what the kernels run on: a :class:`CausalGraph` or a ``[2, E]`` tensor.
        edge_list: the ``[2, E]`` edge list as given (sources, targets), whose order
            per-edge inputs (``edge_attr``, ``attn_bias``) follow; ``None`` for a
            :class:`CausalGraph` given as such, whose own edge list is built only when
            something asks for :attr:`edge_index` (the fused kernels never do).
        values: the values of a sparse adjacency (in ``edge_index`` order), else ``None``.
        bipartite: ``True`` for an ``(x_src, x_dst)`` pair.
    """
    x_src: Optional[Tensor]
    x_dst: Tensor
    graph: GraphLike
    edge_list: Optional[Tensor]
    values: Optional[Tensor]
    bipartite: bool

    @property
    def edge_index(self) -> Tensor:
        r"""The ``[2, E]`` edge list whose order per-edge inputs follow:
        :attr:`edge_list`, or the :class:`CausalGraph`'s ``edge_index``."""
        return self.graph.edge_index if self.edge_list is None else self.edge_list

    @property
    def size(self) -> Tuple[Optional[int], int]:
        return None if self.x_src is None else self.x_src.size(0), self.x_dst.size(0)

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.size(1))


def _channels(in_channels: Channels) -> Tuple[int, int]:
    if isinstance(in_channels, (tuple, list)):
        return int(in_channels[0]), int(in_channels[1])
    return int(in_channels), int(in_channels)


def _sparse_to_edge_index(adj_t: object, shape: Tuple[int, int]
                          ) -> Tuple[Tensor, Optional[Tensor]]:
    r"""The edge list ``[2, E]`` (sources, targets) and values of a transposed sparse
    adjacency ``adj_t`` of shape ``[N_dst, N_src]``."""
    got = tuple(int(s) for s in adj_t.sizes()[:2]) if isinstance(adj_t, SparseTensor) \
        else tuple(int(s) for s in adj_t.shape[:2])
    if got != shape:
        square = shape[0] == shape[1]
        what = (f"a square [{shape[0]}, {shape[1]}] adjacency for the {shape[0]} nodes of x"
                if square else f"[num_dst, num_src] = [{shape[0]}, {shape[1]}] for the "
                "bipartite pair (x_src, x_dst)")
        raise ValueError(f"the sparse adjacency adj_t has shape [{got[0]}, {got[1]}] but "
                         f"must be {what} (adj_t[i, j] set for an edge j -> i)")
    if isinstance(adj_t, SparseTensor):
        row, col, value = adj_t.coo()
    else:
        ei, value = to_edge_index(adj_t)
        row, col = ei[0], ei[1]
    return torch.stack([col, row]), value


def prepare_inputs(x: Union[Tensor, Sequence[Tensor]], edge_index: object,
                   in_channels: Channels, *, size: Optional[Tuple[int, int]] = None,
                   batch: Optional[Tensor] = None,
                   weight_dtype: Optional[torch.dtype] = None) -> LayerInputs:
    r"""Checks a layer's inputs and brings them to one :class:`LayerInputs`.

    ``x`` is ``[N, C]`` or a bipartite pair ``(x_src [N_src, C_src], x_dst [N_dst,
    C_dst])`` (then ``size``, if given, must be ``(N_src, N_dst)``); ``edge_index`` is a
    ``[2, E]`` tensor, a :class:`CausalGraph` (not with a pair), or a sparse ``adj_t``
    (``torch.sparse`` or ``torch_sparse.SparseTensor``) of shape ``[N_dst, N_src]``.
    ``batch`` groups the nodes of a plain ``edge_index`` into sequences, so that the
    fused kernels can run (unless the list has repeated edges, which only the edge-wise
    kernel counts twice)."""
    c_src, c_dst = _channels(in_channels)
    bipartite = isinstance(x, (tuple, list))
    if bipartite:
        if len(x) != 2:
            raise ValueError(f"a bipartite input must be a pair (x_src, x_dst), got {len(x)} "
                             "tensors")
        x_src, x_dst = x
        if x_dst is None:
            raise ValueError("a bipartite input needs x_dst (the target features) too: pass "
                             "(x_src, x_dst)")
        check_features(x_dst, c_dst, "x_dst", weight_dtype)
        if x_src is None:
            # What to_hetero passes for a node type that is only ever a source, once an
            # earlier layer has given it no representation: it sends no messages.
            return _without_sources(x_dst, edge_index, size)
        check_features(x_src, c_src, "x_src", weight_dtype)
        if x_src.device != x_dst.device:
            raise ValueError(f"x_src is on {x_src.device} but x_dst on {x_dst.device}")
        if isinstance(edge_index, CausalGraph):
            raise ValueError("a CausalGraph connects one set of nodes; a bipartite (x_src, "
                             "x_dst) pair needs a [2, E] edge_index or a sparse adj_t")
        if batch is not None:
            raise ValueError("batch= groups one set of nodes into sequences; it does not "
                             "apply to a bipartite (x_src, x_dst) pair")
    else:
        check_features(x, c_src, "x", weight_dtype)
        x_src = x_dst = x
    n_src, n_dst = x_src.size(0), x_dst.size(0)
    if size is not None:
        size = tuple(size)
        if len(size) != 2 or any(s is not None and int(s) != n for s, n in
                                 zip(size, (n_src, n_dst))):
            raise ValueError(f"size={size} does not match the features: (num_src, num_dst) "
                             f"must be ({n_src}, {n_dst})")
    values = None
    if isinstance(edge_index, CausalGraph):
        check_input(x_src, edge_index, -1)
        return LayerInputs(x_src, x_dst, edge_index, None, None, False)
    if is_sparse_adjacency(edge_index):
        edge_index, values = _sparse_to_edge_index(edge_index, (n_dst, n_src))
        edge_index = edge_index.to(x_src.device)
    else:
        check_edge_index(edge_index, None if bipartite else n_src)
        if edge_index.device != x_src.device:
            raise ValueError(f"edge_index is on {edge_index.device} but x on "
                             f"{x_src.device}")
        if bipartite and edge_index.numel() and not torch.compiler.is_compiling():
            for row, n, side in ((0, n_src, "x_src"), (1, n_dst, "x_dst")):
                high = int(edge_index[row].max())
                if high >= n:
                    what = "source" if row == 0 else "target"
                    raise ValueError(f"edge_index has {what} node {high} but {side} has "
                                     f"{n} rows")
    graph: GraphLike = edge_index
    if batch is not None:
        if not isinstance(batch, Tensor) or batch.shape != (n_src,):
            raise ValueError(f"batch must be a tensor with one sequence id per node "
                             f"({n_src}), got {getattr(batch, 'shape', type(batch).__name__)}")
        coalesced = CausalGraph.from_edge_index(edge_index, batch, causal=False)
        # Repeated edges are separate messages on the edge-wise path, one mask entry on
        # the fused ones: only a list without repeats may run fused.
        if coalesced.num_edges == edge_index.size(1):
            graph = coalesced
    return LayerInputs(x_src, x_dst, graph, edge_index.long(), values, bipartite)


def _without_sources(x_dst: Tensor, edge_index: object,
                     size: Optional[Tuple[int, int]]) -> LayerInputs:
    if is_sparse_adjacency(edge_index) or isinstance(edge_index, CausalGraph):
        raise ValueError("x_src is None: pass a [2, E] edge_index with it")
    check_edge_index(edge_index)
    if size is not None and size[1] is not None and int(size[1]) != x_dst.size(0):
        raise ValueError(f"size={tuple(size)} does not match x_dst's {x_dst.size(0)} rows")
    return LayerInputs(None, x_dst, edge_index, edge_index.long(), None, True)


def edge_attr_rows(edge_attr: Tensor, num_edges: int, edge_dim: Optional[int],
                   layer: str) -> Tensor:
    r"""``edge_attr`` checked against the layer's ``edge_dim`` and the graph's edges,
    as ``[E, edge_dim]``."""
    if edge_dim is None:
        raise ValueError(f"edge_attr was given but {layer} has no edge_dim: build it with "
                         f"edge_dim=<number of edge features> to use them")
    if not isinstance(edge_attr, Tensor) or not edge_attr.is_floating_point():
        raise TypeError("edge_attr must be a floating-point tensor [num_edges, edge_dim], "
                        f"got {getattr(edge_attr, 'dtype', type(edge_attr).__name__)}")
    if edge_attr.dim() == 1 and edge_dim == 1:
        edge_attr = edge_attr.view(-1, 1)
    if edge_attr.dim() != 2 or edge_attr.size(1) != edge_dim:
        raise ValueError(f"edge_attr must have shape [num_edges, edge_dim={edge_dim}], got "
                         f"{list(edge_attr.shape)}")
    if edge_attr.size(0) != num_edges:
        raise ValueError(f"edge_attr has {edge_attr.size(0)} rows but the graph has "
                         f"{num_edges} edges (one row per edge, in the order of edge_index; "
                         "for a CausalGraph, of graph.edge_index)")
    return edge_attr
