r"""CausalGraph: the three views (edge list, dense mask, BlockMask) hold the same edge
set for every rule, the padded layout round-trips, and bad input is refused clearly."""
from typing import Set, Tuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphformer.graph import CausalGraph, as_edge_index, check_edge_index

SETTINGS = settings(max_examples=15, deadline=None)
Edges = Set[Tuple[int, int]]


# ---------------------------------------------------------------------- oracles
def rule_edges(lengths, causal=True, window=None, document=None) -> Edges:
    r"""The edge set of the rule, written out pair by pair (the test's own oracle)."""
    edges, start = set(), 0
    for n in lengths:
        for i in range(n):
            for j in range(n):
                if causal and j > i:
                    continue
                if window is not None and abs(i - j) >= window:
                    continue
                if document is not None and document[start + i] != document[start + j]:
                    continue
                edges.add((start + j, start + i))
        start += n
    return edges


def as_set(edge_index: torch.Tensor) -> Edges:
    return set(map(tuple, edge_index.t().tolist()))


def dense_edges(graph: CausalGraph) -> Edges:
    b, i, j = graph.dense_mask().nonzero(as_tuple=True)
    start = graph.ptr[:-1][b]
    return as_set(torch.stack([start + j, start + i]))


def block_mask_edges(graph: CausalGraph, block_size: int = 4) -> Edges:
    r"""Pairs FlexAttention computes with ``graph.block_mask()``: pairs in a full block,
    and pairs in a partial block where ``mask_mod`` is true."""
    bm = graph.block_mask(block_size=block_size)
    B, T = graph.num_sequences, graph.max_length
    bq, bk = bm.BLOCK_SIZE
    pos = torch.arange(T)
    qb, kb = (pos // bq).view(1, T, 1), (pos // bk).view(1, 1, T)

    def blocks(num, idx):
        nq = num.size(-1)
        dense = torch.zeros(B, nq, idx.size(-1) + 1, dtype=torch.bool)
        for b in range(B):
            for q in range(nq):
                dense[b, q, idx[b, 0, q, :int(num[b, 0, q])].long()] = True
        return dense[torch.arange(B).view(B, 1, 1), qb, kb]  # [B, T, T] per element

    partial = blocks(bm.kv_num_blocks, bm.kv_indices)
    full = torch.zeros_like(partial)
    if bm.full_kv_num_blocks is not None:
        full = blocks(bm.full_kv_num_blocks, bm.full_kv_indices)
    mod = bm.mask_mod(torch.arange(B).view(B, 1, 1), torch.zeros((), dtype=torch.long),
                      pos.view(1, T, 1), pos.view(1, 1, T))
    allowed = full | (partial & mod)
    b, i, j = allowed.nonzero(as_tuple=True)
    start = graph.ptr[:-1][b]
    return as_set(torch.stack([start + j, start + i]))


def check_views(graph: CausalGraph, expected: Edges) -> None:
    ei = graph.edge_index
    assert ei.dtype == torch.long and ei.dim() == 2 and ei.size(0) == 2
    key = ei[1] * graph.num_nodes + ei[0]
    assert bool((key[1:] > key[:-1]).all()), "edge_index must be sorted by target, no duplicates"
    assert as_set(ei) == expected
    assert dense_edges(graph) == expected
    assert block_mask_edges(graph) == expected
    mask = graph.dense_mask()
    assert mask.shape == (graph.num_sequences, graph.max_length, graph.max_length)
    assert graph.num_edges == len(expected)


# ---------------------------------------------------------------------- strategies
lengths_st = st.lists(st.integers(1, 9), min_size=1, max_size=4)


@st.composite
def documents(draw, num_nodes):
    ids = draw(st.lists(st.integers(0, 1), min_size=num_nodes, max_size=num_nodes))
    return torch.tensor(ids).cumsum(0)  # a new document starts where a 1 is drawn


@st.composite
def pairs_inside(draw, lengths, causal=True, max_size=6):
    r"""Random pairs ``(j, i)`` inside one sequence, with ``j <= i`` when causal."""
    ptr = [0]
    for n in lengths:
        ptr.append(ptr[-1] + n)
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        b = draw(st.integers(0, len(lengths) - 1))
        i = draw(st.integers(0, lengths[b] - 1))
        j = draw(st.integers(0, i if causal else lengths[b] - 1))
        out.append((ptr[b] + j, ptr[b] + i))
    return out


def to_index(pairs) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.long).view(-1, 2).t().contiguous()


# ---------------------------------------------------------------------- three views
@pytest.mark.parametrize("causal", [True, False])
def test_dense_views(causal):
    graph = CausalGraph.from_lengths([5, 3, 7], causal=causal)
    assert graph.is_dense
    check_views(graph, rule_edges([5, 3, 7], causal))


