import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.nn import GCNConv

from graphformer import CausalGraph
from graphformer.nn import (AttentionConv, DeepSetsConv, FeedForward, GradientDescent,
                            HeavyBall, Nesterov, Oracle, Stack)
from graphformer.nn.dynamics import Euler, LieTrotter, Strang, resolve_method, resolve_scheme


def make_stack(method, seed=0, method_kwargs=None, scheme="lie_trotter", layers=3, C=16):
    torch.manual_seed(seed)
    oracles = [[Oracle(AttentionConv(C, 4, heads=4, root_weight=False), norm=nn.LayerNorm(C)),
                Oracle(FeedForward(C), norm=nn.LayerNorm(C))] for _ in range(layers)]
    return Stack(oracles, method=method, scheme=scheme, channels=C, method_kwargs=method_kwargs)


def test_nesterov_mu0_equals_heavyball():
    g = CausalGraph.from_lengths([5, 7])
    x = torch.randn(12, 16)
    hb = make_stack("heavyball")
    nv = make_stack("nesterov", method_kwargs=dict(mu=0.0, learn=("beta", "gamma")))
    nv.load_state_dict(hb.state_dict())
    v0 = torch.randn(12, 16)
    torch.testing.assert_close(nv(x, g, v0=v0), hb(x, g, v0=v0), atol=1e-6, rtol=0)


def test_nesterov_reduces_to_gradient_descent():
    g = CausalGraph.from_lengths([5, 7])
    x = torch.randn(12, 16)
    gd = make_stack("gd")
    nv = make_stack("nesterov", method_kwargs=dict(mu=0.0, beta=0.0, gamma=1.0, learn=(),
                                                   velocity_norm=False))
    missing, unexpected = nv.load_state_dict(gd.state_dict(), strict=False)
    assert not unexpected and all("fixed" in k for k in missing)
    torch.testing.assert_close(nv(x, g), gd(x, g), atol=1e-6, rtol=0)
    # and a learned Nesterov is not gradient descent
    assert not torch.allclose(make_stack("nesterov")(x, g), gd(x, g), atol=1e-3)


def expm(a):
    return torch.linalg.matrix_exp(torch.as_tensor(a, dtype=torch.float64)).numpy()


def compose(scheme, mats, h):
    y = np.eye(mats[0].shape[0])
    for substep in scheme.substeps(len(mats)):
        gen = sum(w * mats[i] for i, w in substep)
        y = expm(h * gen) @ y
    return y


def test_strang_is_second_order_lie_trotter_first():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    assert np.abs(A @ B - B @ A).max() > 0.1  # non-commuting
    hs = np.array([0.2, 0.1, 0.05, 0.025, 0.0125])
    slopes = {}
    for scheme in (LieTrotter(), Strang()):
        errs = [np.linalg.norm(compose(scheme, [A, B], h) - expm(h * (A + B))) for h in hs]
        slopes[scheme.name] = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slopes["lie_trotter"] - 2) < 0.2, slopes
    assert abs(slopes["strang"] - 3) < 0.2, slopes
    # Euler is a single step with the summed generator: exact for linear flows
    assert np.allclose(compose(Euler(), [A, B], 0.1), expm(0.1 * (A + B)))


def test_schemes_substeps():
    assert LieTrotter().substeps(2) == [[(0, 1.0)], [(1, 1.0)]]
    assert Strang().substeps(2) == [[(1, 0.5)], [(0, 1.0)], [(1, 0.5)]]
    assert Euler().substeps(2) == [[(0, 1.0), (1, 1.0)]]


def test_gradients_reach_every_scalar_and_state_dict_roundtrip():
    g = CausalGraph.from_lengths([6, 4])
    x = torch.randn(10, 16)
    for method in ("nesterov", "heavyball"):
        for scheme in ("lie_trotter", "strang", "euler"):
            s = make_stack(method, scheme=scheme)
            s(x, g, v0=torch.randn(10, 16)).square().sum().backward()
            scalars = {n: p for n, p in s.named_parameters() if n.endswith("_raw")}
            assert scalars and all(".dynamics." in "." + n for n in scalars)
            for n, p in scalars.items():
                assert p.grad is not None and bool((p.grad != 0).all()), n
            s2 = make_stack(method, seed=1, scheme=scheme)
            s2.load_state_dict(s.state_dict())
            torch.testing.assert_close(s2(x, g), s(x, g))


def test_nesterov_stack_of_gcn_trains():
    # a two-community graph: predict each node's community from noisy features
    torch.manual_seed(0)
    n = 40
    y = torch.arange(n) % 2
    src, dst = torch.randint(0, n, (2, 400))
    keep = y[src] == y[dst]
    edge_index = torch.stack([src[keep], dst[keep]])
    x = torch.randn(n, 8) + y.unsqueeze(1).float() * 0.3
    layers = [[Oracle(GCNConv(16, 16), norm=nn.LayerNorm(16))] for _ in range(3)]
    stack = Stack(layers, method="nesterov", channels=16)
    enc, head = nn.Linear(8, 16), nn.Linear(16, 2)
    params = [*stack.parameters(), *enc.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(stack(enc(x), edge_index)), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    acc = (head(stack(enc(x), edge_index)).argmax(1) == y).float().mean()
    assert acc > 0.9


def test_stack_mixes_layers_and_returns_states():
    g = CausalGraph.from_lengths([5, 3])
    x = torch.randn(8, 16)
    layers = [[Oracle(AttentionConv(16, 8, heads=2, root_weight=False))],
              [Oracle(DeepSetsConv(16, 16))], [Oracle(GCNConv(16, 16))]]
    out, states = Stack(layers, channels=16)(x, g, return_states=True)
    assert len(states) == 4 and states[0] is x and states[-1] is out


def test_bad_names_list_valid_ones():
    with pytest.raises(ValueError, match="valid methods: gd, heavyball, nesterov"):
        resolve_method("adam")
    with pytest.raises(ValueError, match="valid schemes: lie_trotter, strang, euler"):
        resolve_scheme("rk4")
    with pytest.raises(ValueError, match="needs `channels`"):
        Stack([[FeedForward(4)]], method="nesterov")
    with pytest.raises(ValueError, match="learned mu must start in"):
        Nesterov(2, 4, mu=0.0)
    with pytest.raises(ValueError, match="mu is fixed"):
        HeavyBall(2, 4, learn=("mu",))
    assert issubclass(resolve_method("gd"), GradientDescent)
