from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from graphformer.checks import check_int
from graphformer.nn import kernels
from graphformer.nn.conv.attention import AttentionConv, GraphLike


def lambda_init_for_depth(layer: int) -> float:
    r""":math:`\lambda_{\text{init}} = 0.8 - 0.6\, e^{-0.3\, l}` for the 0-based layer
    index :math:`l` (Ye et al. 2024).

    Example:
        >>> from graphformer.nn.conv import lambda_init_for_depth
        >>> [round(lambda_init_for_depth(layer), 3) for layer in range(4)]
        [0.2, 0.356, 0.471, 0.556]
    """
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


class DiffAttentionConv(AttentionConv):
    r"""Differential attention (Ye et al. 2024) as message passing: two attention maps on
    the same graph, the second subtracted to cancel common-mode noise (and attention
    sinks),

    .. math::
        \mathbf{o}_i = \sum_{j \in \mathcal{N}(i)} \left(
        \alpha^{(1)}_{ij} - \lambda\, \alpha^{(2)}_{ij}\right) \mathbf{W}_v \mathbf{x}_j,
        \qquad \alpha^{(m)}_{ij} = \operatorname{softmax}_{j}\left(
        \frac{(\mathbf{W}^{(m)}_q \mathbf{x}_i)^{\top} \mathbf{W}^{(m)}_k \mathbf{x}_j}
        {\sqrt{d}}\right),

    .. math::
        \lambda = e^{\lambda_{q1} \cdot \lambda_{k1}} - e^{\lambda_{q2} \cdot
        \lambda_{k2}} + \lambda_{\text{init}},

    then a per-head RMSNorm and a factor :math:`1 - \lambda_{\text{init}}`. A drop-in for
    :class:`AttentionConv` (same call and inputs, same kernels: both maps run on the same
    mask; edge features enter both maps' keys and the value, a score bias both maps).
    ``lin_query``/``lin_key`` hold both maps' projections (first half: map 1).

    Args:
        in_channels (int): size of each input sample.
        out_channels (int): size of each head's value (and of each map's query/key).
        heads (int, optional): number of heads. (default: :obj:`1`)
        layer (int, optional): 0-based depth, giving
            :math:`\lambda_{\text{init}} = 0.8 - 0.6 e^{-0.3 l}`. (default: :obj:`0`)
        lambda_init (float, optional): overrides the depth rule.
        head_norm (bool, optional): the per-head RMSNorm. (default: :obj:`True`)
        **kwargs: the other arguments of :class:`AttentionConv`.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import DiffAttentionConv
        >>> graph, x = CausalGraph.from_lengths([3, 5]), torch.randn(8, 16)
        >>> conv = DiffAttentionConv(16, 4, heads=4, layer=2)
        >>> out = conv(x, graph)  # a fused kernel on the CausalGraph
        >>> out.shape  # heads concatenated
        torch.Size([8, 16])
        >>> torch.allclose(out, conv(x, graph.edge_index), atol=1e-5)  # = the edge-wise path
        True
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, layer: int = 0,
                 lambda_init: Optional[float] = None, head_norm: bool = True,
                 **kwargs) -> None:
        layer = check_int("DiffAttentionConv: layer", layer, 0, error=ValueError,
                          hint=" (layer is the 0-based depth)")
        if lambda_init is not None and not math.isfinite(float(lambda_init)):
            raise ValueError(f"DiffAttentionConv: lambda_init must be finite, got {lambda_init!r}")
        self.layer = layer
        self.lambda_init = lambda_init_for_depth(layer) if lambda_init is None else float(lambda_init)
        self.head_norm_enabled = head_norm
        super().__init__(in_channels, out_channels, heads=heads, **kwargs)
        bias = self.lin_value.bias is not None
        self.lin_query = Linear(in_channels, 2 * heads * out_channels, bias=bias)
        self.lin_key = Linear(in_channels, 2 * heads * out_channels, bias=bias)
        self.lambda_q1 = nn.Parameter(torch.empty(out_channels))
        self.lambda_k1 = nn.Parameter(torch.empty(out_channels))
        self.lambda_q2 = nn.Parameter(torch.empty(out_channels))
        self.lambda_k2 = nn.Parameter(torch.empty(out_channels))
        self.head_norm = (nn.RMSNorm(out_channels, eps=1e-5) if head_norm else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "lambda_q1"):
            for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
                nn.init.normal_(p, mean=0.0, std=0.1)
            if self.head_norm is not None:
                self.head_norm.reset_parameters()

    def lambda_(self) -> Tensor:
        r"""The current :math:`\lambda`."""
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum())
                - torch.exp((self.lambda_q2 * self.lambda_k2).sum()) + self.lambda_init)

    def project(self, x, edge_index: GraphLike,
                position: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""Both maps' queries ``[N_dst, H, d]`` and keys, and the values ``[N_src, H,
        d]`` of ``x`` or of a bipartite pair ``(x_src, x_dst)``."""
        H, C = self.heads, self.out_channels
        x_src, x_dst = x if isinstance(x, (tuple, list)) else (x, x)
        q = self.lin_query(x_dst).view(-1, 2, H, C)
        k = self.lin_key(x_src).view(-1, 2, H, C)
        v = self.lin_value(x_src).view(-1, H, C)
        q1, q2, k1, k2 = q[:, 0], q[:, 1], k[:, 0], k[:, 1]
        if self.rotary:
            q1, k1 = self.rotate(q1, k1, edge_index, position, x_src is not x_dst)
            q2, k2 = self.rotate(q2, k2, edge_index, position)
        return q1, q2, k1, k2, v

    def forward(self, x, edge_index, edge_attr: Optional[Tensor] = None,
                kernel: Optional[str] = None,
                return_attention_weights: Optional[bool] = None,
                position: Optional[Tensor] = None, batch: Optional[Tensor] = None,
                attn_bias: Optional[Tensor] = None, size: Optional[Tuple[int, int]] = None):
        r"""Runs the layer; the arguments are those of :meth:`AttentionConv.forward`."""
        inputs, ekv, bias, source = self.read_inputs(x, edge_index, edge_attr, attn_bias,
                                                     size, batch)
        if source is None:
            return self.without_messages(inputs)
        q1, q2, k1, k2, v = self.project(source, inputs.graph, position)
        lam = self.lambda_()
        if self.needs_propagate():
            # PyG's generic propagate: the compiled template a subclass inherits from
            # AttentionConv would not know the arguments of this message.
            out = MessagePassing.propagate(self, inputs.edge_index, q1=q1, q2=q2, k1=k1, k2=k2,
                                           value=v, lam=lam, edge_attr=ekv, attn_bias=bias,
                                           size=inputs.size)
        else:
            kernel = kernel or self.kernel
            run = lambda q, k: kernels.attention(  # noqa: E731
                q, k, v, inputs.graph, kernel, edge_index=inputs.edge_list, edge_kv=ekv,
                bias=bias, bipartite=inputs.bipartite, dropout=self.dropout,
                training=self.training)
            out = run(q1, k1) - lam * run(q2, k2)
        if self.head_norm is not None:
            out = self.head_norm(out)
        out = self.combine(out * (1.0 - self.lambda_init), inputs.x_dst)
        if return_attention_weights is not None:
            ei = inputs.edge_index
            a1 = self.attention_weights(q1, k1, ei, ekv, bias)
            a2 = self.attention_weights(q2, k2, ei, ekv, bias)
            return out, (ei, a1 - lam * a2)
        return out

    def message(self, q1_i: Tensor, q2_i: Tensor, k1_j: Tensor, k2_j: Tensor,
                value_j: Tensor, lam: Tensor, edge_attr: Optional[Tensor],
                attn_bias: Optional[Tensor], index: Tensor, ptr: Optional[Tensor],
                size_i: Optional[int]) -> Tensor:
        # PyG's message-passing form of the two maps (explainers, hooks).
        if edge_attr is not None:
            k1_j, k2_j, value_j = k1_j + edge_attr, k2_j + edge_attr, value_j + edge_attr
        a1 = self.message_weights(q1_i, k1_j, attn_bias, index, ptr, size_i)
        a2 = self.message_weights(q2_i, k2_j, attn_bias, index, ptr, size_i)
        return value_j * (a1 - lam * a2).unsqueeze(-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads}, lambda_init={self.lambda_init:.3g})")
