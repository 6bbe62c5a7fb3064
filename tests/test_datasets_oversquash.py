import math

import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, InMemoryDataset
from torch_geometric.loader import DataLoader

from graphformer.datasets import (
    CliquePathTransfer,
    CrossedRingTransfer,
    RingTransfer,
    TreeNeighborsMatch,
    stratified_split,
)
from graphformer.transforms import FullyAdjacentLastLayer

TRANSFER = [RingTransfer, CrossedRingTransfer, CliquePathTransfer]


# --------------------------------------------------------------- Tree-NM
@pytest.mark.parametrize('depth,size', [(2, 96), (3, 8000), (4, 16000)])
def test_tree_sizes_as_in_the_paper(depth, size):
    ds = TreeNeighborsMatch(depth)
    L = 2**depth
    assert len(ds) == size
    assert ds.num_classes == L
    # every class exactly equally often: each permutation gives each value once
    counts = torch.bincount(ds.labels, minlength=L)
    assert counts.min() == counts.max() == size // L


def test_tree_size_formula_large_depth():
    # r > 3: min(1000, (2^r)!, 32000 / 2^r) permutations x 2^r keys; only
    # the count is checked here at r = 5 (generation is vectorised).
    ds = TreeNeighborsMatch(5)
    assert len(ds) == min(1000, math.factorial(32), 32000 // 32) * 32 == 32000
    ds = TreeNeighborsMatch(5, max_examples=3200)
    assert len(ds) == 3200


def _check_tree_graph(data, depth):
    L = 2**depth
    n = 2 * L - 1
    assert data.num_nodes == n and data.x.shape == (n, 2)
    assert data.x.dtype == torch.long
    # topology: child -> parent edges plus a self-loop per node
    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    G.add_edges_from(data.edge_index.t().tolist())
    loops = [(u, v) for u, v in G.edges if u == v]
    assert len(loops) == n
    G.remove_edges_from(loops)
    assert nx.is_arborescence(G.reverse())  # a tree rooted at node 0
    root = int(data.root_index)
    assert root == 0 and data.root_mask.nonzero().view(-1).tolist() == [0]
    leaves = [v for v in G.nodes if G.in_degree(v) == 0]
    assert len(leaves) == L
    assert all(nx.shortest_path_length(G, v, root) == depth for v in leaves)
    # features: leaves hold (key, value) with keys 1..L and values a
    # permutation of 1..L, interior nodes (0, 0), root (query, 0)
    keys, values = data.x[leaves, 0], data.x[leaves, 1]
    assert sorted(keys.tolist()) == list(range(1, L + 1))
    assert sorted(values.tolist()) == list(range(1, L + 1))
    interior = [v for v in range(1, n) if v not in leaves]
    assert data.x[interior].eq(0).all()
    query, root_value = data.x[root].tolist()
    assert 1 <= query <= L and root_value == 0
    # label recomputed from the graph: the value of the leaf with that key
    match = (keys == query).nonzero().view(-1)
    assert match.numel() == 1
    assert int(data.y) == int(values[match]) - 1


@pytest.mark.parametrize('depth', [2, 3])
def test_tree_labels_right_by_construction(depth):
    ds = TreeNeighborsMatch(depth, seed=1)
    for i in torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:40]:
        _check_tree_graph(ds[int(i)], depth)


def test_tree_all_permutations_at_depth_2_distinct_examples():
    ds = TreeNeighborsMatch(2)
    rows = {tuple(ds[i].x.view(-1).tolist()) for i in range(len(ds))}
    assert len(rows) == 96  # 4! permutations x 4 keys, no duplicates


def test_tree_vectorised_storage_equals_collate():
    ds = TreeNeighborsMatch(2)
    data_list = [ds[i] for i in range(len(ds))]
    data, slices = InMemoryDataset.collate(data_list)
    for key in ['x', 'edge_index', 'y', 'root_mask', 'root_index']:
        assert torch.equal(data[key], ds._data[key]), key
        assert torch.equal(slices[key], ds.slices[key]), key


