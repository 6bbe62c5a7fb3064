r"""Layer stacking as an optimizer (YuriiFormer, arXiv 2601.23236).

A layer applies *oracles*: modules ``f(x, edge_index)`` that give a descent direction,
e.g. :math:`\mathrm{Attn}(\mathrm{LN}(x))` (a step on an interaction energy) and
:math:`\mathrm{MLP}(\mathrm{LN}(x))` (a step on a potential energy).

* A **splitting scheme** orders the oracles of one layer into sub-steps:
  :class:`LieTrotter` (one after the other: the GPT block), :class:`Strang`
  (half M, A, half M: second order), :class:`Euler` (all at the same point, summed: the
  parallel block), :class:`GPS` (all but the last summed, then the last: GraphGPS's
  local + global, then the MLP).
* An **update method** turns a sub-step's direction :math:`d` into a move and carries
  state from layer to layer: :class:`GradientDescent` (:math:`x \leftarrow x + d(x)`, the
  residual stream), :class:`HeavyBall`, :class:`Nesterov`.
* :class:`Stack` runs ``L`` layers of any oracles (attention, Deep Sets, PyG's GCN, GIN,
  GAT, or a mix) with a method and a scheme on any graph.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import trim_to_layer

from graphformer.graph import CausalGraph
from graphformer.nn.adapt import call_conv

__all__ = ["Scheme", "LieTrotter", "Strang", "Euler", "GPS", "SCHEMES", "resolve_scheme",
           "UpdateMethod", "GradientDescent", "HeavyBall", "Nesterov", "Replace", "METHODS",
           "resolve_method", "Oracle", "Stack"]

GraphLike = Union[Tensor, CausalGraph]
Graphs = Union[GraphLike, Dict[str, GraphLike]]
#: a sub-step: oracles evaluated at the same point, ``(oracle index, weight)`` pairs summed
SubStep = List[Tuple[int, float]]


# ---------------------------------------------------------------------- splitting schemes
class Scheme:
    r"""A splitting scheme: the sub-steps of one layer over its ``n`` oracles.

    A sub-step is a list of ``(oracle index, step size)`` pairs evaluated at the same point
    and summed; a subclass sets :attr:`name` and implements :meth:`substeps`.

    Example:
        >>> from graphformer.nn.dynamics import Scheme
        >>> class HalfSteps(Scheme):          # every oracle, one after the other, h = 1/2
        ...     name = "half"
        ...     def substeps(self, num_oracles):
        ...         return [[(i, 0.5)] for i in range(num_oracles)]
        >>> HalfSteps().substeps(2)
        [[(0, 0.5)], [(1, 0.5)]]
    """
    name = "scheme"

    def substeps(self, num_oracles: int) -> List[SubStep]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


class LieTrotter(Scheme):
    r"""One oracle after the other, :math:`e^{h(A+M)} \approx e^{hM} e^{hA}`: the
    standard GPT block (attention, then MLP). First order: one-step error
    :math:`O(h^2)`.

    Example:
        >>> from graphformer.nn import LieTrotter
        >>> LieTrotter().substeps(2)      # attention, then the MLP: (oracle, step size) pairs
        [[(0, 1.0)], [(1, 1.0)]]
    """
    name = "lie_trotter"

    def substeps(self, num_oracles: int) -> List[SubStep]:
        return [[(i, 1.0)] for i in range(num_oracles)]


class Strang(Scheme):
    r"""Symmetric splitting, :math:`e^{h(A+M)} \approx e^{hM/2} e^{hA} e^{hM/2}`
    (Macaron-style: half MLP, attention, half MLP, with the MLP's weights shared by the
    two halves). Second order: one-step error :math:`O(h^3)`. With oracles
    :math:`o_0, \dots, o_{n-1}` the sub-steps are half steps of :math:`o_{n-1}, \dots,
    o_1`, a full step of :math:`o_0`, and the half steps back.

    Example:
        >>> from graphformer.nn import Strang
        >>> Strang().substeps(2)          # half MLP, attention, half MLP
        [[(1, 0.5)], [(0, 1.0)], [(1, 0.5)]]
    """
    name = "strang"

    def substeps(self, num_oracles: int) -> List[SubStep]:
        halves = [[(i, 0.5)] for i in range(num_oracles - 1, 0, -1)]
        return halves + [[(0, 1.0)]] + halves[::-1]


class Euler(Scheme):
    r"""All oracles evaluated at the same point and summed,
    :math:`x \leftarrow x + h(A(x) + M(x))`: the parallel block (GPT-J, PaLM).

    Example:
        >>> from graphformer.nn import Euler
        >>> Euler().substeps(2)           # both oracles from the same point
        [[(0, 1.0), (1, 1.0)]]
    """
    name = "euler"

    def substeps(self, num_oracles: int) -> List[SubStep]:
        return [[(i, 1.0) for i in range(num_oracles)]]


class GPS(Scheme):
    r"""GraphGPS's arrangement (Rampášek et al. 2022): every oracle but the last at the
    same point, summed (the local message passing and the global attention), then the
    last one (the MLP) from there,
    :math:`x \leftarrow x + h(L(x) + A(x))`, then :math:`x \leftarrow x + hM(x)`.
    With post-norm oracles (:class:`Oracle`'s ``post_norm``) and gradient descent this is
    PyG's :class:`~torch_geometric.nn.conv.GPSConv` exactly. One oracle alone is one
    step.

    Example:
        >>> from graphformer.nn.dynamics import GPS
        >>> GPS().substeps(3)             # local + global summed, then the MLP
        [[(0, 1.0), (1, 1.0)], [(2, 1.0)]]
    """
    name = "gps"

    def substeps(self, num_oracles: int) -> List[SubStep]:
        if num_oracles == 1:
            return [[(0, 1.0)]]
        return [[(i, 1.0) for i in range(num_oracles - 1)], [(num_oracles - 1, 1.0)]]


SCHEMES: Dict[str, Type[Scheme]] = {c.name: c for c in (LieTrotter, Strang, Euler, GPS)}


def resolve_scheme(scheme: Union[str, Scheme]) -> Scheme:
    r"""A :class:`Scheme` from its name (``"lie_trotter"``, ``"strang"``, ``"euler"``,
    ``"gps"``); a :class:`Scheme` is returned as it is.

    Example:
        >>> from graphformer.nn.dynamics import resolve_scheme
        >>> scheme = resolve_scheme("strang")
        >>> scheme, scheme.substeps(2)
        (Strang(), [[(1, 0.5)], [(0, 1.0)], [(1, 0.5)]])
    """
    if isinstance(scheme, Scheme):
        return scheme
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    return SCHEMES[scheme]()


# ---------------------------------------------------------------------- update methods
class _Axpby(torch.autograd.Function):
    r"""``a * x + b * y`` for 0-d tensors ``a``, ``b`` (``a = None``: 1) in two kernels
    (one for ``a = None``), with the scalars' gradients as dot products (no ``[N, C]``
    temporary per scalar)."""

    @staticmethod
    def forward(ctx, a, x, b, y):
        if a is None:
            out = torch.addcmul(x, b, y)  # one pass: x + b * y
        else:
            out = torch.mul(x, a)
            out.addcmul_(b, y)  # one pass: out += b * y
        ctx.save_for_backward(a if a is not None else x.new_empty(0), x, b, y)
        ctx.has_a = a is not None
        return out

    @staticmethod
    def backward(ctx, g):
        a, x, b, y = ctx.saved_tensors
        ga = gx = gb = gy = None
        # under autocast x or y may be bf16 while g is float32: the dots take g's dtype
        if ctx.has_a and ctx.needs_input_grad[0]:
            ga = torch.vdot(g.reshape(-1), x.reshape(-1).to(g.dtype)).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gx = g * a if ctx.has_a else g
        if ctx.needs_input_grad[2]:
            gb = torch.vdot(g.reshape(-1), y.reshape(-1).to(g.dtype)).reshape(b.shape)
        if ctx.needs_input_grad[3]:
            gy = g * b
        return ga, gx, gb, gy


def axpby(a: Optional[Tensor], x: Tensor, b: Tensor, y: Tensor) -> Tensor:
    r""":math:`a x + b y` for scalar tensors :math:`a, b` (``a = None`` for 1): the fused
    elementwise step of the momentum methods."""
    if torch.compiler.is_compiling():
        return (x if a is None else a * x) + b * y
    if not torch.is_grad_enabled():  # the same two kernels, without autograd's bookkeeping
        return torch.addcmul(x if a is None else torch.mul(x, a), b, y)
    return _Axpby.apply(a, x, b, y)


def _inverse_sigmoid(p: float) -> float:
    return math.log(p / (1.0 - p))


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class UpdateMethod(nn.Module):
    r"""One layer's update rule. :meth:`step` performs sub-step ``k``: given the state
    ``(x, v)`` and ``direction`` (a function of the point where the oracles look), it
    returns the new ``(x, v)``.

    Args:
        num_substeps (int): sub-steps per layer (from the :class:`Scheme`).
        channels (int): width of the state.

    Example:
        >>> import torch
        >>> from graphformer.nn.dynamics import UpdateMethod
        >>> class Damped(UpdateMethod):       # x <- x + d(x) / 2
        ...     name = "damped"
        ...     def step(self, k, x, v, direction, coefficients=None):
        ...         return x + 0.5 * direction(x), v
        >>> x, v = Damped(1, 4).step(0, torch.ones(1, 4), None, lambda x: 2 * x)
        >>> x
        tensor([[2., 2., 2., 2.]])
    """
    name = "method"
    uses_velocity = False

    def __init__(self, num_substeps: int, channels: int) -> None:
        super().__init__()
        self.num_substeps = num_substeps

    def coefficients(self) -> Optional[Sequence[Tuple[Tensor, ...]]]:
        r"""The method's scalars for each sub-step of the layer, computed once per layer
        and passed to :meth:`step` (``None``: the method has none)."""
        return None

    def step(self, k: int, x: Tensor, v: Optional[Tensor], direction,
             coefficients: Optional[Sequence[Tuple[Tensor, ...]]] = None
             ) -> Tuple[Tensor, Optional[Tensor]]:
        raise NotImplementedError


class GradientDescent(UpdateMethod):
    r"""Plain gradient descent, the ordinary residual stream:

    .. math:: x \leftarrow x + d(x).

    Example:
        >>> import torch
        >>> from graphformer.nn import GradientDescent
        >>> x, v = GradientDescent(1, 4).step(0, torch.ones(2, 4), None, lambda x: 2 * x)
        >>> x                             # x + d(x)
        tensor([[3., 3., 3., 3.],
                [3., 3., 3., 3.]])
    """
    name = "gd"

    def step(self, k, x, v, direction, coefficients=None):
        points = getattr(direction, "points", None)
        if points is not None:
            return points(x), v
        return x + direction(x), v


class Replace(UpdateMethod):
    r"""No residual stream: the direction is the new state,

    .. math:: x \leftarrow d(x).

    A plain, non-residual stack, e.g. Alon & Yahav's GGNN, whose GRU gates its own
    update. It is no optimizer step, so it is not in :data:`METHODS`;
    :meth:`~graphformer.models.GraphModel.build` uses it for ``block="plain"``.

    Example:
        >>> import torch
        >>> from graphformer.nn import Replace
        >>> x, v = Replace(1, 4).step(0, torch.ones(1, 4), None, lambda x: 2 * x)
        >>> x                             # d(x), no residual
        tensor([[2., 2., 2., 2.]])
    """
    name = "replace"

    def step(self, k, x, v, direction, coefficients=None):
        return direction(x), v


class Nesterov(UpdateMethod):
    r"""Nesterov-accelerated update (YuriiFormer, Lie–Trotter form), per sub-step
    :math:`s`:

    .. math::
        \tilde{x} = x + \mu_s v, \qquad
        v \leftarrow \mathrm{LN}_v\big(\beta_s v + \gamma_s\, d(\tilde{x})\big), \qquad
        x \leftarrow x + v,

    with :math:`\mu_s, \beta_s \in (0, 1)` through a sigmoid and :math:`\gamma_s > 0`
    through a softplus, learned per sub-step (six scalars per layer for two oracles).
    The velocity :math:`v` passes from layer to layer.

    Defaults: :math:`\mu = \beta = 0.5`, :math:`\gamma = 1`. :math:`\beta = 0.5` keeps a
    short velocity memory (a direction's weight halves every sub-step) so early training
    stays close to gradient descent while the model can learn a longer memory;
    :math:`\mu = 0.5` looks half a velocity ahead, between heavy-ball (:math:`\mu = 0`)
    and the classical :math:`\mu = \beta`; both sit away from the saturated ends of the
    sigmoid, so their gradients are not small. :math:`\gamma = 1` weighs a new direction
    like gradient descent does. Note that with :math:`\mathrm{LN}_v` the update is
    invariant to a common positive scale of :math:`\beta` and :math:`\gamma`, so only
    their ratio matters there (and :math:`\mathrm{LN}_v` sets the step's size); without
    :math:`\mathrm{LN}_v` both act.

    Args:
        num_substeps (int): sub-steps per layer (from the scheme).
        channels (int): node feature size (for :math:`\mathrm{LN}_v`).
        mu, beta, gamma (float): initial values.
        learn (iterable of str): which of ``"mu"``, ``"beta"``, ``"gamma"`` are learned;
            the others stay fixed at their values (which may then be 0 or 1 exactly).
        velocity_norm (bool): apply the LayerNorm :math:`\mathrm{LN}_v` to the velocity.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import AttentionConv, FeedForward, Oracle, Stack
        >>> layers = [[Oracle(AttentionConv(32, 8, heads=4, root_weight=False), norm=nn.LayerNorm(32)),
        ...            Oracle(FeedForward(32), norm=nn.LayerNorm(32))] for _ in range(2)]
        >>> stack = Stack(layers, method="nesterov", channels=32)   # six scalars per layer
        >>> stack(torch.randn(5, 32), CausalGraph.from_lengths([5])).shape
        torch.Size([5, 32])
    """
    name = "nesterov"
    uses_velocity = True

    def __init__(self, num_substeps: int, channels: int, mu: float = 0.5, beta: float = 0.5,
                 gamma: float = 1.0, learn: Iterable[str] = ("mu", "beta", "gamma"),
                 velocity_norm: bool = True) -> None:
        super().__init__(num_substeps, channels)
        learn = set(learn)
        unknown = learn - {"mu", "beta", "gamma"}
        if unknown:
            raise ValueError(f"unknown scalars {sorted(unknown)} in learn; valid: mu, beta, gamma")
        for name, value, inverse in (("mu", mu, _inverse_sigmoid), ("beta", beta, _inverse_sigmoid),
                                     ("gamma", gamma, _inverse_softplus)):
            if name in learn:
                ok = (0.0 < value < 1.0) if inverse is _inverse_sigmoid else value > 0.0
                if not ok:
                    bound = "in (0, 1)" if inverse is _inverse_sigmoid else "> 0"
                    raise ValueError(f"a learned {name} must start {bound}, got {value}; "
                                     f"fix it with learn=... to use {value} exactly")
                raw = torch.full((num_substeps,), inverse(float(value)))
                self.register_parameter(f"{name}_raw", nn.Parameter(raw))
            else:
                self.register_buffer(f"{name}_fixed", torch.full((num_substeps,), float(value)))
        self.learn = tuple(sorted(learn))
        self.look_ahead = "mu" in learn or mu != 0  # heavy-ball (mu = 0) skips it
        self.velocity_norms = (nn.ModuleList(nn.LayerNorm(channels) for _ in range(num_substeps))
                               if velocity_norm else None)

    def scalar(self, name: str) -> Tensor:
        r"""The current values of ``mu``, ``beta`` or ``gamma`` (one per sub-step)."""
        if name in self.learn:
            raw = getattr(self, f"{name}_raw")
            return torch.sigmoid(raw) if name in ("mu", "beta") else F.softplus(raw)
        return getattr(self, f"{name}_fixed")

    def coefficients(self) -> List[Tuple[Tensor, Tensor, Tensor]]:
        r"""``(mu, beta, gamma)`` of every sub-step (three sigmoids or softpluses per layer,
        not per sub-step)."""
        return list(zip(*(self.scalar(n).unbind() for n in ("mu", "beta", "gamma"))))

    def step(self, k, x, v, direction, coefficients=None):
        mu, beta, gamma = (coefficients or self.coefficients())[k]
        if v is None:  # at rest: no look-ahead, no memory
            v = gamma * direction(x)
        else:
            point = axpby(None, x, mu, v) if self.look_ahead else x
            v = axpby(beta, v, gamma, direction(point))
        if self.velocity_norms is not None:
            v = self.velocity_norms[k](v)
        return x + v, v

    def extra_repr(self) -> str:
        vals = ", ".join(f"{n}={self.scalar(n).detach().mean().item():.3g}"
                         for n in ("mu", "beta", "gamma"))
        return f"{vals}, learn={list(self.learn)}"


class HeavyBall(Nesterov):
    r"""Polyak's heavy-ball momentum: :class:`Nesterov` without look-ahead
    (:math:`\mu = 0`),

    .. math::
        v \leftarrow \mathrm{LN}_v\big(\beta_s v + \gamma_s\, d(x)\big), \qquad
        x \leftarrow x + v.

    Example:
        >>> import torch
        >>> from torch_geometric.nn import GCNConv
        >>> from graphformer.nn import Oracle, Stack
        >>> stack = Stack([[Oracle(GCNConv(8, 8))] for _ in range(3)], method="heavyball", channels=8)
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> stack(torch.randn(3, 8), edge_index).shape
        torch.Size([3, 8])
    """
    name = "heavyball"

    def __init__(self, num_substeps: int, channels: int, beta: float = 0.5,
                 gamma: float = 1.0, learn: Iterable[str] = ("beta", "gamma"),
                 velocity_norm: bool = True) -> None:
        learn = set(learn)
        if "mu" in learn:
            raise ValueError("HeavyBall has no look-ahead: mu is fixed at 0")
        super().__init__(num_substeps, channels, mu=0.0, beta=beta, gamma=gamma,
                         learn=learn, velocity_norm=velocity_norm)


METHODS: Dict[str, Type[UpdateMethod]] = {c.name: c for c in (GradientDescent, HeavyBall, Nesterov)}


def resolve_method(method: Union[str, Type[UpdateMethod]]) -> Type[UpdateMethod]:
    r"""An update-method class from its name (``"gd"``, ``"heavyball"``, ``"nesterov"``);
    an :class:`UpdateMethod` subclass is returned as it is.

    Example:
        >>> from graphformer.nn.dynamics import resolve_method
        >>> resolve_method("nesterov").__name__, resolve_method("gd").__name__
        ('Nesterov', 'GradientDescent')
    """
    if isinstance(method, type) and issubclass(method, UpdateMethod):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[method]


# ---------------------------------------------------------------------- oracles and stack
class Oracle(nn.Module):
    r"""A direction from any layer: :math:`f(x) = \mathrm{out}(\sigma(\mathrm{conv}
    (\mathrm{norm}(x), \mathcal{G})))`. The conv may be graphformer's (it gets the
    :class:`CausalGraph`) or any PyG layer (it gets the edge list, via
    :func:`~graphformer.nn.call_conv`).

    With ``post_norm`` the oracle is post-norm, as in GraphGPS and the original
    Transformer: it gives the point :math:`N(x + f(x))` rather than a direction, and a
    sub-step of post-norm oracles moves :math:`x` to the sum of their points,
    :math:`x \leftarrow \sum_o w_o N_o(x + f_o(x))` (the direction :class:`Stack`
    hands to the update method is that sum minus :math:`x`).

    Args:
        conv (nn.Module): the layer, called ``conv(x, edge_index, **inputs)``.
        norm (nn.Module, optional): applied before the conv (pre-norm), e.g. a LayerNorm.
        out (nn.Module, optional): applied after, e.g. an output projection and dropout.
        activation (callable, optional): applied between the conv and ``out``.
        graph (str, optional): which graph to use when the stack is given a dict of graphs
            (e.g. ``"local"`` and ``"global"`` in a hybrid model).
        post_norm (nn.Module, optional): the norm of a post-norm oracle (see above); it
            is called ``post_norm(h)``, or ``post_norm(h, batch)`` when it takes a
            ``batch`` (PyG's ``GraphNorm``, ``InstanceNorm``).
        inputs (sequence of str, optional): names of the stack's extra inputs that the
            conv takes as keyword arguments (e.g. ``("edge_attr",)`` for GINE,
            ``("attn_bias",)`` for attention).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch_geometric.nn import GCNConv
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import Oracle
        >>> oracle = Oracle(GCNConv(16, 16), norm=nn.LayerNorm(16), activation=torch.relu)
        >>> oracle(torch.randn(8, 16), CausalGraph.from_lengths([3, 5])).shape
        torch.Size([8, 16])
    """
    accepts_causal_graph = True

    def __init__(self, conv: nn.Module, norm: Optional[nn.Module] = None,
                 out: Optional[nn.Module] = None, activation=None,
                 graph: Optional[str] = None, post_norm: Optional[nn.Module] = None,
                 inputs: Sequence[str] = ()) -> None:
        super().__init__()
        self.norm = norm
        self.conv = conv
        self.activation = activation
        self.out = out
        self.graph = graph
        self.post_norm = post_norm
        self.inputs = tuple(inputs)
        self.norm_with_batch = post_norm is not None and "batch" in inspect.signature(
            post_norm.forward).parameters

    def forward(self, x: Tensor, edge_index: Graphs, **inputs: Any) -> Tensor:
        if isinstance(edge_index, dict):
            if self.graph not in edge_index:
                raise ValueError(f"this oracle uses graph {self.graph!r} but the stack got "
                                 f"graphs {sorted(edge_index)}")
            edge_index = edge_index[self.graph]
        kwargs = {name: inputs[name] for name in self.inputs if inputs.get(name) is not None}
        h = self.norm(x) if self.norm is not None else x
        h = call_conv(self.conv, h, edge_index, **kwargs)
        if self.activation is not None:
            h = self.activation(h)
        return self.out(h) if self.out is not None else h

    def point(self, x: Tensor, edge_index: Graphs, weight: float = 1.0,
              **inputs: Any) -> Tensor:
        r"""A post-norm oracle's point :math:`N(x + w f(x))`."""
        d = self(x, edge_index, **inputs)
        h = x + d if weight == 1.0 else x + weight * d
        if self.norm_with_batch:
            return self.post_norm(h, inputs.get("batch"))
        return self.post_norm(h)


class Stack(nn.Module):
    r"""``L`` layers of oracles stacked as an optimizer: a splitting scheme orders each
    layer's oracles into sub-steps and an update method moves the state,

    .. math::
        (x, v) \leftarrow \mathrm{method}_{\ell, s}\Big(x, v,\;
        p \mapsto \textstyle\sum_{(o, w) \in s} w\, f_{\ell, o}(p)\Big)
        \quad \text{for each sub-step } s \text{ of layer } \ell.

    With :class:`GradientDescent` and :class:`LieTrotter` this is the pre-norm
    Transformer (or a residual GNN).

    Args:
        layers (sequence of sequences of nn.Module): the oracles of each layer.
        method (str or class): ``"gd"``, ``"heavyball"``, ``"nesterov"``.
        scheme (str or Scheme): ``"lie_trotter"``, ``"strang"``, ``"euler"``, ``"gps"``.
        channels (int): node feature size (needed by momentum methods).
        method_kwargs (dict, optional): passed to the method (initial scalars, ...).
        post_norm (bool): a LayerNorm after each layer, ``x <- LN(x)`` (post-norm
            residual networks, as in Alon & Yahav's ``x <- LN(x + ReLU(conv(x)))``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn import AttentionConv, FeedForward, Oracle, Stack
        >>> def block():  # a pre-norm Transformer block: attention, then the MLP
        ...     return [Oracle(AttentionConv(16, 4, heads=4), norm=nn.LayerNorm(16)),
        ...             Oracle(FeedForward(16), norm=nn.LayerNorm(16))]
        >>> stack = Stack([block(), block()], method="nesterov", channels=16)
        >>> x, graph = torch.randn(8, 16), CausalGraph.from_lengths([3, 5])
        >>> out, states = stack(x, graph, return_states=True)
        >>> out.shape, len(states)  # states: x_0, x_1, x_2
        (torch.Size([8, 16]), 3)
    """

    def __init__(self, layers: Sequence[Sequence[nn.Module]], method: Union[str, type] = "gd",
                 scheme: Union[str, Scheme] = "lie_trotter", channels: Optional[int] = None,
                 method_kwargs: Optional[dict] = None, post_norm: bool = False) -> None:
        super().__init__()
        if len(layers) == 0:
            raise ValueError("a Stack needs at least one layer")
        counts = {len(layer) for layer in layers}
        if len(counts) != 1 or 0 in counts:
            raise ValueError("every layer must have the same, non-zero number of oracles")
        self.scheme = resolve_scheme(scheme)
        self.plan = self.scheme.substeps(counts.pop())
        method_cls = resolve_method(method)
        if method_cls.uses_velocity and channels is None:
            raise ValueError(f"method {method_cls.name!r} needs `channels` for its velocity norm")
        self.layers = nn.ModuleList(nn.ModuleList(layer) for layer in layers)
        self.dynamics = nn.ModuleList(
            method_cls(len(self.plan), channels or 0, **(method_kwargs or {}))
            for _ in layers)
        self.post_norms = (nn.ModuleList(nn.LayerNorm(channels) for _ in layers)
                           if post_norm else None)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, x: Tensor, edge_index: Graphs, v0: Optional[Tensor] = None,
                return_states: bool = False, last_edge_index: Optional[Graphs] = None,
                num_sampled_nodes_per_hop: Optional[List[int]] = None,
                num_sampled_edges_per_hop: Optional[List[int]] = None, **inputs: Any):
        r"""Runs the stack.

        Args:
            x (torch.Tensor): node states ``[N, C]``.
            edge_index: the graph (a tensor, a :class:`CausalGraph`, or a dict of them for
                oracles that name their graph).
            v0 (torch.Tensor, optional): initial velocity (momentum methods; default 0).
            return_states (bool): also return ``[x_0, x_1, ..., x_L]`` (with trimming,
                each state has the rows its layer kept).
            last_edge_index (optional): a different graph for the last layer (e.g. the
                fully-adjacent last layer).
            num_sampled_nodes_per_hop (list of int, optional): trims the computation to
                what the seed nodes need, as PyG's ``BasicGNN`` models do
                (:func:`~torch_geometric.utils.trim_to_layer`):
                nodes sorted by hop from the seeds, ``L + 1`` counts (seeds first), edges
                sorted by the farther hop of their two ends, ``L`` counts in
                ``num_sampled_edges_per_hop``. Before layer ``i`` the ``i`` outermost
                hops are dropped, and the output has the seed rows only. Exact for layers
                whose output at a node depends only on its in-neighbours (GAT, GGNN,
                attention), not for GCN (its normalisation reads the degree of the
                dropped frontier) nor for batch norm (its statistics see every row).
            **inputs: extra inputs (``edge_attr``, ``attn_bias``, ``batch``, ...) handed
                to the oracles that name them (:class:`Oracle`'s ``inputs``); not with
                trimming.
        """
        trim = self._check_trim(x, edge_index, last_edge_index, num_sampled_nodes_per_hop,
                                num_sampled_edges_per_hop)
        if trim and any(t is not None for t in inputs.values()):
            raise ValueError(f"trimming does not go together with extra inputs "
                             f"{sorted(inputs)}: they are not trimmed per layer")
        v = v0
        states = [x]
        for index, (oracles, method) in enumerate(zip(self.layers, self.dynamics)):
            graph = edge_index
            if last_edge_index is not None and index == self.num_layers - 1:
                graph = last_edge_index
            if trim:
                x, graph, _ = trim_to_layer(index, num_sampled_nodes_per_hop,
                                            num_sampled_edges_per_hop, x, graph)
                edge_index = graph
                if v is not None:  # the velocity keeps the rows the state keeps
                    v = v[:x.size(0)]
            coefficients = method.coefficients()  # once per layer
            for k, substep in enumerate(self.plan):
                x, v = method.step(k, x, v, self._direction(oracles, substep, graph, inputs),
                                   coefficients)
            if self.post_norms is not None:
                x = self.post_norms[index](x)
            states.append(x)
        if trim:  # the last layer's outputs are needed at the seeds only
            x = x[:num_sampled_nodes_per_hop[0]]
            states[-1] = x
        return (x, states) if return_states else x

    def _check_trim(self, x, edge_index, last_edge_index, nodes, edges) -> bool:
        if nodes is None and edges is None:
            return False
        if nodes is None or edges is None:
            raise ValueError("num_sampled_nodes_per_hop and num_sampled_edges_per_hop go "
                             "together; got only one of them")
        if not isinstance(edge_index, Tensor):
            raise TypeError(f"trimming needs an edge_index tensor, got "
                            f"{type(edge_index).__name__}")
        if last_edge_index is not None:
            raise ValueError("trimming and last_edge_index do not go together: a last "
                             "layer on another graph can need any node")
        L = self.num_layers
        if len(nodes) != L + 1 or len(edges) != L:
            raise ValueError(f"trimming a stack of {L} layers needs {L + 1} node counts and "
                             f"{L} edge counts, got {len(nodes)} and {len(edges)}")
        if sum(nodes) != x.size(0):
            raise ValueError(f"num_sampled_nodes_per_hop sums to {sum(nodes)} but x has "
                             f"{x.size(0)} rows")
        if sum(edges) != edge_index.size(1):
            raise ValueError(f"num_sampled_edges_per_hop sums to {sum(edges)} but "
                             f"edge_index has {edge_index.size(1)} edges")
        if min(nodes) < 0 or min(edges) < 0:
            raise ValueError("hop counts must be >= 0")
        return True

    @staticmethod
    def _direction(oracles: nn.ModuleList, substep: SubStep, graph: Graphs,
                   inputs: Dict[str, Any]):
        flags = [isinstance(oracles[i], Oracle) and oracles[i].post_norm is not None
                 for i, _ in substep]
        post = any(flags)
        if post and not all(flags):
            raise ValueError("a sub-step mixes post-norm oracles with others: give every "
                             "oracle of a sub-step a post_norm, or none")

        def points(point: Tensor) -> Tensor:
            # post-norm: the sub-step moves x to the sum of the oracles' points
            total = None
            for i, weight in substep:
                d = oracles[i].point(point, graph, weight, **inputs)
                total = d if total is None else total + d
            return total

        def direction(point: Tensor) -> Tensor:
            if post:
                return points(point) - point
            total = None
            for i, weight in substep:
                d = (oracles[i](point, graph, **inputs) if inputs
                     else call_conv(oracles[i], point, graph))
                d = d if weight == 1.0 else weight * d
                total = d if total is None else total + d
            return total
        # gradient descent on a post-norm sub-step goes to the new point at once, without
        # the round trip x + (points - x) (an [N, C] temporary less)
        direction.points = points if post else None
        return direction

    def extra_repr(self) -> str:
        return f"method={self.dynamics[0].name}, scheme={self.scheme.name}"
