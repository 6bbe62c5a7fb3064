from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import softmax

from graphformer.checks import check_int
from graphformer.graph import CausalGraph
from graphformer.nn import kernels
from graphformer.nn.conv.inputs import (GraphLike, LayerInputs, check_sizes, edge_attr_rows,
                                        is_sparse_adjacency, prepare_inputs)


def rotary_embedding(x: Tensor, position: Tensor, base: float = 10000.0) -> Tensor:
    r"""Rotary position embedding (RoPE, Su et al. 2021) of ``x`` ``[N, H, d]`` at
    integer ``position`` ``[N]``: each pair of channels :math:`(2m, 2m+1)` is rotated by
    the angle :math:`p \cdot \text{base}^{-2m/d}`, so that
    :math:`\mathbf{q}_i^\top\mathbf{k}_j` depends only on :math:`p_i - p_j`.

    Example:
        >>> import torch
        >>> from graphformer.nn.conv import rotary_embedding
        >>> q, k = torch.randn(2, 1, 1, 8).unbind(0)           # one node, one head, d = 8
        >>> def score(i, j):                                    # q at position i, k at j
        ...     qi = rotary_embedding(q, torch.tensor([i]))
        ...     return float((qi * rotary_embedding(k, torch.tensor([j]))).sum())
        >>> abs(score(3, 1) - score(7, 5)) < 1e-5               # only i - j matters
        True
    """
    d = x.size(-1)
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angle = position.to(torch.float32).unsqueeze(-1) * inv_freq  # [N, d/2]
    cos = angle.cos().unsqueeze(1).to(x.dtype)
    sin = angle.sin().unsqueeze(1).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def uses_pyg_machinery(conv: MessagePassing) -> bool:
    r"""``True`` when PyG needs ``conv`` to run through ``propagate``: explain masks set
    (``conv.explain``) or a propagate/message/aggregate hook registered. (PyG's
    ``decomposed_layers`` splits features along the channels, which would cut the
    attention scores apart; the kernels ignore it, it only saves inference memory.)"""
    hooks = ("_propagate_forward_pre_hooks", "_propagate_forward_hooks",
             "_message_forward_pre_hooks", "_message_forward_hooks",
             "_aggregate_forward_pre_hooks", "_aggregate_forward_hooks",
             "_message_and_aggregate_forward_pre_hooks",
             "_message_and_aggregate_forward_hooks")
    if any(len(getattr(conv, name, ())) for name in hooks):
        return True
    return bool(conv.explain)


