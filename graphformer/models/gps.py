r"""The hybrid GNN/transformer: GraphGPS (Rampášek et al. 2022) on the library's stack.

Each layer has three oracles: a local message-passing conv on the input graph (GINE
with bond features, or any PyG conv), global attention (:class:`AttentionConv`) on the
complete graph of each input graph, and an MLP. The splitting scheme orders them (GPS's
own arrangement is ``scheme="gps"``: local + global summed, then the MLP) and the update
method moves the state (gradient descent: residuals; or Nesterov, heavy-ball). With
``norm_position="post"``, ``norm="batch"`` and gradient descent a layer is PyG's
:class:`~torch_geometric.nn.conv.GPSConv`.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from graphformer.checks import check_int
from graphformer.graph import CausalGraph
from graphformer.models.graph_models import POOLS, READOUTS
from graphformer.nn.conv import AttentionConv, FeedForward, build_conv
from graphformer.nn.dynamics import Oracle, Stack
from graphformer.nn.encoders import FeatureEmbedding, build_pe_encoder

__all__ = ["HybridModel", "NORMS", "gps_layer", "takes_edge_attr"]

#: Norms by name: GraphGPS uses batch norm on ZINC; layer norm is the Transformer's.
NORMS = {"batch": lambda c: nn.BatchNorm1d(c), "layer": lambda c: nn.LayerNorm(c),
         None: lambda c: nn.Identity()}
#: Local convs that take edge features once built with ``edge_dim``.
EDGE_DIM_CONVS = ("gat", "attention", "diff_attention")


def takes_edge_attr(conv: nn.Module) -> bool:
    r"""``True`` when ``conv``'s forward takes an ``edge_attr`` argument."""
    return "edge_attr" in inspect.signature(conv.forward).parameters


