import pytest
import torch
from torch_geometric.loader import DataLoader

from graphformer.datasets import (
    CopyFirstToken,
    CopyLastToken,
    CountOnes,
    causal_graph,
)
from graphformer.graph import CausalGraph

TASKS = [CopyFirstToken, CopyLastToken, CountOnes]


@pytest.mark.parametrize('cls', TASKS)
def test_shapes_balance_and_readout(cls):
    ds = cls(6, num_sequences=140, seed=2)
    assert len(ds) == 140
    assert ds.tokens.shape == (140, 6)
    assert set(ds.tokens.unique().tolist()) <= {0, 1}
    counts = torch.bincount(ds.labels, minlength=ds.num_classes)
    assert counts.max() - counts.min() <= 1
    data = ds[5]
    assert data.x.shape == (6, ) and data.x.dtype == torch.long
    assert int(data.root_index) == 5
    assert data.root_mask.nonzero().view(-1).tolist() == [5]


def test_labels_right_by_construction():
    first = CopyFirstToken(7, num_sequences=200, vocab_size=3)
    assert first.num_classes == 3
    assert torch.equal(first.labels, first.tokens[:, 0])
    assert first.tokens.max() == 2
    last = CopyLastToken(7, num_sequences=200)
    assert torch.equal(last.labels, last.tokens[:, -1])
    ones = CopyLastToken(7, num_sequences=200, background='ones')
    assert ones.tokens[:, :-1].eq(1).all()
    assert torch.equal(ones.labels, ones.tokens[:, -1])
    count = CountOnes(5, num_sequences=120)
    assert count.num_classes == 6
    assert torch.equal(count.labels, count.tokens.sum(1))
    # the ones sit at varying positions, not always at the front
    assert count.tokens[count.labels == 1].argmax(1).unique().numel() > 1


@pytest.mark.parametrize('cls', TASKS)
def test_seeded_and_split_stratified(cls):
    a, b, c = cls(5, 60, seed=1), cls(5, 60, seed=1), cls(5, 60, seed=2)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.tokens, c.tokens)
    train, test = a.split()
    assert set(a.labels[test].tolist()) == set(range(a.num_classes))
    assert len(train) + len(test) == 60
    assert set(train.tolist()).isdisjoint(test.tolist())


def test_batches_give_a_causal_graph():
    ds = CopyFirstToken(4, num_sequences=20)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    g = causal_graph(batch)
    assert isinstance(g, CausalGraph)
    assert g.num_sequences == 3 and g.num_nodes == 12
    assert batch.root_index.tolist() == [3, 7, 11]
    assert g.edge_index.size(1) == 3 * 10  # 4 * 5 / 2 causal pairs each
    single = causal_graph(ds[0], window=2)
    assert single.num_sequences == 1 and single.window == 2


def test_bad_input():
    with pytest.raises(ValueError, match='num_sequences'):
        CountOnes(10, num_sequences=15)
    with pytest.raises(ValueError, match='background'):
        CopyLastToken(4, background='zeros')
    with pytest.raises(ValueError, match='length'):
        CopyFirstToken(0)


def test_subset_tokens_and_labels():
    ds = CountOnes(4, num_sequences=50)
    idx = torch.tensor([3, 7, 1])
    sub = ds[idx]
    assert torch.equal(sub.tokens, ds.tokens[idx])
    assert torch.equal(sub.labels, ds.labels[idx])
    assert torch.equal(sub[0].x, ds[3].x)
