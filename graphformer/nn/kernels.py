r"""Attention kernels behind :class:`~graphformer.nn.AttentionConv`, and the one
dispatch function that picks the fastest *exact* kernel for a graph.

Every kernel computes, for each target node :math:`i` and head :math:`h`,

.. math::
    \mathbf{o}_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij} \mathbf{v}_j, \qquad
    \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
    \left(\frac{\mathbf{q}_i^\top \mathbf{k}_j}{\sqrt{d}}\right),

with :math:`\mathbf{o}_i = 0` when :math:`\mathcal{N}(i)` is empty (never NaN).
Optional per-edge terms: an additive score bias :math:`b^h_{ij}` (``bias``, ``[E, H]``:
structural or relative-position encodings), carried by every kernel, and edge features
:math:`\mathbf{e}^h_{ij}` added to the key and the value of each message (``edge_kv``,
``[E, H, d]``, PyG's ``TransformerConv(edge_dim=...)``), carried by the edge-wise kernel:

.. math::
    \mathbf{o}_i = \sum_{j} \alpha_{ij} (\mathbf{v}_j + \mathbf{e}_{ij}), \qquad
    \alpha_{ij} = \operatorname{softmax}_{j}\left(\frac{\mathbf{q}_i^\top
    (\mathbf{k}_j + \mathbf{e}_{ij})}{\sqrt{d}} + b_{ij}\right).

**Masking rule, for non-finite inputs too:** a key that a query may not see contributes
nothing to it, even when that key or its value is NaN or infinite. A NaN reaches exactly
the rows that have an edge from the bad token, on every kernel, as on the edge-wise path
(see :func:`attention`).

* ``"edge"``: runs on any graph. A score per edge, a segment softmax over each
  target's incoming edges, a scatter-sum of the messages. :func:`edge_attention`
  recomputes the per-edge gathers in the backward pass instead of keeping them;
  :func:`edge_attention_reference` is the plain version it is tested against.
* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention` on the padded
  ``[B, H, T, d]`` layout of a :class:`~graphformer.graph.CausalGraph`, with
  ``is_causal=True`` for dense causal graphs, a boolean ``attn_mask`` otherwise, a float
  ``attn_mask`` holding the bias when there is one.
* ``"flex"``: FlexAttention with the graph's ``BlockMask`` (CUDA; forward-only on CPU),
  the bias as a ``score_mod``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch_geometric.utils import scatter, softmax

from graphformer.graph import CausalGraph

__all__ = ["KERNELS", "attention", "choose_kernel", "edge_attention",
           "edge_attention_reference", "edge_scores", "sdpa_attention", "flex_attention",
           "dense_bias", "all_finite", "quarantine", "sees", "padded_attention",
           "dropout_keep"]

KERNELS = ("auto", "edge", "sdpa", "flex")

#: Below this share of allowed (query, key) pairs in the padded ``[B, T, T]`` layout,
#: ``"auto"`` prefers the edge-wise kernel to masked SDPA, which computes every pair.
#: Measured on CPU (torch 2.13, B=8, T=256, 4 heads of 32, fp32, forward+backward of
#: the layer): the edge kernel costs about 10x more per edge than masked SDPA per pair,
#: and the two break even near density 1/16 (packed documents). The CUDA value is a
#: conservative guess, not measured.
DENSE_MIN_DENSITY = {"cpu": 1.0 / 16, "cuda": 1.0 / 32}

#: FlexAttention is chosen by ``"auto"`` on CUDA for structured (masked) graphs with
#: sequences at least this long, where skipping empty blocks beats masked SDPA.
FLEX_MIN_LENGTH = 512


def edge_scores(q: Tensor, k: Tensor, edge_index: Tensor,
                edge_kv: Optional[Tensor] = None, bias: Optional[Tensor] = None) -> Tensor:
    r"""Scores :math:`\mathbf{q}_i^\top(\mathbf{k}_j + \mathbf{e}_{ij})/\sqrt{d} + b_{ij}`
    per edge and head, ``[E, H]`` (``edge_kv`` ``[E, H, d]`` and ``bias`` ``[E, H]``
    optional).

    Example:
        >>> import torch
        >>> from graphformer.nn.kernels import edge_scores
        >>> edge_index = torch.tensor([[0, 1, 1], [1, 0, 1]])   # 0->1, 1->0, 1->1
        >>> q = k = torch.ones(2, 1, 4)                        # 2 nodes, 1 head, d = 4
        >>> edge_scores(q, k, edge_index).view(-1)             # 4 / sqrt(4) per edge
        tensor([2., 2., 2.])
    """
    src, dst = edge_index[0], edge_index[1]
    kj = k.index_select(0, src)
    if edge_kv is not None:
        kj = kj + edge_kv
    s = (q.index_select(0, dst) * kj).sum(-1) / math.sqrt(q.size(-1))
    return s if bias is None else s + bias


def edge_attention_reference(q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, *,
                             edge_kv: Optional[Tensor] = None,
                             bias: Optional[Tensor] = None,
                             dropout: float = 0.0, training: bool = False,
                             return_weights: bool = False
                             ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""The plain edge-wise kernel, in the form of PyG's ``TransformerConv``: gathers
    :math:`\mathbf{q}_i, \mathbf{k}_j, \mathbf{v}_j` per edge, PyG's segment ``softmax``,
    a scatter-sum. Autograd keeps the gathered ``[E, H, d]`` tensors for the backward
    pass. ``q`` is ``[N_dst, H, d]``, ``k, v`` are ``[N_src, H, d]`` (the same nodes
    unless the graph is bipartite), ``edge_index`` is ``[2, E]`` (source, target),
    ``edge_kv`` ``[E, H, d]`` is added to the key and to the value of each message and
    ``bias`` ``[E, H]`` to its score; returns ``[N_dst, H, d]`` (and the attention
    weights ``[E, H]`` when ``return_weights``). :func:`edge_attention` computes the same
    with far less memory; this one is the reference the tests hold it to.

    Example:
        >>> import torch
        >>> from graphformer.nn.kernels import edge_attention_reference
        >>> edge_index = torch.tensor([[0, 1, 1], [1, 0, 1]])   # 0->1, 1->0, 1->1
        >>> q = k = torch.ones(2, 1, 4)
        >>> v = torch.arange(8.).view(2, 1, 4)
        >>> out, weights = edge_attention_reference(q, k, v, edge_index, return_weights=True)
        >>> out[1, 0], weights.view(-1)        # node 1 averages the values of 0 and 1
        (tensor([2., 3., 4., 5.]), tensor([0.5000, 1.0000, 0.5000]))
    """
    num_nodes = q.size(0)
    src, dst = edge_index[0], edge_index[1]
    alpha = softmax(edge_scores(q, k, edge_index, edge_kv, bias), dst, num_nodes=num_nodes)
    weights = alpha
    if dropout > 0.0 and training:
        alpha = F.dropout(alpha, p=dropout, training=True)
    vj = v.index_select(0, src)
    if edge_kv is not None:
        vj = vj + edge_kv
    out = scatter(vj * alpha.unsqueeze(-1), dst, dim=0, dim_size=num_nodes, reduce="sum")
    return (out, weights) if return_weights else out


