r"""AttentionConv as a drop-in for PyG's TransformerConv: the cases of PyG's own
``test_transformer_conv.py`` (gated skip, sparse adjacencies, attention weights, bipartite
pairs, edge features), run on AttentionConv and checked against TransformerConv with the
same weights; TransformerConv's positional order, strict state-dict loading, ``aggr``
honoured on every path, a missing ``edge_attr`` refused, TorchScript declined."""
import warnings

import pytest
import torch
import torch_geometric.typing
from torch_geometric.nn import TransformerConv
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import to_torch_csc_tensor

from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv

X1 = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
X2 = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
EDGES = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
ATTR = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))


@pytest.fixture(autouse=True)
def quiet_sparse():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse")
        yield


def twins(*args, **kwargs):
    r"""A TransformerConv and an AttentionConv built with the same arguments, the second
    holding the first's weights (loaded strictly)."""
    torch.manual_seed(3)
    pyg = TransformerConv(*args, **kwargs)
    ours = AttentionConv(*args, **kwargs)
    ours.load_state_dict(pyg.state_dict(), strict=True)
    return pyg, ours


@pytest.mark.parametrize("edge_dim", [None, 3])
@pytest.mark.parametrize("concat", [True, False])
def test_pyg_cases_on_a_graph(edge_dim, concat):
    pyg, conv = twins(8, 32, heads=2, beta=True, edge_dim=edge_dim, concat=concat)
    assert str(conv) == "AttentionConv(8, 32, heads=2)"
    ea = ATTR if edge_dim else None
    out = conv(X1, EDGES, ea)
    assert out.size() == (4, 64 if concat else 32)
    torch.testing.assert_close(out, pyg(X1, EDGES, ea), atol=1e-6, rtol=1e-5)
    # a torch.sparse adj_t gives the same output (edge features in its row-major order,
    # which is EDGES' order here)
    adj = to_torch_csc_tensor(EDGES, size=(4, 4))
    torch.testing.assert_close(conv(X1, adj.t(), ea), out, atol=1e-6, rtol=1e-5)
    # attention weights: (edge_index, alpha) with alpha [E, heads] in [0, 1]
    res = conv(X1, EDGES, ea, return_attention_weights=True)
    ref = pyg(X1, EDGES, ea, return_attention_weights=True)
    torch.testing.assert_close(res[0], out)
    assert res[1][0].size() == (2, 4) and res[1][1].size() == (4, 2)
    assert res[1][1].min() >= 0 and res[1][1].max() <= 1
    torch.testing.assert_close(res[1][1], ref[1][1], atol=1e-6, rtol=1e-5)
    # from a torch.sparse adjacency, as PyG: the adjacency as given, and alpha
    res = conv(X1, adj.t(), ea, return_attention_weights=True)
    ref = pyg(X1, adj.t(), ea, return_attention_weights=True)
    assert res[1][0] is not None and res[1][0].layout == ref[1][0].layout
    torch.testing.assert_close(res[1][1], ref[1][1], atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not torch_geometric.typing.WITH_TORCH_SPARSE,
                    reason="torch-sparse is not installed (pip install torch-sparse)")
def test_pyg_cases_on_a_sparse_tensor():
    pyg, conv = twins(8, 32, heads=2, beta=True)
    adj = SparseTensor.from_edge_index(EDGES, sparse_sizes=(4, 4))
    out = conv(X1, EDGES)
    torch.testing.assert_close(conv(X1, adj.t()), out, atol=1e-6, rtol=1e-5)
    res = conv(X1, adj.t(), return_attention_weights=True)
    ref = pyg(X1, adj.t(), return_attention_weights=True)
    assert isinstance(res[1], SparseTensor)
    assert res[1].sizes() == [4, 4, 2] and res[1].nnz() == 4
    torch.testing.assert_close(res[1].storage.value(), ref[1].storage.value(), atol=1e-6,
                               rtol=1e-5)


