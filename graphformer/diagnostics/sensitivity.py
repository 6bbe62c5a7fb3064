r"""Over-squashing: Jacobian sensitivity of node outputs to node inputs."""
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from graphformer.checks import is_int
from graphformer.diagnostics._common import GraphLike, check_node_int, resolve_graph
from graphformer.diagnostics.topology import hop_distance

__all__ = [
    'jacobian_sensitivity',
    'sensitivity_vs_distance',
    'runway_profile',
    'SensitivityProfile',
]

IndexLike = Union[int, Sequence[int], Tensor]


def _as_index(index: IndexLike, num_nodes: int, name: str) -> Tensor:
    idx = torch.as_tensor(index)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer node indices, got {idx.dtype}")
    idx = idx.long().view(-1)
    if idx.numel() and (int(idx.max()) >= num_nodes or int(idx.min()) < -num_nodes):
        bad = int(idx[(idx >= num_nodes) | (idx < -num_nodes)][0])
        raise ValueError(f"{name} has node {bad} but x has {num_nodes} rows")
    return idx % max(num_nodes, 1)


def _is_scalar(index: IndexLike) -> bool:
    return is_int(index) or (isinstance(index, Tensor) and index.dim() == 0)


def _leaf_input(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise TypeError("x must be a tensor of node inputs [N, ...]")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be floating point to differentiate through it, got dtype "
            f"{x.dtype}; for integer tokens pass the embedded features and a "
            f"function of those")
    return x.detach().clone().requires_grad_(True)