#: Edges per chunk are chosen so that one gathered ``[chunk, H, d]`` buffer holds about
#: this many bytes: small enough that the two reused buffers stay near the cache and
#: add little to peak memory, large enough that the per-chunk overhead (Python, and
#: one OpenMP parallel region per op) does not matter. On CPU with one thread, 1 and
#: 4 MiB ran equally fast and 16 or 64 MiB 8-10% slower (1024 binary trees of depth 4,
#: width 64). With several threads (``"cpu-threads"``) every op is a parallel region
#: that waits for all its threads, about one scheduler time slice each when other
#: jobs hold the cores: there the step's time follows its number of ops, and one
#: chunk (up to 32 MiB per buffer) ran in half the time of 4 MiB chunks
#: (docs/results_speed.md).
CHUNK_BYTES = {"cpu": 1 << 22, "cpu-threads": 1 << 25, "cuda": 1 << 28}


def _chunks(num_edges: int, chunk: int):
    return [(a, min(a + chunk, num_edges)) for a in range(0, num_edges, chunk)] or [(0, 0)]


class _EdgeAttention(torch.autograd.Function):
    r"""Edge-wise attention that saves only ``q, k, v`` (and the edge terms it was
    given) and the weights ``[E, H]`` for the backward pass and recomputes the per-edge
    gathers there, in chunks of edges written into two reused buffers (SDDMM for the
    scores, SpMM for the weighted sum, both as gather + in-place product +
    ``index_add_``). With the softmax Jacobian folded in as in FlashAttention,

    .. math::
        \frac{\partial L}{\partial s_{ij}} = \alpha_{ij}\Big(\frac{\partial L}
        {\partial \alpha_{ij}} - \sum_{j'} \alpha_{ij'} \frac{\partial L}
        {\partial \alpha_{ij'}}\Big),

    which is also the gradient of the additive score ``bias``; the edge term
    :math:`\mathbf{e}_{ij}` (``ekv``) gets :math:`\alpha_{ij}\,\partial L/\partial
    \mathbf{o}_i` through the value and :math:`\partial L/\partial s_{ij}\,
    \mathbf{q}_i/\sqrt{d}` through the key.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, src: Tensor, dst: Tensor,
                keep: Optional[Tensor], chunk: int, ekv: Optional[Tensor],
                bias: Optional[Tensor]) -> Tensor:
        # The dtypes as given: autocast (which has no out= variants) stays outside.
        with torch.autocast(q.device.type, enabled=False):
            Nq, H, C = q.shape
            Nk = k.size(0)
            E = src.numel()
            # Gathers and index_add_ on flat [*, H * C] rows (faster than on [*, H, C]).
            qf, kf, vf = q.view(Nq, H * C), k.view(Nk, H * C), v.view(Nk, H * C)
            ef = None if ekv is None else ekv.view(E, H * C)
            # The 1/sqrt(d) scale rides on the vector that sums each head's channels.
            scale = q.new_full((C,), 1.0 / math.sqrt(C))
            buf1, buf2 = q.new_empty(min(chunk, E), H * C), q.new_empty(min(chunk, E), H * C)
            s = q.new_empty(E, H)
            for a, b in _chunks(E, chunk):
                kj = torch.index_select(kf, 0, src[a:b], out=buf1[:b - a])
                if ef is not None:
                    kj.add_(ef[a:b])
                qi = torch.index_select(qf, 0, dst[a:b], out=buf2[:b - a])
                torch.matmul(kj.mul_(qi).view(b - a, H, C), scale, out=s[a:b])
            if bias is not None:
                s.add_(bias)
            # Segment softmax over each target's incoming edges; every target that has an
            # edge has a maximum, so no -inf - -inf and no division by zero (unless the
            # scores themselves are not finite: then, as in PyG's softmax, the rows that
            # see them are NaN, and only those). (Uninitialised buffers with
            # scatter_reduce_(include_self=False) would save the fills but ran 2-3x
            # slower than a fill and index_add_ on CPU.)
            smax = q.new_full((Nq, H), float("-inf")).scatter_reduce_(
                0, dst.view(-1, 1).expand(E, H), s, "amax")
            alpha = s.sub_(smax.index_select(0, dst)).exp_()
            denom = q.new_zeros(Nq, H).index_add_(0, dst, alpha)
            alpha.div_(denom.index_select(0, dst))
            weights = alpha if keep is None else alpha * keep
            out = q.new_zeros(Nq, H * C)
            for a, b in _chunks(E, chunk):
                vj = torch.index_select(vf, 0, src[a:b], out=buf1[:b - a])
                if ef is not None:
                    vj.add_(ef[a:b])
                vj.view(b - a, H, C).mul_(weights[a:b].unsqueeze(-1))
                out.index_add_(0, dst[a:b], vj)
            ctx.save_for_backward(q, k, v, src, dst, alpha, keep, ekv)
            ctx.chunk = chunk
            ctx.has_bias = bias is not None
            return out.view(Nq, H, C)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, src, dst, alpha, keep, ekv = ctx.saved_tensors
        with torch.autocast(grad_out.device.type, enabled=False):
            chunk = ctx.chunk
            Nq, H, C = q.shape
            Nk = k.size(0)
            E = src.numel()
            qf, kf, vf = q.view(Nq, H * C), k.view(Nk, H * C), v.view(Nk, H * C)
            ef = None if ekv is None else ekv.view(E, H * C)
            gf = grad_out.reshape(Nq, H * C).contiguous()
            ones = q.new_ones(C)
            buf1, buf2 = q.new_empty(min(chunk, E), H * C), q.new_empty(min(chunk, E), H * C)
            weights = alpha if keep is None else alpha * keep
            grad_w = q.new_empty(E, H)  # dL/d(weights)
            grad_v = q.new_zeros(Nk, H * C)
            grad_e = None if ef is None else q.new_empty(E, H * C)
            for a, b in _chunks(E, chunk):
                # With edge features, the value's gradient alpha * dL/do_i is also the
                # edge term's (value side): gathered straight into its rows.
                go = torch.index_select(gf, 0, dst[a:b],
                                        out=buf1[:b - a] if grad_e is None else grad_e[a:b])
                vj = torch.index_select(vf, 0, src[a:b], out=buf2[:b - a])
                if ef is not None:
                    vj.add_(ef[a:b])
                torch.matmul(vj.mul_(go).view(b - a, H, C), ones, out=grad_w[a:b])
                go.view(b - a, H, C).mul_(weights[a:b].unsqueeze(-1))
                grad_v.index_add_(0, src[a:b], go)
            grad_alpha = grad_w if keep is None else grad_w.mul_(keep)
            delta = q.new_zeros(Nq, H).index_add_(0, dst, alpha * grad_alpha)
            grad_s = grad_alpha.sub_(delta.index_select(0, dst)).mul_(alpha)  # dL/ds
            grad_bias = grad_s.clone() if ctx.has_bias else None
            # The scale on [E, H] (index_add_'s alpha= would scale every [E, H*d] row).
            grad_s.mul_(1.0 / math.sqrt(C))
            grad_q, grad_k = q.new_zeros(Nq, H * C), q.new_zeros(Nk, H * C)
            for a, b in _chunks(E, chunk):
                gs = grad_s[a:b].unsqueeze(-1)
                kj = torch.index_select(kf, 0, src[a:b], out=buf1[:b - a])
                if ef is not None:
                    kj.add_(ef[a:b])
                kj.view(b - a, H, C).mul_(gs)
                grad_q.index_add_(0, dst[a:b], kj)
                qi = torch.index_select(qf, 0, dst[a:b], out=buf2[:b - a])
                qi.view(b - a, H, C).mul_(gs)
                grad_k.index_add_(0, src[a:b], qi)
                if grad_e is not None:
                    grad_e[a:b].add_(qi)
            return (grad_q.view(Nq, H, C), grad_k.view(Nk, H, C), grad_v.view(Nk, H, C),
                    None, None, None, None,
                    None if grad_e is None else grad_e.view(E, H, C), grad_bias)


def edge_attention(q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, *,
                   edge_kv: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                   dropout: float = 0.0, training: bool = False,
                   return_weights: bool = False,
                   chunk: Optional[int] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""The edge-wise kernel on any graph: ``q`` is ``[N_dst, H, d]``, ``k, v`` are
    ``[N_src, H, d]``, ``edge_index`` is ``[2, E]`` (source, target), the optional
    ``edge_kv`` ``[E, H, d]`` is added to the key and the value of each message and
    ``bias`` ``[E, H]`` to its score; returns ``[N_dst, H, d]`` (and the attention
    weights ``[E, H]`` when ``return_weights``).

    Equal to :func:`edge_attention_reference` (outputs and gradients), but it never
    keeps the gathered ``[E, H, d]`` tensors: only ``q, k, v`` (and ``edge_kv``) and
    the ``[E, H]`` weights are saved, and the gathers are redone in the backward pass,
    ``chunk`` edges at a time (by default about 4 MiB of gathered features on CPU with
    one thread, 32 MiB with more: see :data:`CHUNK_BYTES`).
    Under ``torch.compile`` and with ``return_weights`` it runs the reference (whose ops
    the compiler fuses itself). Its backward is not differentiable again: double
    backward raises an error, use :func:`edge_attention_reference` for that.

    Example:
        >>> import torch
        >>> from graphformer.nn.kernels import edge_attention, edge_attention_reference
        >>> edge_index = torch.tensor([[0, 1, 1], [1, 0, 1]])   # 0->1, 1->0, 1->1
        >>> q = k = torch.ones(2, 1, 4)
        >>> v = torch.arange(8.).view(2, 1, 4)
        >>> out = edge_attention(q, k, v, edge_index)
        >>> out[:, 0], torch.equal(out, edge_attention_reference(q, k, v, edge_index))
        (tensor([[4., 5., 6., 7.],
                [2., 3., 4., 5.]]), True)
    """
    extra = [t for t in (edge_kv, bias) if t is not None]
    if (return_weights or torch.compiler.is_compiling()
            or any(t.dtype != q.dtype for t in [k, v, *extra])):
        return edge_attention_reference(q, k, v, edge_index, edge_kv=edge_kv, bias=bias,
                                        dropout=dropout, training=training,
                                        return_weights=return_weights)
    # Rows may be strided (q, k, v as views of one fused projection): only the last
    # two dimensions must be contiguous for the flat [N, H * d] views of the kernel.
    q, k, v = (t if t.stride(-1) == 1 and t.stride(-2) == t.size(-1) else t.contiguous()
               for t in (q, k, v))
    if edge_kv is not None:
        edge_kv = edge_kv.contiguous()
    keep = None
    if dropout > 0.0 and training:
        # The mask F.dropout draws on CPU: Bernoulli(1 - p) / (1 - p) per edge and head.
        keep = torch.empty(edge_index.size(1), q.size(1), dtype=q.dtype,
                           device=q.device).bernoulli_(1.0 - dropout).div_(1.0 - dropout)
    if chunk is None:
        row_bytes = q.size(1) * q.size(2) * q.element_size()
        key = q.device.type
        if key == "cpu" and torch.get_num_threads() > 1:
            key = "cpu-threads"
        chunk = max(1, CHUNK_BYTES.get(key, CHUNK_BYTES["cuda"]) // row_bytes)
    src, dst = edge_index[0].long(), edge_index[1].long()
    return _EdgeAttention.apply(q, k, v, src, dst, keep, int(chunk), edge_kv, bias)


def _scatter_rows(x: Tensor, index: Tensor, rows: int) -> Tensor:
    r"""Rows ``[N, ...]`` of ``x`` into a zero ``[rows, ...]`` tensor at ``index`` (one
    ``index_copy_``)."""
    return x.new_zeros(rows, *x.shape[1:]).index_copy_(0, index, x)


def _heads_to_padded(x: Tensor, index: Tensor, B: int, T: int) -> Tensor:
    r"""``[N, H, d]`` rows to the ``[B, H, T, d]`` layout at the graph's ``dense_index``."""
    return _scatter_rows(x, index, B * T).view(B, T, *x.shape[1:]).transpose(1, 2)


def _padded_to_heads(x: Tensor, index: Tensor) -> Tensor:
    r"""The inverse of :func:`_heads_to_padded`: ``[B, H, T, d]`` to the ``[N, H, d]``
    rows (one ``index_select``)."""
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B * T, H, d).index_select(0, index)


