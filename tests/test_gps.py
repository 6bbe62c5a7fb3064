r"""The GraphGPS layer and model: GINE with bond features, the GPS arrangement equal to
PyG's GPSConv with copied weights, PE/SE encoders (shapes, sign flip in training only),
integer atom and bond types, attn_bias, and bad input."""
import copy

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GINEConv, GPSConv
from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE

from graphformer.graph import CausalGraph
from graphformer.models import HybridModel, gps_layer
from graphformer.nn import LapPEEncoder, RWSEEncoder, Stack

C, H = 16, 4


def molecules(num=3, seed=0):
    r"""A batch of small ring-and-chain graphs with atom types, bond types and float
    bond features."""
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num):
        n = 6 + i
        ring = torch.arange(n)
        src = torch.cat([ring, torch.tensor([0])])
        dst = torch.cat([(ring + 1) % n, torch.tensor([n // 2])])
        ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
        graphs.append(Data(x=torch.randint(0, 5, (n,), generator=g), edge_index=ei,
                           bond=torch.randint(0, 3, (ei.size(1),), generator=g),
                           edge_attr=torch.randn(ei.size(1), C, generator=g), num_nodes=n))
    return Batch.from_data_list(graphs)


def gine(seed=0):
    torch.manual_seed(seed)
    return GINEConv(nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, C)))


def copy_gpsconv(ref: GPSConv, local, attn, mlp) -> None:
    r"""GPSConv's weights into the three oracles of a post-norm GPS layer."""
    local.conv.load_state_dict(ref.conv.state_dict())
    q, k, v = ref.attn.in_proj_weight.chunk(3)
    bq, bk, bv = ref.attn.in_proj_bias.chunk(3)
    with torch.no_grad():
        for lin, w, b in ((attn.conv.lin_query, q, bq), (attn.conv.lin_key, k, bk),
                          (attn.conv.lin_value, v, bv)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    attn.out[0].load_state_dict(ref.attn.out_proj.state_dict())
    mlp.conv.c_fc.load_state_dict(ref.mlp[0].state_dict())
    mlp.conv.c_proj.load_state_dict(ref.mlp[3].state_dict())
    for oracle, norm in ((local, ref.norm1), (attn, ref.norm2), (mlp, ref.norm3)):
        oracle.post_norm.load_state_dict(norm.module.state_dict())


def test_gine_inside_the_hybrid_layer_equals_gineconv():
    data = molecules()
    ref = gine()
    model = HybridModel([5], C, 1, num_layers=1, local=lambda c: gine(), edge_dim=[3],
                        heads=H, norm="batch", norm_position="post")
    local = model.stack.layers[0][0]
    x = torch.randn(data.num_nodes, C)
    e = model.edge_encoder(data.bond)
    out = local(x, {"local": data.edge_index}, edge_attr=e)
    torch.testing.assert_close(out, ref(x, data.edge_index, e))
    # the bond types reach the output: changing one bond changes the prediction
    model.eval()
    y = model(data.x, data.edge_index, data.batch, edge_attr=data.bond)
    bond = data.bond.clone()
    bond[0] = (bond[0] + 1) % 3
    assert not torch.allclose(y, model(data.x, data.edge_index, data.batch, edge_attr=bond))


@pytest.mark.parametrize("train", [True, False])
def test_gps_layer_equals_gpsconv(train):
    data = molecules(seed=1)
    ref = GPSConv(C, gine(), heads=H, dropout=0.0, norm="batch_norm")
    layer = gps_layer(C, gine(), heads=H, norm="batch", norm_position="post",
                      edge_features=True)
    copy_gpsconv(ref, *layer)
    ours = Stack([layer], method="gd", scheme="gps", channels=C)
    graphs = {"local": data.edge_index, "global": CausalGraph.from_batch(data.batch,
                                                                           causal=False)}
    x = torch.randn(data.num_nodes, C)
    for m in (ref, ours):
        m.train(train)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = ref(xa, data.edge_index, data.batch, edge_attr=data.edge_attr)
    b = ours(xb, graphs, edge_attr=data.edge_attr, batch=data.batch)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer[1].conv.lin_value.weight.grad,
                               ref.attn.in_proj_weight.grad.chunk(3)[2], atol=1e-5,
                               rtol=1e-5)
    if train:  # the running statistics moved the same way
        torch.testing.assert_close(layer[2].post_norm.running_mean,
                                   ref.norm3.module.running_mean)


def test_gps_model_with_integer_types_rwse_nesterov_and_attn_bias():
    data = AddRandomWalkPE(walk_length=8)(molecules())
    for method in ("gd", "nesterov"):
        torch.manual_seed(0)
        model = HybridModel([5], C, 1, num_layers=2, local="gine", edge_dim=[3], heads=H,
                            method=method, readout="sum", norm="batch",
                            norm_position="post", pe="rwse", pe_dim=8, pe_channels=4,
                            head_layers=3, attn_dropout=0.5)
        model.eval()
        y = model(data.x, data.edge_index, data.batch, edge_attr=data.bond,
                  pe=data.random_walk_pe)
        assert y.shape == (3, 1) and torch.isfinite(y).all()
    # attn_bias reaches the attention: zero changes nothing, a bias that keeps only the
    # self edges changes the output
    everyone = HybridModel.global_graph(data.batch)
    kw = dict(edge_attr=data.bond, pe=data.random_walk_pe)
    zero = torch.zeros(everyone.num_edges, H)
    torch.testing.assert_close(model(data.x, data.edge_index, data.batch, attn_bias=zero,
                                     **kw), y)
    src, dst = everyone.edge_index
    self_only = torch.where(src == dst, 0.0, -1e4).unsqueeze(-1).expand(-1, H)
    assert not torch.allclose(model(data.x, data.edge_index, data.batch,
                                    attn_bias=self_only, **kw), y, atol=1e-4)


def test_pe_encoders_shapes_and_sign_flip_in_training_only():
    data = molecules()
    rw = AddRandomWalkPE(walk_length=6)(data).random_walk_pe
    assert rw.shape == (data.num_nodes, 6)
    assert RWSEEncoder(6, 8)(rw).shape == (data.num_nodes, 8)
    pytest.importorskip("scipy", reason="AddLaplacianEigenvectorPE needs SciPy: pip "
                        "install graphformer[molecules]")
    one = Data(edge_index=data.edge_index[:, data.edge_index.max(0).values < 6],
               num_nodes=6)
    lap = AddLaplacianEigenvectorPE(k=3, is_undirected=True)(one).laplacian_eigenvector_pe
    assert lap.shape == (6, 3)
    enc = LapPEEncoder(3, 8)
    assert enc(lap).shape == (6, 8)
    enc.eval()
    assert torch.equal(enc.sign_flip(lap), lap)
    torch.testing.assert_close(enc(lap), enc(lap))
    enc.train()
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        flipped = enc.sign_flip(lap)
        sign = flipped / lap  # one sign per eigenvector, the same on every node
        assert torch.equal(sign, sign[:1].expand_as(sign)) and set(sign.unique().tolist()) <= {-1.0, 1.0}
        seen.add(tuple(sign[0].tolist()))
    assert len(seen) > 1


def test_bad_input_is_named():
    data = AddRandomWalkPE(walk_length=8)(molecules())
    model = HybridModel(4, C, 1, num_layers=1, local="gine", edge_dim=5, heads=H,
                        pe="rwse", pe_dim=8, pe_channels=4, readout="mean")
    x = torch.randn(data.num_nodes, 4)
    ea = torch.randn(data.num_edges, 5)
    model(x, data.edge_index, data.batch, edge_attr=ea, pe=data.random_walk_pe)
    with pytest.raises(ValueError, match=r"edge_attr must have shape \[E, 5\], got \[\d+, 3\]"):
        model(x, data.edge_index, data.batch, edge_attr=ea[:, :3], pe=data.random_walk_pe)
    with pytest.raises(ValueError, match=r"pe must have shape \[num_nodes, 8\].*AddRandomWalkPE"):
        model(x, data.edge_index, data.batch, edge_attr=ea, pe=data.random_walk_pe[:, :4])
    with pytest.raises(ValueError, match="got no pe"):
        model(x, data.edge_index, data.batch, edge_attr=ea)
    with pytest.raises(ValueError, match="got no edge_attr"):
        model(x, data.edge_index, data.batch, pe=data.random_walk_pe)
    with pytest.raises(ValueError, match="takes no edge features"):
        HybridModel(4, C, 1, local="gin", edge_dim=5, heads=H)
    typed = HybridModel([5], C, 1, local="gine", edge_dim=[3], heads=H)
    with pytest.raises(ValueError, match=r"edge_attr column 0 has value 3 outside \[0, 3\)"):
        typed(data.x, data.edge_index, data.batch, edge_attr=torch.full((data.num_edges,), 3))
    with pytest.raises(ValueError, match="pe_dim"):
        HybridModel(4, C, 1, pe="rwse")
    with pytest.raises(ValueError, match="norm"):
        HybridModel(4, C, 1, norm="group")


def test_gps_scheme_and_mixed_norm_placement():
    from graphformer.nn import GPS, FeedForward, Oracle
    assert GPS().substeps(3) == [[(0, 1.0), (1, 1.0)], [(2, 1.0)]]
    assert GPS().substeps(1) == [[(0, 1.0)]]
    mixed = Stack([[Oracle(FeedForward(C), post_norm=nn.LayerNorm(C)),
                    Oracle(FeedForward(C), norm=nn.LayerNorm(C)), Oracle(FeedForward(C))]],
                  scheme="gps")
    with pytest.raises(ValueError, match="mixes post-norm oracles"):
        mixed(torch.randn(5, C), torch.zeros(2, 0, dtype=torch.long))
