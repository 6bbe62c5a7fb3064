r"""Over-squashing seen in the graph alone: hop distances, path counts,
effective resistance and the spectral gap."""
import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from graphformer.checks import check_int
from graphformer.diagnostics._common import (
    GraphLike,
    check_node_int,
    dense_adjacency,
    resolve_graph,
    symmetric_adjacency,
)

__all__ = [
    'hop_distance',
    'path_counts',
    'causal_path_counts',
    'effective_resistance',
    'spectral_gap',
]


def hop_distance(
    edge_index: GraphLike,
    num_nodes: Optional[int] = None,
    target: int = 0,
) -> Tensor:
    r"""Number of hops a message needs from every node to :obj:`target`,
    following the edges :math:`j \to i` of :obj:`edge_index` (breadth-first
    search on the reversed edges); :math:`-1` where :obj:`target` cannot be
    reached. For an undirected graph this is the shortest-path distance.

    Args:
        edge_index (torch.Tensor or CausalGraph): Edges :obj:`[2, E]`.
        num_nodes (int, optional): Number of nodes (taken from a
            :obj:`CausalGraph`).
        target (int): The receiving node.

    Returns:
        :obj:`LongTensor [N]`.

    Example:
        >>> import torch
        >>> from graphformer.diagnostics import hop_distance
        >>> path = torch.tensor([[0, 1, 2], [1, 2, 3]])  # 0 -> 1 -> 2 -> 3
        >>> hop_distance(path, num_nodes=4, target=3)
        tensor([3, 2, 1, 0])
        >>> hop_distance(path, num_nodes=4, target=0)  # nothing flows back to 0
        tensor([ 0, -1, -1, -1])
    """
    ei, N = resolve_graph(edge_index, num_nodes)
    target = check_node_int(target, "target")
    if not -N <= int(target) < N:
        raise ValueError(f"target {target} is not a node of a graph with {N} "
                         f"nodes")
    src, dst = ei.cpu()
    dist = torch.full((N, ), -1, dtype=torch.long)
    dist[int(target) % N] = 0
    frontier = torch.zeros(N, dtype=torch.bool)
    frontier[int(target) % N] = True
    d = 0
    while bool(frontier.any()):
        d += 1
        reach = torch.zeros(N, dtype=torch.bool)
        reach[src[frontier[dst]]] = True
        frontier = reach & (dist < 0)
        dist[frontier] = d
    return dist