def _row_jacobian_norms(rows: Tensor, x: Tensor, chunk_size: int) -> Tensor:
    r""":math:`\lVert \partial\, \mathrm{rows}[t] / \partial x[s] \rVert_F`
    for every row :math:`t` and node :math:`s`, :obj:`[T, N]`.

    One vector-Jacobian product per output coordinate (each gives all
    sources at once), batched with :obj:`is_grads_batched` (vmap over the
    backward pass) in chunks of :obj:`chunk_size`, with a plain loop as
    fall-back for operators without a batching rule.
    """
    T = rows.size(0)
    rows = rows.reshape(T, -1)
    H = rows.size(1)
    N = x.size(0)
    sq = torch.zeros(T, N, dtype=x.dtype, device=x.device)
    if not rows.requires_grad or T * H == 0:
        return sq

    def vjp(grad_out: Tensor, batched: bool) -> Optional[Tensor]:
        (g, ) = torch.autograd.grad(rows, x, grad_out, retain_graph=True,
                                    allow_unused=True,
                                    is_grads_batched=batched)
        return g

    K = T * H
    batched_ok = True
    chunk_size = check_node_int(chunk_size, "chunk_size", 1)
    for start in range(0, K, chunk_size):
        ks = torch.arange(start, min(K, start + chunk_size), device=x.device)
        go = rows.new_zeros(ks.numel(), T, H)
        go[torch.arange(ks.numel(), device=x.device), ks // H, ks % H] = 1.0
        g = None
        if batched_ok:
            try:
                g = vjp(go, True)
                if g is None:
                    continue
                g = g.reshape(ks.numel(), N, -1).pow(2).sum(-1)
            except (RuntimeError, NotImplementedError):
                batched_ok = False
        if not batched_ok:
            parts = []
            for k in range(ks.numel()):
                gk = vjp(go[k], False)
                parts.append(
                    torch.zeros(N, dtype=x.dtype, device=x.device)
                    if gk is None else gk.reshape(N, -1).pow(2).sum(-1))
            g = torch.stack(parts)
        sq.index_add_(0, ks // H, g.to(sq.dtype))
    return sq.sqrt()


def jacobian_sensitivity(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    target: IndexLike,
    sources: Optional[IndexLike] = None,
    *,
    chunk_size: int = 512,
) -> Tensor:
    r"""Jacobian sensitivity of output rows to input rows, by autograd,

    .. math::
        S_{ts} = \Bigl\lVert \frac{\partial f(X)_t}{\partial X_s}
        \Bigr\rVert_F ,

    the Frobenius norm of the block of the Jacobian that maps node
    :math:`s`'s input to node :math:`t`'s output (Topping et al., 2022; Di
    Giovanni et al., 2023). A message-passing network with :math:`L` layers
    gives :math:`S_{ts} = 0` exactly for every :math:`s` more than
    :math:`L` hops from :math:`t`. The cost is one backward pass per output
    coordinate of each target (each gives every source at once), batched.

    Args:
        fn (callable): :math:`X \mapsto f(X)`, node inputs :obj:`[N, ...]`
            to node outputs :obj:`[N, ...]`, e.g.
            :obj:`lambda x: model(x, edge_index)`. Put the model in
            :obj:`eval()` mode so that dropout does not enter.
        x (torch.Tensor): Floating-point node inputs :obj:`[N, ...]`.
        target (int or list or torch.Tensor): Output node(s) :math:`t`.
        sources (int or list or torch.Tensor, optional): Input nodes
            :math:`s` to return; all when :obj:`None`. (default: :obj:`None`)
        chunk_size (int, optional): Backward passes batched at once.
            (default: :obj:`512`)

    Returns:
        :obj:`[S]` for an int :obj:`target`, else :obj:`[T, S]` (row =
        target, column = source), detached.

    Example:
        >>> import torch
        >>> from torch_geometric.nn import SimpleConv
        >>> from graphformer.diagnostics import jacobian_sensitivity
        >>> path = torch.tensor([[0, 1, 2], [1, 2, 3]])  # 0 -> 1 -> 2 -> 3
        >>> conv = SimpleConv(combine_root="sum")  # x_i + sum of its neighbours
        >>> fn = lambda x: conv(conv(x, path), path)  # two layers: x_3 + 2 x_2 + x_1
        >>> jacobian_sensitivity(fn, torch.randn(4, 1), target=3)  # node 0 is 3 hops away
        tensor([0., 1., 2., 1.])
    """
    x = _leaf_input(x)
    N = x.size(0)
    tgt = _as_index(target, N, 'target')
    out = fn(x)
    if not isinstance(out, Tensor) or out.size(0) != N:
        raise ValueError(
            f"fn must return node outputs with one row per input node ({N}), "
            f"got {type(out).__name__} "
            f"{list(out.shape) if isinstance(out, Tensor) else ''}")
    S = _row_jacobian_norms(out[tgt], x, chunk_size).detach()
    if sources is not None:
        S = S[:, _as_index(sources, N, 'sources')]
    return S[0] if _is_scalar(target) else S


class SensitivityProfile(NamedTuple):
    r"""Mean Jacobian sensitivity per hop distance, what
    :func:`sensitivity_vs_distance` returns.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.diagnostics import sensitivity_vs_distance
        >>> graph = CausalGraph.from_lengths([5])  # every earlier token is 1 hop away
        >>> profile = sensitivity_vs_distance(lambda x: x.cumsum(0), torch.randn(5, 1), graph, 4)
        >>> profile.distance, profile.mean, profile.count
        (tensor([0, 1]), tensor([1., 1.]), tensor([1, 4]))
    """
    distance: Tensor  #: hop distances :obj:`[K]` (0, 1, ...)
    mean: Tensor  #: mean sensitivity at each distance :obj:`[K]`
    count: Tensor  #: number of (target, source) pairs averaged :obj:`[K]`


def sensitivity_vs_distance(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    edge_index: GraphLike,
    target: IndexLike,
    *,
    max_distance: Optional[int] = None,
    chunk_size: int = 512,
) -> SensitivityProfile:
    r"""Mean :func:`jacobian_sensitivity` grouped by hop distance,

    .. math::
        \bar S(d) = \operatorname{mean}\{ S_{ts} : t \in \text{target},\;
        d_G(s \to t) = d \},

    where :math:`d_G(s \to t)` is the number of hops a message needs from
    :math:`s` to :math:`t` along the edges of :obj:`edge_index` (PyG flow
    :obj:`source_to_target`); nodes that cannot reach a target are left out.
    Over-squashing shows as :math:`\bar S(d)` decaying fast in :math:`d`.

    Args:
        fn (callable): Node inputs to node outputs, see
            :func:`jacobian_sensitivity`.
        x (torch.Tensor): Floating-point node inputs :obj:`[N, ...]`.
        edge_index (torch.Tensor or CausalGraph): The graph that defines the
            distances.
        target (int or list or torch.Tensor): Output node(s).
        max_distance (int, optional): Largest distance reported.
            (default: :obj:`None`, all)
        chunk_size (int, optional): See :func:`jacobian_sensitivity`.

    Returns:
        :class:`SensitivityProfile` :obj:`(distance, mean, count)`.

    Example:
        >>> import torch
        >>> from torch_geometric.nn import SimpleConv
        >>> from graphformer.diagnostics import sensitivity_vs_distance
        >>> path = torch.tensor([[0, 1, 2], [1, 2, 3]])
        >>> conv = SimpleConv(combine_root="sum")
        >>> fn = lambda x: conv(conv(x, path), path)
        >>> profile = sensitivity_vs_distance(fn, torch.randn(4, 1), path, target=3)
        >>> profile.distance, profile.mean  # nothing arrives from 3 hops away in 2 layers
        (tensor([0, 1, 2, 3]), tensor([1., 2., 1., 0.]))
    """
    N = x.size(0) if isinstance(x, Tensor) else None
    ei, N = resolve_graph(edge_index, N)
    tgt = _as_index(target, N, 'target')
    S = jacobian_sensitivity(fn, x, tgt, chunk_size=chunk_size)  # [T, N]
    dist = torch.stack([hop_distance(ei, N, int(t)) for t in tgt])  # [T, N]
    keep = dist >= 0
    if max_distance is not None:
        keep &= dist <= check_node_int(max_distance, "max_distance", 0)
    d, s = dist[keep], S[keep.to(S.device)].to(torch.float64)
    K = int(d.max()) + 1 if d.numel() else 0
    total = torch.zeros(K, dtype=torch.float64).index_add_(0, d.cpu(), s.cpu())
    count = torch.bincount(d.cpu(), minlength=K)
    present = count > 0
    distance = torch.arange(K)[present]
    mean = (total[present] / count[present]).to(S.dtype)
    return SensitivityProfile(distance, mean, count[present])


def runway_profile(
    fn: Callable[..., object],
    x: Tensor,
    edge_index: Optional[GraphLike] = None,
    *,
    target: IndexLike = -1,
    normalize: bool = False,
    chunk_size: int = 512,
) -> Tensor:
    r"""The "runway" of a causal model: how much the state of the read-out
    position (by default the last) depends on every input position, after
    every layer,

    .. math::
        R_{\ell s} = \Bigl\lVert \frac{\partial X^{(\ell)}_t}{\partial
        X^{(0)}_s} \Bigr\rVert_F , \qquad \ell = 0, \dots, L .

    On a causal DAG the number of paths from position :math:`i` to the last
    position :math:`n` through :math:`\ell` layers is
    :math:`\binom{n-i+\ell-1}{\ell-1}` (Barbero et al., 2024), so early
    tokens are over-represented and the last tokens have a short runway;
    pause tokens lengthen it.

    Args:
        fn (callable): Either :math:`X \mapsto [X^{(0)}, \dots, X^{(L)}]`
            (any model), or, when :obj:`edge_index` is given, a stack called
            as :obj:`fn(x, edge_index, return_states=True)` that returns
            :obj:`(out, states)` (the :obj:`Stack` contract).
        x (torch.Tensor): Floating-point node inputs :obj:`[N, ...]` (the
            embedded tokens).
        edge_index (torch.Tensor or CausalGraph, optional): Passed to
            :obj:`fn`. (default: :obj:`None`)
        target (int or list or torch.Tensor, optional): Read-out node(s).
            (default: :obj:`-1`, the last node)
        normalize (bool, optional): Divide every depth's row by its sum, so
            it gives each source's share. (default: :obj:`False`)
        chunk_size (int, optional): See :func:`jacobian_sensitivity`.

    Returns:
        :obj:`[L + 1, N]` for an int :obj:`target`, else
        :obj:`[L + 1, T, N]`, detached.

    Example:
        >>> import torch
        >>> from graphformer.diagnostics import runway_profile
        >>> def states(x):  # two sum layers on the dense causal DAG
        ...     return [x, x.cumsum(0), x.cumsum(0).cumsum(0)]
        >>> runway_profile(states, torch.randn(4, 1))  # last row: the causal path counts
        tensor([[0., 0., 0., 1.],
                [1., 1., 1., 1.],
                [4., 3., 2., 1.]])
    """
    x = _leaf_input(x)
    N = x.size(0)
    tgt = _as_index(target, N, 'target')
    if edge_index is None:
        states = fn(x)
    else:
        result = fn(x, edge_index, return_states=True)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(
                "with edge_index, fn(x, edge_index, return_states=True) must "
                "return (out, states)")
        states = result[1]
    if isinstance(states, Tensor) or not isinstance(states, (list, tuple)) \
            or len(states) == 0:
        raise TypeError("fn must give a non-empty list of node states "
                        "[x_0, ..., x_L]")
    rows: List[Tensor] = []
    for level, h in enumerate(states):
        if not isinstance(h, Tensor) or h.size(0) != N:
            raise ValueError(f"state {level} must have one row per input node "
                             f"({N})")
        rows.append(_row_jacobian_norms(h[tgt], x, chunk_size).detach())
    R = torch.stack(rows)  # [L + 1, T, N]
    if normalize:
        R = R / R.sum(-1, keepdim=True).clamp(min=torch.finfo(R.dtype).tiny)
    return R[:, 0] if _is_scalar(target) else R