def test_pyg_cases_bipartite():
    pyg, conv = twins((8, 16), 32, heads=2, beta=True)
    assert str(conv) == "AttentionConv((8, 16), 32, heads=2)"
    out = conv((X1, X2), EDGES)
    assert out.size() == (2, 64)
    torch.testing.assert_close(out, pyg((X1, X2), EDGES), atol=1e-6, rtol=1e-5)
    adj = to_torch_csc_tensor(EDGES, size=(4, 2))
    torch.testing.assert_close(conv((X1, X2), adj.t()), out, atol=1e-6, rtol=1e-5)


def test_torchscript_is_declined_with_the_reason():
    conv = AttentionConv(8, 32, heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="TorchScript.*torch.compile"):
            torch.jit.script(conv)


def test_positional_order_is_transformer_convs():
    # (in, out, heads, concat, beta, dropout, edge_dim, bias, root_weight)
    args = (16, 8, 2, True, True, 0.0, 4, True, True)
    pyg, conv = twins(*args)
    assert conv.beta and conv.lin_beta is not None and conv.edge_dim == 4
    x, ei = torch.randn(10, 16), torch.randint(0, 10, (2, 30))
    ea = torch.randn(30, 4)
    torch.testing.assert_close(conv(x, ei, ea), pyg(x, ei, ea), atol=1e-6, rtol=1e-5)
    # graphformer's own arguments are keyword-only
    with pytest.raises(TypeError):
        AttentionConv(16, 8, 2, True, False, 0.0, None, True, True, "edge")
    assert AttentionConv(16, 8, 2, kernel="edge", rotary=True).kernel == "edge"


@pytest.mark.parametrize("root_weight", [True, False])
@pytest.mark.parametrize("beta", [True, False])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_state_dicts_load_strictly(root_weight, beta, concat, bias):
    kw = dict(heads=3, concat=concat, beta=beta, edge_dim=2, bias=bias,
              root_weight=root_weight)
    pyg, conv = twins(6, 5, **kw)  # loads strictly or raises
    x, ei = torch.randn(7, 6), torch.randint(0, 7, (2, 20))
    ea = torch.randn(20, 2)
    torch.testing.assert_close(conv(x, ei, ea), pyg(x, ei, ea), atol=1e-6, rtol=1e-5)
    # a TransformerConv's unused lin_skip (root_weight=False) is not kept
    assert (conv.lin_skip is None) == (not root_weight)


@pytest.mark.parametrize("aggr", ["mean", "max"])
def test_aggr_honoured_on_every_path(aggr):
    pyg, conv = twins(8, 4, heads=2, aggr=aggr)
    g = CausalGraph.from_lengths([5, 3], causal=False)
    x = torch.randn(8, 8)
    ref = pyg(x, g.edge_index)
    # a CausalGraph, a plain list with batch= (both fused with aggr="add"), a plain list
    for out in (conv(x, g), conv(x, g.edge_index, batch=g.batch), conv(x, g.edge_index)):
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    # the same with a hook registered: no change of answer
    handle = conv.register_message_forward_hook(lambda *a: None)
    torch.testing.assert_close(conv(x, g), ref, atol=1e-6, rtol=1e-5)
    handle.remove()
    # and not what a sum gives
    summed = AttentionConv(8, 4, heads=2)
    summed.load_state_dict(conv.state_dict())
    assert not torch.allclose(summed(x, g), ref, atol=1e-3)
    # a fused kernel cannot take another aggregation: refused, not ignored
    with pytest.raises(ValueError, match="aggr"):
        conv(x, g, kernel="sdpa")
    with pytest.raises(ValueError, match="aggr"):
        AttentionConv(8, 4, heads=2, aggr=aggr, kernel="sdpa")


def test_missing_edge_attr_raises():
    conv = AttentionConv(8, 4, heads=2, edge_dim=3)
    with pytest.raises(ValueError, match="edge_dim=3 but got no edge_attr"):
        conv(X1, EDGES)
    with pytest.raises(ValueError, match="edge_dim=3 but got no edge_attr"):
        conv(X1, CausalGraph.from_lengths([4]))