def path_counts(
    edge_index: GraphLike,
    num_nodes: Optional[int] = None,
    num_layers: int = 1,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Number of walks of length :math:`L` between all pairs of nodes,

    .. math::
        P = A^L, \qquad A_{ij} = |\{\text{edges } j \to i\}| ,

    so :math:`P_{ij}` counts the ways a message from source :math:`j` reaches
    target :math:`i` through :math:`L` message-passing layers (row =
    target, column = source, as in :func:`jacobian_sensitivity`).
    Self-loops count only when the graph has them (a causal DAG does).
    On the dense causal DAG of one sequence,
    :math:`P_{ni} = \binom{n-i+L-1}{L-1}`, see :func:`causal_path_counts`.

    Args:
        edge_index (torch.Tensor or CausalGraph): Edges :obj:`[2, E]`.
        num_nodes (int, optional): Number of nodes (taken from a
            :obj:`CausalGraph`).
        num_layers (int): Walk length :math:`L \geq 0`.
        dtype (torch.dtype, optional): Result dtype; float64 holds integers
            exactly up to :math:`2^{53}`. (default: :obj:`torch.float64`)

    Returns:
        :obj:`[N, N]` dense counts.

    Example:
        >>> from graphformer import CausalGraph
        >>> from graphformer.diagnostics import path_counts
        >>> path_counts(CausalGraph.from_lengths([3]), num_layers=2).long()  # row = target
        tensor([[1, 0, 0],
                [2, 1, 0],
                [3, 2, 1]])
    """
    ei, N = resolve_graph(edge_index, num_nodes)
    num_layers = check_int("num_layers", num_layers, 0, error=ValueError)
    A = dense_adjacency(ei, N, dtype)
    return torch.linalg.matrix_power(A, num_layers)


def causal_path_counts(
    length: int,
    num_layers: int,
    target: int = -1,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Closed form of :func:`path_counts` on the dense causal DAG of one
    sequence (edges :math:`j \to i` for all :math:`j \le i`, self-loops
    included): the number of paths from position :math:`i` to position
    :math:`n` through :math:`L \geq 1` layers is the number of
    non-decreasing chains :math:`i \le k_1 \le \dots \le k_{L-1} \le n`,

    .. math::
        P_{ni} = \binom{n - i + L - 1}{L - 1} \quad (i \le n),
        \qquad 0 \text{ for } i > n .

    Args:
        length (int): Sequence length :math:`T`.
        num_layers (int): Number of layers :math:`L \geq 1`.
        target (int, optional): Position :math:`n`. (default: :obj:`-1`, the
            last)
        dtype (torch.dtype, optional): Result dtype. (default:
            :obj:`torch.float64`)

    Returns:
        :obj:`[T]`, entry :math:`i` = paths from :math:`i` to :obj:`target`.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.diagnostics import causal_path_counts, path_counts
        >>> causal_path_counts(4, num_layers=2).long()  # the first token has the most paths
        tensor([4, 3, 2, 1])
        >>> counts = path_counts(CausalGraph.from_lengths([4]), num_layers=2)
        >>> torch.equal(causal_path_counts(4, num_layers=2), counts[-1])  # = the last row
        True
    """
    length = check_int("length", length, 1, error=ValueError)
    num_layers = check_int("num_layers", num_layers, 1, error=ValueError)
    if not -length <= target < length:
        raise ValueError(f"target {target} is not a position of a sequence of "
                         f"length {length}")
    n = target % length
    L = num_layers
    counts = [math.comb(n - i + L - 1, L - 1) if i <= n else 0
              for i in range(length)]
    return torch.tensor(counts, dtype=dtype)


def _laplacian_pinv(edge_index: GraphLike,
                    num_nodes: Optional[int]) -> Tuple[Tensor, Tensor]:
    ei, N = resolve_graph(edge_index, num_nodes)
    A = symmetric_adjacency(ei.cpu(), N)
    L = torch.diag(A.sum(1)) - A
    return torch.linalg.pinv(L, hermitian=True), _components(A)


def _components(A: Tensor) -> Tensor:
    r"""Connected-component label of every node (smallest node id in it)."""
    N = A.size(0)
    label = torch.arange(N)
    adj = A > 0
    while True:
        neighbour_min = torch.where(adj, label.view(1, -1),
                                    torch.full_like(label, N).view(1, -1))
        new = torch.minimum(label, neighbour_min.min(1).values) if N else label
        if torch.equal(new, label):
            return label
        label = new


def effective_resistance(
    edge_index: GraphLike,
    num_nodes: Optional[int] = None,
    pair: Optional[Tuple[int, int]] = None,
) -> Union[Tensor, float]:
    r"""Effective resistance between nodes of the underlying undirected graph
    (a directed graph is symmetrized first, multi-edges count once, every
    edge has unit conductance),

    .. math::
        R_{uv} = (e_u - e_v)^\top L^{+} (e_u - e_v)
        = L^{+}_{uu} + L^{+}_{vv} - 2 L^{+}_{uv}, \qquad L = D - A ,

    with :math:`L^{+}` the Moore-Penrose pseudo-inverse of the Laplacian.
    On a path :math:`R_{uv}` equals the distance; extra parallel routes
    lower it. Commute time is :math:`2|E| R_{uv}`, and over-squashing
    between :math:`u` and :math:`v` grows with it (Di Giovanni et al.,
    2023). Nodes in different connected components get :math:`\infty`.

    Args:
        edge_index (torch.Tensor or CausalGraph): Edges :obj:`[2, E]`.
        num_nodes (int, optional): Number of nodes (taken from a
            :obj:`CausalGraph`).
        pair (tuple of int, optional): Return only :math:`R_{uv}` for
            :obj:`pair = (u, v)`, as a float. (default: :obj:`None`)

    Returns:
        :obj:`[N, N]` float64 matrix, or a float for a :obj:`pair`.

    Example:
        >>> import torch
        >>> from graphformer.diagnostics import effective_resistance
        >>> path = torch.tensor([[0, 1, 2], [1, 2, 3]])
        >>> round(effective_resistance(path, 4, pair=(0, 3)), 6)  # = the distance on a path
        3.0
        >>> triangle = torch.tensor([[0, 1, 2], [1, 2, 0]])
        >>> round(effective_resistance(triangle, 3, pair=(0, 1)), 6)  # 1 in parallel with 2
        0.666667
    """
    Lp, comp = _laplacian_pinv(edge_index, num_nodes)
    N = Lp.size(0)
    if pair is not None:
        if isinstance(pair, (str, bytes)) or not hasattr(pair, '__len__') \
                or len(pair) != 2:
            raise ValueError(f"pair must be two nodes (u, v), got {pair!r}")
        u, v = (check_node_int(p, "pair") for p in pair)
        if not (0 <= u < N and 0 <= v < N):
            raise ValueError(f"pair {pair} is not a pair of nodes of a graph "
                             f"with {N} nodes")
        if comp[u] != comp[v]:
            return math.inf
        return float(Lp[u, u] + Lp[v, v] - 2 * Lp[u, v])
    d = Lp.diagonal()
    R = d.view(-1, 1) + d.view(1, -1) - 2 * Lp
    R = R.clamp(min=0.0)
    R.fill_diagonal_(0.0)
    R[comp.view(-1, 1) != comp.view(1, -1)] = math.inf
    return R


def spectral_gap(
    edge_index: GraphLike,
    num_nodes: Optional[int] = None,
) -> float:
    r"""Spectral gap :math:`\lambda_1` (second-smallest eigenvalue) of the
    symmetric normalized Laplacian of the underlying undirected graph
    (directed graphs symmetrized, multi-edges once, self-loops dropped),

    .. math::
        \mathcal{L} = I - D^{-1/2} A D^{-1/2},
        \qquad 0 = \lambda_0 \le \lambda_1 \le \dots \le 2 ,

    with the usual convention :math:`\mathcal{L}_{ii} = 0` for isolated
    nodes. :math:`\lambda_1 = 0` exactly when the graph is disconnected;
    by Cheeger's inequality a small gap means a bottleneck. The complete
    graph :math:`K_n` has :math:`\lambda_1 = n/(n-1)`.

    Args:
        edge_index (torch.Tensor or CausalGraph): Edges :obj:`[2, E]`.
        num_nodes (int, optional): Number of nodes (taken from a
            :obj:`CausalGraph`).

    Returns:
        :math:`\lambda_1` as a float.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.diagnostics import spectral_gap
        >>> round(spectral_gap(CausalGraph.from_lengths([4])), 6)  # K_4: 4 / 3
        1.333333
        >>> spectral_gap(torch.tensor([[0, 2], [1, 3]]), 4)  # two components: no gap
        0.0
    """
    ei, N = resolve_graph(edge_index, num_nodes)
    if N < 2:
        raise ValueError(f"the spectral gap needs at least 2 nodes, got {N}")
    A = symmetric_adjacency(ei.cpu(), N)
    deg = A.sum(1)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-300).rsqrt(),
                           torch.zeros_like(deg))
    Lap = torch.diag((deg > 0).to(A.dtype)) \
        - inv_sqrt.view(-1, 1) * A * inv_sqrt.view(1, -1)
    eig = torch.linalg.eigvalsh(Lap)
    return float(eig[1].clamp(min=0.0))