@SETTINGS
@given(data=st.data(), lengths=lengths_st, causal=st.booleans(),
       window=st.one_of(st.none(), st.integers(1, 5)), use_docs=st.booleans())
def test_rule_views(data, lengths, causal, window, use_docs):
    graph = CausalGraph.from_lengths(lengths, causal=causal, window=window)
    doc = None
    if use_docs:
        doc = data.draw(documents(sum(lengths)))
        graph = graph.with_documents(doc)
    check_views(graph, rule_edges(lengths, causal, window, None if doc is None else doc.tolist()))


@SETTINGS
@given(data=st.data(), lengths=lengths_st, window=st.one_of(st.none(), st.integers(1, 4)))
def test_extra_and_removed_edges(data, lengths, window):
    graph = CausalGraph.from_lengths(lengths, window=window)
    extra = data.draw(pairs_inside(lengths))
    removed = data.draw(pairs_inside(lengths))
    expected = rule_edges(lengths, window=window)
    expected = (expected | set(extra)) - set(removed)
    graph = graph.add_edges(to_index(extra)).remove_edges(to_index(removed))
    assert not graph.is_dense
    check_views(graph, expected)
    # Composition follows the order of the calls: edges added back after a removal are in.
    again = graph.add_edges(to_index(removed))
    check_views(again, expected | set(removed))


@SETTINGS
@given(data=st.data(), lengths=lengths_st, causal=st.booleans())
def test_from_edge_index(data, lengths, causal):
    pairs = data.draw(pairs_inside(lengths, causal=causal, max_size=20))
    batch = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    ei = to_index(pairs)
    if ei.size(1) > 0:  # duplicates and any order are accepted
        ei = torch.cat([ei, ei[:, :1]], 1)[:, torch.randperm(ei.size(1) + 1)]
    graph = CausalGraph.from_edge_index(ei, batch, causal=causal)
    check_views(graph, set(pairs))
    removed = pairs[:2]
    check_views(graph.remove_edges(to_index(removed)), set(pairs) - set(removed))
    extra = data.draw(pairs_inside(lengths, causal=causal))
    check_views(graph.add_edges(to_index(extra)), set(pairs) | set(extra))
    if ei.size(1) > len(set(pairs)):  # the repeated edge, when asked to refuse it
        with pytest.raises(ValueError, match="duplicate edge"):
            CausalGraph.from_edge_index(ei, batch, causal=causal, allow_duplicates=False)


def test_attributes():
    graph = CausalGraph.from_lengths([2, 3])
    assert graph.ptr.tolist() == [0, 2, 5]
    assert graph.batch.tolist() == [0, 0, 1, 1, 1]
    assert graph.position.tolist() == [0, 1, 0, 1, 2]
    assert graph.lengths.tolist() == [2, 3]
    assert (graph.num_nodes, graph.num_sequences, graph.max_length) == (5, 2, 3)
    same = CausalGraph.from_batch(torch.tensor([0, 0, 1, 1, 1]))
    assert torch.equal(same.edge_index, graph.edge_index)
    assert torch.equal(as_edge_index(graph), graph.edge_index)
    ei = torch.tensor([[0], [1]])
    assert as_edge_index(ei) is ei
    moved = graph.with_window(2).to("cpu")
    assert as_set(moved.edge_index) == rule_edges([2, 3], window=2)
    assert "window=2" in repr(moved)


# ---------------------------------------------------------------------- padded layout
@SETTINGS
@given(lengths=lengths_st, channels=st.integers(1, 3))
def test_padded_round_trip(lengths, channels):
    graph = CausalGraph.from_lengths(lengths)
    x = torch.randn(graph.num_nodes, channels)
    xp = graph.to_padded(x)
    assert xp.shape == (len(lengths), max(lengths), channels)
    for b, n in enumerate(lengths):
        start = int(graph.ptr[b])
        assert torch.equal(xp[b, :n], x[start:start + n])
        assert bool((xp[b, n:] == 0).all()), "padding must be zeros"
    assert torch.equal(graph.from_padded(xp), x)
    # Heads as an extra trailing dimension, and non-contiguous inputs.
    xh = torch.randn(channels, graph.num_nodes, 2).transpose(0, 1)
    assert torch.equal(graph.from_padded(graph.to_padded(xh)), xh)


def test_padded_uniform_is_a_view():
    graph = CausalGraph.from_lengths([4, 4])
    x = torch.randn(8, 3)
    xp = graph.to_padded(x)
    assert xp.data_ptr() == x.data_ptr() and xp.shape == (2, 4, 3)


