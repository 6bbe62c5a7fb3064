r"""Layers and kernels: every attention kernel equals the edge-wise reference (outputs
and gradients), the fused paths equal SDPA and PyG's TransformerConv, layers are
permutation-equivariant, PyG layers run on a CausalGraph, and bad input is refused."""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, GatedGraphConv, TransformerConv
from torch_geometric.testing import get_random_edge_index
from torch_geometric.utils import scatter

from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv, DeepSetsConv, FeedForward, call_conv, kernels
from graphformer.nn.conv import rotary_embedding

SETTINGS = settings(max_examples=15, deadline=None)
ATOL = 1e-5
KINDS = ("dense", "window", "documents", "dag", "full")


# ---------------------------------------------------------------------- helpers
def make_graph(kind: str, lengths, seed: int = 0) -> CausalGraph:
    r"""Dense causal, sliding-window, document-packed, random-DAG or full graphs."""
    gen = torch.Generator().manual_seed(seed)
    graph = CausalGraph.from_lengths(lengths, causal=kind != "full")
    if kind == "window":
        graph = graph.with_window(3)
    elif kind == "documents":
        starts = (torch.rand(graph.num_nodes, generator=gen) < 0.3).long()
        graph = graph.with_documents(starts.cumsum(0))
    elif kind == "dag":
        ei = graph.edge_index
        keep = torch.rand(ei.size(1), generator=gen) < 0.5
        graph = CausalGraph.from_edge_index(ei[:, keep], graph.batch)
    return graph


@pytest.fixture
def eager_flex(monkeypatch):
    r"""FlexAttention without ``torch.compile``: the same mask semantics (BlockMask +
    ``mask_mod``) in PyTorch's unfused implementation, fast on tiny CPU graphs. The
    compiled kernel is checked once in :func:`test_flex_compiled` (slow)."""
    from torch.nn.attention.flex_attention import flex_attention
    monkeypatch.setattr(kernels, "_compiled_flex", flex_attention)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(conv, x, graph, kernel=None, grad_out=None):
    r"""Output, and the gradients w.r.t. ``x`` and every weight of ``(out * grad_out).sum()``."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = conv(x, graph, kernel=kernel)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    grads = {name: p.grad.clone() for name, p in conv.named_parameters()}
    return out.detach(), x.grad, grads, grad_out


def reference(conv, x, graph, grad_out):
    r"""The layer's math on the plain edge-wise reference kernel."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    q, k, v = conv.project(x, graph)
    ei = graph.edge_index if isinstance(graph, CausalGraph) else graph
    out = conv.combine(kernels.edge_attention_reference(q, k, v, ei), x)
    (out * grad_out).sum().backward()
    grads = {name: p.grad.clone() for name, p in conv.named_parameters()}
    return out.detach(), x.grad, grads


def assert_same(got, want):
    out, gx, gw = got[:3]
    rout, rgx, rgw = want[:3]
    torch.testing.assert_close(out, rout, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx, rgx, atol=ATOL, rtol=0)
    assert gw.keys() == rgw.keys()
    for name in gw:
        torch.testing.assert_close(gw[name], rgw[name], atol=ATOL, rtol=0, msg=name)


