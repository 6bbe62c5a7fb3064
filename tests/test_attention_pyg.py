r"""AttentionConv as a PyG user drops it in: edge features and attention bias (equal to
TransformerConv and across kernels, outputs and gradients), bipartite pairs, sparse
adjacencies, PyG's machinery (explainers, to_hetero, hooks), and bad input."""
import warnings

import pytest
import torch
from torch_geometric.nn import TransformerConv, to_hetero
from torch_geometric.testing import get_random_edge_index, withPackage
from torch_geometric.utils import to_torch_coo_tensor

from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv, DeepSetsConv, DiffAttentionConv, FeedForward, kernels
from graphformer.nn.conv.attention import uses_pyg_machinery

ATOL = 1e-5


@pytest.fixture
def eager_flex(monkeypatch):
    r"""FlexAttention without ``torch.compile`` (same mask and score_mod semantics),
    fast on tiny CPU graphs."""
    from torch.nn.attention.flex_attention import flex_attention
    monkeypatch.setattr(kernels, "_compiled_flex", flex_attention)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def grads(fn, *tensors, seed=0):
    r"""``fn(*tensors)`` and the gradients of ``(out * g).sum()`` w.r.t. ``tensors`` and
    the parameters of every module ``fn`` closes over (passed via ``fn.modules``)."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    modules = getattr(fn, "modules", [])
    for m in modules:
        m.zero_grad(set_to_none=True)
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    (out * g).sum().backward()
    params = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    return out.detach(), [t.grad for t in leaves], params


def assert_close_all(a, b):
    out_a, ga, pa = a
    out_b, gb, pb = b
    torch.testing.assert_close(out_a, out_b, atol=ATOL, rtol=ATOL)
    for x, y in zip(ga + pa, gb + pb):
        torch.testing.assert_close(x, y, atol=ATOL, rtol=ATOL)
    assert len(pa) == len(pb)


def pair(conv_a, conv_b, fn_a, fn_b):
    fn_a.modules, fn_b.modules = [conv_a], [conv_b]
    return fn_a, fn_b


def copied(pyg: TransformerConv, **kwargs) -> AttentionConv:
    conv = AttentionConv(pyg.in_channels, pyg.out_channels, heads=pyg.heads, **kwargs)
    # TransformerConv keeps lin_skip even with root_weight=False.
    missing, _ = conv.load_state_dict(pyg.state_dict(), strict=False)
    assert not missing
    return conv


# ---------------------------------------------------------------------- TransformerConv
@pytest.mark.parametrize("root_weight", [False, True])
@pytest.mark.parametrize("kernel", ["auto", "edge"])
def test_edge_features_equal_transformer_conv(root_weight, kernel):
    torch.manual_seed(0)
    N, E = 12, 40
    x, ei = torch.randn(N, 8), get_random_edge_index(N, N, E)
    ei = torch.cat([ei, ei[:, :5]], 1)  # repeated edges are separate messages
    ea = torch.randn(ei.size(1), 3)
    pyg = TransformerConv(8, 4, heads=3, edge_dim=3, root_weight=root_weight)
    conv = copied(pyg, edge_dim=3, root_weight=root_weight)
    a, b = pair(pyg, conv, lambda x, e: pyg(x, ei, e), lambda x, e: conv(x, ei, e, kernel=kernel))
    assert_close_all(grads(a, x, ea), grads(b, x, ea))


def test_bipartite_equals_transformer_conv():
    torch.manual_seed(1)
    xs, xd = torch.randn(9, 5), torch.randn(4, 6)
    ei = torch.stack([torch.randint(0, 9, (25,)), torch.randint(0, 3, (25,))])  # node 3: none
    ea = torch.randn(25, 2)
    pyg = TransformerConv((5, 6), 4, heads=2, edge_dim=2)
    conv = copied(pyg, edge_dim=2)
    a, b = pair(pyg, conv, lambda s, d, e: pyg((s, d), ei, e),
                lambda s, d, e: conv((s, d), ei, e, size=(9, 4)))
    ra, rb = grads(a, xs, xd, ea), grads(b, xs, xd, ea)
    assert_close_all(ra, rb)
    # The node without an incoming edge gets only its skip term.
    torch.testing.assert_close(rb[0][3], conv.lin_skip(xd[3]).detach())


def test_edge_kernel_equals_reference_with_edge_terms():
    torch.manual_seed(2)
    Nq, Nk, E, H, C = 7, 11, 50, 3, 4
    q, k, v = torch.randn(Nq, H, C), torch.randn(Nk, H, C), torch.randn(Nk, H, C)
    ekv, bias = torch.randn(E, H, C), torch.randn(E, H)
    ei = torch.stack([torch.randint(0, Nk, (E,)), torch.randint(0, Nq, (E,))])
    fast = lambda *t: kernels.edge_attention(*t[:3], ei, edge_kv=t[3], bias=t[4], chunk=8)  # noqa: E731
    ref = lambda *t: kernels.edge_attention_reference(*t[:3], ei, edge_kv=t[3], bias=t[4])  # noqa: E731
    assert_close_all(grads(fast, q, k, v, ekv, bias), grads(ref, q, k, v, ekv, bias))


# ---------------------------------------------------------------------- bias, kernels
def causal_graphs():
    yield "dense", CausalGraph.from_lengths([5, 3, 6])
    yield "window", CausalGraph.from_lengths([6, 4]).with_window(2)
    yield "documents", CausalGraph.from_lengths([7]).with_documents([0, 0, 1, 1, 1, 2, 2])
    g = CausalGraph.from_lengths([5, 4])
    ei = g.edge_index[:, torch.arange(g.num_edges) % 3 != 1]  # some rows lose every key
    yield "dag", CausalGraph.from_edge_index(ei, g.batch)
    yield "full", CausalGraph.from_lengths([4, 5], causal=False)


@pytest.mark.parametrize("name,graph", list(causal_graphs()), ids=lambda v: v if isinstance(v, str) else "")
def test_attn_bias_equal_across_kernels(name, graph, eager_flex):
    torch.manual_seed(3)
    conv = AttentionConv(8, 4, heads=2)
    x, bias = torch.randn(graph.num_nodes, 8), torch.randn(graph.num_edges, 2)

    def fn(kernel):
        f = lambda x, b: conv(x, graph, attn_bias=b, kernel=kernel)  # noqa: E731
        f.modules = [conv]
        return f
    ref = grads(fn("edge"), x, bias)
    assert_close_all(grads(fn("sdpa"), x, bias), ref)
    assert_close_all(grads(fn("auto"), x, bias), ref)
    with torch.no_grad():  # FlexAttention: forward only on CPU
        torch.testing.assert_close(conv(x, graph, attn_bias=bias, kernel="flex"), ref[0],
                                   atol=ATOL, rtol=ATOL)
    # The propagate path (explainers, hooks) gives the same.
    handle = conv.register_message_forward_hook(lambda *a: None)
    assert_close_all(grads(fn("edge"), x, bias), ref)
    handle.remove()


def test_attn_bias_with_batch_follows_the_given_edge_order():
    torch.manual_seed(4)
    g = CausalGraph.from_lengths([6, 5])
    perm = torch.randperm(g.num_edges)
    ei, bias = g.edge_index[:, perm], torch.randn(g.num_edges, 2)
    conv = AttentionConv(8, 4, heads=2)
    x = torch.randn(g.num_nodes, 8)
    ref = conv(x, ei, attn_bias=bias, kernel="edge")
    torch.testing.assert_close(conv(x, ei, attn_bias=bias, batch=g.batch, kernel="sdpa"), ref,
                               atol=ATOL, rtol=ATOL)
    # The same bias in the CausalGraph's own order.
    back = torch.empty_like(perm)
    back[perm] = torch.arange(g.num_edges)
    torch.testing.assert_close(conv(x, g, attn_bias=bias[back], kernel="sdpa"), ref,
                               atol=ATOL, rtol=ATOL)


def test_batch_with_repeated_edges_stays_exact():
    g = CausalGraph.from_lengths([5])
    ei = torch.cat([g.edge_index, g.edge_index[:, :3]], 1)
    conv, x = AttentionConv(8, 4, heads=2), torch.randn(5, 8)
    torch.testing.assert_close(conv(x, ei, batch=g.batch), conv(x, ei, kernel="edge"))


def test_edge_features_on_a_causal_graph():
    torch.manual_seed(5)
    g = CausalGraph.from_lengths([6, 4])
    conv = AttentionConv(8, 4, heads=2, edge_dim=3)
    x, ea = torch.randn(10, 8), torch.randn(g.num_edges, 3)
    out = conv(x, g, ea)
    torch.testing.assert_close(out, conv(x, g.edge_index, ea, kernel="edge"))
    kernel, why = kernels.choose_kernel(g, x.device, edge_features=True, reason=True)
    assert kernel == "edge" and "edge features" in why
    for forced in ("sdpa", "flex"):
        with pytest.raises(ValueError, match=f"kernel='{forced}' cannot carry edge features.*'edge'"):
            conv(x, g, ea, kernel=forced)


def test_diff_attention_edge_terms_kernel_and_propagate():
    torch.manual_seed(6)
    g = CausalGraph.from_lengths([6, 5])
    conv = DiffAttentionConv(8, 4, heads=2, edge_dim=3)
    x, ea, bias = torch.randn(11, 8), torch.randn(g.num_edges, 3), torch.randn(g.num_edges, 2)
    f = lambda x, e, b: conv(x, g, e, attn_bias=b)  # noqa: E731
    f.modules = [conv]
    ref = grads(f, x, ea, bias)
    conv.explain = True
    conv._edge_mask = torch.full((g.num_edges,), 50.0)  # sigmoid = 1: masks nothing
    assert uses_pyg_machinery(conv)
    assert_close_all(grads(f, x, ea, bias), ref)
    conv = DiffAttentionConv(8, 4, heads=2)  # no edge features: the fused kernel runs
    f2 = lambda x, b: conv(x, g, attn_bias=b, kernel="sdpa")  # noqa: E731
    f3 = lambda x, b: conv(x, g, attn_bias=b, kernel="edge")  # noqa: E731
    f2.modules = f3.modules = [conv]
    assert_close_all(grads(f2, x, bias), grads(f3, x, bias))


def test_alibi_bias_on_a_causal_graph():
    r"""The worked example: ALiBi (a per-head linear penalty on the distance)."""
    torch.manual_seed(7)
    g = CausalGraph.from_lengths([8])
    H = 2
    slopes = torch.tensor([0.5, 0.25])
    src, dst = g.edge_index
    dist = (g.position[dst] - g.position[src]).float()
    bias = -dist.unsqueeze(-1) * slopes
    conv = AttentionConv(6, 4, heads=H, root_weight=False)
    x = torch.randn(8, 6)
    out = conv(x, g, attn_bias=bias)
    # By hand: masked softmax of q k^T / sqrt(d) - slope * (i - j), per head.
    q, k, v = conv.project(x, g)
    i, j = torch.arange(8).view(-1, 1), torch.arange(8).view(1, -1)
    s = torch.einsum("ihc,jhc->hij", q, k) / 2.0 - slopes.view(H, 1, 1) * (i - j)
    s = s.masked_fill(j > i, float("-inf")).softmax(-1)
    expected = torch.einsum("hij,jhc->ihc", s, v).reshape(8, -1)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------- inputs
def union_graph(xs, xd, ei):
    r"""A bipartite graph as one graph: sources first, then targets."""
    return torch.cat([xs, xd]), torch.stack([ei[0], ei[1] + xs.size(0)])


@pytest.mark.parametrize("layer", ["attention", "diff", "deepsets"])
def test_bipartite_equals_union_graph(layer):
    torch.manual_seed(8)
    xs, xd = torch.randn(7, 6), torch.randn(4, 6)
    ei = torch.stack([torch.randint(0, 7, (15,)), torch.randint(0, 4, (15,))])
    conv = {"attention": lambda: AttentionConv(6, 4, heads=2),
            "diff": lambda: DiffAttentionConv(6, 4, heads=2),
            "deepsets": lambda: DeepSetsConv(6, 5, aggr="mean")}[layer]()
    x, ei_u = union_graph(xs, xd, ei)
    torch.testing.assert_close(conv((xs, xd), ei, size=(7, 4)), conv(x, ei_u)[7:],
                               atol=ATOL, rtol=ATOL)


def test_deepsets_bipartite_reads_only_the_sources():
    torch.manual_seed(16)
    conv = DeepSetsConv((5, 3), 4)
    xs, ei = torch.randn(6, 5), torch.tensor([[0, 1, 5, 2], [0, 0, 1, 2]])
    out = conv((xs, torch.randn(3, 3)), ei)
    torch.testing.assert_close(out, conv((xs, torch.randn(3, 3)), ei))
    expected = conv.rho(torch.stack([torch.relu(conv.phi(xs[[0, 1]])).sum(0),
                                     torch.relu(conv.phi(xs[5])),
                                     torch.relu(conv.phi(xs[2]))]))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("layer", ["attention", "diff", "deepsets"])
@pytest.mark.parametrize("bipartite", [False, True])
def test_torch_sparse_adjacency_equals_edge_index(layer, bipartite):
    torch.manual_seed(9)
    ns, nd = (7, 5) if bipartite else (6, 6)
    ei = torch.stack([torch.randint(0, ns, (20,)), torch.randint(0, nd, (20,))])
    ei = torch.unique(ei[1] * ns + ei[0])  # a sparse matrix has no repeated entries
    ei = torch.stack([ei % ns, ei // ns])
    xs, xd = torch.randn(ns, 6), torch.randn(nd, 6)
    x = (xs, xd) if bipartite else xs
    conv = {"attention": lambda: AttentionConv(6, 4, heads=2),
            "diff": lambda: DiffAttentionConv(6, 4, heads=2),
            "deepsets": lambda: DeepSetsConv(6, 5)}[layer]()
    adj_t = to_torch_coo_tensor(ei.flip(0), size=(nd, ns))
    expected = conv(x, ei)
    torch.testing.assert_close(conv(x, adj_t), expected, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(conv(x, adj_t.to_sparse_csr()), expected, atol=ATOL, rtol=ATOL)


def test_sparse_values_are_edge_features_as_in_pyg():
    torch.manual_seed(10)
    ei = torch.tensor([[0, 1, 2, 2, 3], [1, 0, 0, 3, 2]])
    ea = torch.randn(5, 3)
    adj_t = torch.sparse_coo_tensor(ei.flip(0), ea, (4, 4, 3)).coalesce()
    conv, x = AttentionConv(6, 4, heads=2, edge_dim=3), torch.randn(4, 6)
    order = torch.argsort(ei[1] * 4 + ei[0])  # coalesced: by target, then source
    torch.testing.assert_close(conv(x, adj_t), conv(x, ei[:, order], ea[order]),
                               atol=ATOL, rtol=ATOL)


@withPackage("torch_sparse")
def test_sparse_tensor_equals_edge_index():
    from torch_sparse import SparseTensor
    torch.manual_seed(11)
    ei = get_random_edge_index(6, 6, 15)
    ei = torch.unique(ei[1] * 6 + ei[0])
    ei = torch.stack([ei % 6, ei // 6])
    adj_t = SparseTensor(row=ei[1], col=ei[0], sparse_sizes=(6, 6))
    x = torch.randn(6, 6)
    for conv in (AttentionConv(6, 4, heads=2), DiffAttentionConv(6, 4), DeepSetsConv(6, 5)):
        torch.testing.assert_close(conv(x, adj_t), conv(x, ei), atol=ATOL, rtol=ATOL)


def test_permutation_equivariance_with_edge_features_and_bias():
    torch.manual_seed(12)
    N, E = 10, 35
    x, ei = torch.randn(N, 8), get_random_edge_index(N, N, E)
    ea, bias = torch.randn(E, 3), torch.randn(E, 2)
    conv = AttentionConv(8, 4, heads=2, edge_dim=3)
    perm = torch.randperm(N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    eperm = torch.randperm(E)
    out = conv(x, ei, ea, attn_bias=bias)
    out_p = conv(x[perm], inv[ei][:, eperm], ea[eperm], attn_bias=bias[eperm])
    torch.testing.assert_close(out_p, out[perm], atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------- PyG machinery
def test_message_hook_sees_the_messages():
    torch.manual_seed(13)
    x, ei = torch.randn(8, 6), get_random_edge_index(8, 8, 20)
    conv = AttentionConv(6, 4, heads=2)
    expected = conv(x, ei)
    seen = []
    conv.register_message_forward_hook(lambda module, inputs, out: seen.append(out))
    out = conv(x, ei)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=ATOL)
    assert len(seen) == 1 and seen[0].shape == (20, 2, 4)
    # The messages sum to the attention output (minus the skip term).
    msg = torch.zeros(8, 2, 4).index_add_(0, ei[1], seen[0]).view(8, 8)
    torch.testing.assert_close(msg + conv.lin_skip(x), out, atol=ATOL, rtol=ATOL)


def test_explainer_gives_an_edge_mask():
    from torch_geometric.explain import Explainer, GNNExplainer

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = AttentionConv(4, 8, heads=2, edge_dim=2)
            self.conv2 = AttentionConv(16, 3)

        def forward(self, x, edge_index, edge_attr):
            return self.conv2(self.conv1(x, edge_index, edge_attr).relu(), edge_index)

    torch.manual_seed(14)
    x, ei = torch.randn(10, 4), get_random_edge_index(10, 10, 30)
    ea = torch.randn(30, 2)
    explainer = Explainer(Net(), algorithm=GNNExplainer(epochs=5), explanation_type="model",
                          node_mask_type="attributes", edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification",
                                            task_level="node", return_type="raw"))
    explanation = explainer(x, ei, edge_attr=ea, index=2)
    mask = explanation.edge_mask
    assert mask.shape == (30,) and bool((mask >= 0).all())
    # Edges that cannot reach node 2 in two hops get no weight; some edge does.
    assert float(mask.sum()) > 0
    hop1 = ei[0, ei[1] == 2]
    reaches = (ei[1] == 2) | torch.isin(ei[1], hop1)
    assert bool((mask[~reaches] == 0).all())


def test_to_hetero_with_a_source_only_node_type():
    from torch_geometric.data import HeteroData

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = AttentionConv((-1, -1), 8, heads=2)
            self.conv2 = AttentionConv((-1, -1), 4)

        def forward(self, x, edge_index):
            return self.conv2(self.conv1(x, edge_index), edge_index)

    torch.manual_seed(15)
    data = HeteroData()
    data["paper"].x, data["author"].x, data["venue"].x = (
        torch.randn(6, 5), torch.randn(4, 3), torch.randn(2, 7))
    data["author", "writes", "paper"].edge_index = torch.stack(
        [torch.randint(0, 4, (10,)), torch.randint(0, 6, (10,))])
    data["paper", "rev", "author"].edge_index = torch.stack(
        [torch.randint(0, 6, (10,)), torch.randint(0, 4, (10,))])
    data["venue", "hosts", "paper"].edge_index = torch.tensor([[0, 1, 1], [0, 2, 5]])  # only a source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyG warns that 'venue' is never updated
        model = to_hetero(Net(), data.metadata(), aggr="sum")
    out = model(data.x_dict, data.edge_index_dict)
    assert out["paper"].shape == (6, 4) and out["author"].shape == (4, 4)
    out["paper"].sum().backward()
    # The venue features reach the papers through the first layer ...
    hosts = model.conv1["venue__hosts__paper"]
    assert hosts.lin_value.weight.grad is not None and hosts.lin_value.weight.grad.abs().sum() > 0
    x_dict = dict(data.x_dict, venue=data["venue"].x + 1.0)
    changed = model(x_dict, data.edge_index_dict)["paper"]
    assert not torch.allclose(changed[[0, 2, 5]], out["paper"][[0, 2, 5]])
    # ... and, having no representation after it, send nothing in the second layer:
    # to_hetero passes (None, x_dst), and the layer gives the targets no message.
    second = model.conv2["venue__hosts__paper"]
    h = torch.randn(6, 16)
    torch.testing.assert_close(second((None, h), data["venue", "hosts", "paper"].edge_index),
                               second.lin_skip(h))


# ---------------------------------------------------------------------- bad input
def test_bad_edge_features_and_bias():
    x, ei = torch.randn(5, 6), get_random_edge_index(5, 5, 9)
    plain, conv = AttentionConv(6, 4, heads=2), AttentionConv(6, 4, heads=2, edge_dim=3)
    with pytest.raises(ValueError, match="no edge_dim"):
        plain(x, ei, torch.randn(9, 3))
    with pytest.raises(ValueError, match=r"edge_dim=3\], got \[9, 4\]"):
        conv(x, ei, torch.randn(9, 4))
    with pytest.raises(ValueError, match="8 rows but the graph has 9 edges"):
        conv(x, ei, torch.randn(8, 3))
    with pytest.raises(TypeError, match="edge_attr must be a floating-point"):
        conv(x, ei, torch.ones(9, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attn_bias must have shape \[num_edges, heads\] = \[9, 2\]"):
        plain(x, ei, attn_bias=torch.randn(9, 3))
    with pytest.raises(ValueError, match="attn_bias must have shape"):
        plain(x, ei, attn_bias=torch.randn(8))
    with pytest.raises(ValueError, match="edge_dim must be a positive int"):
        AttentionConv(6, 4, edge_dim=0)
    g = CausalGraph.from_lengths([5])
    with pytest.raises(ValueError, match="the graph has 15 edges.*graph.edge_index"):
        conv(x, g, torch.randn(9, 3))


def test_bad_bipartite_and_sparse_inputs():
    conv = AttentionConv((5, 6), 4, heads=2)
    xs, xd = torch.randn(7, 5), torch.randn(4, 6)
    ei = torch.tensor([[0, 6], [1, 3]])
    with pytest.raises(ValueError, match=r"size=\(7, 5\) does not match.*\(7, 4\)"):
        conv((xs, xd), ei, size=(7, 5))
    with pytest.raises(ValueError, match="target node 4 but x_dst has 4 rows"):
        conv((xs, xd), torch.tensor([[0], [4]]))
    with pytest.raises(ValueError, match="source node 7 but x_src has 7 rows"):
        conv((xs, xd), torch.tensor([[7], [0]]))
    with pytest.raises(ValueError, match="x_dst has 5 channels but the layer expects 6"):
        conv((xs, torch.randn(4, 5)), ei)
    with pytest.raises(ValueError, match="pair"):
        conv((xs, xd, xd), ei)
    with pytest.raises(ValueError, match="CausalGraph connects one set of nodes"):
        conv((xs, xd), CausalGraph.from_lengths([7]))
    with pytest.raises(ValueError, match="kernel='sdpa' cannot run on a bipartite"):
        AttentionConv(6, 4)((torch.randn(7, 6), torch.randn(4, 6)), ei, kernel="sdpa")
    square = AttentionConv(6, 4)
    x = torch.randn(5, 6)
    adj = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 2]]), torch.ones(2), (5, 6))
    with pytest.raises(ValueError, match=r"shape \[5, 6\] but must be a square \[5, 5\]"):
        square(x, adj)
    with pytest.raises(ValueError, match=r"\[num_dst, num_src\] = \[4, 7\]"):
        conv((xs, xd), torch.sparse_coo_tensor(torch.tensor([[0], [1]]), torch.ones(1), (7, 4)))
    with pytest.raises(ValueError, match="same shape|square"):
        DeepSetsConv(6, 4)(x, adj)


@pytest.mark.parametrize("layer", ["attention", "diff", "deepsets"])
def test_empty_graph_gives_empty_output(layer):
    conv = {"attention": lambda: AttentionConv(6, 4, heads=2, edge_dim=2),
            "diff": lambda: DiffAttentionConv(6, 4, heads=2),
            "deepsets": lambda: DeepSetsConv(6, 5)}[layer]()
    x = torch.randn(0, 6, requires_grad=True)
    ei = torch.zeros(2, 0, dtype=torch.long)
    args = (torch.zeros(0, 2),) if layer == "attention" else ()  # edge_dim needs edge_attr
    out = conv(x, ei, *args)
    assert out.shape == (0, 8 if layer != "deepsets" else 5)
    out.sum().backward()
    # Nodes but no edges: every node gets an empty message.
    x2 = torch.randn(3, 6)
    with torch.no_grad():
        if layer == "deepsets":
            # rho of the empty aggregate: rho(0), the same for every node
            assert torch.allclose(conv(x2, ei), conv.rho(torch.zeros(3, conv.hidden_channels)))
        else:
            # the zero message, so only the skip term W_s x_i remains
            assert torch.allclose(conv(x2, ei, *args), conv.lin_skip(x2))


@pytest.mark.parametrize("layer", ["attention", "diff", "deepsets"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_features_under_a_float_layer(layer, dtype):
    conv = {"attention": lambda: AttentionConv(6, 4, heads=2),
            "diff": lambda: DiffAttentionConv(6, 4, heads=2),
            "deepsets": lambda: DeepSetsConv(6, 5)}[layer]()
    x, ei = torch.randn(5, 6, dtype=dtype), get_random_edge_index(5, 5, 9)
    with pytest.raises(TypeError, match=f"x is {dtype} but the layer's weights are "
                                        r"torch.float32: cast .* torch.autocast"):
        conv(x, ei)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x.to(torch.bfloat16), ei)  # under autocast: accepted


@pytest.mark.parametrize("build,message", [
    (lambda: AttentionConv(8, 4, heads=True), "heads must be a positive int"),
    (lambda: AttentionConv(0, 4), "in_channels must be a positive int"),
    (lambda: AttentionConv(8, 4.0), "out_channels must be a positive int"),
    (lambda: DiffAttentionConv(8, 4, layer=-1), "layer is the 0-based depth"),
    (lambda: DiffAttentionConv(8, 4, lambda_init=float("nan")), "lambda_init must be finite"),
    (lambda: DeepSetsConv(8, 0), "out_channels must be a positive int"),
    (lambda: DeepSetsConv(8, 4, hidden_channels=-1), "hidden_channels must be a positive int"),
    (lambda: FeedForward(0), "channels must be a positive int"),
    (lambda: FeedForward(8, dropout=1.0), "dropout must be in"),
])
def test_layer_sizes_are_checked(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_lazy_in_channels_still_allowed():
    conv = AttentionConv(-1, 4, heads=2)
    assert conv(torch.randn(5, 3), torch.tensor([[0, 1], [1, 2]])).shape == (5, 8)


@pytest.mark.parametrize("position", [torch.arange(4), torch.arange(5).float(),
                                      torch.zeros(5, 1, dtype=torch.long)])
def test_rotary_position_is_checked(position):
    conv = AttentionConv(8, 4, heads=2, rotary=True)
    with pytest.raises(ValueError, match="position must be an integer tensor"):
        conv(torch.randn(5, 8), torch.tensor([[0, 1], [1, 2]]), position=position)