# ---------------------------------------------------------------------- bad input
def test_forward_in_time_edge_raises():
    batch = torch.tensor([0, 0, 0])
    with pytest.raises(ValueError, match="forward in time"):
        CausalGraph.from_edge_index(torch.tensor([[2], [1]]), batch)
    # A cycle needs a forward edge: refused too.
    with pytest.raises(ValueError, match="forward in time"):
        CausalGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), batch)
    with pytest.raises(ValueError, match="forward in time"):
        CausalGraph.from_lengths([3]).add_edges(torch.tensor([[2], [0]]))
    # Without the causal rule, backward edges and cycles are allowed.
    graph = CausalGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), batch, causal=False)
    assert as_set(graph.edge_index) == {(0, 1), (1, 0)}


def test_cross_sequence_edge_raises():
    batch = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="different sequences"):
        CausalGraph.from_edge_index(torch.tensor([[1], [2]]), batch)
    with pytest.raises(ValueError, match="different sequences"):
        CausalGraph.from_lengths([2, 2]).add_edges(torch.tensor([[0], [3]]))


def test_bad_batch_and_lengths():
    with pytest.raises(ValueError, match="sorted"):
        CausalGraph.from_batch(torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="sorted"):
        CausalGraph.from_batch(torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        CausalGraph.from_batch(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        CausalGraph.from_batch(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="integers"):
        CausalGraph.from_lengths(torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="positive"):
        CausalGraph.from_lengths([3, 0])
    with pytest.raises(ValueError, match="window"):
        CausalGraph.from_lengths([3], window=0)
    with pytest.raises(ValueError, match="one id per node"):
        CausalGraph.from_lengths([3]).with_documents(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        CausalGraph.from_lengths([3]).with_documents(torch.tensor([0.0, 1.0, 1.0]))


def test_bad_edge_index():
    batch = torch.tensor([0, 0, 0])
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        CausalGraph.from_edge_index(torch.tensor([[0, 1, 2]]), batch)
    with pytest.raises(TypeError, match="integer node indices"):
        CausalGraph.from_edge_index(torch.tensor([[0.0], [1.0]]), batch)
    with pytest.raises(TypeError, match="torch.Tensor"):
        CausalGraph.from_edge_index([[0], [1]], batch)
    with pytest.raises(ValueError, match="node 5 but the graph given by batch has 3 nodes"):
        CausalGraph.from_edge_index(torch.tensor([[0], [5]]), batch)
    with pytest.raises(ValueError, match="negative"):
        check_edge_index(torch.tensor([[0], [-1]]), 3)
    with pytest.raises(ValueError, match="explicit edge list"):
        CausalGraph.from_edge_index(torch.tensor([[0], [1]]), batch).with_window(2)


# ---------------------------------------------------------------------- synthetic graphs
def test_binary_tree_batch():
    from graphformer.datasets.synthetic import binary_tree_batch
    ei, batch = binary_tree_batch(3, depth=2)
    n = 7
    assert batch.tolist() == [0] * n + [1] * n + [2] * n
    assert ei.size(1) == 3 * (6 + 7)
    edges = as_set(ei)
    assert (1, 0) in edges and (2, 0) in edges and (6, 2) in edges and (0, 1) not in edges
    assert (n + 1, n) in edges and all((i, i) in edges for i in range(3 * n))
    assert bool((batch[ei[0]] == batch[ei[1]]).all())
    both, _ = binary_tree_batch(3, depth=2, both_directions=True, self_loops=False)
    tree_edges = {(j, i) for j, i in edges if j != i}
    assert as_set(both) == tree_edges | {(i, j) for j, i in tree_edges}
    with pytest.raises(ValueError, match="num_trees"):
        binary_tree_batch(0, depth=2)
    with pytest.raises(ValueError, match="depth"):
        binary_tree_batch(2, depth=-1)


def test_packed_documents():
    from graphformer.datasets.synthetic import packed_documents
    doc = packed_documents(3, 50, mean_length=8, seed=1)
    assert doc.shape == (150,) and int(doc[0]) == 0
    assert bool((doc[1:] >= doc[:-1]).all())
    assert bool((doc[50] > doc[49]) and (doc[100] > doc[99])), "each sequence starts a document"
    assert torch.equal(doc, packed_documents(3, 50, mean_length=8, seed=1))
    assert not torch.equal(doc, packed_documents(3, 50, mean_length=8, seed=2))
    graph = CausalGraph.from_lengths([50] * 3).with_documents(doc)
    check_views(graph, rule_edges([50] * 3, document=doc.tolist()))
    with pytest.raises(ValueError, match="mean_length"):
        packed_documents(3, 50, mean_length=0.5)