def gps_layer(channels: int, local: nn.Module, heads: int = 4, dropout: float = 0.0,
              attn_dropout: float = 0.0, norm: Optional[str] = "batch",
              norm_position: str = "post", mlp_ratio: int = 2,
              edge_features: bool = False, global_attention: bool = True) -> list:
    r"""The three oracles of one GPS layer: ``[local, global attention, MLP]``, reading
    the graphs ``"local"`` and ``"global"`` (``[local, MLP]`` without
    ``global_attention``: the MPNN-only ablation).

    * local: ``Dropout(local(x, edge_index[, edge_attr]))``;
    * global: ``Dropout(W_o AttentionConv(x, K_G))``, ``AttentionConv`` with
      ``root_weight=False`` on each graph's complete graph, ``attn_dropout`` on its
      weights (the projections of ``nn.MultiheadAttention``, as GPSConv uses it);
    * MLP: ``Linear(C, mlp_ratio C) - ReLU - Linear - Dropout``.

    ``norm_position="post"`` gives each oracle the norm after its residual (GraphGPS,
    GPSConv); ``"pre"`` puts it before the oracle (the pre-norm Transformer).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch_geometric.nn import GINConv
        >>> from graphformer import CausalGraph
        >>> from graphformer.models import gps_layer
        >>> from graphformer.nn import Stack
        >>> layer = gps_layer(16, GINConv(nn.Linear(16, 16)), heads=2)  # local, global, MLP
        >>> stack = Stack([layer], scheme="gps", channels=16)
        >>> graphs = {"local": torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),  # a path of 3
        ...           "global": CausalGraph.from_lengths([3], causal=False)}  # all pairs
        >>> stack(torch.randn(3, 16), graphs).shape
        torch.Size([3, 16])
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")
    if norm_position not in ("pre", "post"):
        raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
    if channels % heads:
        raise ValueError(f"heads={heads} must divide hidden_channels={channels}")
    for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {p}")
    C = channels

    def wrap(conv, out, graph, inputs):
        n = NORMS[norm](C)
        if norm_position == "pre":
            return Oracle(conv, norm=n, out=out, graph=graph, inputs=inputs)
        return Oracle(conv, out=out, graph=graph, post_norm=n, inputs=inputs)

    oracles = [wrap(local, nn.Dropout(dropout), "local",
                    ("edge_attr",) if edge_features else ())]
    if global_attention:
        attn = AttentionConv(C, C // heads, heads=heads, root_weight=False,
                             dropout=attn_dropout)
        oracles.append(wrap(attn, nn.Sequential(nn.Linear(C, C), nn.Dropout(dropout)),
                            "global", ("attn_bias",)))
    oracles.append(wrap(FeedForward(C, mlp_ratio * C, dropout=dropout, activation="relu"),
                        None, "local", ()))
    return oracles


def _encoder(spec: Union[int, Sequence[int]], channels: int, name: str) -> nn.Module:
    if isinstance(spec, int):
        check_int(name, spec, 1, error=ValueError)
        return nn.Linear(spec, channels)
    return FeatureEmbedding(spec, channels, name="x" if name == "in_channels" else "edge_attr")


def _check_float(t: Tensor, enc: nn.Module, what: str, rows: str, hint: str = "") -> None:
    r"""Clear errors for float features that do not fit a linear encoder (integer
    features are checked by :class:`FeatureEmbedding`)."""
    if isinstance(enc, nn.Linear):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = getattr(t, "dtype", type(t).__name__)
            raise TypeError(f"{what} must be float features [{rows}, {enc.in_features}], got "
                            f"{got}{hint}")
        if t.dim() != 2 or t.size(1) != enc.in_features:
            raise ValueError(f"{what} must have shape [{rows}, {enc.in_features}], got "
                             f"{list(t.shape)}{hint}")


class HybridModel(nn.Module):
    r"""A GraphGPS hybrid GNN/transformer (Rampášek et al. 2022) as a
    :class:`~graphformer.nn.Stack`: encoders (atom and bond types as integers or float
    features, plus a PE/SE), ``num_layers`` layers of :func:`gps_layer`, a read-out and
    an MLP head,

    .. math::
        \mathbf{X} \leftarrow \mathrm{method}\Big(\mathbf{X};\;
        \mathrm{MPNN}(\mathbf{X}, \mathbf{E}, \mathcal{G}),\;
        \mathrm{Attn}(\mathbf{X}, K_{|V|}),\;
        \mathrm{MLP}(\mathbf{X})\Big)

    with the oracles ordered by ``scheme`` (``"gps"``: MPNN and attention summed, then the
    MLP) and normed before or after (``norm_position``).

    Args:
        in_channels (int or list of int): node feature width (a linear encoder), or the
            vocabulary size of each integer column (e.g. ``[28]`` atom types).
        hidden_channels (int): width.
        out_channels (int): outputs per node (or per graph with a pooling read-out).
        num_layers (int): depth.
        local (str or callable): the local conv, a name of
            :func:`~graphformer.nn.build_conv` (``"gine"`` takes the bond features) or a
            function ``channels -> conv`` (any PyG conv, with or without ``edge_attr``).
        heads (int): attention heads.
        method, scheme (str): the dynamics (``"gd"``, ``"nesterov"``, ...; ``"gps"``,
            ``"lie_trotter"``, ``"euler"``, ``"strang"``).
        readout (str): ``"node"`` or a pooling (``"mean"``, ``"sum"``, ``"max"``).
        dropout (float): dropout after the local conv, the attention and the MLP.
        attn_dropout (float): dropout on the attention weights.
        norm (str or None): ``"batch"``, ``"layer"`` or ``None``.
        norm_position (str): ``"pre"`` or ``"post"`` (GraphGPS).
        edge_dim (int or list of int, optional): bond feature width, or the vocabulary
            size of each integer bond column (e.g. ``[4]`` bond types); embedded to
            ``hidden_channels`` and handed to the local conv.
        pe (str, optional): ``"rwse"`` or ``"lappe"``: the PE/SE that
            :meth:`forward` takes as ``pe`` (from PyG's ``AddRandomWalkPE`` or
            ``AddLaplacianEigenvectorPE``).
        pe_dim (int, optional): the PE's width (walk length, or ``k`` eigenvectors).
        pe_channels (int): the encoded PE's width; the node encoder gives the other
            ``hidden_channels - pe_channels`` channels (concatenated, as GraphGPS).
        head_layers (int): layers of the MLP head, halving the width each time (GraphGPS
            on ZINC: 3).
        mlp_ratio (int): the MLP's hidden width over ``hidden_channels``.
        global_attention (bool): ``False`` drops the attention (the MPNN-only ablation).
        method_kwargs (dict, optional): for the update method.

    Example:
        >>> import torch
        >>> from graphformer.models import HybridModel
        >>> model = HybridModel([10], 32, 1, num_layers=2, local="gine", edge_dim=[3],
        ...                     scheme="gps", readout="sum")
        >>> x = torch.tensor([0, 1, 2, 3])                      # atom types
        >>> edge_index = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
        >>> edge_attr = torch.tensor([0, 0, 1, 1, 2, 2])        # bond types
        >>> batch = torch.tensor([0, 0, 1, 1])                  # two graphs
        >>> model(x, edge_index, batch, edge_attr=edge_attr).shape
        torch.Size([2, 1])
    """

    def __init__(self, in_channels: Union[int, Sequence[int]], hidden_channels: int,
                 out_channels: int, num_layers: int = 2,
                 local: Union[str, Callable[[int], nn.Module]] = "gin", heads: int = 4,
                 method: str = "gd", scheme: str = "gps", readout: str = "node",
                 dropout: float = 0.0, attn_dropout: float = 0.0,
                 norm: Optional[str] = "layer", norm_position: str = "pre",
                 edge_dim: Union[int, Sequence[int], None] = None, pe: Optional[str] = None,
                 pe_dim: Optional[int] = None, pe_channels: int = 16, head_layers: int = 1,
                 mlp_ratio: int = 2, global_attention: bool = True,
                 method_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        for name, value in dict(hidden_channels=hidden_channels, out_channels=out_channels,
                                num_layers=num_layers, heads=heads, head_layers=head_layers,
                                mlp_ratio=mlp_ratio).items():
            check_int(name, value, 1, error=ValueError)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        C = hidden_channels
        node_channels = C
        self.pe_encoder = None
        if pe is not None:
            if pe_dim is None:
                raise ValueError(f"pe={pe!r} needs pe_dim (the walk length for 'rwse', the "
                                 "number of eigenvectors k for 'lappe')")
            check_int("pe_channels", pe_channels, 1, error=ValueError)
            if pe_channels >= C:
                raise ValueError(f"pe_channels={pe_channels} must be below "
                                 f"hidden_channels={C} (the node encoder gets the rest)")
            self.pe_encoder = build_pe_encoder(pe, pe_dim, pe_channels)
            node_channels = C - pe_channels
        self.encoder = _encoder(in_channels, node_channels, "in_channels")
        self.edge_encoder = None if edge_dim is None else _encoder(edge_dim, C, "edge_dim")
        layers = []
        for _ in range(num_layers):
            if callable(local) and not isinstance(local, str):
                conv = local(C)
            elif edge_dim is not None and local in EDGE_DIM_CONVS:
                conv = build_conv(local, C, edge_dim=C, **({"heads": heads}))
            else:
                conv = build_conv(local, C)
            edge_features = edge_dim is not None
            if edge_features and not takes_edge_attr(conv):
                raise ValueError(f"the local conv {type(conv).__name__} takes no edge "
                                 f"features but edge_dim is set; use local='gine' (or "
                                 f"another conv with edge_attr), or edge_dim=None")
            layers.append(gps_layer(C, conv, heads=heads, dropout=dropout,
                                    attn_dropout=attn_dropout, norm=norm,
                                    norm_position=norm_position, mlp_ratio=mlp_ratio,
                                    edge_features=edge_features,
                                    global_attention=global_attention))
        self.stack = Stack(layers, method=method, scheme=scheme, channels=C,
                           method_kwargs=method_kwargs)
        # a pre-norm stack ends with a norm (its residual stream is never normed)
        self.norm = NORMS[norm](C) if norm_position == "pre" else nn.Identity()
        head = []
        width = C
        for _ in range(head_layers - 1):
            head += [nn.Linear(width, max(1, width // 2)), nn.ReLU()]
            width = max(1, width // 2)
        self.head = nn.Sequential(*head, nn.Linear(width, out_channels))
        self.readout = readout
        self.global_attention = global_attention

    @staticmethod
    def global_graph(batch: Tensor) -> CausalGraph:
        r"""The complete graph of each input graph, on which the attention runs; an
        ``attn_bias`` for :meth:`forward` has one row per edge of its ``edge_index``."""
        return CausalGraph.from_batch(batch, causal=False)

    def encode(self, x: Tensor, edge_attr: Optional[Tensor], pe: Optional[Tensor]):
        r"""The node states and embedded bond features."""
        _check_float(x, self.encoder, "x", "N")
        h = self.encoder(x)
        if self.pe_encoder is not None:
            if pe is None:
                raise ValueError(f"the model was built with a PE encoder "
                                 f"({self.pe_encoder!r}) but got no pe: pass "
                                 f"pe=data.{self.pe_encoder.attr}")
            if isinstance(pe, Tensor) and pe.dim() >= 1 and pe.size(0) != h.size(0):
                raise ValueError(f"pe has {pe.size(0)} rows but x has {h.size(0)}")
            h = torch.cat([h, self.pe_encoder(pe)], dim=-1)
        elif pe is not None:
            raise ValueError("pe was given but the model has no PE encoder: build it with "
                             "pe='rwse' or 'lappe' and pe_dim")
        if self.edge_encoder is None:
            if edge_attr is not None:
                raise ValueError("edge_attr was given but the model has no bond encoder: "
                                 "build it with edge_dim=<bond feature width or vocabulary "
                                 "sizes> and a local conv that takes edge features")
            return h, None
        if edge_attr is None:
            raise ValueError("the model was built with edge_dim (bond features) but got no "
                             "edge_attr")
        _check_float(edge_attr, self.edge_encoder, "edge_attr", "E", " (the model's edge_dim)")
        return h, self.edge_encoder(edge_attr)

    def forward(self, x: Tensor, edge_index, batch: Optional[Tensor] = None,
                edge_attr: Optional[Tensor] = None, pe: Optional[Tensor] = None,
                attn_bias: Optional[Tensor] = None, return_states: bool = False):
        r"""Runs the model.

        Args:
            x (torch.Tensor): node features ``[N, F]`` (float, or integer types).
            edge_index (torch.Tensor): the graph ``[2, E]``.
            batch (torch.Tensor, optional): graph of each node (one graph if ``None``).
            edge_attr (torch.Tensor, optional): bond features ``[E, edge_dim]`` (float,
                or integer types ``[E]`` / ``[E, F]``), when the model has ``edge_dim``.
            pe (torch.Tensor, optional): the PE/SE ``[N, pe_dim]`` when the model has one.
            attn_bias (torch.Tensor, optional): additive attention score bias
                ``[E_global, heads]``, one row per edge of
                ``HybridModel.global_graph(batch).edge_index``.
            return_states (bool): also return the stack's states.
        """
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        h, e = self.encode(x, edge_attr, pe)
        graphs = {"local": edge_index}
        if self.global_attention:
            graphs["global"] = self.global_graph(batch)
        elif attn_bias is not None:
            raise ValueError("attn_bias was given but the model has no global attention")
        h, states = self.stack(h, graphs,
                               return_states=True, edge_attr=e, attn_bias=attn_bias,
                               batch=batch)
        h = self.norm(h)
        if self.readout != "node":
            h = POOLS[self.readout](h, batch)
        out = self.head(h)
        return (out, states) if return_states else out
