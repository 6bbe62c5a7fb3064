import math

import networkx as nx
import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv, GINConv
from torch_geometric.utils import to_undirected

from graphformer.diagnostics import (
    attention_sink_score,
    attention_to_position,
    causal_path_counts,
    dirichlet_energy,
    dirichlet_energy_per_layer,
    effective_resistance,
    hop_distance,
    jacobian_sensitivity,
    path_counts,
    runway_profile,
    sensitivity_vs_distance,
    spectral_gap,
)
from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv


def path_graph(n):
    ei = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    return to_undirected(ei, num_nodes=n)


def complete_graph(n):
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')
    keep = i != j
    return torch.stack([i[keep], j[keep]])


# ------------------------------------------------------------- smoothing
def test_dirichlet_energy_constant_is_zero_and_known_value():
    ei = path_graph(5)
    assert dirichlet_energy(torch.full((5, 3), 2.5), ei) == 0
    x = torch.arange(5.).view(-1, 1)  # neighbours differ by 1: 8 directed edges
    assert torch.isclose(dirichlet_energy(x, ei), torch.tensor(8 / 5))
    assert torch.isclose(dirichlet_energy(x, ei, sqrt=True),
                         torch.tensor(8 / 5).sqrt())
    # per graph with a batch vector: graph 0 is x, graph 1 is constant
    ei2 = torch.cat([ei, ei + 5], 1)
    x2 = torch.cat([x, torch.ones(5, 1)])
    batch = torch.tensor([0] * 5 + [1] * 5)
    assert torch.allclose(dirichlet_energy(x2, ei2, batch),
                          torch.tensor([8 / 5, 0.0]))


def test_dirichlet_energy_per_layer_and_causal_graph():
    g = CausalGraph.from_lengths([4, 3])
    states = [torch.randn(7, 2), torch.ones(7, 2)]
    E = dirichlet_energy_per_layer(states, g, sqrt=True)
    assert E.shape == (2, ) and E[0] > 0 and E[1] == 0
    with pytest.raises(ValueError, match='node 6 but x has 5 rows'):
        dirichlet_energy(torch.randn(5, 2), g.edge_index)


# ----------------------------------------------------------- sensitivity
def two_layer_gcn(edge_index):
    torch.manual_seed(0)
    c1, c2 = GCNConv(3, 8), GCNConv(8, 4)
    return lambda x: c2(c1(x, edge_index).tanh(), edge_index)


def test_jacobian_sensitivity_zero_outside_receptive_field():
    n = 9
    ei = path_graph(n)
    fn = two_layer_gcn(ei)
    x = torch.randn(n, 3)
    S = jacobian_sensitivity(fn, x, target=4)
    dist = (torch.arange(n) - 4).abs()
    assert (S[dist > 2] == 0).all()  # exactly zero, not small
    assert (S[dist <= 2] > 0).all()
    # several targets at once: [T, N]
    S2 = jacobian_sensitivity(fn, x, target=[0, 4], sources=[0, 1, 2, 3])
    assert S2.shape == (2, 4)
    assert torch.allclose(S2[1], S[:4])
    assert (S2[0, 3:] == 0).all()


def test_jacobian_sensitivity_matches_full_jacobian():
    ei = path_graph(6)
    fn = two_layer_gcn(ei)
    x = torch.randn(6, 3)
    J = torch.autograd.functional.jacobian(fn, x)  # [N, H, N, F]
    expected = J.pow(2).sum(dim=(1, 3)).sqrt()  # [target, source]
    S = jacobian_sensitivity(fn, x, target=list(range(6)), chunk_size=5)
    assert torch.allclose(S, expected, atol=1e-6)


@pytest.mark.parametrize('make', [
    lambda: GINConv(torch.nn.Linear(3, 4)),
    lambda: GATConv(3, 2, heads=2),
])
def test_one_layer_reaches_one_hop(make):
    ei = path_graph(7)
    conv = make()
    S = jacobian_sensitivity(lambda x: conv(x, ei), torch.randn(7, 3), 3)
    assert (S[[0, 1, 5, 6]] == 0).all() and (S[[2, 3, 4]] > 0).all()