class _ToPadded(torch.autograd.Function):
    r"""Rows ``[N, ...]`` into a zero ``[R, ...]`` layout at ``index``; saves only the
    index (autograd's ``index_copy`` keeps its source alive: for ``q, k, v`` as views
    of one fused projection, the whole ``[N, 3 H d]`` projection per layer)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, rows: int) -> Tensor:
        ctx.save_for_backward(index)
        return _scatter_rows(x, index, rows)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def _padded_heads(graph: CausalGraph, t: Tensor) -> Tensor:
    # [N, H, d] -> [B, H, T, d]
    B, T = graph.num_sequences, graph.max_length
    if graph.is_uniform or torch.compiler.is_compiling():
        return graph.to_padded(t).transpose(1, 2)
    return _ToPadded.apply(t, graph.dense_index, B * T).view(B, T, *t.shape[1:]).transpose(1, 2)


def _unpadded_heads(graph: CausalGraph, t: Tensor) -> Tensor:
    # [B, H, T, d] -> [N, H, d]
    return graph.from_padded(t.transpose(1, 2))


def _complete(graph: CausalGraph) -> bool:
    r"""``True`` when each sequence is a complete graph (every node sees every node of
    its sequence) and none is empty: only the padded keys need a mask."""
    if torch.compiler.is_compiling():  # no host sync inside a compiled graph
        return False
    return (graph.is_dense and not graph.causal and graph.num_nodes > 0
            and bool((graph.lengths > 0).all()))


def _real_keys(graph: CausalGraph) -> Tensor:
    r"""``[B, 1, 1, T]``: which padded positions hold a node."""
    B, T = graph.num_sequences, graph.max_length
    pos = torch.arange(T, device=graph.device)
    return (pos < graph.lengths.unsqueeze(1)).view(B, 1, 1, T)


def _key_bias(graph: CausalGraph, dtype: torch.dtype) -> Tensor:
    r"""``[B, 1, 1, T]``: 0 at the positions that hold a node, ``-inf`` in padding."""
    keys = _real_keys(graph)
    return torch.zeros(keys.shape, dtype=dtype, device=keys.device).masked_fill_(
        ~keys, float("-inf"))


class _CompleteFlash(torch.autograd.Function):
    r"""SDPA's fused CPU kernel (the one ``F.scaled_dot_product_attention`` runs) on
    the padded layout of complete graphs, with
    the ``[B, 1, 1, T]`` key-padding ``key_bias``: the same forward and backward ops,
    but it keeps the output's ``[N, H, d]`` rows (the tensor the next layer keeps too)
    instead of the padded output, and pads them again in the backward pass. The padded
    rows' output never matters there: their output gradient is 0."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, index: Tensor, B: int, T: int,
                key_bias: Tensor) -> Tensor:
        qp, kp, vp = (_heads_to_padded(x, index, B, T) for x in (q, k, v))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            qp, kp, vp, 0.0, False, attn_mask=key_bias)
        rows = _padded_to_heads(out, index)
        ctx.save_for_backward(qp, kp, vp, rows, lse, index, key_bias)
        ctx.B, ctx.T = B, T
        return rows

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        qp, kp, vp, rows, lse, index, key_bias = ctx.saved_tensors
        out, g = (_heads_to_padded(x, index, ctx.B, ctx.T) for x in (rows, grad))
        gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            g, qp, kp, vp, out, lse, 0.0, False, attn_mask=key_bias)
        return (_padded_to_heads(gq, index), _padded_to_heads(gk, index),
                _padded_to_heads(gv, index), None, None, None, None)


