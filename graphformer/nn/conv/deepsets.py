from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from graphformer.graph import CausalGraph
from graphformer.nn.conv.inputs import check_sizes, prepare_inputs
PATHS = ("auto", "edge", "prefix")


class DeepSetsConv(MessagePassing):
    r"""Deep Sets (Zaheer et al. 2017) as message passing: :math:`\phi` on every source,
    a sum (or mean) over the incoming edges, :math:`\rho` after,

    .. math::
        \mathbf{x}^{\prime}_i = \rho\Big(\bigoplus_{j \in \mathcal{N}(i)}
        \phi(\mathbf{x}_j)\Big), \qquad \phi(\mathbf{x}) = \mathrm{ReLU}(\mathbf{W}_1
        \mathbf{x} + \mathbf{b}_1), \quad \rho(\mathbf{m}) = \mathbf{W}_2 \mathbf{m} +
        \mathbf{b}_2.

    On a complete graph it is Deep Sets; on a dense causal
    :class:`~graphformer.graph.CausalGraph` the aggregation is a prefix sum over each
    sequence, computed in :math:`O(N)` with ``cumsum`` (the ``"prefix"`` path) instead of
    one message per edge (the ``"edge"`` reference path). Like every graphformer layer it
    also takes a bipartite pair ``(x_src, x_dst)`` (only the sources are read) with
    ``size``, and a sparse adjacency ``adj_t`` (``torch.sparse`` or
    ``torch_sparse.SparseTensor``) in place of ``edge_index``.

    Args:
        in_channels (int or tuple): size of each input sample, or ``(source, target)``
            sizes for bipartite input (only the sources are read); ``-1`` infers it.
        out_channels (int): size of each output sample.
        aggr (str, optional): ``"sum"`` or ``"mean"``. (default: :obj:`"sum"`)
        hidden_channels (int, optional): width of :math:`\phi` (default: ``out_channels``).
        bias (bool, optional): learn additive biases. (default: :obj:`True`)
        path (str, optional): ``"auto"``, ``"edge"`` or ``"prefix"``.
            (default: :obj:`"auto"`)

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import DeepSetsConv
        >>> graph, x = CausalGraph.from_lengths([3, 5]), torch.randn(8, 16)
        >>> conv = DeepSetsConv(16, 32)
        >>> conv(x, graph).shape
        torch.Size([8, 32])
        >>> torch.allclose(conv(x, graph), conv(x, graph, path="edge"), atol=1e-5)  # prefix sum
        True
    """

    accepts_causal_graph = True

    def __init__(self, in_channels: Union[int, Tuple[int, int]], out_channels: int,
                 aggr: str = "sum",
                 hidden_channels: Optional[int] = None, bias: bool = True,
                 path: str = "auto", **kwargs) -> None:
        check_sizes("DeepSetsConv", in_channels=in_channels, out_channels=out_channels,
                    hidden_channels=hidden_channels)
        if aggr not in ("sum", "mean"):
            raise ValueError(f"aggr must be 'sum' or 'mean', got {aggr!r}")
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
        super().__init__(aggr=aggr, node_dim=0, **kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels or out_channels
        self.path = path
        src_channels = in_channels[0] if isinstance(in_channels, (tuple, list)) else in_channels
        self.phi = Linear(src_channels, self.hidden_channels, bias=bias)
        self.rho = Linear(self.hidden_channels, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.phi.reset_parameters()
        self.rho.reset_parameters()

    def forward(self, x: Union[Tensor, Tuple[Tensor, Tensor]], edge_index: object,
                path: Optional[str] = None,
                size: Optional[Tuple[int, int]] = None) -> Tensor:
        inputs = prepare_inputs(x, edge_index, self.in_channels, size=size,
                                weight_dtype=self.phi.weight.dtype)
        path = path or self.path
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
        graph = inputs.graph
        can_prefix = isinstance(graph, CausalGraph) and graph.is_dense
        if path == "prefix" and not can_prefix:
            raise ValueError("path='prefix' needs a dense causal (or full) CausalGraph; "
                             "path='edge' runs on any graph")
        if inputs.x_src is None:  # sources without features send no message
            return self.rho(inputs.x_dst.new_zeros(inputs.x_dst.size(0), self.hidden_channels))
        h = torch.relu(self.phi(inputs.x_src))
        if path != "edge" and can_prefix:
            m = self.prefix_aggregate(h, graph)
        else:
            m = self.propagate(inputs.edge_index, x=h, size=inputs.size)
        return self.rho(m)

    def prefix_aggregate(self, h: Tensor, graph: CausalGraph) -> Tensor:
        r"""The sum (mean) over each node's predecessors in :math:`O(N)`: a cumulative
        sum along each (padded) sequence; the total for a full (non-causal) graph."""
        hp = graph.to_padded(h)  # [B, T, C], zeros in padding
        if graph.causal:
            m = hp.cumsum(dim=1)
            count = (torch.arange(graph.max_length, device=h.device) + 1).view(1, -1, 1)
        else:
            m = hp.sum(dim=1, keepdim=True).expand_as(hp)
            count = graph.lengths.view(-1, 1, 1)
        if self.aggr == "mean":
            m = m / count.to(h.dtype)
        return graph.from_padded(m)

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"aggr={self.aggr})")