def test_sensitivity_vs_distance():
    n = 9
    ei = path_graph(n)
    prof = sensitivity_vs_distance(two_layer_gcn(ei), torch.randn(n, 3), ei,
                                   target=[0, 4])
    # target 0 reaches distances 0..8, target 4 distances 0..4
    assert prof.distance.tolist() == list(range(9))
    assert prof.count.tolist() == [2, 3, 3, 3, 3, 1, 1, 1, 1]
    assert (prof.mean[3:] == 0).all() and (prof.mean[:3] > 0).all()
    prof = sensitivity_vs_distance(two_layer_gcn(ei), torch.randn(n, 3), ei,
                                   target=0, max_distance=2)
    assert prof.distance.tolist() == [0, 1, 2]


def test_hop_distance_follows_edge_direction():
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])  # 0 -> 1 -> 2 -> 3
    assert hop_distance(ei, 5, target=3).tolist() == [3, 2, 1, 0, -1]
    assert hop_distance(ei, 5, target=0).tolist() == [0, -1, -1, -1, -1]


def test_runway_profile_on_a_causal_stack():
    T, L = 6, 3
    g = CausalGraph.from_lengths([T])
    torch.manual_seed(0)
    convs = [GCNConv(4, 4, add_self_loops=False, normalize=False)
             for _ in range(L)]

    def states(x):
        out = [x]
        for conv in convs:
            out.append(out[-1] + conv(out[-1], g.edge_index).tanh())
        return out

    R = runway_profile(states, torch.randn(T, 4))
    assert R.shape == (L + 1, T)
    assert R[0, :-1].eq(0).all() and R[0, -1] > 0  # depth 0: only itself
    assert (R[1:] > 0).all()  # causal: every earlier token reaches the last
    Rn = runway_profile(states, torch.randn(T, 4), normalize=True)
    assert torch.allclose(Rn.sum(-1), torch.ones(L + 1))

    class Stackish(torch.nn.Module):  # the Stack contract
        def forward(self, x, edge_index, return_states=False):
            s = states(x)
            return (s[-1], s) if return_states else s[-1]

    x = torch.randn(T, 4)
    assert torch.allclose(runway_profile(Stackish(), x, g),
                          runway_profile(states, x))
    with pytest.raises(TypeError, match='floating point'):
        runway_profile(states, torch.zeros(T, 4, dtype=torch.long))


# -------------------------------------------------------------- topology
@pytest.mark.parametrize('L', [1, 2, 3, 5])
def test_path_counts_equal_binomial_on_dense_causal_dag(L):
    T = 7
    g = CausalGraph.from_lengths([T])
    P = path_counts(g, num_layers=L)
    for n in range(T):
        assert torch.equal(P[n], causal_path_counts(T, L, target=n))
    assert P[-1, 0] == math.comb(T - 1 + L - 1, L - 1)
    # two sequences: no walk between them
    P2 = path_counts(CausalGraph.from_lengths([3, 4]), num_layers=L)
    assert P2[:3, 3:].eq(0).all() and P2[3:, :3].eq(0).all()
    assert torch.equal(P2[-1, 3:], causal_path_counts(4, L))


def test_path_counts_on_a_path_without_self_loops():
    P = path_counts(path_graph(4), 4, num_layers=2)
    A = torch.tensor(nx.to_numpy_array(nx.path_graph(4)))
    assert torch.equal(P, A @ A)


def test_effective_resistance_on_a_path_is_the_distance():
    n = 6
    R = effective_resistance(path_graph(n), n)
    d = (torch.arange(n).view(-1, 1) - torch.arange(n).view(1, -1)).abs()
    assert torch.allclose(R, d.double(), atol=1e-9)
    # directed edges are symmetrised first
    directed = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    assert abs(effective_resistance(directed, n, pair=(0, n - 1)) - (n - 1)) < 1e-9