def _masked_rows(graph: CausalGraph) -> Tuple[Tensor, Optional[Tensor]]:
    r"""The dense mask with empty rows opened (so no kernel sees a row of -inf) and the
    ``[B, 1, T, 1]`` indicator of rows that really have a key (``None`` if all do)."""
    mask = graph.dense_mask()
    has_key = mask.any(-1)
    if bool(has_key.all()):
        return mask, None
    mask = mask | ~has_key.unsqueeze(-1)
    return mask, has_key.view(mask.size(0), 1, mask.size(1), 1)


def dense_bias(graph: CausalGraph, bias: Tensor, edge_index: Tensor) -> Tensor:
    r"""The per-edge ``bias`` ``[E, H]`` (rows in the order of ``edge_index``) on the
    padded layout, ``[B, H, T, T]``, 0 at every pair that is not an edge. Autograd
    carries the gradient back to ``bias``.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn.kernels import dense_bias
        >>> graph = CausalGraph.from_lengths([2, 3])
        >>> bias = torch.ones(graph.num_edges, 1)              # one head
        >>> dense_bias(graph, bias, graph.edge_index)[1, 0]    # sequence 1: causal pairs
        tensor([[1., 0., 0.],
                [1., 1., 0.],
                [1., 1., 1.]])
    """
    B, T, H = graph.num_sequences, graph.max_length, bias.size(1)
    out = bias.new_zeros(B * T * T, H)
    out = out.index_put((graph.pair_index(edge_index),), bias, accumulate=True)
    return out.view(B, T, T, H).permute(0, 3, 1, 2)


