r"""The token DAG: :class:`CausalGraph` and the one place it becomes a plain edge list.

A :class:`CausalGraph` groups nodes into sequences (contiguous runs of nodes, like a
PyG mini-batch) and describes which source ``j`` may send a message to which target
``i`` by a *rule* composed of primitives:

* causal (``pos_j <= pos_i``, self-loops included) or full (every pair in the sequence);
* a sliding window of width ``w`` (``pos_i - pos_j < w``);
* document boundaries inside a packed sequence (same document id only);
* explicit extra or removed edges;

or by an explicit edge list (:meth:`CausalGraph.from_edge_index`). It offers three views
of the same edge set: :attr:`edge_index` for layers that want a list, :meth:`dense_mask`
for fused SDPA kernels, and :meth:`block_mask` for FlexAttention.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from graphformer.checks import check_int

__all__ = ["CausalGraph", "as_edge_index", "check_edge_index"]


def check_edge_index(edge_index: Tensor, num_nodes: Optional[int] = None, *,
                     name: str = "edge_index", of: str = "x") -> None:
    r"""Raises a clear error when ``edge_index`` is not a valid ``[2, E]`` index tensor
    (for ``num_nodes`` nodes, when given: the rows of ``x``, or the nodes of a graph
    when ``of="graph"``).

    Example:
        >>> import torch
        >>> from graphformer.graph import check_edge_index
        >>> check_edge_index(torch.tensor([[0, 1], [1, 2]]), 3)  # valid: returns None
        >>> check_edge_index(torch.tensor([[0, 1], [1, 5]]), 3)
        Traceback (most recent call last):
            ...
        ValueError: edge_index has node 5 but x has 3 rows
    """
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [2, E] or a CausalGraph, "
                        f"got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"{name} must hold integer node indices (torch.long), "
                        f"got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{name} must have shape [2, E], got {list(edge_index.shape)}")
    # The range check reads the data: skipped while torch.compile traces (as PyG does),
    # where it would break the graph; eager calls check it.
    if edge_index.numel() > 0 and not torch.compiler.is_compiling():
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0:
            raise ValueError(f"{name} has a negative node index ({low})")
        if num_nodes is not None and high >= num_nodes:
            has = f"x has {num_nodes} rows" if of == "x" else f"the {of} has {num_nodes} nodes"
            raise ValueError(f"{name} has node {high} but {has}")


def _as_long(t: Union[Tensor, Sequence[int]], name: str) -> Tensor:
    t = torch.as_tensor(t)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.long()


class CausalGraph:
    r"""A token DAG: nodes grouped into sequences, edges ``(j, i)`` from source ``j`` to
    target ``i`` of the same sequence given by a rule or an explicit list.

    With the causal rule the edge set of a sequence of length :math:`T` is

    .. math::
        \mathcal{E} = \{(j, i) : 0 \le j \le i < T,\; i - j < w,\; d_j = d_i\}
        \cup \mathcal{E}_{+} \setminus \mathcal{E}_{-}

    with window :math:`w` (infinite by default), document ids :math:`d` (all equal by
    default), and explicit extra/removed edges :math:`\mathcal{E}_{\pm}`. Messages follow
    PyG's ``source_to_target`` flow. Nodes of sequence ``b`` are the contiguous range
    ``ptr[b]:ptr[b+1]``; a node's position is its offset in that range.

    Build one with :meth:`from_lengths`, :meth:`from_batch` or :meth:`from_edge_index`;
    compose rules with :meth:`with_window`, :meth:`with_documents`, :meth:`add_edges`
    and :meth:`remove_edges` (each returns a new graph).

    Args:
        ptr (torch.Tensor): sequence boundaries ``[B + 1]``, ``ptr[0] = 0``.
        causal (bool): ``True`` for the causal rule ``j <= i``, ``False`` for full
            (bidirectional) attention inside each sequence.
        window (int, optional): sliding-window width ``w``.
        document (torch.Tensor, optional): a document id per node; only nodes of the same
            document are connected.
        extra_edges (torch.Tensor, optional): ``[2, E+]`` global edges to add.
        removed_edges (torch.Tensor, optional): ``[2, E-]`` global edges to remove.
        explicit (torch.Tensor, optional): ``[2, E]`` the whole edge set (the rule is
            then ignored).

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> graph = CausalGraph.from_lengths([2, 3])  # two sequences, 5 nodes
        >>> graph
        CausalGraph(num_nodes=5, num_sequences=2, max_length=3)
        >>> graph.num_edges  # 3 + 6 causal edges, self-loops included
        9
        >>> graph.batch, graph.position
        (tensor([0, 0, 1, 1, 1]), tensor([0, 1, 0, 1, 2]))
    """

    def __init__(self, ptr: Tensor, *, causal: bool = True, window: Optional[int] = None,
                 document: Optional[Tensor] = None, extra_edges: Optional[Tensor] = None,
                 removed_edges: Optional[Tensor] = None,
                 explicit: Optional[Tensor] = None) -> None:
        ptr = _as_long(ptr, "ptr")
        if ptr.dim() != 1 or ptr.numel() < 2 or int(ptr[0]) != 0:
            raise ValueError("ptr must be a 1-D tensor [B + 1] starting at 0 with B >= 1")
        lengths = ptr[1:] - ptr[:-1]
        if bool((lengths < 0).any()):
            raise ValueError("ptr must be non-decreasing (sequence lengths >= 0)")
        if window is not None:  # window=True would otherwise be a window of 1
            window = check_int("window", window, 1, error=ValueError,
                               hint="; None means no window")
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True or False, got {causal!r}")
        self.ptr = ptr
        self.lengths = lengths
        self.causal = bool(causal)
        self.window = window
        self.num_nodes = int(ptr[-1])
        self.num_sequences = int(lengths.numel())
        self.max_length = int(lengths.max()) if self.num_sequences else 0
        # Plain Python facts, computed once, so that layers branching on them do not
        # break a torch.compile graph.
        self._uniform = bool((lengths == self.max_length).all())
        self.batch = torch.repeat_interleave(
            torch.arange(self.num_sequences, device=ptr.device), lengths)
        self.position = torch.arange(self.num_nodes, device=ptr.device) - ptr[:-1][self.batch]
        if document is not None:
            document = _as_long(document, "document").to(ptr.device)
            if document.shape != (self.num_nodes,):
                raise ValueError(f"document must have one id per node ({self.num_nodes}), "
                                 f"got shape {list(document.shape)}")
        self.document = document
        self.extra_edges = self._checked(extra_edges, "extra edges")
        self.removed_edges = self._checked(removed_edges, "removed edges")
        self.explicit = self._checked(explicit, "edge_index")
        self._edge_index: Optional[Tensor] = None
        self._dense: Optional[Tensor] = None
        self._block_masks: dict = {}
        self._head_index: dict = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lengths(cls, lengths: Union[Tensor, Sequence[int]], *,
                     window: Optional[int] = None, causal: bool = True) -> "CausalGraph":
        r"""One sequence per entry of ``lengths``, nodes laid out one sequence after
        the other.

        Example:
            >>> from graphformer import CausalGraph
            >>> CausalGraph.from_lengths([3]).edge_index
            tensor([[0, 0, 1, 0, 1, 2],
                    [0, 1, 1, 2, 2, 2]])
            >>> CausalGraph.from_lengths([3], causal=False).num_edges
            9
        """
        lengths = _as_long(lengths, "lengths").flatten()
        if lengths.numel() == 0 or bool((lengths < 1).any()):
            raise ValueError(f"lengths must be positive integers, got {lengths.tolist()}")
        ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        return cls(ptr, causal=causal, window=window)

    @classmethod
    def from_batch(cls, batch: Tensor, *, window: Optional[int] = None,
                   causal: bool = True) -> "CausalGraph":
        r"""From a PyG ``batch`` vector (sorted, as produced by a ``DataLoader``).

        Example:
            >>> import torch
            >>> from graphformer import CausalGraph
            >>> graph = CausalGraph.from_batch(torch.tensor([0, 0, 1, 1, 1]))
            >>> graph.ptr
            tensor([0, 2, 5])
        """
        batch = _as_long(batch, "batch")
        if batch.dim() != 1 or batch.numel() == 0:
            raise ValueError("batch must be a non-empty 1-D tensor")
        if bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0:
            raise ValueError("batch must be sorted and non-negative: the nodes of a "
                             "sequence must be contiguous and in order")
        counts = torch.bincount(batch)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(ptr, causal=causal, window=window)

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, batch: Tensor, *, causal: bool = True,
                        allow_duplicates: bool = True) -> "CausalGraph":
        r"""Any graph whose nodes form sequences (given by ``batch``). With
        ``causal=True`` no edge may point forward in time (``pos_j > pos_i``), which also
        rules out cycles other than self-loops.

        A :class:`CausalGraph` is a *set* of edges: a repeated edge is kept once. On a
        plain ``edge_index`` the edge-wise kernel counts a repeated edge twice in the
        softmax (as PyG does). A layer's ``batch=`` therefore keeps a multigraph on the
        edge-wise kernel; ``allow_duplicates=False`` refuses a multigraph here with a
        clear error instead, for code that needs the set to equal the list.

        Example:
            >>> import torch
            >>> from graphformer import CausalGraph
            >>> edges = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 2]])  # no edge into 2 from 0, 1
            >>> graph = CausalGraph.from_edge_index(edges, batch=torch.tensor([0, 0, 0]))
            >>> graph.dense_mask()[0].long()
            tensor([[1, 0, 0],
                    [1, 1, 0],
                    [0, 0, 1]])
        """
        graph = cls.from_batch(batch, causal=causal)
        check_edge_index(edge_index, graph.num_nodes, of="graph given by batch")
        if not allow_duplicates:
            if edge_index.numel():
                n = graph.num_nodes
                key, counts = torch.unique(edge_index[1].long() * n + edge_index[0].long(),
                                           return_counts=True)
                if bool((counts > 1).any()):
                    dup = int(key[counts > 1][0])
                    raise ValueError(
                        f"edge_index has a duplicate edge ({dup % n} -> {dup // n}): a "
                        "CausalGraph is a set of edges, so the fused kernels would count it "
                        "once where the edge-wise kernel counts it twice; coalesce it first "
                        "(torch_geometric.utils.coalesce), or leave out batch= to run the "
                        "edge-wise kernel on the multigraph")
        return cls(graph.ptr, causal=causal, explicit=edge_index)

    # ------------------------------------------------------------------ composition
    def _replace(self, **changes: Any) -> "CausalGraph":
        kwargs = dict(causal=self.causal, window=self.window, document=self.document,
                      extra_edges=self.extra_edges, removed_edges=self.removed_edges,
                      explicit=self.explicit)
        kwargs.update(changes)
        return CausalGraph(self.ptr, **kwargs)

    def with_window(self, window: Optional[int]) -> "CausalGraph":
        r"""The same graph with a sliding window of width ``window``.

        Example:
            >>> from graphformer import CausalGraph
            >>> CausalGraph.from_lengths([4]).with_window(2).dense_mask()[0].long()
            tensor([[1, 0, 0, 0],
                    [1, 1, 0, 0],
                    [0, 1, 1, 0],
                    [0, 0, 1, 1]])
        """
        self._no_explicit("a window")
        return self._replace(window=window)

    def with_documents(self, document: Tensor) -> "CausalGraph":
        r"""The same graph cut at document boundaries (``document``: an id per node).

        Example:
            >>> import torch
            >>> from graphformer import CausalGraph
            >>> graph = CausalGraph.from_lengths([4]).with_documents(torch.tensor([0, 0, 1, 1]))
            >>> graph.dense_mask()[0].long()
            tensor([[1, 0, 0, 0],
                    [1, 1, 0, 0],
                    [0, 0, 1, 0],
                    [0, 0, 1, 1]])
        """
        self._no_explicit("documents")
        return self._replace(document=document)

    def add_edges(self, edge_index: Tensor) -> "CausalGraph":
        r"""The same graph plus the global edges ``edge_index`` ``[2, E]``. Rules compose
        in call order: an edge removed earlier and added here is in the graph.

        Example:
            >>> import torch
            >>> from graphformer import CausalGraph
            >>> graph = CausalGraph.from_lengths([3]).with_window(1)  # self-loops only
            >>> graph.add_edges(torch.tensor([[0], [2]])).edge_index  # plus 0 -> 2
            tensor([[0, 1, 0, 2],
                    [0, 1, 2, 2]])
        """
        edge_index = self._checked(edge_index, "extra edges")
        if self.explicit is not None:
            return self._replace(explicit=torch.cat([self.explicit, edge_index], 1))
        removed = self.removed_edges
        if removed is not None:
            removed = removed[:, ~_isin_pairs(removed, edge_index, self.num_nodes)]
        extra = edge_index if self.extra_edges is None else torch.cat([self.extra_edges, edge_index], 1)
        return self._replace(extra_edges=extra, removed_edges=removed)

    def remove_edges(self, edge_index: Tensor) -> "CausalGraph":
        r"""The same graph without the global edges ``edge_index`` ``[2, E]``. Rules
        compose in call order: an edge added earlier and removed here is not in the
        graph.

        Example:
            >>> import torch
            >>> from graphformer import CausalGraph
            >>> graph = CausalGraph.from_lengths([3]).remove_edges(torch.tensor([[0], [2]]))
            >>> graph.edge_index  # the causal DAG without 0 -> 2
            tensor([[0, 0, 1, 1, 2],
                    [0, 1, 1, 2, 2]])
        """
        edge_index = self._checked(edge_index, "removed edges")
        if self.explicit is not None:
            keep = ~_isin_pairs(self.explicit, edge_index, self.num_nodes)
            return self._replace(explicit=self.explicit[:, keep])
        extra = self.extra_edges
        if extra is not None:
            extra = extra[:, ~_isin_pairs(extra, edge_index, self.num_nodes)]
        removed = edge_index if self.removed_edges is None else torch.cat([self.removed_edges, edge_index], 1)
        return self._replace(extra_edges=extra, removed_edges=removed)

    def _no_explicit(self, what: str) -> None:
        if self.explicit is not None:
            raise ValueError(f"cannot add {what} to a CausalGraph given by an explicit edge "
                             "list: filter the edge list instead")

    def _checked(self, edges: Optional[Tensor], name: str) -> Optional[Tensor]:
        if edges is None:
            return None
        check_edge_index(edges, self.num_nodes, name=name, of="graph")
        edges = edges.long().to(self.ptr.device)
        if edges.numel() == 0:
            return edges
        src, dst = edges
        if bool((self.batch[src] != self.batch[dst]).any()):
            bad = int((self.batch[src] != self.batch[dst]).nonzero()[0])
            raise ValueError(f"{name} has edge ({int(src[bad])}, {int(dst[bad])}) between "
                             "two different sequences")
        if self.causal:
            forward = self.position[src] > self.position[dst]
            if bool(forward.any()):
                bad = int(forward.nonzero()[0])
                raise ValueError(
                    f"{name} has edge ({int(src[bad])} -> {int(dst[bad])}) pointing forward in "
                    f"time (source position {int(self.position[src[bad]])} > target position "
                    f"{int(self.position[dst[bad]])}); a causal graph must be a DAG with j <= i")
        return edges

    # ------------------------------------------------------------------ properties
    @property
    def is_rule_only(self) -> bool:
        r"""``True`` when the edges follow the rule alone (no explicit edge changes)."""
        return self.explicit is None and self.extra_edges is None and self.removed_edges is None

    @property
    def is_dense(self) -> bool:
        r"""``True`` when every sequence is fully causal (or fully connected): the case of
        ``scaled_dot_product_attention(is_causal=...)`` without a mask."""
        return self.is_rule_only and self.window is None and self.document is None

    @property
    def is_uniform(self) -> bool:
        r"""``True`` when all sequences have the same length (padding-free layout)."""
        return self._uniform

    @property
    def device(self) -> torch.device:
        return self.ptr.device

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.size(1))

    def to(self, device: Union[str, torch.device]) -> "CausalGraph":
        r"""The same graph on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        g = CausalGraph(self.ptr.to(device), causal=self.causal, window=self.window,
                        document=move(self.document), extra_edges=move(self.extra_edges),
                        removed_edges=move(self.removed_edges), explicit=move(self.explicit))
        g._edge_index = move(self._edge_index)
        g._dense = move(self._dense)
        return g

    # ------------------------------------------------------------------ padded layout
    @property
    def dense_index(self) -> Tensor:
        r"""Row of each node in the padded ``[B * T]`` layout."""
        return self.batch * self.max_length + self.position

    def head_index(self, heads: int) -> Tensor:
        r"""Row of each (node, head) pair in the padded ``[B, heads, T]`` layout,
        flattened, ``[N * heads]`` in the order of ``[N, heads]`` rows: an ``[N, heads,
        d]`` tensor goes into a ``[B * heads, T, d]`` layout (the batched matrices of
        multi-head attention) with one ``index_copy_`` and back with one
        ``index_select``. Cached per ``heads`` (every layer of a batch uses it).

        Example:
            >>> from graphformer import CausalGraph
            >>> CausalGraph.from_lengths([1, 2]).head_index(2).tolist()  # T = 2
            [0, 2, 4, 6, 5, 7]
        """
        heads = check_int("heads", heads, 1, error=ValueError)
        if heads not in self._head_index:
            rows = (self.batch * heads).unsqueeze(1) + torch.arange(heads, device=self.device)
            self._head_index[heads] = (rows * self.max_length
                                       + self.position.unsqueeze(1)).view(-1)
        return self._head_index[heads]

    def to_padded(self, x: Tensor) -> Tensor:
        r"""Node features ``[N, ...]`` to the padded layout ``[B, T, ...]`` (zeros in
        padding). A view, without a copy, when all sequences have the same length.

        Example:
            >>> import torch
            >>> from graphformer import CausalGraph
            >>> graph = CausalGraph.from_lengths([2, 3])
            >>> graph.to_padded(torch.arange(5)).tolist()  # sequence 0 padded with a zero
            [[0, 1, 0], [2, 3, 4]]
        """
        B, T = self.num_sequences, self.max_length
        if not isinstance(x, Tensor) or x.dim() == 0 or x.size(0) != self.num_nodes:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"to_padded needs one row per node [{self.num_nodes}, ...], "
                             f"got {got}")
        if self.is_uniform:
            return x.view(B, T, *x.shape[1:])
        out = x.new_zeros(B * T, *x.shape[1:])
        out = out.index_copy(0, self.dense_index, x)
        return out.view(B, T, *x.shape[1:])

    def from_padded(self, x: Tensor) -> Tensor:
        r"""The inverse of :meth:`to_padded`: ``[B, T, ...]`` to ``[N, ...]``.

        Example:
            >>> import torch
            >>> from graphformer import CausalGraph
            >>> graph = CausalGraph.from_lengths([2, 3])
            >>> x = torch.randn(5, 8)
            >>> torch.equal(graph.from_padded(graph.to_padded(x)), x)
            True
        """
        B, T = self.num_sequences, self.max_length
        if not isinstance(x, Tensor) or x.dim() < 2 or tuple(x.shape[:2]) != (B, T):
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"from_padded needs the padded layout [{B}, {T}, ...], got {got}")
        if self.is_uniform:
            return x.reshape(self.num_nodes, *x.shape[2:])
        return x.reshape(-1, *x.shape[2:]).index_select(0, self.dense_index)

    # ------------------------------------------------------------------ views
    def dense_mask(self) -> Tensor:
        r"""``[B, T, T]`` boolean mask; ``mask[b, i, j]`` is ``True`` when position ``j``
        of sequence ``b`` sends a message to position ``i``. Padding rows and columns are
        ``False``. Cached.

        Example:
            >>> from graphformer import CausalGraph
            >>> mask = CausalGraph.from_lengths([2, 3]).dense_mask()
            >>> mask.shape
            torch.Size([2, 3, 3])
            >>> mask[0].long()  # sequence 0 has length 2: row and column 2 are padding
            tensor([[1, 0, 0],
                    [1, 1, 0],
                    [0, 0, 0]])
        """
        if self._dense is None:
            self._dense = self._build_dense_mask()
        return self._dense

    def _build_dense_mask(self) -> Tensor:
        B, T, dev = self.num_sequences, self.max_length, self.device
        if self.explicit is not None:
            mask = torch.zeros(B * T * T, dtype=torch.bool, device=dev)
            mask[self.pair_index(self.explicit)] = True
            return mask.view(B, T, T)
        pos = torch.arange(T, device=dev)
        valid = pos.unsqueeze(0) < self.lengths.unsqueeze(1)  # [B, T]
        mask = valid.unsqueeze(2) & valid.unsqueeze(1)
        if self.causal:
            mask = mask & (pos.view(T, 1) >= pos.view(1, T))
        if self.window is not None:
            mask = mask & ((pos.view(T, 1) - pos.view(1, T)).abs() < self.window)
        if self.document is not None:
            doc = self.to_padded(self.document)
            mask = mask & (doc.unsqueeze(2) == doc.unsqueeze(1))
        if self.extra_edges is not None or self.removed_edges is not None:
            mask = mask.reshape(-1).clone()
            if self.extra_edges is not None:
                mask[self.pair_index(self.extra_edges)] = True
            if self.removed_edges is not None:
                mask[self.pair_index(self.removed_edges)] = False
            mask = mask.view(B, T, T)
        return mask

    def pair_index(self, edges: Tensor) -> Tensor:
        r"""Index of each edge ``(j, i)`` of ``edges`` ``[2, E]`` in the flattened padded
        ``[B, T, T]`` layout (row ``i``, column ``j``), for scattering per-edge values
        there."""
        src, dst = edges[0].long(), edges[1].long()
        T = self.max_length
        return (self.batch[dst] * T + self.position[dst]) * T + self.position[src]

    @property
    def edge_index(self) -> Tensor:
        r"""``[2, E]`` edge list (row 0 sources, row 1 targets), sorted by target then
        source, without duplicates. Built lazily and cached.

        Example:
            >>> from graphformer import CausalGraph
            >>> CausalGraph.from_lengths([2, 2]).edge_index  # node ids are global
            tensor([[0, 0, 1, 2, 2, 3],
                    [0, 1, 1, 2, 3, 3]])
        """
        if self._edge_index is None:
            if self.explicit is not None:
                self._edge_index = _coalesce_by_target(self.explicit, self.num_nodes)
            else:
                b, i, j = self.dense_mask().nonzero(as_tuple=True)
                start = self.ptr[:-1][b]
                self._edge_index = torch.stack([start + j, start + i])
        return self._edge_index

    def block_mask(self, block_size: int = 128, num_heads: Optional[int] = None):
        r"""A FlexAttention ``BlockMask`` of the same edge set, over the padded
        ``[B, T]`` layout. Rules are expressed as closed-form ``mask_mod`` functions so
        FlexAttention can skip empty blocks; explicit edges are looked up in
        :meth:`dense_mask`. Cached per ``block_size``.

        Example:
            >>> from graphformer import CausalGraph
            >>> mask = CausalGraph.from_lengths([512]).with_window(100).block_mask()
            >>> mask.shape
            (1, 1, 512, 512)
            >>> mask.to_dense()[0, 0]  # blocks of 128: FlexAttention skips the empty ones
            tensor([[1, 0, 0, 0],
                    [1, 1, 0, 0],
                    [0, 1, 1, 0],
                    [0, 0, 1, 1]], dtype=torch.int32)
        """
        from torch.nn.attention.flex_attention import create_block_mask

        block_size = check_int("block_size", block_size, 1, error=ValueError)
        key = (block_size, num_heads)
        if key not in self._block_masks:
            B, T = self.num_sequences, self.max_length
            self._block_masks[key] = create_block_mask(
                self.mask_mod(), B, num_heads, T, T, device=str(self.device),
                BLOCK_SIZE=block_size)
        return self._block_masks[key]

    def mask_mod(self):
        r"""The edge rule as a FlexAttention ``mask_mod(b, h, q_idx, kv_idx)``."""
        if not self.is_rule_only:
            dense = self.dense_mask()

            def lookup(b, h, q_idx, kv_idx):
                return dense[b, q_idx, kv_idx]
            return lookup

        lengths, causal, window = self.lengths, self.causal, self.window
        doc = None if self.document is None else self.to_padded(self.document)

        def rule(b, h, q_idx, kv_idx):
            length = lengths[b]
            allowed = (q_idx < length) & (kv_idx < length)
            if causal:
                allowed = allowed & (kv_idx <= q_idx)
            if window is not None:
                allowed = allowed & ((q_idx - kv_idx).abs() < window)
            if doc is not None:
                allowed = allowed & (doc[b, q_idx] == doc[b, kv_idx])
            return allowed
        return rule

    def __repr__(self) -> str:
        parts = [f"num_nodes={self.num_nodes}", f"num_sequences={self.num_sequences}",
                 f"max_length={self.max_length}"]
        if not self.causal:
            parts.append("causal=False")
        if self.window is not None:
            parts.append(f"window={self.window}")
        if self.document is not None:
            parts.append("documents")
        if self.explicit is not None:
            parts.append(f"explicit_edges={self.explicit.size(1)}")
        return f"{self.__class__.__name__}({', '.join(parts)})"


