from __future__ import annotations

from typing import Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from graphformer.graph import CausalGraph
from graphformer.nn.conv.inputs import check_sizes

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class FeedForward(MessagePassing):
    r"""The node-wise MLP of a Transformer block, the "potential energy" step: it has the
    layer call signature ``(x, edge_index)`` so it stacks like any conv, and ignores the
    edges,

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_2\, \sigma(\mathbf{W}_1 \mathbf{x}_i +
        \mathbf{b}_1) + \mathbf{b}_2.

    Parameter names follow GPT-2 (``c_fc``, ``c_proj``).

    Args:
        channels (int): input and output size.
        hidden_channels (int, optional): hidden size (default: ``4 * channels``).
        dropout (float, optional): dropout on the output. (default: :obj:`0.`)
        bias (bool, optional): learn additive biases. (default: :obj:`True`)
        activation (str, optional): ``"gelu"``, ``"gelu_tanh"`` or ``"relu"``.
            (default: :obj:`"gelu"`)

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import FeedForward
        >>> mlp, x = FeedForward(16), torch.randn(8, 16)
        >>> mlp
        FeedForward(16, 64)
        >>> torch.equal(mlp(x, CausalGraph.from_lengths([3, 5])), mlp(x))  # edges ignored
        True
    """

    accepts_causal_graph = True

    def __init__(self, channels: int, hidden_channels: Optional[int] = None,
                 dropout: float = 0.0, bias: bool = True, activation: str = "gelu") -> None:
        super().__init__(node_dim=0)
        check_sizes("FeedForward", channels=channels, hidden_channels=hidden_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"FeedForward: dropout must be in [0, 1), got {dropout}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{', '.join(ACTIVATIONS)}")
        self.channels = channels
        self.hidden_channels = hidden_channels or 4 * channels
        self.activation = activation
        self.c_fc = Linear(channels, self.hidden_channels, bias=bias)
        self.c_proj = Linear(self.hidden_channels, channels, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.c_fc.reset_parameters()
        self.c_proj.reset_parameters()

    def forward(self, x: Tensor, edge_index: Union[Tensor, CausalGraph, None] = None) -> Tensor:
        if x.dim() < 1 or x.size(-1) != self.channels:
            raise ValueError(f"x has {x.size(-1) if x.dim() else 0} channels but "
                             f"FeedForward expects {self.channels}")
        return self.dropout(self.c_proj(ACTIVATIONS[self.activation](self.c_fc(x))))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, {self.hidden_channels})"