def dropout_keep(shape, p: float, device: torch.device) -> Tensor:
    r"""The keep mask of dropout with probability ``p``: a boolean tensor of ``shape``,
    each entry ``True`` with probability ``1 - p``: a uniform 31-bit integer draw
    :math:`r` compared with :math:`c = \mathrm{round}(p\,2^{31})`, kept when
    :math:`r \ge c`, i.e. with probability :math:`1 - c / 2^{31}` (``1 - p`` within
    :math:`2^{-32}`, exactly for ``p = 0.5``: the Bernoulli distribution of
    :func:`torch.nn.functional.dropout`'s mask, more finely than a float32 uniform draw
    compared with ``p``, whose steps are :math:`2^{-24}`). On CPU (one thread, ``[256,
    26, 26]``) it took 0.7x the time of that float draw and a fifth of ``bernoulli_``'s."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    threshold = int(round(p * 2 ** 31))
    return torch.empty(shape, dtype=torch.int32, device=device).random_().ge_(threshold).bool()


def _pad(x: Tensor, index: Tensor, B: int, T: int) -> Tensor:
    r"""Rows ``[N, H, d]`` into a zero ``[B * H, T, d]`` layout at ``index``, the
    graph's :meth:`~graphformer.graph.CausalGraph.head_index`: one ``index_copy_`` of
    ``N * H`` contiguous rows of ``d`` (an indexed copy at ``(batch, :, position)``
    took 1.4x the time)."""
    N, H, d = x.shape
    return _scatter_rows(x.reshape(N * H, d), index, B * H * T).view(B * H, T, d)


def _unpad(x: Tensor, index: Tensor, H: int) -> Tensor:
    r"""The inverse of :func:`_pad`: ``[B * H, T, d]`` to the ``[N, H, d]`` rows, one
    ``index_select`` (an indexed read at ``(batch, :, position)`` took 6x the time)."""
    d = x.size(-1)
    return x.reshape(-1, d).index_select(0, index).view(-1, H, d)


class _PaddedAttention(torch.autograd.Function):
    r"""Attention on the padded ``[B, H, T, d]`` layout with attention dropout, for
    training where SDPA leaves its fused kernels (it has no dropout on CPU) for its math
    path. From the ``[N, H, d]`` rows it builds the padded ``q, k, v`` in one indexed
    copy each, and computes

    .. math::
        \mathbf{O} = \frac{1}{1 - p}\,(\mathbf{A} \odot \mathbf{K}_{eep})\,\mathbf{V},
        \qquad \mathbf{A} = \operatorname{softmax}\Big(\frac{\mathbf{Q}\mathbf{K}^\top}
        {\sqrt{d}} + \mathbf{M}\Big)

    with the additive mask :math:`\mathbf{M}` (0 where a key is allowed, ``-inf``
    elsewhere) fused into the score product when it only masks keys (each graph's
    complete graph: ``key_bias`` ``[B, T]``), or filled in after it (``mask`` ``[B, T,
    T]``). It keeps only ``q, k, v``, the weights :math:`\mathbf{A}` and the boolean keep
    mask for the backward pass (the math path keeps the scores' dropout noise and the
    dropped weights too), and returns the ``[N, H, d]`` rows. Rows of padding never
    reach the output."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, index: Tensor, B: int, T: int,
                key_bias: Optional[Tensor], mask: Optional[Tensor], p: float) -> Tensor:
        N, H, d = q.shape
        scale = 1.0 / math.sqrt(d)
        qp, kp, vp = (_pad(x, index, B, T) for x in (q, k, v))
        kt = kp.transpose(1, 2)
        if key_bias is not None:  # [B, T] -> [B * H, 1, T]: broadcast over the queries
            bias = key_bias.unsqueeze(1).expand(B, H, T).reshape(B * H, 1, T)
            s = torch.baddbmm(bias, qp, kt, alpha=scale)
        else:
            s = torch.bmm(qp, kt).mul_(scale)
            s.view(B, H, T, T).masked_fill_(~mask.unsqueeze(1), float("-inf"))
        attn = torch.softmax(s, dim=-1)
        del s
        keep = dropout_keep(attn.shape, p, attn.device)
        out = torch.bmm(attn * keep, vp).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(qp, kp, vp, attn, keep, index)
        ctx.sizes = (B, H, T, d, scale, p)
        return _unpad(out, index, H)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        qp, kp, vp, attn, keep, index = ctx.saved_tensors
        B, H, T, d, scale, p = ctx.sizes
        g = _pad(grad_out.mul(1.0 / (1.0 - p)), index, B, T)
        grad_v = torch.bmm((attn * keep).transpose(1, 2), g)
        grad_w = torch.bmm(g, vp.transpose(1, 2)).mul_(keep)
        grad_s = torch._softmax_backward_data(grad_w, attn, -1, attn.dtype)
        del grad_w
        grad_q = torch.bmm(grad_s, kp).mul_(scale)
        grad_k = torch.bmm(grad_s.transpose(1, 2), qp).mul_(scale)
        return (_unpad(grad_q, index, H), _unpad(grad_k, index, H), _unpad(grad_v, index, H),
                None, None, None, None, None, None)