def _coalesce_by_target(edge_index: Tensor, num_nodes: int) -> Tensor:
    key = edge_index[1] * num_nodes + edge_index[0]
    key = torch.unique(key)  # sorted, deduplicated
    return torch.stack([key % num_nodes, key // num_nodes])


def _isin_pairs(edges: Tensor, query: Tensor, num_nodes: int) -> Tensor:
    return torch.isin(edges[1] * num_nodes + edges[0], query[1].long() * num_nodes + query[0].long())


def as_edge_index(edge_index: Union[Tensor, CausalGraph]) -> Tensor:
    r"""The one place a :class:`CausalGraph` becomes the plain ``[2, E]`` tensor that
    PyG layers (``GCNConv``, ``GINConv``, ``GATConv``, ...) understand; tensors pass
    through unchanged.

    Example:
        >>> import torch
        >>> from torch_geometric.nn import GCNConv
        >>> from graphformer import CausalGraph, as_edge_index
        >>> graph = CausalGraph.from_lengths([3, 4])
        >>> as_edge_index(graph).shape
        torch.Size([2, 16])
        >>> GCNConv(8, 16)(torch.randn(7, 8), as_edge_index(graph)).shape
        torch.Size([7, 16])
    """
    if isinstance(edge_index, CausalGraph):
        return edge_index.edge_index
    return edge_index