def test_tree_batches_read_out_at_every_root():
    ds = TreeNeighborsMatch(3)
    batch = next(iter(DataLoader(ds[:5], batch_size=5)))
    assert batch.root_index.tolist() == [15 * g for g in range(5)]
    assert torch.equal(batch.root_mask.nonzero().view(-1), batch.root_index)


def test_tree_seeded_determinism():
    a, b, c = (TreeNeighborsMatch(3, seed=s) for s in (0, 0, 1))
    assert torch.equal(a._data.x, b._data.x) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a._data.x, c._data.x)
    assert all(torch.equal(u, v) for u, v in zip(a.split(), b.split()))


def test_tree_split_is_80_20_and_stratified():
    ds = TreeNeighborsMatch(3)
    train, test = ds.split()
    assert len(train) == 6400 and len(test) == 1600
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert len(set(train.tolist()) | set(test.tolist())) == len(ds)
    per_class = torch.bincount(ds.labels[test], minlength=8)
    assert per_class.min() == per_class.max() == 200


def test_tree_bad_input():
    with pytest.raises(ValueError, match='depth'):
        TreeNeighborsMatch(0)
    with pytest.raises(TypeError, match='depth'):
        TreeNeighborsMatch(2.5)
    with pytest.raises(ValueError, match='not supported'):
        TreeNeighborsMatch(13)


def test_tree_pre_transform():
    ds = TreeNeighborsMatch(2, pre_transform=lambda d: d.update({'z': d.x.sum()}) or d)
    assert ds[3].z == ds[3].x.sum()


# -------------------------------------------------------- graph transfer
def _nx(data):
    G = nx.Graph()
    G.add_nodes_from(range(data.num_nodes))
    G.add_edges_from(data.edge_index.t().tolist())
    return G


@pytest.mark.parametrize('cls', TRANSFER)
@pytest.mark.parametrize('r', [2, 3, 5, 8])
def test_transfer_distance_is_r(cls, r):
    data = cls(r, num_graphs=10)[0]
    G = _nx(data)
    assert nx.is_connected(G)
    assert nx.shortest_path_length(G, int(data.root_index),
                                   int(data.label_node_index)) == r
    # undirected: both directions stored, no self-loops
    ei = data.edge_index
    pairs = set(map(tuple, ei.t().tolist()))
    assert all((v, u) in pairs for u, v in pairs)
    assert not (ei[0] == ei[1]).any()


def test_transfer_topologies():
    ring = _nx(RingTransfer(4, num_graphs=10)[0])
    assert nx.is_isomorphic(ring, nx.cycle_graph(8))
    crossed = _nx(CrossedRingTransfer(4, num_graphs=10)[0])
    assert crossed.number_of_nodes() == 8
    assert set(ring.edges) <= set(crossed.edges)
    assert crossed.number_of_edges() > ring.number_of_edges()
    # crosses join nodes whose distance to the read-out differs by one
    d = nx.shortest_path_length(ring, 0)
    assert all(abs(d[u] - d[v]) == 1 for u, v in crossed.edges)
    ds = CliquePathTransfer(5, num_graphs=10)
    G = _nx(ds[0])
    c = ds.clique_size
    assert c == 4 and G.number_of_nodes() == c + 5 - 1
    assert G.subgraph(range(c)).number_of_edges() == c * (c - 1) // 2
    assert nx.is_isomorphic(G.subgraph(range(c - 1, G.number_of_nodes())),
                            nx.path_graph(5))


@pytest.mark.parametrize('cls', TRANSFER)
def test_transfer_features_and_labels(cls):
    ds = cls(3, num_graphs=50, num_classes=5)
    for i in range(0, 50, 7):
        data = ds[i]
        root, label_node = int(data.root_index), int(data.label_node_index)
        x = data.x
        assert x.shape == (data.num_nodes, 5)
        assert x[root].eq(0).all()
        onehot = x[label_node]
        assert onehot.sum() == 1 and int(onehot.argmax()) == int(data.y)
        others = [v for v in range(data.num_nodes) if v not in (root, label_node)]
        assert x[others].eq(1).all()
        assert data.root_mask.nonzero().view(-1).tolist() == [root]