def padded_attention(q: Tensor, k: Tensor, v: Tensor, graph: CausalGraph, *,
                     dropout: float) -> Tensor:
    r"""Attention with dropout on the padded layout of ``graph`` (no score bias):
    ``q, k, v`` ``[N, H, d]``, returns ``[N, H, d]``. Equal in distribution to SDPA's
    math path with ``dropout_p`` (the same weights, the same Bernoulli keep mask), with
    fewer passes over the ``[B, H, T, T]`` weights, a cheaper draw of the mask and less
    memory kept for the backward pass. Rows with no allowed key give 0."""
    B, T = graph.num_sequences, graph.max_length
    key_bias = mask = has_key = None
    if _complete(graph):  # only padding is masked, and every node has a key (itself)
        key_bias = _key_bias(graph, q.dtype).view(B, T)
    else:
        mask, has_key = _masked_rows(graph)
    out = _PaddedAttention.apply(q, k, v, graph.head_index(q.size(1)), B, T, key_bias,
                                 mask, float(dropout))
    if has_key is not None:
        rows = has_key.view(B, T)[graph.batch, graph.position].view(-1, 1, 1)  # [N, 1, 1]
        out = torch.where(rows, out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, graph: CausalGraph, *,
                   bias: Optional[Tensor] = None, edge_index: Optional[Tensor] = None,
                   dropout: float = 0.0, training: bool = False) -> Tensor:
    r"""Fused SDPA on the padded layout: ``is_causal`` when the graph is dense causal,
    a boolean mask otherwise, a float mask (``-inf`` off the graph, the bias on it) when
    a per-edge score ``bias`` ``[E, H]`` is given (rows in the order of ``edge_index``,
    by default ``graph.edge_index``). ``q, k, v``: ``[N, H, d]``; returns ``[N, H, d]``.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn.kernels import edge_attention, sdpa_attention
        >>> graph = CausalGraph.from_lengths([2, 3])           # 5 nodes, 2 sequences
        >>> q, k, v = torch.randn(3, 5, 2, 4).unbind(0)        # [N, H, d] each
        >>> out = sdpa_attention(q, k, v, graph)
        >>> out.shape, torch.allclose(out, edge_attention(q, k, v, graph.edge_index), atol=1e-6)
        (torch.Size([5, 2, 4]), True)
    """
    p = dropout if training else 0.0
    if (p > 0.0 and bias is None and q.device.type == "cpu"
            and not torch.compiler.is_compiling()):
        # SDPA has no fused kernel with dropout on CPU (its math path keeps four
        # [B, H, T, T] tensors); the same computation in fewer passes and less memory
        # (on CUDA, SDPA's fused kernels carry dropout themselves)
        return padded_attention(q, k, v, graph, dropout=p)
    complete = bias is None and _complete(graph)
    if complete and q.device.type == "cpu" and p == 0.0 and not torch.compiler.is_compiling():
        return _CompleteFlash.apply(q, k, v, graph.dense_index, graph.num_sequences,
                                    graph.max_length, _key_bias(graph, q.dtype))
    qp, kp, vp = (_padded_heads(graph, t) for t in (q, k, v))
    # Right padding never leaks into real rows under the causal rule (padded keys come
    # after every real query), so the unmasked causal kernel stays exact with padding.
    if bias is None and graph.is_dense and (graph.causal or graph.is_uniform):
        out = F.scaled_dot_product_attention(qp, kp, vp, dropout_p=p, is_causal=graph.causal)
        return _unpadded_heads(graph, out)
    if complete:  # only the padded keys are masked: [B, 1, 1, T], not [B, 1, T, T]
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=_real_keys(graph),
                                             dropout_p=p)
        return _unpadded_heads(graph, out)
    mask, has_key = _masked_rows(graph)
    if bias is None:
        attn_mask = mask.unsqueeze(1)
    else:
        edge_index = graph.edge_index if edge_index is None else edge_index
        # 0 at every allowed pair (and in opened empty rows), -inf elsewhere, plus the
        # bias on the edges.
        attn_mask = dense_bias(graph, bias, edge_index).masked_fill(
            ~mask.unsqueeze(1), float("-inf"))
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=attn_mask, dropout_p=p)
    if has_key is not None:
        out = torch.where(has_key, out, torch.zeros((), dtype=out.dtype, device=out.device))
    return _unpadded_heads(graph, out)


_compiled_flex = None


def _flex():
    global _compiled_flex
    if _compiled_flex is None:
        from torch.nn.attention.flex_attention import flex_attention as flex
        _compiled_flex = torch.compile(flex, dynamic=False)
    return _compiled_flex


