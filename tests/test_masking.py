r"""Masking is exact for non-finite inputs on every kernel: a NaN or an infinity in one
token reaches exactly the rows that have an edge from it, as on the edge-wise kernel,
never a row that cannot see it (issue 12)."""
import warnings

import pytest
import torch

from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv, DiffAttentionConv, kernels


@pytest.fixture
def eager_flex(monkeypatch):
    from torch.nn.attention.flex_attention import flex_attention
    monkeypatch.setattr(kernels, "_compiled_flex", flex_attention)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def graphs():
    yield "documents", CausalGraph.from_lengths([6]).with_documents([0, 0, 0, 1, 1, 1])
    yield "dense-padded", CausalGraph.from_lengths([7, 4, 6])
    yield "window", CausalGraph.from_lengths([8, 5]).with_window(2)
    yield "full-documents", CausalGraph.from_lengths([6], causal=False).with_documents(
        [0, 0, 1, 1, 1, 2])
    g = CausalGraph.from_lengths([6])
    yield "dag", CausalGraph.from_edge_index(g.edge_index[:, ::2], g.batch)


def sees(graph, token):
    r"""Rows with an edge from ``token``."""
    ei = graph.edge_index
    out = torch.zeros(graph.num_nodes, dtype=torch.bool)
    out[ei[1, ei[0] == token]] = True
    return out


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name,graph", list(graphs()), ids=lambda v: v if isinstance(v, str) else "")
def test_non_finite_token_stays_with_the_rows_that_see_it(name, graph, value, eager_flex):
    torch.manual_seed(0)
    conv = AttentionConv(8, 4, heads=2)
    x = torch.randn(graph.num_nodes, 8)
    bad = 3 if graph.num_nodes > 3 else 0
    x[bad, 2] = value
    bias = torch.randn(graph.num_edges, 2)
    with torch.no_grad():
        for kwargs in ({}, {"attn_bias": bias}):
            ref = conv(x, graph.edge_index, kernel="edge", **kwargs)
            for kernel in ("auto", "sdpa", "flex"):
                out = conv(x, graph, kernel=kernel, **kwargs)
                finite = torch.isfinite(out).all(-1)
                # The bad row itself is not finite through its skip term.
                expected = sees(graph, bad) | (torch.arange(graph.num_nodes) == bad)
                assert bool((~finite == expected).all()), (kernel, kwargs)
                torch.testing.assert_close(out, ref, equal_nan=True)


def test_issue_example_and_batch():
    graph = CausalGraph.from_lengths([6]).with_documents([0, 0, 0, 1, 1, 1])
    conv = AttentionConv(4, 4)
    x = torch.randn(6, 4)
    x[5] = float("nan")
    out = conv(x, graph)
    assert bool(torch.isfinite(out[:5]).all()) and bool(torch.isnan(out[5]).all())
    # Sequences built with batch= on a plain edge_index.
    g2 = CausalGraph.from_lengths([3, 3])
    out = conv(x, g2.edge_index, batch=g2.batch)
    assert bool(torch.isfinite(out[:5]).all()) and bool(torch.isnan(out[5]).all())


def test_nan_gradients_stay_with_the_rows_that_see_it():
    graph = CausalGraph.from_lengths([4, 4])
    conv = DiffAttentionConv(8, 4, heads=2)
    x0 = torch.randn(8, 8)
    x0[5] = float("nan")
    g = {}
    for kernel in ("sdpa", "edge"):
        x = x0.clone().requires_grad_()
        conv(x, graph if kernel == "sdpa" else graph.edge_index, kernel=kernel)[:4].sum().backward()
        g[kernel] = x.grad
    assert bool(torch.isfinite(g["sdpa"][:4]).all())  # the first sequence never sees token 5
    torch.testing.assert_close(g["sdpa"], g["edge"], equal_nan=True)


def test_finite_inputs_keep_the_fused_kernel(monkeypatch):
    r"""The check costs one reduction; the fused kernel still runs on finite input."""
    graph = CausalGraph.from_lengths([5, 5]).with_window(2)
    calls = []
    monkeypatch.setattr(kernels, "edge_attention",
                        lambda *a, **k: calls.append(1) or torch.zeros(()))
    conv = AttentionConv(4, 4)
    conv(torch.randn(10, 4), graph, kernel="sdpa")
    assert not calls


@pytest.mark.parametrize("name,graph", list(graphs())[:3], ids=lambda v: v if isinstance(v, str) else "")
def test_compiled_fused_kernel_does_not_leak(name, graph):
    r"""Under torch.compile (no host sync): the NaN reaches the rows that see the token,
    in that head, and no other row; finite input gives the eager answer."""
    torch.manual_seed(1)
    conv = AttentionConv(8, 4, heads=2)
    x = torch.randn(graph.num_nodes, 8)
    # The masked SDPA path breaks the graph once (its empty-row check reads the mask):
    # the attention call itself is traced either way.
    compiled = torch.compile(lambda x: conv(x, graph, kernel="sdpa"), backend="aot_eager",
                             fullgraph=graph.is_dense)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), conv(x, graph, kernel="sdpa"))
        x[3, 2] = float("nan")
        out = compiled(x)
    expected = sees(graph, 3) | (torch.arange(graph.num_nodes) == 3)
    assert bool((~torch.isfinite(out).all(-1) == expected).all())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("window", [None, 2], ids=["dense", "window"])
def test_nan_query_alone_makes_its_own_row_nan(compiled, window):
    r"""A NaN in a query only (keys and values finite): SDPA with ``is_causal`` on CPU
    returns a finite row; every path must give NaN in that row and head, as the edge-wise
    reference does, and leave every other row finite."""
    graph = CausalGraph.from_lengths([5, 3])
    graph = graph if window is None else graph.with_window(window)
    torch.manual_seed(0)
    q, k, v = (torch.randn(graph.num_nodes, 2, 4) for _ in range(3))
    q[6, 1, 0] = float("nan")
    run = (torch.compile(kernels.attention, backend="aot_eager") if compiled
           else kernels.attention)
    out = run(q, k, v, graph, "sdpa")
    ref = kernels.edge_attention_reference(q, k, v, graph.edge_index)
    assert torch.equal(out.isnan(), ref.isnan())
    assert bool(out[6, 1].isnan().all()) and int(out.isnan().sum()) == 4
