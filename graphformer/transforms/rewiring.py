r"""Rewiring transforms against over-squashing.

:class:`VirtualNode` is PyG's own transform, re-exported here: one extra node joined to
every node in both directions.

Example:
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from graphformer.transforms import VirtualNode
    >>> data = Data(x=torch.randn(4, 8), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]))
    >>> VirtualNode()(data)  # node 4 is the virtual node: 3 + 2 * 4 edges
    Data(x=[5, 8], edge_index=[2, 11], edge_type=[11])
"""
from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform, VirtualNode

from graphformer.checks import check_int

__all__ = ['FullyAdjacentLastLayer', 'VirtualNode', 'fully_adjacent_edges']

MODES = ('root', 'all')


def fully_adjacent_edges(
    num_nodes: int,
    batch: Optional[Tensor] = None,
    root_index: Optional[Tensor] = None,
    mode: str = 'root',
) -> Tensor:
    r"""The edge list of a fully-adjacent layer.

    With :obj:`mode="root"` every node :math:`j` of a graph sends to that
    graph's read-out node :math:`r` (the root), :math:`\{(j, r)\}` (the
    root included, as in Alon & Yahav's code); with :obj:`mode="all"`,
    every ordered pair of nodes of the same graph, self-loops included.

    Args:
        num_nodes (int): Number of nodes :math:`N`.
        batch (torch.Tensor, optional): Graph of every node :obj:`[N]`
            (sorted); one graph when :obj:`None`.
        root_index (torch.Tensor, optional): Read-out node of every graph
            :obj:`[B]`; needed for :obj:`mode="root"`.
        mode (str, optional): :obj:`"root"` or :obj:`"all"`.

    Returns:
        :obj:`[2, E]` edges, sorted by target.

    Example:
        >>> import torch
        >>> from graphformer.transforms import fully_adjacent_edges
        >>> fully_adjacent_edges(4, root_index=torch.tensor([3]))  # every node -> root 3
        tensor([[0, 1, 2, 3],
                [3, 3, 3, 3]])
        >>> fully_adjacent_edges(3, mode="all").shape  # all 3 x 3 pairs
        torch.Size([2, 9])
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: "
                         f"{', '.join(MODES)}")
    num_nodes = check_int("num_nodes", num_nodes, 0, error=ValueError)
    batch = _index_tensor(batch, "batch")
    root_index = _index_tensor(root_index, "root_index")
    if batch is not None and num_nodes and int(batch.min()) < 0:
        raise ValueError(f"batch has a negative graph index ({int(batch.min())})")
    dev = batch.device if batch is not None else (
        root_index.device if root_index is not None else None)
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=dev)
    if batch.numel() != num_nodes:
        raise ValueError(f"batch has {batch.numel()} entries but there are "
                         f"{num_nodes} nodes")
    if num_nodes and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (nodes of a graph contiguous)")
    B = int(batch.max()) + 1 if num_nodes else 0
    if mode == 'root':
        if root_index is None:
            raise ValueError("mode='root' needs the read-out node of every "
                             "graph (root_index or root_mask)")
        root_index = root_index.view(-1).long()
        if root_index.numel() != B:
            raise ValueError(f"root_index has {root_index.numel()} entries "
                             f"for {B} graph(s)")
        if B and int(root_index.min()) < 0:
            raise ValueError(f"root_index has a negative node index "
                             f"({int(root_index.min())})")
        if B and (int(root_index.max()) >= num_nodes
                  or bool((batch[root_index] != torch.arange(
                      B, device=batch.device)).any())):
            raise ValueError("root_index must hold, for every graph, a node "
                             "of that graph")
        src = torch.arange(num_nodes, device=batch.device)
        edges = torch.stack([src, root_index[batch]])
        order = torch.argsort(edges[1] * max(num_nodes, 1) + edges[0])
        return edges[:, order]
    counts = torch.bincount(batch, minlength=B)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    tgt = torch.repeat_interleave(torch.arange(num_nodes, device=batch.device),
                                  counts[batch])
    start = ptr[:-1][batch[tgt]]
    first = torch.repeat_interleave(
        torch.cat([counts[batch].new_zeros(1),
                   counts[batch].cumsum(0)[:-1]]), counts[batch])
    src = start + torch.arange(tgt.numel(), device=batch.device) - first
    return torch.stack([src, tgt])


def _index_tensor(t: Optional[Tensor], name: str) -> Optional[Tensor]:
    r"""``t`` as a 1-D long tensor, refusing floats and bools (which
    ``.long()`` would silently turn into other indices)."""
    if t is None:
        return None
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got "
                        f"{type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer indices, got dtype "
                        f"{t.dtype}")
    return t.view(-1).long()


class FullyAdjacentLastLayer(BaseTransform):
    r"""Stores the graph of a fully-adjacent last layer as
    :obj:`data.last_edge_index`, from Alon & Yahav, `"On the Bottleneck of
    Graph Neural Networks and its Practical Implications"
    <https://arxiv.org/abs/2006.05205>`_ (ICLR 2021): the last layer passes
    messages on

    .. math::
        \mathcal{E}_{\text{FA}} = \{(j, r) : j \in V\}
        \quad\text{(mode "root")}, \qquad
        \mathcal{E}_{\text{FA}} = V \times V \quad\text{(mode "all")},

    so every node is one hop from the read-out node :math:`r` and the
    bottleneck of the earlier layers' graph is bypassed. The paper's code
    builds the "root" graph (every node to the root of its graph); the
    all-pairs graph is the general fully-adjacent layer of its Section 5.
    The read-out node comes from :obj:`data.root_index` (or
    :obj:`root_mask`). The attribute is named :obj:`*_index`, so PyG
    increments it when graphs are batched; pass it to
    :obj:`Stack(..., last_edge_index=batch.last_edge_index)`.

    Args:
        mode (str, optional): :obj:`"root"` or :obj:`"all"`. (default:
            :obj:`"root"`)
        key (str, optional): Attribute to write. (default:
            :obj:`"last_edge_index"`)

    Example:
        >>> import torch
        >>> from torch_geometric.data import Data
        >>> from graphformer.transforms import FullyAdjacentLastLayer
        >>> path = Data(x=torch.randn(4, 8), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]),
        ...             root_index=torch.tensor([3]))
        >>> FullyAdjacentLastLayer()(path).last_edge_index  # node 0 is one hop from the root
        tensor([[0, 1, 2, 3],
                [3, 3, 3, 3]])
    """

    def __init__(self, mode: str = 'root',
                 key: str = 'last_edge_index') -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: "
                             f"{', '.join(MODES)}")
        if 'index' not in key:
            raise ValueError(f"key must contain 'index' so that PyG batches it"
                             f" as an edge list, got {key!r}")
        self.mode = mode
        self.key = key

    def forward(self, data: Data) -> Data:
        if not isinstance(data, Data):
            raise TypeError(f"FullyAdjacentLastLayer takes a Data, got "
                            f"{type(data).__name__}")
        N = data.num_nodes
        batch = data.batch if 'batch' in data else None
        root = None
        if self.mode == 'root':
            if 'root_index' in data:
                root = data.root_index
            elif 'root_mask' in data:
                root = data.root_mask.nonzero().view(-1)
            else:
                raise ValueError(
                    "mode='root' needs data.root_index or data.root_mask (the "
                    "read-out node of every graph)")
        data[self.key] = fully_adjacent_edges(N, batch, root, self.mode)
        return data

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(mode={self.mode!r})'