class AttentionConv(MessagePassing):
    r"""Multi-head scaled dot-product attention as message passing: the query comes from
    the target node, key and value from the source (plus the projected edge features,
    when there are some),

    .. math::
        \mathbf{x}^{\prime}_i = \mathbf{W}_s \mathbf{x}_i +
        \big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i)} \alpha^{h}_{ij}
        \left(\mathbf{W}^{h}_v \mathbf{x}_j + \mathbf{W}^{h}_e \mathbf{e}_{ij}\right),

    .. math::
        \alpha^{h}_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}\left(
        \frac{(\mathbf{W}^{h}_q \mathbf{x}_i)^{\top} (\mathbf{W}^{h}_k \mathbf{x}_j +
        \mathbf{W}^{h}_e \mathbf{e}_{ij})}{\sqrt{d}} + b^{h}_{ij}\right),

    with edge features :math:`\mathbf{e}_{ij}` (``edge_attr``, when ``edge_dim`` is set)
    and an optional additive score bias :math:`b^h_{ij}` (``attn_bias``: structural or
    relative-position encodings).

    On a :class:`~graphformer.graph.CausalGraph` this is the self-attention of a
    Transformer; on any other graph it is PyG's
    :class:`~torch_geometric.nn.conv.TransformerConv`, a drop-in for it: the same
    positional arguments (graphformer's own, ``kernel`` and ``rotary``, are keyword-only),
    the same parameter names (a TransformerConv state dict loads strictly, also with
    ``root_weight=False``, where TransformerConv keeps an unused ``lin_skip`` that is
    dropped on loading), the same output with the same weights (``beta``, ``aggr``, edge
    features, bipartite pairs, sparse adjacencies, attention weights included). The kernel is picked per call
    (see :mod:`graphformer.nn.kernels`): fused SDPA for dense causal graphs, masked SDPA
    or FlexAttention for structured ones, edge-wise otherwise and whenever there are
    edge features. Every kernel gives the same answer (NaN and infinity included: a key
    a query may not see contributes nothing to it); a node with no incoming edge gets a
    zero message (so does every target when a bipartite pair has ``x_src=None``, as
    ``to_hetero`` passes for a node type that is only ever a source). When PyG needs its
    own path (explain masks set, hooks registered) or ``aggr`` is not a sum, the layer
    runs through ``propagate`` and :meth:`message`, which honour ``aggr`` as
    TransformerConv does.

    TorchScript is not supported (``torch.jit.script`` raises an error saying so): the
    forward dispatches in Python on the graph's type and runs a custom autograd kernel,
    and PyTorch deprecates TorchScript; ``torch.compile`` runs the layer.

    Args:
        in_channels (int or tuple): size of each input sample, or ``(source, target)``
            sizes for bipartite input; ``-1`` infers it on the first call.
        out_channels (int): size of each head's output.
        heads (int, optional): number of attention heads. (default: :obj:`1`)
        concat (bool, optional): concatenate the heads (else average them).
            (default: :obj:`True`)
        beta (bool, optional): gate the skip term as TransformerConv does,
            :math:`\mathbf{x}'_i = \beta_i \mathbf{W}_s\mathbf{x}_i + (1 - \beta_i)
            \mathbf{m}_i` with :math:`\beta_i = \sigma(\mathbf{w}_\beta^\top [\mathbf{m}_i,
            \mathbf{W}_s\mathbf{x}_i, \mathbf{m}_i - \mathbf{W}_s\mathbf{x}_i])` (``lin_beta``;
            only with ``root_weight``). (default: :obj:`False`)
        dropout (float, optional): dropout on the attention weights. (default: :obj:`0.`)
        edge_dim (int, optional): number of edge features; ``lin_edge`` (no bias) projects
            them into each head's key and value; ``edge_attr`` is then required.
            (default: :obj:`None`)
        bias (bool, optional): learn additive biases. (default: :obj:`True`)
        root_weight (bool, optional): add the skip term :math:`\mathbf{W}_s\mathbf{x}_i`.
            (default: :obj:`True`)
        kernel (str, optional): ``"auto"``, ``"edge"``, ``"sdpa"`` or ``"flex"``.
            (default: :obj:`"auto"`)
        rotary (bool, optional): apply a rotary position embedding to queries and keys,
            with positions from the :class:`CausalGraph` (or the ``position`` argument).
            (default: :obj:`False`)
        **kwargs (optional): additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import AttentionConv
        >>> conv = AttentionConv(16, 8, heads=2)           # TransformerConv's arguments
        >>> graph = CausalGraph.from_lengths([4, 3])       # two causal sequences
        >>> x = torch.randn(graph.num_nodes, 16)
        >>> conv(x, graph).shape                           # fused SDPA kernel
        torch.Size([7, 16])
        >>> torch.allclose(conv(x, graph), conv(x, graph.edge_index), atol=1e-5)  # any edge list
        True
    """

    accepts_causal_graph = True

    def __init__(self, in_channels: Union[int, Tuple[int, int]], out_channels: int,
                 heads: int = 1, concat: bool = True, beta: bool = False,
                 dropout: float = 0.0, edge_dim: Optional[int] = None, bias: bool = True,
                 root_weight: bool = True, *, kernel: str = "auto", rotary: bool = False,
                 **kwargs) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        # Only a sum of the weighted messages is what the fused kernels compute; any other
        # aggregation runs through PyG's `propagate` (see `needs_propagate`).
        self.fused_aggr = isinstance(self.aggr, str) and self.aggr in ("add", "sum")
        if not self.fused_aggr and kernel in ("sdpa", "flex"):
            raise ValueError(f"kernel={kernel!r} computes a sum of the weighted messages; "
                             f"aggr={self.aggr!r} needs kernel='edge' or 'auto' (PyG's "
                             "propagate path)")
        check_sizes(type(self).__name__, in_channels=in_channels, out_channels=out_channels,
                    heads=heads)
        if kernel not in kernels.KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of "
                             f"{', '.join(kernels.KERNELS)}")
        if rotary and out_channels % 2:
            raise ValueError(f"rotary embedding needs an even head size, got {out_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if edge_dim is not None:
            edge_dim = check_int("edge_dim", edge_dim, 1, error=ValueError,
                                 hint="; None means no edge features")
        src_channels, dst_channels = (in_channels if isinstance(in_channels, (tuple, list))
                                      else (in_channels, in_channels))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.dropout = dropout
        self.edge_dim = edge_dim
        self.root_weight = root_weight
        self.beta = bool(beta) and root_weight
        self.kernel = kernel
        self.rotary = rotary
        self.lin_key = Linear(src_channels, heads * out_channels, bias=bias)
        self.lin_query = Linear(dst_channels, heads * out_channels, bias=bias)
        self.lin_value = Linear(src_channels, heads * out_channels, bias=bias)
        self.lin_edge = (Linear(edge_dim, heads * out_channels, bias=False)
                         if edge_dim is not None else None)
        skip_channels = heads * out_channels if concat else out_channels
        self.lin_skip = (Linear(dst_channels, skip_channels, bias=bias)
                         if root_weight else None)
        # TransformerConv's gated skip: out = b * skip + (1 - b) * out
        self.lin_beta = (Linear(3 * skip_channels, 1, bias=False) if self.beta else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_key.reset_parameters()
        self.lin_query.reset_parameters()
        self.lin_value.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.lin_skip is not None:
            self.lin_skip.reset_parameters()
        if self.lin_beta is not None:
            self.lin_beta.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs) -> None:
        # TransformerConv keeps `lin_skip` even with root_weight=False, where it is never
        # used; this layer has none then, so such a state dict loads strictly and the
        # unused weights are dropped.
        if self.lin_skip is None:
            for key in [k for k in state_dict if k.startswith(prefix + "lin_skip.")]:
                state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"{type(self).__name__} does not support TorchScript: its forward dispatches in "
            "Python on the graph's type (a [2, E] tensor, a CausalGraph, a sparse "
            "adjacency) and runs a custom autograd kernel, which torch.jit.script cannot "
            "compile, and TorchScript is deprecated in PyTorch. Use torch.compile (or "
            "torch.export) instead")

    def needs_propagate(self) -> bool:
        r"""``True`` when the layer runs through PyG's ``propagate`` and :meth:`message`
        instead of the kernels: PyG's machinery is in use (:func:`uses_pyg_machinery`),
        or ``aggr`` is not a sum (the kernels only sum the weighted messages)."""
        return not self.fused_aggr or uses_pyg_machinery(self)

    # ------------------------------------------------------------------ inputs
    def weight_dtype(self) -> torch.dtype:
        r"""The floating type of the layer's weights (what ``x`` must have outside
        autocast)."""
        return self.lin_value.weight.dtype

    def prepare(self, x, edge_index, size=None, batch=None) -> LayerInputs:
        r"""The inputs checked and in one form (see
        :func:`~graphformer.nn.conv.inputs.prepare_inputs`)."""
        return prepare_inputs(x, edge_index, self.in_channels, size=size, batch=batch,
                              weight_dtype=self.weight_dtype())

    def edge_term(self, edge_attr: Optional[Tensor], inputs: LayerInputs) -> Optional[Tensor]:
        r"""The projected edge features ``[E, H, d]`` (``None`` without edge features).
        As in PyG, the values of a sparse adjacency are the edge features when the layer
        has ``edge_dim`` and no ``edge_attr`` is given."""
        if edge_attr is None and self.lin_edge is not None and inputs.values is not None \
                and inputs.values.is_floating_point():
            edge_attr = inputs.values
        if edge_attr is None:
            if self.lin_edge is not None:
                raise ValueError(
                    f"{type(self).__name__} was built with edge_dim={self.edge_dim} but got "
                    "no edge_attr: pass edge_attr [num_edges, edge_dim] (or build the layer "
                    "with edge_dim=None to use no edge features)")
            return None
        edge_attr = edge_attr_rows(edge_attr, inputs.num_edges, self.edge_dim,
                                   self.__class__.__name__)
        return self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)

    def score_bias(self, attn_bias: Optional[Tensor], num_edges: int) -> Optional[Tensor]:
        r"""``attn_bias`` checked, as ``[E, H]`` (a ``[E]`` bias is shared by the
        heads)."""
        if attn_bias is None:
            return None
        if not isinstance(attn_bias, Tensor) or not attn_bias.is_floating_point():
            raise TypeError("attn_bias must be a floating-point tensor [num_edges, heads], "
                            f"got {getattr(attn_bias, 'dtype', type(attn_bias).__name__)}")
        H = self.heads
        if attn_bias.dim() == 1:
            attn_bias = attn_bias.unsqueeze(-1)
        if (attn_bias.dim() != 2 or attn_bias.size(0) != num_edges
                or attn_bias.size(1) not in (1, H)):
            raise ValueError(
                f"attn_bias must have shape [num_edges, heads] = [{num_edges}, {H}] (or "
                f"[{num_edges}] for all heads), one row per edge in the order of "
                f"edge_index, got {list(attn_bias.shape)}")
        return attn_bias.expand(num_edges, H)

    def project(self, x: Union[Tensor, Tuple[Tensor, Tensor]], edge_index: GraphLike,
                position: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Queries ``[N_dst, H, d]``, keys and values ``[N_src, H, d]`` (rotary applied
        when enabled) of ``x`` or of a bipartite pair ``(x_src, x_dst)``."""
        H, C = self.heads, self.out_channels
        lins = (self.lin_query, self.lin_key, self.lin_value)
        if isinstance(x, (tuple, list)):
            x_src, x_dst = x
        else:
            x_src = x_dst = x
        if x_src is x_dst and all(
                isinstance(lin.weight, torch.nn.Parameter)
                and not isinstance(lin.weight, torch.nn.parameter.UninitializedParameter)
                for lin in lins):
            # One GEMM for the three projections (same parameters, same result): x is
            # read once and the larger product runs faster, forward and backward.
            weight = torch.cat([lin.weight for lin in lins])
            bias = None if lins[0].bias is None else torch.cat([lin.bias for lin in lins])
            q, k, v = F.linear(x_src, weight, bias).view(-1, 3, H, C).unbind(1)
        else:
            q = self.lin_query(x_dst).view(-1, H, C)
            k, v = (lin(x_src).view(-1, H, C) for lin in lins[1:])
        if self.rotary:
            q, k = self.rotate(q, k, edge_index, position, x_src is not x_dst)
        return q, k, v

    def rotate(self, q: Tensor, k: Tensor, edge_index: GraphLike,
               position: Optional[Tensor], bipartite: bool = False) -> Tuple[Tensor, ...]:
        r"""``q`` and ``k`` with the rotary embedding at the nodes' positions."""
        if bipartite:
            raise ValueError("rotary=True needs one set of nodes with positions; it does "
                             "not apply to a bipartite (x_src, x_dst) pair")
        if position is None:
            if not isinstance(edge_index, CausalGraph):
                raise ValueError("rotary=True needs positions: pass a CausalGraph or "
                                 "`position=`")
            position = edge_index.position
        elif (not isinstance(position, Tensor) or position.dim() != 1
              or position.size(0) != q.size(0) or position.is_floating_point()
              or position.dtype == torch.bool):
            got = (f"{position.dtype} of shape {list(position.shape)}"
                   if isinstance(position, Tensor) else type(position).__name__)
            raise ValueError(f"position must be an integer tensor [num_nodes={q.size(0)}] "
                             f"(one position per node), got {got}")
        return rotary_embedding(q, position), rotary_embedding(k, position)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Union[Tensor, Tuple[Tensor, Tensor]], edge_index: object,
                edge_attr: Optional[Tensor] = None, kernel: Optional[str] = None,
                return_attention_weights: Optional[bool] = None,
                position: Optional[Tensor] = None, batch: Optional[Tensor] = None,
                attn_bias: Optional[Tensor] = None,
                size: Optional[Tuple[int, int]] = None):
        r"""Runs the layer.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): node features
                ``[N, in_channels]``, or a bipartite pair ``(x_src, x_dst)``.
            edge_index (torch.Tensor, CausalGraph or sparse adjacency): the graph: a
                ``[2, E]`` edge list, a :class:`CausalGraph`, or a transposed adjacency
                ``adj_t`` ``[N_dst, N_src]`` (``torch.sparse`` or
                ``torch_sparse.SparseTensor``; the latter is untested in CI, where
                torch-sparse is not installed: it has no wheel for torch 2.13 and its
                source build takes over half an hour).
            edge_attr (torch.Tensor, optional): edge features ``[E, edge_dim]``, one row
                per edge of ``edge_index`` (for a :class:`CausalGraph`, of
                ``graph.edge_index``; for a sparse adjacency, in its coalesced order).
            kernel (str, optional): overrides the layer's kernel for this call.
            return_attention_weights (bool, optional): if set, also return
                ``(edge_index, alpha)`` with ``alpha`` ``[E, heads]``.
            position (torch.Tensor, optional): positions for the rotary embedding when
                ``edge_index`` is a plain tensor.
            batch (torch.Tensor, optional): with a plain ``edge_index``, the sequence
                (graph) of each node, so that the fused kernels can run on it.
            attn_bias (torch.Tensor, optional): additive score bias ``[E, heads]`` (or
                ``[E]`` for all heads), in the same edge order as ``edge_attr``.
            size ((int, int), optional): ``(N_src, N_dst)`` of a bipartite graph.
        """
        inputs, ekv, bias, source = self.read_inputs(x, edge_index, edge_attr, attn_bias,
                                                     size, batch)
        if source is None:
            return self.without_messages(inputs)
        q, k, v = self.project(source, inputs.graph, position)
        if self.needs_propagate():
            if kernel in ("sdpa", "flex"):
                raise ValueError(f"kernel={kernel!r} cannot run here: aggr={self.aggr!r} or "
                                 "PyG's machinery (hooks, explain) needs PyG's propagate path")
            out = self.propagate(inputs.edge_index, query=q, key=k, value=v, edge_attr=ekv,
                                 attn_bias=bias, size=inputs.size)
        else:
            out = kernels.attention(q, k, v, inputs.graph, kernel or self.kernel,
                                    edge_index=inputs.edge_list, edge_kv=ekv, bias=bias,
                                    bipartite=inputs.bipartite, dropout=self.dropout,
                                    training=self.training)
        out = self.combine(out, inputs.x_dst)
        if return_attention_weights is not None:
            alpha = self.attention_weights(q, k, inputs.edge_index, ekv, bias)
            if isinstance(edge_index, SparseTensor):  # as PyG: the weights as its values
                return out, edge_index.set_value(alpha, layout="coo")
            if is_sparse_adjacency(edge_index):  # as PyG: the adjacency as given
                return out, (edge_index, alpha)
            return out, (inputs.edge_index, alpha)
        return out

    def read_inputs(self, x, edge_index, edge_attr: Optional[Tensor],
                    attn_bias: Optional[Tensor], size: Optional[Tuple[int, int]],
                    batch: Optional[Tensor]):
        r"""The checked inputs, the projected edge term, the score bias and the features
        to project (``x`` or the pair ``(x_src, x_dst)``); ``None`` for the last three
        when the sources have no features (``to_hetero``'s ``(None, x_dst)``)."""
        inputs = self.prepare(x, edge_index, size, batch)
        if inputs.x_src is None:
            return inputs, None, None, None
        ekv = self.edge_term(edge_attr, inputs)
        bias = None if attn_bias is None else self.score_bias(attn_bias, inputs.num_edges)
        source = (inputs.x_src, inputs.x_dst) if inputs.bipartite else inputs.x_src
        return inputs, ekv, bias, source

    def without_messages(self, inputs: LayerInputs) -> Tensor:
        r"""Sources without features send no message: the targets get their skip term."""
        out = inputs.x_dst.new_zeros(inputs.x_dst.size(0), self.heads, self.out_channels)
        return self.combine(out, inputs.x_dst)

    def combine(self, out: Tensor, x: Tensor) -> Tensor:
        r"""Merges the heads ``[N, H, d]`` and adds the skip term of the targets ``x``
        (gated by :math:`\beta` when ``beta=True``)."""
        out = out.reshape(out.size(0), out.size(1) * out.size(2)) if self.concat else out.mean(dim=1)
        if self.lin_skip is not None:
            skip = self.lin_skip(x)
            if self.lin_beta is not None:
                b = self.lin_beta(torch.cat([out, skip, out - skip], dim=-1)).sigmoid()
                return b * skip + (1 - b) * out
            out = out + skip
        return out

    @staticmethod
    def attention_weights(q: Tensor, k: Tensor, edge_index: Tensor,
                          ekv: Optional[Tensor] = None,
                          bias: Optional[Tensor] = None) -> Tensor:
        r"""The attention weight ``[E, H]`` of every edge and head of ``edge_index``."""
        return softmax(kernels.edge_scores(q, k, edge_index, ekv, bias), edge_index[1],
                       num_nodes=q.size(0))

    def message(self, query_i: Tensor, key_j: Tensor, value_j: Tensor,
                edge_attr: Optional[Tensor], attn_bias: Optional[Tensor], index: Tensor,
                ptr: Optional[Tensor], size_i: Optional[int]) -> Tensor:
        # PyG's message-passing form of the same update, used by `propagate` when PyG
        # needs it (explainers, hooks); the kernels are the fast paths. `edge_attr` is
        # the projected edge term [E, H, d].
        if edge_attr is not None:
            key_j = key_j + edge_attr
            value_j = value_j + edge_attr
        alpha = self.message_weights(query_i, key_j, attn_bias, index, ptr, size_i)
        return value_j * alpha.unsqueeze(-1)

    def message_weights(self, query_i: Tensor, key_j: Tensor, attn_bias: Optional[Tensor],
                        index: Tensor, ptr: Optional[Tensor],
                        size_i: Optional[int]) -> Tensor:
        r"""The attention weights ``[E, H]`` of the messages (after dropout)."""
        alpha = (query_i * key_j).sum(-1) / math.sqrt(self.out_channels)
        if attn_bias is not None:
            alpha = alpha + attn_bias
        alpha = softmax(alpha, index, ptr, size_i)
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads})")
