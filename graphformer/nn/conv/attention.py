from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.utils import softmax

from graphformer.graph import CausalGraph, check_edge_index
from graphformer.nn import kernels

GraphLike = Union[Tensor, CausalGraph]


def rotary_embedding(x: Tensor, position: Tensor, base: float = 10000.0) -> Tensor:
    r"""Rotary position embedding (RoPE, Su et al. 2021) of ``x`` ``[N, H, d]`` at
    integer ``position`` ``[N]``: each pair of channels :math:`(2m, 2m+1)` is rotated by
    the angle :math:`p \cdot \text{base}^{-2m/d}`, so that
    :math:`\mathbf{q}_i^\top\mathbf{k}_j` depends only on :math:`p_i - p_j`."""
    d = x.size(-1)
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angle = position.to(torch.float32).unsqueeze(-1) * inv_freq  # [N, d/2]
    cos = angle.cos().unsqueeze(1).to(x.dtype)
    sin = angle.sin().unsqueeze(1).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def check_input(x: Tensor, edge_index: GraphLike, in_channels: int) -> None:
    r"""Clear errors for node features that do not fit a layer or its graph."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor [num_nodes, channels], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape [num_nodes, {in_channels}], got {list(x.shape)}")
    if in_channels > 0 and x.size(1) != in_channels:
        raise ValueError(f"x has {x.size(1)} channels but the layer expects {in_channels}")
    if isinstance(edge_index, CausalGraph):
        if edge_index.num_nodes != x.size(0):
            raise ValueError(f"x has {x.size(0)} rows but the CausalGraph has "
                             f"{edge_index.num_nodes} nodes")
        if edge_index.device != x.device:
            raise ValueError(f"x is on {x.device} but the CausalGraph is on "
                             f"{edge_index.device}: call graph.to(x.device)")
    else:
        check_edge_index(edge_index, x.size(0))


class AttentionConv(MessagePassing):
    r"""Multi-head scaled dot-product attention as message passing: the query comes from
    the target node, key and value from the source,

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_s \mathbf{x}_i +
        \big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i)} \alpha^{h}_{ij}
        \mathbf{W}^{h}_v \mathbf{x}_j, \qquad
        \alpha^{h}_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}\left(
        \frac{(\mathbf{W}^{h}_q \mathbf{x}_i)^{\top} \mathbf{W}^{h}_k \mathbf{x}_j}
        {\sqrt{d}}\right).

    On a :class:`~graphformer.graph.CausalGraph` this is the self-attention of a
    Transformer; on any other graph it is PyG's
    :class:`~torch_geometric.nn.conv.TransformerConv` (parameter names follow it, so with
    the same weights and ``root_weight=False`` both give the same output). The kernel is
    picked per call (see :mod:`graphformer.nn.kernels`): fused SDPA for dense causal
    graphs, masked SDPA or FlexAttention for structured ones, edge-wise otherwise. Every
    kernel gives the same answer; a node with no incoming edge gets a zero message.

    Args:
        in_channels (int): size of each input sample.
        out_channels (int): size of each head's output.
        heads (int, optional): number of attention heads. (default: :obj:`1`)
        concat (bool, optional): concatenate the heads (else average them).
            (default: :obj:`True`)
        dropout (float, optional): dropout on the attention weights. (default: :obj:`0.`)
        root_weight (bool, optional): add the skip term :math:`\mathbf{W}_s\mathbf{x}_i`.
            (default: :obj:`True`)
        bias (bool, optional): learn additive biases. (default: :obj:`True`)
        kernel (str, optional): ``"auto"``, ``"edge"``, ``"sdpa"`` or ``"flex"``.
            (default: :obj:`"auto"`)
        rotary (bool, optional): apply a rotary position embedding to queries and keys,
            with positions from the :class:`CausalGraph` (or the ``position`` argument).
            (default: :obj:`False`)
        **kwargs (optional): additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.
    """

    accepts_causal_graph = True

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1,
                 concat: bool = True, dropout: float = 0.0, root_weight: bool = True,
                 bias: bool = True, kernel: str = "auto", rotary: bool = False,
                 **kwargs) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        if heads < 1 or out_channels < 1:
            raise ValueError(f"heads and out_channels must be positive, got heads={heads}, "
                             f"out_channels={out_channels}")
        if kernel not in kernels.KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of "
                             f"{', '.join(kernels.KERNELS)}")
        if rotary and out_channels % 2:
            raise ValueError(f"rotary embedding needs an even head size, got {out_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.dropout = dropout
        self.root_weight = root_weight
        self.kernel = kernel
        self.rotary = rotary
        self.lin_key = Linear(in_channels, heads * out_channels, bias=bias)
        self.lin_query = Linear(in_channels, heads * out_channels, bias=bias)
        self.lin_value = Linear(in_channels, heads * out_channels, bias=bias)
        skip_channels = heads * out_channels if concat else out_channels
        self.lin_skip = Linear(in_channels, skip_channels, bias=bias) if root_weight else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_key.reset_parameters()
        self.lin_query.reset_parameters()
        self.lin_value.reset_parameters()
        if self.lin_skip is not None:
            self.lin_skip.reset_parameters()

    def project(self, x: Tensor, edge_index: GraphLike,
                position: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Queries, keys and values ``[N, H, d]`` (rotary applied when enabled)."""
        H, C = self.heads, self.out_channels
        lins = (self.lin_query, self.lin_key, self.lin_value)
        if all(isinstance(lin.weight, torch.nn.Parameter)
               and not isinstance(lin.weight, torch.nn.parameter.UninitializedParameter)
               for lin in lins):
            # One GEMM for the three projections (same parameters, same result): x is
            # read once and the larger product runs faster, forward and backward.
            weight = torch.cat([lin.weight for lin in lins])
            bias = None if lins[0].bias is None else torch.cat([lin.bias for lin in lins])
            q, k, v = F.linear(x, weight, bias).view(-1, 3, H, C).unbind(1)
        else:
            q, k, v = (lin(x).view(-1, H, C) for lin in lins)
        if self.rotary:
            if position is None:
                if not isinstance(edge_index, CausalGraph):
                    raise ValueError("rotary=True needs positions: pass a CausalGraph or "
                                     "`position=`")
                position = edge_index.position
            q, k = rotary_embedding(q, position), rotary_embedding(k, position)
        return q, k, v

    def forward(self, x: Tensor, edge_index: GraphLike, kernel: Optional[str] = None,
                return_attention_weights: Optional[bool] = None,
                position: Optional[Tensor] = None, batch: Optional[Tensor] = None):
        r"""Runs the layer.

        Args:
            x (torch.Tensor): node features ``[N, in_channels]``.
            edge_index (torch.Tensor or CausalGraph): the graph.
            kernel (str, optional): overrides the layer's kernel for this call.
            return_attention_weights (bool, optional): if set, also return
                ``(edge_index, alpha)`` with ``alpha`` ``[E, heads]``.
            position (torch.Tensor, optional): positions for the rotary embedding when
                ``edge_index`` is a plain tensor.
            batch (torch.Tensor, optional): with a plain ``edge_index``, the sequence
                (graph) of each node, so that the fused kernels can run on it.
        """
        check_input(x, edge_index, self.in_channels)
        if batch is not None and not isinstance(edge_index, CausalGraph):
            edge_index = CausalGraph.from_edge_index(edge_index, batch, causal=False)
        q, k, v = self.project(x, edge_index, position)
        out = kernels.attention(q, k, v, edge_index, kernel or self.kernel,
                                dropout=self.dropout, training=self.training)
        out = self.combine(out, x)
        if return_attention_weights is not None:
            return out, self.attention_weights(q, k, edge_index)
        return out

    def combine(self, out: Tensor, x: Tensor) -> Tensor:
        r"""Merges the heads ``[N, H, d]`` and adds the skip term."""
        out = out.reshape(out.size(0), -1) if self.concat else out.mean(dim=1)
        if self.lin_skip is not None:
            out = out + self.lin_skip(x)
        return out

    def attention_weights(self, q: Tensor, k: Tensor,
                          edge_index: GraphLike) -> Tuple[Tensor, Tensor]:
        r"""``(edge_index, alpha)``: the attention weight of every edge and head."""
        ei = edge_index.edge_index if isinstance(edge_index, CausalGraph) else edge_index
        alpha = softmax(kernels.edge_scores(q, k, ei), ei[1], num_nodes=q.size(0))
        return ei, alpha

    def message(self, query_i: Tensor, key_j: Tensor, value_j: Tensor, index: Tensor,
                ptr: Optional[Tensor], size_i: Optional[int]) -> Tensor:
        # PyG's message-passing form of the same update, used by `propagate` (e.g. by
        # explainers); the kernels above are the fast paths.
        alpha = (query_i * key_j).sum(-1) / math.sqrt(self.out_channels)
        alpha = softmax(alpha, index, ptr, size_i)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return value_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads})")