def flex_attention(q: Tensor, k: Tensor, v: Tensor, graph: CausalGraph, *,
                   bias: Optional[Tensor] = None,
                   edge_index: Optional[Tensor] = None) -> Tensor:
    r"""FlexAttention with the graph's ``BlockMask``; rows with no key give 0. A
    per-edge score ``bias`` ``[E, H]`` (rows in the order of ``edge_index``, by default
    ``graph.edge_index``) becomes a ``score_mod`` that adds it to each score."""
    qp, kp, vp = (_padded_heads(graph, t) for t in (q, k, v))
    score_mod = None
    if bias is not None:
        table = dense_bias(graph, bias, graph.edge_index if edge_index is None else edge_index)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[b, h, q_idx, kv_idx]
    out = _flex()(qp, kp, vp, score_mod=score_mod, block_mask=graph.block_mask())
    return _unpadded_heads(graph, out)


#: Why ``"auto"`` runs the edge-wise kernel when messages carry edge features.
EDGE_FEATURES_REASON = (
    "edge features (edge_attr) change the value of each message, and the fused SDPA and "
    "FlexAttention kernels never expose the attention weights that multiply it; a dense "
    "per-pair [B, T, T, H, d] edge tensor with plain masked attention took 1.6 to 4.8x "
    "the time and 1.6 to 3.2x the peak memory of the edge-wise kernel on dense causal "
    "graphs of T = 16, 64 and 256 (CPU, docs/results_speed.md)")


def choose_kernel(graph: Union[Tensor, CausalGraph], device: torch.device,
                  kernel: str = "auto", *, needs_grad: bool = False,
                  dropout: float = 0.0, edge_features: bool = False,
                  bipartite: bool = False, reason: bool = False
                  ) -> Union[str, Tuple[str, str]]:
    r"""The kernel that runs ``kernel`` (``"auto"`` picks the fastest exact one) on
    ``graph``, or a :class:`ValueError` that says why a forced kernel cannot run and
    which one can. With ``reason=True``, returns ``(kernel, why)``.

    Only the edge-wise kernel carries edge features (``edge_features``) and bipartite
    graphs; every kernel carries an additive score bias.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn.kernels import choose_kernel
        >>> graph, cpu = CausalGraph.from_lengths([2, 3]), torch.device("cpu")
        >>> choose_kernel(graph, cpu), choose_kernel(graph, cpu, edge_features=True)
        ('sdpa', 'edge')
        >>> choose_kernel(graph.edge_index, cpu, reason=True)[1]
        'a plain edge_index has no sequences (pass a CausalGraph or batch= for the fused kernels)'
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    is_graph = isinstance(graph, CausalGraph)
    if kernel == "auto":
        if bipartite:
            return _why("edge", "a bipartite graph has no sequences", reason)
        if edge_features:
            return _why("edge", EDGE_FEATURES_REASON, reason)
        if not is_graph:
            return _why("edge", "a plain edge_index has no sequences (pass a CausalGraph "
                        "or batch= for the fused kernels)", reason)
        if graph.is_dense:
            return _why("sdpa", "dense causal (or full) sequences", reason)
        density = graph.num_edges / max(1, int((graph.lengths ** 2).sum()))
        if density < DENSE_MIN_DENSITY.get(device.type, DENSE_MIN_DENSITY["cuda"]):
            return _why("edge", f"only {density:.3g} of the padded pairs are edges, below "
                        "DENSE_MIN_DENSITY", reason)
        if (device.type == "cuda" and graph.max_length >= FLEX_MIN_LENGTH
                and dropout == 0.0):
            return _why("flex", "a structured mask on long sequences (CUDA)", reason)
        return _why("sdpa", "a structured mask, dense enough for masked SDPA", reason)
    if kernel in ("sdpa", "flex"):
        if edge_features:
            raise ValueError(
                f"kernel={kernel!r} cannot carry edge features (edge_attr): the edge term "
                "of each message's value needs its attention weight, which the fused "
                "kernels never expose; kernel='edge' (or 'auto') can")
        if bipartite:
            raise ValueError(f"kernel={kernel!r} cannot run on a bipartite (x_src, x_dst) "
                             "input; kernel='edge' (or 'auto') can")
        if not is_graph:
            raise ValueError(
                f"kernel={kernel!r} needs nodes grouped into sequences: pass a CausalGraph "
                "(e.g. CausalGraph.from_edge_index(edge_index, batch, causal=False)) or "
                "`batch=`; kernel='edge' runs on any edge_index")
    if kernel == "flex":
        if device.type != "cuda" and needs_grad:
            raise ValueError(
                "kernel='flex' cannot train on CPU: FlexAttention's backward is not "
                "implemented there (forward-only under torch.no_grad()); use kernel='sdpa'")
        if dropout > 0.0:
            raise ValueError("kernel='flex' has no attention dropout; use kernel='sdpa' "
                             "or set dropout=0")
    return _why(kernel, "forced", reason)


def _why(kernel: str, why: str, reason: bool) -> Union[str, Tuple[str, str]]:
    return (kernel, why) if reason else kernel


def all_finite(*tensors: Optional[Tensor]) -> bool:
    r"""``True`` when no tensor holds a NaN or an infinity, read from one fp32 sum per
    tensor (a NaN or an infinity makes the sum non-finite): one pass without a boolean
    temporary, 20x cheaper than ``isfinite(t).all()`` on CPU. A finite tensor whose sum
    overflows fp32 also reads as not finite, which only costs the exact fallback.

    Example:
        >>> import torch
        >>> from graphformer.nn.kernels import all_finite
        >>> all_finite(torch.ones(3), None), all_finite(torch.tensor([1.0, float("nan")]))
        (True, False)
    """
    total = None
    for t in tensors:
        if t is not None:
            part = t.sum(dtype=torch.float32)
            total = part if total is None else total + part
    return total is None or bool(torch.isfinite(total))


def quarantine(k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Without a host sync (for ``torch.compile``): ``k`` and ``v`` with every key row
    and head that holds a NaN or an infinity set to 0, and the ``[N, H]`` indicator of
    those (key, head) pairs.

    Example:
        >>> import torch
        >>> from graphformer.nn.kernels import quarantine
        >>> k = torch.ones(3, 1, 2)
        >>> k[1, 0, 0] = float("nan")                          # key 1 is bad in head 0
        >>> k, v, bad = quarantine(k, torch.ones(3, 1, 2))
        >>> k[1], bad.view(-1)
        (tensor([[0., 0.]]), tensor([False,  True, False]))
    """
    bad = ~(torch.isfinite(k).all(-1) & torch.isfinite(v).all(-1))
    zero = torch.zeros((), dtype=k.dtype, device=k.device)
    keep = ~bad.unsqueeze(-1)
    return torch.where(keep, k, zero), torch.where(keep, v, zero), bad


