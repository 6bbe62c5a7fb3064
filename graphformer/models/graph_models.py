r"""Node- and graph-level models on any graph, and the hybrid GNN/transformer.

:class:`GraphModel` is encoder → :class:`~graphformer.nn.Stack` of any conv (with a method
and a scheme) → read-out (the nodes given by an index or mask, or pooling per graph) →
linear head. The hybrid GNN/transformer (GraphGPS) is in :mod:`graphformer.models.gps`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from graphformer.checks import check_int
from graphformer.nn.conv import build_conv
from graphformer.nn.dynamics import Oracle, Replace, Stack
from graphformer.nn.encoders import FeatureEmbedding

READOUTS = ("node", "mean", "sum", "max")
#: How :meth:`GraphModel.build` wraps each conv into a layer.
BLOCKS = {
    "post_norm": "x <- LN(x + ReLU(conv(x)))",
    "post_norm_linear": "x <- LN(x + conv(x))",
    "plain": "x <- conv(x)",
    "pre_norm": "x <- x + conv(LN(x))",
}
POOLS = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}


def _check_sizes(**sizes: int) -> None:
    r"""Refuses a size that is not a positive int with a :class:`ValueError`, whatever is
    wrong with it (as the layers' ``check_sizes`` does)."""
    for name, value in sizes.items():
        check_int(name, value, 1, error=ValueError)


def _check_features(x: Tensor, encoder: nn.Module) -> None:
    r"""Clear errors for float features that do not fit a linear encoder (integer
    features are checked by :class:`FeatureEmbedding`)."""
    if not isinstance(encoder, nn.Linear):
        return
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be float node features [N, {encoder.in_features}], got {got}")
    if x.dim() != 2 or x.size(1) != encoder.in_features:
        raise ValueError(f"x must have shape [N, {encoder.in_features}], got {list(x.shape)}")


class GraphModel(nn.Module):
    r"""Encoder, a stack of any conv, a read-out and a linear head.

    .. math::
        \mathbf{y} = \mathbf{W}\, \mathrm{readout}\big(\mathrm{Stack}(\mathrm{enc}(
        \mathbf{X}), \mathcal{G})\big)

    Args:
        encoder (nn.Module): node features to ``hidden`` channels.
        stack (Stack): the layers.
        head (nn.Module): ``hidden`` to outputs.
        readout (str): ``"node"`` (the nodes given by ``index`` in :meth:`forward`),
            ``"mean"``, ``"sum"`` or ``"max"`` pooling per graph.

    Example:
        >>> import torch
        >>> from graphformer.models import GraphModel
        >>> model = GraphModel.build("gcn", 8, 32, 3, num_layers=2, method="nesterov")
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> model(torch.randn(3, 8), edge_index).shape   # one prediction per node
        torch.Size([3, 3])
    """

    def __init__(self, encoder: nn.Module, stack: Stack, head: nn.Module,
                 readout: str = "node") -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        self.encoder = encoder
        self.stack = stack
        self.head = head
        self.readout = readout

    @classmethod
    def build(cls, conv: str, in_channels: Union[int, Sequence[int]], hidden_channels: int,
              out_channels: int, num_layers: int, method: str = "gd",
              scheme: str = "lie_trotter", readout: str = "node", block: str = "post_norm",
              method_kwargs: Optional[dict] = None, **conv_kwargs) -> "GraphModel":
        r"""A model from names.

        Args:
            conv (str): a layer name of :func:`~graphformer.nn.build_conv` (``"gcn"``,
                ``"gin"``, ``"gat"``, ``"ggnn"``, ``"attention"``, ``"deepsets"``, ...).
            in_channels (int or list of int): input width (a linear encoder), or the
                vocabulary size of each integer feature column (a
                :class:`FeatureEmbedding`).
            block (str): how each conv becomes a layer (:data:`BLOCKS`):
                ``"post_norm"``: ``x <- LN(x + ReLU(conv(x)))`` (Alon & Yahav's GCN and
                GIN); ``"post_norm_linear"``: ``x <- LN(x + conv(x))`` (their GAT);
                ``"plain"``: ``x <- conv(x)``, no residual stream, so no ``method`` (their
                GGNN); ``"pre_norm"``: ``x <- x + conv(LN(x))`` as in a Transformer.
        """
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; valid: {', '.join(BLOCKS)}")
        if block == "plain":
            if method != "gd":
                raise ValueError(f"block='plain' has no residual stream for an update method "
                                 f"to move, so method must be 'gd' (the default), got "
                                 f"{method!r}")
            method = Replace
        _check_sizes(hidden_channels=hidden_channels, out_channels=out_channels,
                     num_layers=num_layers)
        if isinstance(in_channels, int):
            _check_sizes(in_channels=in_channels)
            encoder = nn.Linear(in_channels, hidden_channels)
        else:
            encoder = FeatureEmbedding(in_channels, hidden_channels)
        layers = []
        for _ in range(num_layers):
            layer = build_conv(conv, hidden_channels, **conv_kwargs)
            if block == "pre_norm":
                layers.append([Oracle(layer, norm=nn.LayerNorm(hidden_channels))])
            else:
                relu = torch.relu if block == "post_norm" else None
                layers.append([Oracle(layer, activation=relu)])
        stack = Stack(layers, method=method, scheme=scheme, channels=hidden_channels,
                      method_kwargs=method_kwargs, post_norm=block.startswith("post_norm"))
        return cls(encoder, stack, nn.Linear(hidden_channels, out_channels), readout)

    def forward(self, x: Tensor, edge_index, batch: Optional[Tensor] = None,
                index: Optional[Tensor] = None, last_edge_index=None,
                return_states: bool = False,
                num_sampled_nodes_per_hop: Optional[List[int]] = None,
                num_sampled_edges_per_hop: Optional[List[int]] = None):
        r"""Runs the model.

        Args:
            x (torch.Tensor): node features.
            edge_index: the graph (tensor or :class:`CausalGraph`).
            batch (torch.Tensor, optional): graph of each node (pooling read-outs).
            index (torch.Tensor, optional): the read-out nodes (index or boolean mask) for
                ``readout="node"``; all nodes when ``None``.
            last_edge_index (optional): the last layer's graph (e.g. fully adjacent).
            return_states (bool): also return the stack's states ``[x_0, ..., x_L]``.
            num_sampled_nodes_per_hop, num_sampled_edges_per_hop (list of int, optional):
                compute only what the seed nodes (the first ``num_sampled_nodes_per_hop[0]``
                rows) need, layer by layer, as in PyG's ``BasicGNN``; see
                :class:`~graphformer.nn.Stack`. ``index`` then counts within the seeds.
        """
        _check_features(x, self.encoder)
        if num_sampled_nodes_per_hop is not None and self.readout != "node":
            raise ValueError(f"trimming keeps the seed nodes only, which a {self.readout!r} "
                             f"read-out over every node cannot use; use readout='node'")
        if index is not None and self.readout == "node":
            N = x.size(0)
            if index.dtype == torch.bool:
                if index.numel() != N:
                    raise ValueError(f"index mask has {index.numel()} entries but there are "
                                     f"{N} nodes")
            elif index.is_floating_point():
                raise TypeError(f"index must hold node indices or be a bool mask, got "
                                f"dtype {index.dtype}")
            elif index.numel() and (int(index.min()) < -N or int(index.max()) >= N):
                bad = int(index.max()) if int(index.max()) >= N else int(index.min())
                raise ValueError(f"index has node {bad} but there are {N} nodes")
        h = self.encoder(x)
        h, states = self.stack(h, edge_index, return_states=True, last_edge_index=last_edge_index,
                               num_sampled_nodes_per_hop=num_sampled_nodes_per_hop,
                               num_sampled_edges_per_hop=num_sampled_edges_per_hop)
        if index is not None and h.size(0) < x.size(0):  # trimmed to the seeds
            if index.dtype == torch.bool:
                beyond = index[h.size(0):].nonzero()
                index = index[:h.size(0)]
            else:
                index = torch.where(index < 0, index + x.size(0), index)
                beyond = index[index >= h.size(0)]
            if beyond.numel():
                raise ValueError(f"index has a node beyond the {h.size(0)} seed nodes that "
                                 f"trimming keeps (put the read-out nodes first)")
        if self.readout == "node":
            if index is not None:
                h = h[index]
        else:
            if batch is None:
                batch = h.new_zeros(h.size(0), dtype=torch.long)
            h = POOLS[self.readout](h, batch)
        out = self.head(h)
        return (out, states) if return_states else out