def test_effective_resistance_cycle_and_components():
    n = 6  # a cycle: two parallel paths of lengths k and n - k
    ei = to_undirected(torch.stack([torch.arange(n), (torch.arange(n) + 1) % n]))
    for k in range(1, n):
        assert abs(effective_resistance(ei, n, pair=(0, k))
                   - k * (n - k) / n) < 1e-9
    two = torch.tensor([[0, 2], [1, 3]])
    R = effective_resistance(two, 4)
    assert R[0, 1] == pytest.approx(1.0) and math.isinf(R[0, 2])
    assert math.isinf(effective_resistance(two, 4, pair=(1, 3)))


@pytest.mark.parametrize('n', [2, 3, 5, 8])
def test_spectral_gap_of_complete_graph(n):
    assert spectral_gap(complete_graph(n), n) == pytest.approx(n / (n - 1))


def test_spectral_gap_disconnected_and_directed():
    assert spectral_gap(torch.tensor([[0, 2], [1, 3]]), 4) == pytest.approx(0)
    assert spectral_gap(torch.tensor([[0, 1], [1, 2]]), 4) == pytest.approx(0)
    # a causal DAG on 3 tokens symmetrises to the triangle K3
    assert spectral_gap(CausalGraph.from_lengths([3])) == pytest.approx(1.5)
    # a path has a smaller gap than a complete graph
    assert spectral_gap(path_graph(6), 6) < spectral_gap(complete_graph(6), 6)


def test_topology_bad_input():
    with pytest.raises(ValueError, match='num_nodes'):
        effective_resistance(path_graph(3))
    with pytest.raises(ValueError, match='node 2 but x has 2 rows'):
        spectral_gap(path_graph(3), 2)
    with pytest.raises(TypeError, match='integer'):
        path_counts(path_graph(3).float(), 3, 2)
    with pytest.raises(ValueError, match='num_layers'):
        causal_path_counts(4, 0)


# ------------------------------------------------------------- attention
def test_attention_sink_score_dense():
    B, H, T = 2, 4, 5
    causal = torch.tril(torch.ones(T, T))
    uniform = causal / causal.sum(-1, keepdim=True)  # mean to pos 0 ~ 0.46
    sink = torch.zeros(T, T)
    sink[:, 0] = 1.0
    diag = torch.eye(T)  # mean to pos 0 = 1/T = 0.2
    attn = torch.stack([sink, uniform, diag, diag]).expand(B, H, T, T)
    per_head = attention_to_position(attn)
    assert per_head[0] == 1.0 and per_head[2] == pytest.approx(0.2)
    assert per_head[1] == pytest.approx(sum(1 / (i + 1) for i in range(T)) / T)
    assert attention_sink_score(attn) == 0.5
    assert attention_sink_score(attn, threshold=0.9) == 0.25
    assert attention_sink_score([attn, attn[:, 2:]]) == pytest.approx(2 / 6)


def test_attention_sink_score_edgewise_matches_dense():
    torch.manual_seed(0)
    g = CausalGraph.from_lengths([5, 5])
    conv = AttentionConv(8, 8, heads=2)
    x = torch.randn(10, 8)
    _, (ei, alpha) = conv(x, g, return_attention_weights=True)
    dense = torch.zeros(2, 2, 5, 5)
    b = g.batch[ei[1]]
    dense[b, :, g.position[ei[1]], g.position[ei[0]]] = alpha
    assert torch.allclose(attention_to_position((ei, alpha), graph=g),
                          attention_to_position(dense), atol=1e-6)
    assert attention_sink_score((ei, alpha), graph=g) \
        == attention_sink_score(dense)
    with pytest.raises(ValueError, match='graph='):
        attention_to_position((ei, alpha))