def sees(graph: CausalGraph, bad: Tensor) -> Tensor:
    r"""``[N, H]``: whether node ``i`` has an edge from a node ``j`` with ``bad[j, h]``
    (a cumulative sum along each sequence for dense causal graphs, a ``[B, T, T]`` mask
    product otherwise).

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn.kernels import sees
        >>> graph = CausalGraph.from_lengths([3])              # 0 -> 1 -> 2, causal
        >>> sees(graph, torch.tensor([[False], [True], [False]])).view(-1)
        tensor([False,  True,  True])
    """
    badp = graph.to_padded(bad.to(torch.float32))  # [B, T, H], 0 in padding
    if graph.is_dense:
        count = badp.cumsum(1) if graph.causal else badp.sum(1, keepdim=True).expand_as(badp)
    else:
        count = torch.bmm(graph.dense_mask().to(torch.float32), badp)
    return graph.from_padded(count > 0)


def attention(q: Tensor, k: Tensor, v: Tensor, graph: Union[Tensor, CausalGraph],
              kernel: str = "auto", *, edge_index: Optional[Tensor] = None,
              edge_kv: Optional[Tensor] = None, bias: Optional[Tensor] = None,
              bipartite: bool = False, dropout: float = 0.0,
              training: bool = False) -> Tensor:
    r"""The one dispatch function: attention of ``q`` (``[N_dst, H, d]``) over ``k, v``
    (``[N_src, H, d]``) along the incoming edges of ``graph`` with ``kernel`` (see
    :func:`choose_kernel`).

    ``edge_kv`` ``[E, H, d]`` (added to key and value) and ``bias`` ``[E, H]`` (added to
    the score) are per edge, in the order of ``edge_index``: by default the graph's own
    (``graph.edge_index`` for a :class:`CausalGraph`); a :class:`CausalGraph` built from
    a plain edge list may pass that list, in any order.

    **Masking is exact for non-finite inputs.** A key that a query may not see
    contributes nothing to it, even when its key or value holds a NaN or an infinity:
    the NaN reaches exactly the rows whose incoming edges carry it, as on the edge-wise
    kernel. The fused kernels multiply masked weights (0) by every value (0 * NaN =
    NaN), and SDPA on CPU returns a finite row for a NaN query, so before running one,
    a check of ``q``, ``k`` and ``v`` (:func:`all_finite`: one sum over each
    ``[N, H, d]`` tensor, about 0.1 ms each at B=8, T=256, 4 heads of 32 on one CPU
    thread, against about 30 ms for the layer's step) sends non-finite inputs to
    the edge-wise kernel, which only ever reads the edges of the graph. Under
    ``torch.compile`` the check would break the graph: there, bad keys and values are
    zeroed and every row that sees one, or whose own query is bad, is NaN in that head.

    Example:
        >>> import torch
        >>> from graphformer import CausalGraph
        >>> from graphformer.nn.kernels import attention
        >>> graph = CausalGraph.from_lengths([2, 3])           # 5 nodes, 2 sequences
        >>> q, k, v = torch.randn(3, 5, 2, 4).unbind(0)        # [N, H, d]: 2 heads of 4
        >>> out = attention(q, k, v, graph)                    # "auto": SDPA here
        >>> out.shape, torch.allclose(out, attention(q, k, v, graph, "edge"), atol=1e-6)
        (torch.Size([5, 2, 4]), True)
    """
    bipartite = bipartite or k.size(0) != q.size(0)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, edge_kv, bias) if t is not None)
    kernel = choose_kernel(graph, q.device, kernel, needs_grad=needs_grad,
                           dropout=dropout if training else 0.0,
                           edge_features=edge_kv is not None, bipartite=bipartite)
    bad = bad_query = None
    if kernel != "edge":
        if torch.compiler.is_compiling():
            k, v, bad = quarantine(k, v)
            bad_query = ~torch.isfinite(q).all(-1)
        elif not all_finite(q, k, v):
            kernel = "edge"
    if kernel == "edge":
        if edge_index is None:
            edge_index = graph.edge_index if isinstance(graph, CausalGraph) else graph
        return edge_attention(q, k, v, edge_index, edge_kv=edge_kv, bias=bias,
                              dropout=dropout, training=training)
    if kernel == "sdpa":
        out = sdpa_attention(q, k, v, graph, bias=bias, edge_index=edge_index,
                             dropout=dropout, training=training)
    else:
        out = flex_attention(q, k, v, graph, bias=bias, edge_index=edge_index)
    if bad is not None:
        # a row is NaN in a head when it sees a bad key or value there, or when its own
        # query is bad and it has a key at all (SDPA would swallow a NaN query)
        poisoned = sees(graph, bad) | (bad_query & sees(graph, torch.ones_like(bad)))
        nan = torch.full((), float("nan"), dtype=out.dtype, device=out.device)
        out = torch.where(poisoned.unsqueeze(-1), nan, out)
    return out
