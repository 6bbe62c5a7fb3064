r"""Attention sinks: how much attention heads put on the first position."""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from graphformer.diagnostics._common import check_node_int
from graphformer.graph import CausalGraph

__all__ = ['attention_to_position', 'attention_sink_score']

Attention = Union[Tensor, Tuple[Tensor, Tensor]]


def attention_to_position(
    attn: Attention,
    *,
    position: int = 0,
    graph: Optional[CausalGraph] = None,
    node_position: Optional[Tensor] = None,
    query_mask: Optional[Tensor] = None,
) -> Tensor:
    r"""Mean attention that each head pays to position :obj:`position`
    (default: the first token) of its sequence,

    .. math::
        \alpha_h = \frac{1}{|Q|} \sum_{i \in Q} A^{h}_{i, p} ,

    averaged over all queries :math:`i` (every row of every sequence,
    including :math:`i = p` itself, as in Gu et al., 2024).

    Args:
        attn (torch.Tensor or (torch.Tensor, torch.Tensor)): Either dense
            attention probabilities :obj:`[B, H, T, T]` (or :obj:`[H, T, T]`;
            :obj:`attn[b, h, i, j]` = weight of key :math:`j` for query
            :math:`i`), or the edge-wise :obj:`(edge_index, alpha)` with
            :obj:`alpha: [E, H]` as returned by
            :obj:`AttentionConv(..., return_attention_weights=True)`.
        position (int, optional): The key position :math:`p`. (default:
            :obj:`0`)
        graph (CausalGraph, optional): For the edge-wise form: gives every
            node's position in its sequence. (default: :obj:`None`)
        node_position (torch.Tensor, optional): For the edge-wise form
            without a graph: the position of every node :obj:`[N]`.
        query_mask (torch.Tensor, optional): Which queries count: dense form
            :obj:`[B, T]` (e.g. padding off), edge-wise form :obj:`[N]`.
            (default: all)

    Returns:
        :obj:`[H]` mean attention per head.

    Example:
        >>> import torch
        >>> from graphformer.diagnostics import attention_to_position
        >>> sink = torch.zeros(4, 4)
        >>> sink[:, 0] = 1  # every query attends to the first token only
        >>> attn = torch.stack([sink, torch.eye(4)])  # [H=2, T=4, T=4]; head 1: to itself
        >>> attention_to_position(attn)
        tensor([1.0000, 0.2500])
    """
    if isinstance(attn, (tuple, list)):
        if len(attn) != 2:
            raise TypeError("edge-wise attention must be (edge_index, alpha)")
        edge_index, alpha = attn
        if graph is not None:
            node_position = graph.position
        if node_position is None:
            raise ValueError("edge-wise attention needs graph= (a CausalGraph)"
                             " or node_position= to know token positions")
        if alpha.dim() == 1:
            alpha = alpha.view(-1, 1)
        if edge_index.dim() != 2 or edge_index.size(0) != 2 \
                or alpha.size(0) != edge_index.size(1):
            raise ValueError(
                f"alpha has {alpha.size(0)} rows but edge_index has "
                f"{edge_index.size(1) if edge_index.dim() == 2 else '?'} edges")
        N = node_position.numel()
        if edge_index.numel() and int(edge_index.max()) >= N:
            raise ValueError(f"edge_index has node {int(edge_index.max())} but "
                             f"the graph has {N} nodes")
        longest = int(node_position.max()) + 1 if N else 0
        if not 0 <= check_node_int(position, "position") < longest:
            raise ValueError(f"position {position} is outside sequences of length "
                             f"{longest} (edge-wise attention: 0 <= position < "
                             f"{longest})")
        src, dst = edge_index
        node_position = node_position.to(edge_index.device)
        hit = (node_position[src] == position).to(alpha.dtype)
        per_query = alpha.new_zeros(N, alpha.size(1))
        per_query.index_add_(0, dst, alpha * hit.view(-1, 1))
        if query_mask is None:
            query_mask = torch.zeros(N, dtype=torch.bool, device=alpha.device)
            query_mask[dst] = True  # nodes that attend at all
        if query_mask.shape != (N, ):
            raise ValueError(f"query_mask must have shape [{N}], got "
                             f"{list(query_mask.shape)}")
        return per_query[query_mask].mean(0)

    if not isinstance(attn, Tensor):
        raise TypeError(f"attn must be a tensor [B, H, T, T] or "
                        f"(edge_index, alpha), got {type(attn).__name__}")
    if attn.dim() == 3:
        attn = attn.unsqueeze(0)
    if attn.dim() != 4 or attn.size(-1) != attn.size(-2):
        raise ValueError(f"dense attention must be [B, H, T, T], got "
                         f"{list(attn.shape)}")
    B, H, T, _ = attn.shape
    if not -T <= check_node_int(position, "position") < T:
        raise ValueError(f"position {position} is outside sequences of "
                         f"length {T}")
    col = attn[..., position]  # [B, H, T]
    if query_mask is None:
        return col.mean(dim=(0, 2))
    if query_mask.shape != (B, T):
        raise ValueError(f"query_mask must have shape [{B}, {T}], got "
                         f"{list(query_mask.shape)}")
    m = query_mask.to(col.dtype).unsqueeze(1)  # [B, 1, T]
    return (col * m).sum(dim=(0, 2)) / m.sum().clamp(min=1.0)


def attention_sink_score(
    attn: Union[Attention, Sequence[Attention]],
    threshold: float = 0.3,
    **kwargs,
) -> float:
    r"""Share of attention heads that are sinks: heads whose mean attention
    to the first position exceeds :obj:`threshold` (Gu et al., 2024,
    "When Attention Sink Emerges in Language Models"),

    .. math::
        \text{score} = \frac{1}{|\mathcal{H}|} \sum_{h \in \mathcal{H}}
        \mathbf{1}\bigl[\alpha_h > \varepsilon\bigr], \qquad
        \varepsilon = 0.3 ,

    with :math:`\alpha_h` from :func:`attention_to_position`, over the heads
    of one layer or, given a list, of all layers together.

    Args:
        attn: One layer's attention (dense :obj:`[B, H, T, T]` or edge-wise
            :obj:`(edge_index, alpha)`), or a list of them (one per layer).
        threshold (float, optional): :math:`\varepsilon`. (default:
            :obj:`0.3`)
        **kwargs: Passed to :func:`attention_to_position` (:obj:`position`,
            :obj:`graph`, :obj:`node_position`, :obj:`query_mask`).

    Returns:
        The score in :math:`[0, 1]`.

    Example:
        >>> import torch
        >>> from graphformer.diagnostics import attention_sink_score
        >>> sink = torch.zeros(4, 4)
        >>> sink[:, 0] = 1
        >>> attention_sink_score(torch.stack([sink, torch.eye(4)]))  # 1 of 2 heads is a sink
        0.5
    """
    if isinstance(attn, list) or (isinstance(attn, tuple) and not (
            len(attn) == 2 and isinstance(attn[0], Tensor)
            and attn[0].dtype == torch.long and attn[0].dim() == 2
            and attn[0].size(0) == 2)):
        layers = list(attn)
    else:
        layers = [attn]
    if not layers:
        raise ValueError("attn is empty")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a share of attention in [0, 1], got "
                         f"{threshold!r}")
    per_head = torch.cat([attention_to_position(a, **kwargs) for a in layers])
    return float((per_head > threshold).float().mean())
