r"""Over-smoothing: the Dirichlet energy of node states."""
from typing import Optional, Sequence

import torch
from torch import Tensor

from graphformer.diagnostics._common import GraphLike, resolve_graph

__all__ = ['dirichlet_energy', 'dirichlet_energy_per_layer']


def dirichlet_energy(
    x: Tensor,
    edge_index: GraphLike,
    batch: Optional[Tensor] = None,
    *,
    sqrt: bool = False,
) -> Tensor:
    r"""Dirichlet energy of node states :math:`X` on a graph,

    .. math::
        E(X) = \frac{1}{|V|} \sum_{i \in V} \sum_{j \in \mathcal{N}(i)}
        \lVert X_i - X_j \rVert_2^2 ,

    summed over the edges :math:`(j, i)` of :obj:`edge_index` as given (an
    undirected graph stored in both directions counts each pair twice;
    self-loops add 0). :math:`E = 0` exactly when connected nodes agree,
    and :math:`E \to 0` with depth is over-smoothing; the usual plot is
    :math:`\sqrt{E}` against the layer.

    Args:
        x (torch.Tensor): Node states :obj:`[N, ...]` (trailing dimensions
            are flattened).
        edge_index (torch.Tensor or CausalGraph): Edges :obj:`[2, E]`.
        batch (torch.Tensor, optional): Graph of every node :obj:`[N]`; then
            one energy per graph, each normalised by its own node count.
            (default: :obj:`None`)
        sqrt (bool, optional): Return :math:`\sqrt{E}`. (default:
            :obj:`False`)

    Returns:
        A scalar tensor, or :obj:`[num_graphs]` when :obj:`batch` is given.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.diagnostics import dirichlet_energy
        >>> x = torch.tensor([[0.0], [0.0], [3.0]])
        >>> dirichlet_energy(x, CausalGraph.from_lengths([3]))  # edges 0->2, 1->2: (9 + 9) / 3
        tensor(6.)
        >>> dirichlet_energy(torch.ones(3, 4), CausalGraph.from_lengths([3]))  # all equal
        tensor(0.)
    """
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise TypeError("x must be a tensor of node states [N, ...]")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got dtype {x.dtype}")
    num_nodes = x.size(0)
    ei, _ = resolve_graph(edge_index, num_nodes)
    x = x.flatten(1) if x.dim() > 1 else x.unsqueeze(1)
    src, dst = ei
    per_edge = (x[dst] - x[src]).pow(2).sum(-1)
    if batch is None:
        energy = per_edge.sum() / max(num_nodes, 1)
    else:
        if not isinstance(batch, Tensor) or batch.is_floating_point() \
                or batch.dtype == torch.bool:
            raise TypeError("batch must be an integer tensor (the graph of "
                            "every node)")
        if batch.shape != (num_nodes, ):
            raise ValueError(f"batch must have one entry per node ({num_nodes}),"
                             f" got shape {list(batch.shape)}")
        if num_nodes and int(batch.min()) < 0:
            raise ValueError(f"batch has a negative graph index "
                             f"({int(batch.min())})")
        batch = batch.to(device=x.device, dtype=torch.long)
        size = int(batch.max()) + 1 if num_nodes > 0 else 0
        energy = per_edge.new_zeros(size).index_add_(0, batch[dst], per_edge)
        counts = torch.bincount(batch, minlength=size).clamp(min=1)
        energy = energy / counts.to(energy.dtype)
    return energy.sqrt() if sqrt else energy


def dirichlet_energy_per_layer(
    states: Sequence[Tensor],
    edge_index: GraphLike,
    batch: Optional[Tensor] = None,
    *,
    sqrt: bool = False,
) -> Tensor:
    r""":func:`dirichlet_energy` of every state of a stack,
    :math:`[E(X^{(0)}), \dots, E(X^{(L)})]`, e.g. the :obj:`states` of
    :obj:`Stack(x, edge_index, return_states=True)`.

    Args:
        states (list of torch.Tensor): Node states :obj:`[N, ...]` per layer.
        edge_index (torch.Tensor or CausalGraph): Edges :obj:`[2, E]`.
        batch (torch.Tensor, optional): See :func:`dirichlet_energy`.
        sqrt (bool, optional): Return :math:`\sqrt{E}`. (default:
            :obj:`False`)

    Returns:
        :obj:`[L + 1]` (or :obj:`[L + 1, num_graphs]` with :obj:`batch`),
        detached.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.diagnostics import dirichlet_energy_per_layer
        >>> states = [torch.tensor([[0.0], [0.0], [3.0]]), torch.ones(3, 1)]  # smoothed out
        >>> dirichlet_energy_per_layer(states, CausalGraph.from_lengths([3]))
        tensor([6., 0.])
    """
    if isinstance(states, Tensor) or len(states) == 0:
        raise TypeError("states must be a non-empty list of node-state tensors")
    with torch.no_grad():
        return torch.stack([
            dirichlet_energy(s, edge_index, batch, sqrt=sqrt) for s in states
        ])