def permute(x, edge_index, perm):
    r"""Node features and edges after relabelling node ``perm[n]`` as ``n``."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return x[perm], inv[edge_index]


# ---------------------------------------------------------------------- kernels agree
@SETTINGS
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       kind=st.sampled_from(KINDS), heads=st.integers(1, 3), concat=st.booleans(),
       root_weight=st.booleans(), rotary=st.booleans(), seed=st.integers(0, 2**16))
def test_kernels_equal_reference(lengths, kind, heads, concat, root_weight, rotary, seed):
    torch.manual_seed(seed)
    graph = make_graph(kind, lengths, seed)
    conv = AttentionConv(6, 4, heads=heads, concat=concat, root_weight=root_weight,
                         rotary=rotary)
    x = torch.randn(graph.num_nodes, 6)
    ref = None
    for kernel in ("auto", "edge", "sdpa"):
        got = run(conv, x, graph, kernel, None if ref is None else grad_out)
        if ref is None:
            grad_out = got[3]
            ref = reference(conv, x, graph, grad_out)
        assert_same(got, ref)
        assert torch.isfinite(got[0]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_flex_equals_reference(kind, eager_flex):
    torch.manual_seed(0)
    graph = make_graph(kind, [5, 9, 2, 7])
    conv = AttentionConv(6, 4, heads=2, rotary=True)
    x = torch.randn(graph.num_nodes, 6)
    bias = torch.randn(graph.num_edges, 2)  # the score bias as a compiled score_mod
    with torch.no_grad():
        torch.testing.assert_close(conv(x, graph, kernel="flex"),
                                   conv(x, graph, kernel="edge"), atol=ATOL, rtol=0)
        torch.testing.assert_close(conv(x, graph, attn_bias=bias, kernel="flex"),
                                   conv(x, graph, attn_bias=bias, kernel="edge"),
                                   atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GRAPHFORMER_FAST_TESTS") == "1",
                    reason="GRAPHFORMER_FAST_TESTS=1: compiling FlexAttention on CPU takes "
                           "5-35 s (test_flex_equals_reference checks the same masks with "
                           "the uncompiled kernel)")
def test_flex_compiled():
    torch.manual_seed(0)
    graph = make_graph("documents", [5, 9, 2, 7]).remove_edges(torch.tensor([[0], [0]]))
    conv = AttentionConv(6, 4, heads=2)
    x = torch.randn(graph.num_nodes, 6)
    with torch.no_grad():
        torch.testing.assert_close(conv(x, graph, kernel="flex"),
                                   conv(x, graph, kernel="edge"), atol=ATOL, rtol=0)


@SETTINGS
@given(num_nodes=st.integers(1, 30), num_edges=st.integers(0, 80), heads=st.integers(1, 3),
       chunk=st.sampled_from([None, 1, 3, 7]), dropout=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 2**16))
def test_fast_edge_kernel_equals_reference(num_nodes, num_edges, heads, chunk, dropout, seed):
    r"""The memory-saving edge kernel against the plain one, on arbitrary graphs
    (unsorted, duplicate edges, isolated nodes), in one or many chunks of edges, with
    attention dropout (the same seed draws the same mask)."""
    torch.manual_seed(seed)
    ei = get_random_edge_index(num_nodes, num_nodes, num_edges)
    q, k, v = (torch.randn(num_nodes, heads, 5, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(num_nodes, heads, 5)
    results = []
    for fn, kw in ((kernels.edge_attention, dict(chunk=chunk)),
                   (kernels.edge_attention_reference, {})):
        torch.manual_seed(seed)
        out = fn(q, k, v, ei, dropout=dropout, training=True, **kw)
        grads = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
        results.append((out, *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        assert torch.isfinite(got).all()


def test_dense_causal_equals_sdpa():
    torch.manual_seed(0)
    B, T, H, C = 3, 10, 2, 8
    graph = CausalGraph.from_lengths([T] * B)
    conv = AttentionConv(12, C, heads=H)
    x = torch.randn(B * T, 12)
    assert kernels.choose_kernel(graph, x.device) == "sdpa"
    q, k, v = (lin(x).view(B, T, H, C).transpose(1, 2)
               for lin in (conv.lin_query, conv.lin_key, conv.lin_value))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    want = want.transpose(1, 2).reshape(B * T, H * C) + conv.lin_skip(x)
    for kernel in ("auto", "edge", "sdpa"):
        torch.testing.assert_close(conv(x, graph, kernel=kernel), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("concat", [True, False])
def test_equals_transformer_conv(concat):
    torch.manual_seed(0)
    x = torch.randn(20, 6)
    ei = get_random_edge_index(20, 20, 60)  # not causal, duplicates, isolated nodes
    conv = AttentionConv(6, 4, heads=3, concat=concat, root_weight=False)
    pyg = TransformerConv(6, 4, heads=3, concat=concat, root_weight=False)
    missing, unexpected = pyg.load_state_dict(conv.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("lin_skip") for key in missing)
    out, (ei_out, alpha) = conv(x, ei, return_attention_weights=True)
    want, (ei_want, alpha_want) = pyg(x, ei, return_attention_weights=True)
    torch.testing.assert_close(out, want, atol=ATOL, rtol=0)
    assert torch.equal(ei_out, ei_want)
    torch.testing.assert_close(alpha, alpha_want, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------- rotary
@SETTINGS
@given(p=st.integers(0, 60), r=st.integers(0, 60), shift=st.integers(-40, 40))
def test_rotary_depends_on_relative_position(p, r, shift):
    torch.manual_seed(p * 61 + r)
    q, k = torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    pos = lambda n: torch.tensor([n])  # noqa: E731

    def dot(a, b):
        return (rotary_embedding(q, pos(a)) * rotary_embedding(k, pos(b))).sum(-1)
    shift = max(shift, -min(p, r))
    torch.testing.assert_close(dot(p, r), dot(p + shift, r + shift), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rotary_embedding(q, pos(p)).norm(dim=-1), q.norm(dim=-1))


def test_rotary_positions_from_graph_or_argument():
    torch.manual_seed(0)
    graph = CausalGraph.from_lengths([4, 6])
    conv = AttentionConv(6, 4, heads=2, rotary=True)
    x = torch.randn(graph.num_nodes, 6)
    torch.testing.assert_close(conv(x, graph),
                               conv(x, graph.edge_index, position=graph.position),
                               atol=ATOL, rtol=0)


# ---------------------------------------------------------------------- weights, empty rows
@pytest.mark.parametrize("kind", KINDS)
def test_attention_weights_sum_to_one(kind):
    torch.manual_seed(0)
    graph = make_graph(kind, [5, 8, 3])
    conv = AttentionConv(6, 4, heads=2)
    x = torch.randn(graph.num_nodes, 6)
    out, (ei, alpha) = conv(x, graph, return_attention_weights=True)
    assert torch.equal(ei, graph.edge_index)
    assert alpha.shape == (ei.size(1), 2) and bool((alpha >= 0).all())
    total = scatter(alpha, ei[1], dim=0, dim_size=graph.num_nodes, reduce="sum")
    has_in = torch.zeros(graph.num_nodes, dtype=torch.bool)
    has_in[ei[1]] = True
    torch.testing.assert_close(total[has_in], torch.ones_like(total[has_in]))
    assert bool((total[~has_in] == 0).all())
    torch.testing.assert_close(out, conv(x, graph), atol=ATOL, rtol=0)


def no_incoming_graphs():
    graph = CausalGraph.from_lengths([4, 5, 3])
    lonely = torch.tensor([[0, 4], [0, 4]])  # position-0 nodes lose their self-loop
    yield "dense", graph.remove_edges(lonely)
    yield "window", graph.with_window(2).remove_edges(lonely)
    yield "dag", make_graph("dag", [4, 5, 3], seed=3).remove_edges(lonely)
    yield "no edges", CausalGraph.from_edge_index(torch.empty(2, 0, dtype=torch.long),
                                                  graph.batch)


@pytest.mark.parametrize("name,graph", list(no_incoming_graphs()))
def test_no_incoming_edge_gives_zero(name, graph, eager_flex):
    torch.manual_seed(0)
    conv = AttentionConv(6, 4, heads=2, root_weight=False)
    x = torch.randn(graph.num_nodes, 6)
    lonely = torch.ones(graph.num_nodes, dtype=torch.bool)
    lonely[graph.edge_index[1]] = False
    assert bool(lonely[0]) and bool(lonely[4])
    for kernel in ("edge", "sdpa"):
        out, gx, gw, _ = run(conv, x, graph, kernel)
        assert bool((out[lonely] == 0).all()), kernel
        assert torch.isfinite(out).all() and torch.isfinite(gx).all(), kernel
        assert all(torch.isfinite(g).all() for g in gw.values()), kernel
    with torch.no_grad():
        out = conv(x, graph, kernel="flex")
    assert bool((out[lonely] == 0).all()) and torch.isfinite(out).all()


# ---------------------------------------------------------------------- equivariance
def equivariance_layers():
    yield AttentionConv(6, 4, heads=2)
    yield AttentionConv(6, 4, heads=2, concat=False, root_weight=False)
    yield DeepSetsConv(6, 4, aggr="sum")
    yield DeepSetsConv(6, 4, aggr="mean")
    yield FeedForward(6)


@pytest.mark.parametrize("layer", list(equivariance_layers()), ids=repr)
@SETTINGS
@given(num_nodes=st.integers(1, 25), num_edges=st.integers(0, 70), seed=st.integers(0, 2**16))
def test_permutation_equivariance(layer, num_nodes, num_edges, seed):
    torch.manual_seed(seed)
    x = torch.randn(num_nodes, 6)
    ei = get_random_edge_index(num_nodes, num_nodes, num_edges)
    perm = torch.randperm(num_nodes)
    xp, eip = permute(x, ei, perm)
    torch.testing.assert_close(layer(xp, eip), layer(x, ei)[perm], atol=ATOL, rtol=0)


# ---------------------------------------------------------------------- Deep Sets
@pytest.mark.parametrize("aggr", ["sum", "mean"])
@pytest.mark.parametrize("causal", [True, False])
def test_deepsets_prefix_equals_edge(aggr, causal):
    torch.manual_seed(0)
    graph = CausalGraph.from_lengths([5, 1, 8], causal=causal)
    conv = DeepSetsConv(6, 4, aggr=aggr)
    x = torch.randn(graph.num_nodes, 6)
    results = []
    for path in ("prefix", "edge"):
        conv.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        out = conv(xx, graph, path=path)
        out.pow(2).sum().backward()
        results.append((out, xx.grad, conv.phi.weight.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(conv(x, graph), results[0][0])  # auto takes the prefix path


# ---------------------------------------------------------------------- PyG layers
def pyg_layers():
    yield GCNConv(6, 4)
    yield GINConv(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4)))
    yield GATConv(6, 4, heads=2)
    yield GatedGraphConv(6, num_layers=2)


@pytest.mark.parametrize("layer", list(pyg_layers()), ids=lambda m: type(m).__name__)
def test_pyg_layers_via_call_conv(layer):
    torch.manual_seed(0)
    graph = make_graph("window", [5, 7])
    x = torch.randn(graph.num_nodes, 6)
    torch.testing.assert_close(call_conv(layer, x, graph), layer(x, graph.edge_index))


def test_call_conv_hands_graph_to_own_layers():
    graph = CausalGraph.from_lengths([4, 4])
    conv = AttentionConv(6, 4)
    x = torch.randn(8, 6)
    # kernel="sdpa" only runs on a CausalGraph: call_conv must not flatten it.
    torch.testing.assert_close(call_conv(conv, x, graph, kernel="sdpa"), conv(x, graph.edge_index),
                               atol=ATOL, rtol=0)


def test_batch_argument_enables_fused_kernels():
    torch.manual_seed(0)
    graph = make_graph("dag", [6, 4])
    conv = AttentionConv(6, 4, heads=2)
    x = torch.randn(graph.num_nodes, 6)
    torch.testing.assert_close(conv(x, graph.edge_index, kernel="sdpa", batch=graph.batch),
                               conv(x, graph.edge_index), atol=ATOL, rtol=0)


def test_choose_kernel():
    dense = CausalGraph.from_lengths([64] * 2)
    cpu = torch.device("cpu")
    assert kernels.choose_kernel(dense, cpu) == "sdpa"
    assert kernels.choose_kernel(dense.with_window(16), cpu) == "sdpa"
    assert kernels.choose_kernel(dense.edge_index, cpu) == "edge"
    sparse = CausalGraph.from_edge_index(torch.stack([torch.arange(128)] * 2), dense.batch)
    assert kernels.choose_kernel(sparse, cpu) == "edge"


# ---------------------------------------------------------------------- torch.compile
class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = AttentionConv(8, 4, heads=2)
        self.mlp = FeedForward(8)

    def forward(self, x, graph):
        x = x + self.attn(x, graph)
        return x + self.mlp(x, graph)


SLOW = pytest.mark.skipif(os.environ.get("GRAPHFORMER_FAST_TESTS") == "1",
                          reason="GRAPHFORMER_FAST_TESTS=1: compiling with Inductor on CPU "
                                 "takes 5-40 s")


@pytest.mark.parametrize("backend", [
    # Dynamo capture of the whole forward (fullgraph: no graph break on a CausalGraph)
    # and AOTAutograd's traced backward, in about 3 s.
    "aot_eager",
    # The default backend generates C++ kernels: 30-40 s with a cold cache on 2 cores.
    pytest.param("inductor", marks=[pytest.mark.slow, SLOW]),
])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["CausalGraph", "edge_index"])
def test_torch_compile_matches_eager(backend, as_tensor):
    torch.manual_seed(0)
    graph = CausalGraph.from_lengths([6, 6])
    if as_tensor:  # the edge kernel under the compiler (it traces the reference ops)
        if backend != "aot_eager":
            pytest.skip("one Inductor compile is enough")
        graph = graph.edge_index
    model = TinyModel()
    x = torch.randn(12, 8)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    out = compiled(x, graph)
    torch.testing.assert_close(out, model(x, graph), atol=ATOL, rtol=0)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x, graph).sum().backward()
    for got, p in zip(grads, model.parameters()):
        torch.testing.assert_close(got, p.grad, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------- bad input
def test_bad_input_raises():
    conv = AttentionConv(6, 4, heads=2)
    x = torch.randn(5, 6)
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="edge_index has node 10 but x has 5 rows"):
        conv(x, torch.tensor([[0, 10], [1, 2]]))
    with pytest.raises(ValueError, match="negative"):
        conv(x, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(TypeError, match="integer node indices"):
        conv(x, ei.float())
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        conv(x, ei.view(1, -1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        conv(x, ei.tolist())
    with pytest.raises(TypeError, match="floating-point"):
        conv(x.long(), ei)
    with pytest.raises(ValueError, match=r"shape \[num_nodes, 6\]"):
        conv(x.view(-1), ei)
    with pytest.raises(ValueError, match="x has 7 channels but the layer expects 6"):
        conv(torch.randn(5, 7), ei)
    with pytest.raises(ValueError, match="x has 5 rows but the CausalGraph has 6 nodes"):
        conv(x, CausalGraph.from_lengths([3, 3]))
    with pytest.raises(ValueError, match="x has 5 rows but the CausalGraph has 6 nodes"):
        DeepSetsConv(6, 4)(x, CausalGraph.from_lengths([3, 3]))
    with pytest.raises(ValueError, match="FeedForward expects 8"):
        FeedForward(8)(x)


def test_bad_layer_arguments_raise():
    with pytest.raises(ValueError, match="heads"):
        AttentionConv(6, 4, heads=0)
    with pytest.raises(ValueError, match="even head size"):
        AttentionConv(6, 5, rotary=True)
    with pytest.raises(ValueError, match="unknown kernel"):
        AttentionConv(6, 4, kernel="fast")
    with pytest.raises(ValueError, match="dropout"):
        AttentionConv(6, 4, dropout=1.0)
    with pytest.raises(ValueError, match="aggr"):
        DeepSetsConv(6, 4, aggr="max")
    with pytest.raises(ValueError, match="activation"):
        FeedForward(6, activation="swish")
    with pytest.raises(ValueError, match="rotary=True needs positions"):
        AttentionConv(6, 4, rotary=True)(torch.randn(3, 6), torch.tensor([[0], [1]]))


def test_forced_kernel_that_cannot_run_raises():
    conv = AttentionConv(6, 4, heads=2)
    x = torch.randn(6, 6, requires_grad=True)
    graph = CausalGraph.from_lengths([3, 3])
    with pytest.raises(ValueError, match="needs nodes grouped into sequences.*kernel='edge'"):
        conv(x, graph.edge_index, kernel="sdpa")
    with pytest.raises(ValueError, match="needs nodes grouped into sequences"):
        conv(x, graph.edge_index, kernel="flex")
    with pytest.raises(ValueError, match="cannot train on CPU.*kernel='sdpa'"):
        conv(x, graph, kernel="flex")
    with pytest.raises(ValueError, match="unknown kernel"):
        conv(x, graph, kernel="dense")
    with pytest.raises(ValueError, match="path='prefix' needs a dense causal"):
        DeepSetsConv(6, 4)(x, graph.with_window(2), path="prefix")
    with pytest.raises(ValueError, match="dropout"):
        with torch.no_grad():
            AttentionConv(6, 4, dropout=0.1).train()(x, graph, kernel="flex")


def test_edge_kernel_under_autocast():
    torch.manual_seed(0)
    ei = get_random_edge_index(30, 30, 90)
    conv = AttentionConv(8, 4, heads=2)
    x = torch.randn(30, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, ei, kernel="edge")
        q, k, v = conv.project(x, ei)
        want = conv.combine(kernels.edge_attention_reference(q, k, v, ei), x)
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(out.float(), want.float(), atol=2e-2, rtol=2e-2)


def test_edge_kernel_double_backward_raises():
    q, k, v = (torch.randn(4, 1, 2, requires_grad=True) for _ in range(3))
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    (g,) = torch.autograd.grad(kernels.edge_attention(q, k, v, ei).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
