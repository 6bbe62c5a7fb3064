r"""The padded attention kernel with dropout (what ``AttentionConv`` runs in training
with attention dropout on sequences and complete graphs) equals the plain computation
with the same keep mask: outputs and gradients, on complete graphs (key padding only),
causal and windowed graphs (a full mask) and graphs with rows that have no key."""
import math

import pytest
import torch

from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv, kernels


def reference(q, k, v, graph, keep, p):
    r"""softmax(q k^T / sqrt(d) + mask) * keep / (1 - p) @ v on the padded layout, in
    plain autograd ops; rows with no key give 0."""
    B, T, H, d = graph.num_sequences, graph.max_length, q.size(1), q.size(2)
    qp, kp, vp = (graph.to_padded(x).transpose(1, 2) for x in (q, k, v))
    mask = graph.dense_mask().unsqueeze(1)  # [B, 1, T, T]
    s = (qp @ kp.transpose(-1, -2)) / math.sqrt(d)
    s = s.masked_fill(~mask, float("-inf"))
    a = torch.softmax(s, -1).nan_to_num(0.0)  # rows without a key: 0
    out = (a * keep.view(B, H, T, T) / (1 - p)) @ vp
    return graph.from_padded(out.transpose(1, 2))


def graphs():
    yield "complete", CausalGraph.from_lengths([5, 2, 7], causal=False)
    yield "causal", CausalGraph.from_lengths([5, 2, 7])
    yield "window", CausalGraph.from_lengths([6, 3, 8]).with_window(2)
    # node 0 loses its only edge (its self-loop): a row with no key
    yield "empty-row", CausalGraph.from_lengths([4, 3]).remove_edges(torch.tensor([[0], [0]]))


@pytest.mark.parametrize("name,graph", list(graphs()))
@pytest.mark.parametrize("p", [0.5, 0.1])
def test_padded_attention_equals_the_plain_computation(name, graph, p):
    H, d = 2, 4
    N = graph.num_nodes
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(N, H, d, generator=gen, dtype=torch.float64).requires_grad_()
               for _ in range(3))
    torch.manual_seed(7)
    out = kernels.padded_attention(q, k, v, graph, dropout=p)
    torch.manual_seed(7)  # the same draw
    B, T = graph.num_sequences, graph.max_length
    keep = kernels.dropout_keep((B * H, T, T), p, q.device)
    assert 0 < keep.float().mean() < 1
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    ref = reference(q2, k2, v2, graph, keep, p)
    torch.testing.assert_close(out, ref)
    g = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad)


def test_dropout_keep_is_bernoulli():
    torch.manual_seed(0)
    keep = kernels.dropout_keep((200_000,), 0.3, torch.device("cpu"))
    assert keep.dtype == torch.bool
    assert abs(keep.float().mean().item() - 0.7) < 0.005
    assert kernels.dropout_keep((1000,), 0.0, torch.device("cpu")).all()


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_dropout_keep_refuses_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match="dropout probability must be in"):
        kernels.dropout_keep((10,), p, torch.device("cpu"))


def test_attention_conv_trains_through_the_padded_kernel_and_evaluates_exactly():
    r"""In training with dropout the layer runs the padded kernel (its expectation is
    the dropout-free output); in eval the dropout-free output on every kernel."""
    graph = CausalGraph.from_lengths([5, 3, 6], causal=False)
    torch.manual_seed(0)
    conv = AttentionConv(8, 4, heads=2, root_weight=False, dropout=0.5)
    x = torch.randn(graph.num_nodes, 8)
    conv.eval()
    exact = conv(x, graph)
    torch.testing.assert_close(conv(x, graph.edge_index), exact, atol=1e-5, rtol=1e-5)
    conv.train()
    mean = torch.stack([conv(x, graph) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, exact, atol=0.05, rtol=0.0)


@pytest.mark.parametrize("lengths", [[5, 2, 7], [4, 4], [1, 6, 3, 3]])
def test_complete_graphs_fused_path_equals_the_edge_reference(lengths):
    r"""Without dropout, complete graphs of several sizes run SDPA's fused CPU kernel
    with a key-padding mask (keeping the output rows, not the padded output): equal to
    the edge-wise reference, outputs and gradients."""
    graph = CausalGraph.from_lengths(lengths, causal=False)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(graph.num_nodes, 2, 4, generator=gen).requires_grad_()
               for _ in range(3))
    out = kernels.sdpa_attention(q, k, v, graph)
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    ref = kernels.edge_attention_reference(q2, k2, v2, graph.edge_index)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn(out.shape, generator=gen)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lengths", [[5, 2, 7], [3, 3], [1]])
def test_head_index_pads_and_unpads_like_the_padded_layout(lengths):
    r"""The padded kernel's layout moves: ``[N, H, d]`` rows into ``[B * H, T, d]`` at
    ``graph.head_index(H)`` with one ``index_copy_`` and back with one
    ``index_select``, equal to the ``to_padded`` / ``from_padded`` reference (strided
    rows, as views of a fused projection, included)."""
    graph = CausalGraph.from_lengths(lengths, causal=False)
    B, T, H, d = graph.num_sequences, graph.max_length, 3, 4
    x = torch.randn(graph.num_nodes, 2, H, d).unbind(1)[1]  # strided rows
    index = graph.head_index(H)
    assert index is graph.head_index(H)  # cached
    padded = kernels._pad(x, index, B, T)
    ref = graph.to_padded(x).transpose(1, 2).reshape(B * H, T, d)
    assert torch.equal(padded, ref)
    assert torch.equal(kernels._unpad(padded, index, H), x)
    with pytest.raises(ValueError, match="heads"):
        graph.head_index(0)


def test_fused_paths_on_a_causal_graph_never_build_its_edge_list():
    r"""On a CausalGraph of complete graphs the fused kernels (training with attention
    dropout, and eval) need no edge list: the layer does not build it; per-edge inputs
    (``attn_bias``) and the attention weights still get it, in its order."""
    graph = CausalGraph.from_lengths([4, 2, 5], causal=False)
    torch.manual_seed(0)
    conv = AttentionConv(8, 4, heads=2, root_weight=False, dropout=0.5)
    x = torch.randn(graph.num_nodes, 8)
    for train in (True, False):
        conv.train(train)
        conv(x, graph)
        assert graph._edge_index is None
    conv.eval()
    out, (edge_index, alpha) = conv(x, graph, return_attention_weights=True)
    assert torch.equal(edge_index, graph.edge_index) and alpha.shape == (graph.num_edges, 2)
    torch.testing.assert_close(out, conv(x, graph.edge_index), atol=1e-5, rtol=1e-5)
    bias = torch.randn(graph.num_edges, 2)
    torch.testing.assert_close(conv(x, graph, attn_bias=bias),
                               conv(x, graph.edge_index, attn_bias=bias), atol=1e-5,
                               rtol=1e-5)