@pytest.mark.parametrize('cls', TRANSFER)
def test_transfer_balanced_shuffled_and_split_holds_every_class(cls):
    ds = cls(4, num_graphs=503, num_classes=5, seed=3)
    counts = torch.bincount(ds.labels, minlength=5)
    assert counts.max() - counts.min() <= 1
    # not sorted by class
    assert (ds.labels[1:] != ds.labels[:-1]).sum() > 100
    train, test = ds.split()
    assert set(ds.labels[test].tolist()) == set(range(5))
    assert set(ds.labels[train].tolist()) == set(range(5))
    assert len(train) + len(test) == 503
    assert set(train.tolist()).isdisjoint(test.tolist())


def test_transfer_seeded_determinism():
    a, b, c = (RingTransfer(3, num_graphs=40, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.labels, b.labels) and torch.equal(a._data.x, b._data.x)
    assert not torch.equal(a.labels, c.labels)


def test_transfer_bad_input():
    with pytest.raises(ValueError, match='distance'):
        RingTransfer(1)
    with pytest.raises(ValueError, match='num_graphs'):
        RingTransfer(3, num_graphs=9, num_classes=5)
    with pytest.raises(ValueError, match='clique_size'):
        CliquePathTransfer(3, num_graphs=10, clique_size=1)


# ----------------------------------------------------------------- split
def test_stratified_split():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 2)
    train, test = stratified_split(y, 0.2, seed=0)
    assert torch.bincount(y[test]).tolist() == [10, 6, 1]
    assert torch.bincount(y[train]).tolist() == [40, 24, 1]
    again = stratified_split(y, 0.2, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    with pytest.raises(ValueError, match='class 3'):
        stratified_split(torch.tensor([0, 0, 3]), 0.5)
    with pytest.raises(ValueError, match='test_fraction'):
        stratified_split(y, 1.5)
    with pytest.raises(TypeError, match='integer'):
        stratified_split(y.float())


def test_subsets_keep_their_own_labels():
    ds = RingTransfer(3, num_graphs=60)
    train, test = ds.split()
    sub = ds[test]
    assert torch.equal(sub.labels, ds.labels[test])
    assert torch.equal(sub.labels, torch.cat([d.y for d in sub]))
    # a validation split carved out of the training subset
    tr2, va2 = ds[train].split(test_fraction=0.2)
    assert len(tr2) + len(va2) == len(train)
    assert set(ds[train].labels[va2].tolist()) == set(range(5))


@pytest.mark.parametrize('make', [
    lambda: TreeNeighborsMatch(3),
    lambda: CrossedRingTransfer(4, num_graphs=40),
    lambda: TreeNeighborsMatch(2, transform=FullyAdjacentLastLayer()),
])
def test_fast_batch_equals_from_data_list(make):
    ds = make()
    idx = torch.tensor([7, 2, 11, 0])
    for source in (ds, ds[torch.arange(5, 25)]):
        fast = source.batch(idx)
        ref = Batch.from_data_list([source[int(i)] for i in idx])
        assert set(fast.keys()) == set(ref.keys())
        for key in ref.keys():
            assert torch.equal(fast[key], ref[key]), key
    batches = list(ds.iter_batches(7, index=torch.arange(20), shuffle=True,
                                   seed=1))
    assert [b.num_graphs for b in batches] == [7, 7, 6]
    seen = torch.cat([b.y for b in batches])
    assert torch.equal(seen.sort().values, ds.labels[:20].sort().values)
    again = list(ds.iter_batches(7, index=torch.arange(20), shuffle=True,
                                 seed=1))
    assert all(torch.equal(a.x, b.x) for a, b in zip(batches, again))
