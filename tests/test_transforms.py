import math

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from graphformer.datasets import CopyFirstToken, TreeNeighborsMatch
from graphformer.diagnostics import causal_path_counts, path_counts
from graphformer.graph import CausalGraph
from graphformer.transforms import (
    AddPauseTokens,
    FullyAdjacentLastLayer,
    VirtualNode,
    fully_adjacent_edges,
)


def edge_set(ei):
    return set(map(tuple, ei.t().tolist()))


# ------------------------------------------------------------ pause tokens
@pytest.mark.parametrize('layout,every,mask', [
    ('suffix', None, [0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1]),
    ('prefix', None, [1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0]),
    ('every', 2, [0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0]),
])
def test_pause_layouts_on_causal_graph(layout, every, mask):
    g = CausalGraph.from_lengths([4, 3])
    out = AddPauseTokens(2, layout, every=every)(g)
    assert out.pause_mask.int().tolist() == mask
    assert torch.equal(out.index, (~out.pause_mask).nonzero().view(-1))
    # the new graph is the dense causal DAG over the longer sequences
    lengths = [4 + 2, 3 + 2] if layout != 'every' else [4 + 4, 3 + 2]
    assert out.graph.lengths.tolist() == lengths
    ref = CausalGraph.from_lengths(lengths)
    assert torch.equal(out.graph.edge_index, ref.edge_index)
    # old edges survive, moved to the new indices
    old = {(int(out.index[j]), int(out.index[i])) for j, i in edge_set(g.edge_index)}
    assert old <= edge_set(out.graph.edge_index)


@pytest.mark.parametrize('L', [1, 2, 3, 4])
@pytest.mark.parametrize('M', [0, 1, 3])
def test_pauses_raise_path_count_of_last_real_token(L, M):
    T = 5
    g = CausalGraph.from_lengths([T])
    assert path_counts(g, num_layers=L)[-1, -1] == 1  # its self-loop chain
    out = AddPauseTokens(M)(g)
    P = path_counts(out.graph, num_layers=L)
    last_real = int(out.index[-1])
    assert P[-1, last_real] == math.comb(M + L - 1, L - 1)
    assert torch.equal(P[-1], causal_path_counts(T + M, L))


def test_pauses_on_explicit_graph_with_documents():
    g = CausalGraph.from_lengths([4]).with_documents(torch.tensor([0, 0, 1, 1]))
    out = AddPauseTokens(1, 'every', every=2)(g)
    # layout: t0 t1 P t2 t3 P ; pauses take the document of the token before
    assert out.pause_mask.int().tolist() == [0, 0, 1, 0, 0, 1]
    E = edge_set(out.graph.edge_index)
    assert (0, 2) in E and (1, 2) in E and (2, 2) in E  # into the first pause
    assert (2, 3) not in E  # no edge across the document boundary
    assert (3, 5) in E and (4, 5) in E and (2, 5) not in E
    assert all(j <= i for j, i in E)


def test_pauses_on_sequence_data():
    x = torch.tensor([5, 6, 7, 8, 9])
    y_tok = torch.tensor([1, 2, 3, 4, 0])
    batch = torch.tensor([0, 0, 0, 1, 1])
    data = Data(x=x, y=y_tok, batch=batch, root_index=torch.tensor([2, 4]),
                emb=torch.ones(5, 2))
    out = AddPauseTokens(2, pause_token=99)(data)
    assert out.x.tolist() == [5, 6, 7, 99, 99, 8, 9, 99, 99]
    assert out.y.tolist() == [1, 2, 3, -100, -100, 4, 0, -100, -100]
    assert out.emb[out.pause_mask].eq(0).all() and out.emb[~out.pause_mask].eq(1).all()
    assert out.batch.tolist() == [0] * 5 + [1] * 4
    assert out.root_index.tolist() == [4, 8]  # read out after the pauses
    kept = AddPauseTokens(2, move_readout=False)(data)
    assert kept.root_index.tolist() == [2, 6]
    assert kept.x[kept.pause_mask].eq(-1).all()
    # losses skip the pauses: cross_entropy ignores the -100 labels
    logits = torch.randn(9, 10)
    full = torch.nn.functional.cross_entropy(logits, out.y)
    real = torch.nn.functional.cross_entropy(logits[~out.pause_mask],
                                             y_tok)
    assert torch.isclose(full, real)


def test_pauses_on_data_with_edges_and_dataset_batches():
    g = CausalGraph.from_lengths([3])
    data = Data(x=torch.arange(3), edge_index=g.edge_index)
    out = AddPauseTokens(2, 'prefix')(data)
    ref = CausalGraph.from_lengths([5]).edge_index
    assert edge_set(out.edge_index) == edge_set(ref)
    assert out.edge_index.size(1) == ref.size(1)  # no duplicates
    ds = CopyFirstToken(4, num_sequences=20,
                        transform=AddPauseTokens(3))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch.num_nodes == 14 and batch.pause_mask.sum() == 6
    assert batch.root_index.tolist() == [6, 13]
    assert batch.root_mask.nonzero().view(-1).tolist() == [6, 13]


def test_pause_bad_input():
    with pytest.raises(ValueError, match='valid layouts'):
        AddPauseTokens(1, 'middle')
    with pytest.raises(ValueError, match='every'):
        AddPauseTokens(1, 'every')
    with pytest.raises(ValueError, match='num_pause'):
        AddPauseTokens(-1)
    with pytest.raises(TypeError, match='CausalGraph'):
        AddPauseTokens(1)(torch.zeros(3))


# --------------------------------------------------------- fully adjacent
def test_fully_adjacent_root_edges_on_tree():
    ds = TreeNeighborsMatch(2, transform=FullyAdjacentLastLayer())
    data = ds[0]
    assert edge_set(data.last_edge_index) == {(j, 0) for j in range(7)}
    batch = next(iter(DataLoader(ds, batch_size=3)))
    expected = {(j, 7 * (j // 7)) for j in range(21)}
    assert edge_set(batch.last_edge_index) == expected
    # the original edges are untouched
    assert torch.equal(data.edge_index, TreeNeighborsMatch(2)[0].edge_index)


def test_fully_adjacent_all_pairs():
    batch = torch.tensor([0, 0, 1, 1, 1])
    ei = fully_adjacent_edges(5, batch, mode='all')
    expected = {(j, i) for i in range(5) for j in range(5)
                if batch[i] == batch[j]}
    assert edge_set(ei) == expected and ei.size(1) == 4 + 9
    data = Data(x=torch.zeros(3, 1), edge_index=torch.empty(2, 0, dtype=torch.long))
    out = FullyAdjacentLastLayer('all')(data)
    assert out.last_edge_index.size(1) == 9


def test_fully_adjacent_bad_input():
    with pytest.raises(ValueError, match='root_index or data.root_mask'):
        FullyAdjacentLastLayer()(Data(x=torch.zeros(3, 1)))
    with pytest.raises(ValueError, match='valid modes'):
        FullyAdjacentLastLayer('some')
    with pytest.raises(ValueError, match='a node of that graph'):
        fully_adjacent_edges(4, torch.tensor([0, 0, 1, 1]),
                             torch.tensor([0, 1]))


def test_virtual_node_reexport():
    data = Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    out = VirtualNode()(data)
    assert out.num_nodes == 4
    assert {(j, 3) for j in range(3)} <= edge_set(out.edge_index)
