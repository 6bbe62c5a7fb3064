r"""Pause tokens as a graph rewiring: extra nodes on the causal DAG."""
from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from graphformer.checks import check_int
from graphformer.graph import CausalGraph, check_edge_index

__all__ = ['AddPauseTokens', 'PausedGraph', 'pause_layout']

LAYOUTS = ('suffix', 'prefix', 'every')


class PausedGraph(NamedTuple):
    r"""What :class:`AddPauseTokens` returns for a :class:`CausalGraph`.

    Example:
        >>> from graphformer import CausalGraph
        >>> from graphformer.transforms import AddPauseTokens
        >>> graph, pause_mask, index = AddPauseTokens(2)(CausalGraph.from_lengths([3]))
        >>> graph
        CausalGraph(num_nodes=5, num_sequences=1, max_length=5)
        >>> pause_mask, index  # two pauses after the 3 tokens, which keep their indices
        (tensor([False, False, False,  True,  True]), tensor([0, 1, 2]))
    """
    graph: CausalGraph  #: the token DAG with the pause nodes
    pause_mask: Tensor  #: :obj:`[N_new]`, :obj:`True` at pause nodes
    index: Tensor  #: :obj:`[N_old]`, new node index of every old node


def _check_layout(num_pause: int, layout: str,
                  every: Optional[int]) -> Tuple[int, Optional[int]]:
    r"""Refuses a bad pause layout; returns :obj:`(num_pause, every)` as Python ints."""
    num_pause = check_int("num_pause", num_pause, 0, error=ValueError)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: "
                         f"{', '.join(LAYOUTS)}")
    if layout == 'every':
        every = check_int("every", every, 1, error=ValueError,
                          hint=" (layout='every' needs it)")
    elif every is not None:
        raise ValueError(f"every= is only used with layout='every', not "
                         f"{layout!r}")
    return num_pause, every


def pause_layout(
    lengths: Tensor,
    num_pause: int,
    layout: str = 'suffix',
    every: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Where pause nodes go when sequences of the given lengths get them.

    Args:
        lengths (torch.Tensor): Sequence lengths :obj:`[B]`.
        num_pause (int): Pause nodes :math:`M` per insertion point.
        layout (str): :obj:`"suffix"` (after the last token),
            :obj:`"prefix"` (before the first) or :obj:`"every"` (after
            every complete block of :obj:`every` tokens).
        every (int, optional): Block size for :obj:`layout="every"`.

    Returns:
        :obj:`(new_lengths [B], index [N_old], pause_mask [N_new])`, with
        :obj:`index` the new position (global node index) of every old node.

    Example:
        >>> import torch
        >>> from graphformer.transforms import pause_layout
        >>> lengths, index, pause_mask = pause_layout(torch.tensor([3, 4]), 1, "every", every=2)
        >>> lengths  # one pause after every complete pair of tokens
        tensor([4, 6])
        >>> index
        tensor([0, 1, 3, 4, 5, 7, 8])
        >>> pause_mask.nonzero().flatten()
        tensor([2, 6, 9])
    """
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 \
            or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be a 1-D integer tensor, got "
                        f"{lengths!r}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
    num_pause, every = _check_layout(num_pause, layout, every)
    lengths = lengths.long()
    B = lengths.numel()
    dev = lengths.device
    old_ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    seq = torch.repeat_interleave(torch.arange(B, device=dev), lengths)
    pos = torch.arange(int(old_ptr[-1]), device=dev) - old_ptr[:-1][seq]
    if layout == 'suffix':
        shift = torch.zeros_like(pos)
        added = torch.full_like(lengths, num_pause)
    elif layout == 'prefix':
        shift = torch.full_like(pos, num_pause)
        added = torch.full_like(lengths, num_pause)
    else:  # every: M pauses after each complete block of `every` tokens
        shift = (pos // every) * num_pause
        added = (lengths // every) * num_pause
    new_lengths = lengths + added
    new_ptr = torch.cat([lengths.new_zeros(1), new_lengths.cumsum(0)])
    index = new_ptr[:-1][seq] + pos + shift
    pause_mask = torch.ones(int(new_ptr[-1]), dtype=torch.bool, device=dev)
    pause_mask[index] = False
    return new_lengths, index, pause_mask


class AddPauseTokens(BaseTransform):
    r"""Inserts :math:`M` learnable-pause placeholders into every sequence
    (Goyal et al., `"Think before you speak: Training Language Models With
    Pause Tokens" <https://arxiv.org/abs/2310.02226>`_, ICLR 2024), as new
    nodes of the causal token DAG, and marks them with :obj:`pause_mask` so
    that losses and read-outs skip them.

    In graph terms pauses lengthen the runway: on the dense causal DAG the
    number of paths from position :math:`i` to the read-out at position
    :math:`n` through :math:`L` layers is :math:`\binom{n-i+L-1}{L-1}`, so
    appending :math:`M` pauses and reading out at the last one raises the
    count for the last real token from :math:`1` to
    :math:`\binom{M+L-1}{L-1}` (:func:`graphformer.diagnostics.path_counts`).

    Pause nodes are ordinary positions of the new sequences. On a
    :class:`~graphformer.graph.CausalGraph` with a plain rule (causal or
    full, optionally a window) the result has the same rule over the new
    positions; otherwise (documents, explicit edge changes) the old edges
    are carried over and every pause node is joined to the nodes of its
    sequence causally (:math:`j \to p` for earlier :math:`j`, :math:`p \to
    i` for later :math:`i`, a self-loop), and pauses inherit the document
    of the token before them.

    Called on a :class:`CausalGraph`, returns :class:`PausedGraph`
    :obj:`(graph, pause_mask, index)`. Called on a sequence
    :class:`~torch_geometric.data.Data` (one sequence, or a batch with
    :obj:`batch`), returns a new :obj:`Data` with

    * node attributes (:obj:`x`, per-token :obj:`y`, ...) moved to the new
      indices; pause rows are :obj:`pause_token` (integer features, e.g.
      token ids; :obj:`-1` by default, as in :class:`graphformer.models.GPT`),
      :obj:`0` (float features), :obj:`-100` for a per-token :obj:`y` (the
      :obj:`ignore_index` of :func:`~torch.nn.functional.cross_entropy`), the
      sequence id for :obj:`batch`;
    * :obj:`pause_mask` (and :obj:`ptr` when it was there) added;
    * :obj:`edge_index` (when present) carried over and extended as above
      (:obj:`causal` tells the rule);
    * :obj:`root_index` / :obj:`root_mask` (the read-out) moved to the
      *last node* of its sequence when :obj:`move_readout=True`, so that
      with a suffix the answer is read after the pauses (Goyal et al.);
      otherwise kept on the same token.

    Args:
        num_pause (int): :math:`M \geq 0` pause nodes per insertion point.
        layout (str, optional): :obj:`"suffix"`, :obj:`"prefix"` or
            :obj:`"every"`. (default: :obj:`"suffix"`)
        every (int, optional): With :obj:`layout="every"`, :math:`M` pauses
            go after every complete block of :obj:`every` tokens (so a
            sequence of :math:`T` tokens gets :math:`M \lfloor T/k
            \rfloor`). (default: :obj:`None`)
        pause_token (int, optional): Id written in integer features of pause
            nodes. (default: :obj:`-1`)
        move_readout (bool, optional): See above. (default: :obj:`True`)
        causal (bool, optional): For :obj:`Data` with :obj:`edge_index`:
            whether pause nodes connect causally (:obj:`True`) or to every
            node of the sequence. (default: :obj:`True`)

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from graphformer.transforms import AddPauseTokens
        >>> data = Data(x=torch.tensor([5, 6, 7]), y=torch.tensor([1, 2, 3]),
        ...             root_index=torch.tensor([2]))
        >>> out = AddPauseTokens(2)(data)
        >>> out.x, out.y  # pause token -1; y ignored (-100) at the pauses
        (tensor([ 5,  6,  7, -1, -1]), tensor([   1,    2,    3, -100, -100]))
        >>> out.root_index  # the read-out moves to the last pause
        tensor([4])
    """

    def __init__(
        self,
        num_pause: int,
        layout: str = 'suffix',
        every: Optional[int] = None,
        pause_token: int = -1,
        move_readout: bool = True,
        causal: bool = True,
    ) -> None:
        num_pause, every = _check_layout(num_pause, layout, every)
        self.num_pause = num_pause
        self.layout = layout
        self.every = every
        self.pause_token = int(pause_token)
        self.move_readout = bool(move_readout)
        self.causal = bool(causal)

    def forward(
        self,
        data: Union[Data, CausalGraph],
    ) -> Union[Data, PausedGraph]:
        if isinstance(data, CausalGraph):
            return self._graph(data)
        if isinstance(data, Data):
            return self._data(data)
        raise TypeError(f"AddPauseTokens takes a CausalGraph or a sequence "
                        f"Data, got {type(data).__name__}")

    # ------------------------------------------------------------------
    def _layout(self, lengths: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return pause_layout(lengths, self.num_pause, self.layout, self.every)

    def _pause_edges(self, ptr: Tensor, pause_mask: Tensor,
                     causal: bool) -> Tensor:
        r"""Edges between every pause node and the nodes of its sequence."""
        lengths = ptr[1:] - ptr[:-1]
        dev = ptr.device
        seq = torch.repeat_interleave(torch.arange(lengths.numel(),
                                                   device=dev), lengths)
        pauses = pause_mask.nonzero().view(-1)
        if pauses.numel() == 0:
            return torch.empty(2, 0, dtype=torch.long, device=dev)
        p_seq = seq[pauses]
        counts = lengths[p_seq]
        p_rep = torch.repeat_interleave(pauses, counts)
        start = torch.repeat_interleave(ptr[:-1][p_seq], counts)
        offs = torch.arange(int(counts.sum()), device=dev) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts)
        other = start + offs
        into = torch.stack([other, p_rep])  # other -> pause
        out_of = torch.stack([p_rep, other])  # pause -> other
        if causal:
            into = into[:, into[0] <= into[1]]
            out_of = out_of[:, out_of[0] <= out_of[1]]
        edges = torch.cat([into, out_of], 1)
        # pause -> pause edges and self-loops appear twice: keep each once
        N = pause_mask.numel()
        key = torch.unique(edges[1] * N + edges[0])
        return torch.stack([key % N, key // N])

    def _graph(self, graph: CausalGraph) -> PausedGraph:
        new_lengths, index, pause_mask = self._layout(graph.lengths)
        ptr = torch.cat([new_lengths.new_zeros(1), new_lengths.cumsum(0)])
        if graph.is_rule_only and graph.document is None:
            new = CausalGraph(ptr, causal=graph.causal, window=graph.window)
            return PausedGraph(new, pause_mask, index)
        edges = torch.cat([
            index[graph.edge_index],
            self._pause_edges(ptr, pause_mask, graph.causal)
        ], 1)
        if graph.document is not None:
            doc = self._fill_from_previous(graph.document, index, pause_mask)
            edges = edges[:, doc[edges[0]] == doc[edges[1]]]
        new = CausalGraph(ptr, causal=graph.causal, explicit=edges)
        return PausedGraph(new, pause_mask, index)

    @staticmethod
    def _fill_from_previous(values: Tensor, index: Tensor,
                            pause_mask: Tensor) -> Tensor:
        r"""Per-node values for the new layout, pauses taking the value of
        the nearest real node before them (after them at a sequence start)."""
        N = pause_mask.numel()
        real_pos = torch.full((N, ), -1, dtype=torch.long, device=index.device)
        real_pos[index] = index
        prev = torch.cummax(real_pos, 0).values
        nxt = torch.flip(torch.cummin(torch.flip(
            torch.where(real_pos < 0, torch.full_like(real_pos, N), real_pos),
            [0]), 0).values, [0])
        src = torch.where(prev >= 0, prev, nxt)
        out = values.new_empty((N, ) + values.shape[1:])
        out[index] = values
        return out[src]

    def _data(self, data: Data) -> Data:
        N = data.num_nodes
        if N is None:
            raise ValueError("AddPauseTokens needs a Data with nodes (x or "
                             "num_nodes)")
        batch = data.batch if 'batch' in data else None
        if batch is not None:
            if batch.is_floating_point() or batch.dtype == torch.bool:
                raise TypeError(f"batch must hold integer sequence ids, got "
                                f"dtype {batch.dtype}")
            if N and int(batch.min()) < 0:
                raise ValueError(f"batch has a negative sequence id "
                                 f"({int(batch.min())})")
            if batch.numel() != N:
                raise ValueError(f"batch has {batch.numel()} entries but the "
                                 f"data has {N} nodes")
            if N and bool((batch[1:] < batch[:-1]).any()):
                raise ValueError("batch must be sorted: the nodes of a "
                                 "sequence must be contiguous and in order")
            lengths = torch.bincount(batch, minlength=int(batch.max()) + 1
                                     if N else 0)
        else:
            lengths = torch.tensor([N])
        if 'edge_index' in data and data.edge_index is not None:
            check_edge_index(data.edge_index, N, of="Data")
        for key in ('root_index', 'root_mask'):
            if key in data:
                self._check_readout(data[key], key, N)
        new_lengths, index, pause_mask = self._layout(lengths)
        M = pause_mask.numel()
        ptr = torch.cat([new_lengths.new_zeros(1), new_lengths.cumsum(0)])
        seq = torch.repeat_interleave(torch.arange(new_lengths.numel()),
                                      new_lengths)

        out = data.clone()
        for key, value in data.items():
            if key in ('edge_index', 'batch', 'ptr', 'root_index',
                       'root_mask') or not isinstance(value, Tensor):
                continue
            if value.dim() == 0 or not data.is_node_attr(key):
                continue
            dim = data.__cat_dim__(key, value)
            if value.size(dim) != N:
                continue
            if value.dtype == torch.bool:
                fill = False
            elif value.is_floating_point():
                fill = 0.0
            elif key == 'y':
                fill = -100
            else:
                fill = self.pause_token
            shape = list(value.shape)
            shape[dim] = M
            new = value.new_full(shape, fill)
            new.index_copy_(dim, index, value)
            out[key] = new
        if batch is not None:
            out.batch = seq.to(batch.device)
        if 'ptr' in data:
            out.ptr = ptr
        if 'edge_index' in data and data.edge_index is not None:
            out.edge_index = torch.cat([
                index[data.edge_index],
                self._pause_edges(ptr, pause_mask, self.causal)
            ], 1)
        if 'root_index' in data or 'root_mask' in data:
            if 'root_index' in data:
                root = data.root_index.view(-1)
            else:
                root = data.root_mask.nonzero().view(-1)
            if self.move_readout:
                old_ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
                owner = torch.bucketize(root, old_ptr[1:], right=True)
                new_root = ptr[1:][owner] - 1
            else:
                new_root = index[root]
            if 'root_index' in data:
                out.root_index = new_root.view(data.root_index.shape)
            if 'root_mask' in data:
                mask = torch.zeros(M, dtype=torch.bool)
                mask[new_root] = True
                out.root_mask = mask
        out.pause_mask = pause_mask
        if 'num_nodes' in data._store:
            out.num_nodes = M
        return out

    @staticmethod
    def _check_readout(value: Tensor, key: str, num_nodes: int) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"data.{key} must be a tensor, got "
                            f"{type(value).__name__}")
        if key == 'root_mask':
            if value.dtype != torch.bool or value.numel() != num_nodes:
                raise ValueError(f"data.root_mask must be a bool tensor with "
                                 f"one entry per node ({num_nodes}), got "
                                 f"dtype {value.dtype}, {value.numel()} "
                                 "entries")
            return
        if value.is_floating_point() or value.dtype == torch.bool:
            raise TypeError(f"data.root_index must hold node indices, got "
                            f"dtype {value.dtype}")
        if value.numel() and (int(value.min()) < 0
                              or int(value.max()) >= num_nodes):
            bad = int(value.min()) if int(value.min()) < 0 \
                else int(value.max())
            raise ValueError(f"data.root_index has node {bad} but the Data "
                             f"has {num_nodes} nodes")

    def __repr__(self) -> str:
        extra = f', every={self.every}' if self.layout == 'every' else ''
        return (f'{self.__class__.__name__}({self.num_pause}, '
                f'layout={self.layout!r}{extra})')
