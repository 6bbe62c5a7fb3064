"""Trimming a batch to what the read-out needs (PyG's trim_to_layer convention): exact for
the layers that allow it, refused or left off where it would change the numbers."""
import pytest
import torch
import torch.nn.functional as F

from graphformer.datasets import TreeNeighborsMatch
from graphformer.studies.graph_tasks import (Budget, SameTopologyLoader, build_tree_model,
                                                 train_graph_task, trims_exactly)
from graphformer.models import GraphModel


def _logits_and_grads(model, batch):
    logits = batch.logits(model)
    grads = torch.autograd.grad(F.cross_entropy(logits, batch.y), list(model.parameters()),
                                allow_unused=True)
    return logits, grads


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("conv,method", [("gat", "gd"), ("ggnn", "gd"), ("attention", "gd"),
                                         ("deepsets", "gd"), ("gat", "nesterov"),
                                         ("attention", "heavyball"), ("gin-mlp", "gd")])
def test_trimmed_batch_gives_the_same_outputs_and_gradients(conv, method, depth):
    ds = TreeNeighborsMatch(depth)
    torch.manual_seed(0)
    if conv == "gin-mlp":  # GIN with a plain MLP (no batch norm) trims exactly
        model = GraphModel.build("gin", [ds.num_keys, ds.num_keys], 32, ds.num_classes,
                                 num_layers=depth + 1, block="post_norm")
    else:
        model = build_tree_model(conv, ds, method=method)
    assert trims_exactly(model)
    index = torch.arange(0, len(ds), 3)[:24]
    full = next(iter(SameTopologyLoader(ds, index, 24)))
    trimmed = next(iter(SameTopologyLoader(ds, index, 24, trim_layers=depth + 1)))
    assert torch.equal(full.y, trimmed.y)
    la, ga = _logits_and_grads(model, full)
    lb, gb = _logits_and_grads(model, trimmed)
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
    for a, b in zip(ga, gb):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_layers_that_trimming_would_change_are_not_trimmed(conv):
    # GCN's normalisation reads the degree of the trimmed frontier and GIN's batch norm
    # sees every row: trimmed, their numbers change, so training leaves them whole
    ds = TreeNeighborsMatch(2)
    torch.manual_seed(0)
    model = build_tree_model(conv, ds)
    assert not trims_exactly(model)
    index = torch.arange(16)
    full = next(iter(SameTopologyLoader(ds, index, 16)))
    trimmed = next(iter(SameTopologyLoader(ds, index, 16, trim_layers=3)))
    assert not torch.allclose(full.logits(model), trimmed.logits(model), atol=1e-3)


def test_training_trims_where_exact_and_gives_the_untrimmed_result(monkeypatch):
    import graphformer.studies.graph_tasks as tasks
    made = []
    real = tasks.SameTopologyLoader
    monkeypatch.setattr(tasks, "SameTopologyLoader",
                        lambda *a, **k: made.append(k["trim_layers"]) or real(*a, **k))
    ds = TreeNeighborsMatch(2)
    budget = Budget(max_steps=6, eval_every=3, batch_size=32, lr=3e-3, patience=None)
    results = []
    for conv, trim in (("gat", None), ("gat", False), ("gcn", None)):
        torch.manual_seed(0)
        model = build_tree_model(conv, ds)
        results.append(train_graph_task(model, ds, budget, trim=trim))
    assert made == [3] * 3 + [None] * 6  # trimmed where exact (train, train eval, test)
    # the same numbers up to the order of floating-point sums
    assert results[0]["train_acc"] == results[1]["train_acc"]
    assert results[0]["test_acc"] == results[1]["test_acc"]


def test_trimmed_layout_puts_the_read_out_nodes_first():
    ds = TreeNeighborsMatch(3)
    batch = next(iter(SameTopologyLoader(ds, torch.arange(5), 5, trim_layers=4)))
    n = ds[0].num_nodes
    assert batch.num_sampled_nodes_per_hop == [5, 10, 20, 40, 0]
    assert sum(batch.num_sampled_edges_per_hop) == batch.edge_index.size(1) == 5 * 2 * n - 5
    assert batch.readout.tolist() == list(range(5))
    assert torch.equal(batch.x[:5], torch.stack([ds[i].x[0] for i in range(5)]))
    # every edge runs from a node to one no farther from the root, and the edges of the
    # outermost hop come last, as trim_to_layer cuts them
    src, dst = batch.edge_index
    bounds = torch.tensor([0, 5, 15, 35, 75])
    hop = torch.bucketize(torch.arange(75), bounds, right=True) - 1
    assert (hop[dst] <= hop[src]).all()
    assert (hop[src].diff() >= 0).all()


def test_trimming_input_errors():
    ds = TreeNeighborsMatch(2)
    with pytest.raises(ValueError, match="fully_adjacent"):
        SameTopologyLoader(ds, torch.arange(4), 4, fully_adjacent=True, trim_layers=3)
    with pytest.raises(ValueError, match="trim_layers must be a positive int, got 0"):
        SameTopologyLoader(ds, torch.arange(4), 4, trim_layers=0)
    torch.manual_seed(0)
    model = build_tree_model("gat", ds)
    batch = next(iter(SameTopologyLoader(ds, torch.arange(4), 4, trim_layers=3)))
    x, ei = batch.x, batch.edge_index
    nodes, edges = batch.num_sampled_nodes_per_hop, batch.num_sampled_edges_per_hop
    with pytest.raises(ValueError, match="go together"):
        model(x, ei, index=batch.readout, num_sampled_nodes_per_hop=nodes)
    with pytest.raises(ValueError, match="needs 4 node counts and 3 edge counts"):
        model(x, ei, num_sampled_nodes_per_hop=nodes[:-1], num_sampled_edges_per_hop=edges)
    with pytest.raises(ValueError, match="sums to 27 but x has 28 rows"):
        model(x, ei, num_sampled_nodes_per_hop=[3] + nodes[1:], num_sampled_edges_per_hop=edges)
    with pytest.raises(ValueError, match="edge_index has"):
        model(x, ei[:, 1:], num_sampled_nodes_per_hop=nodes, num_sampled_edges_per_hop=edges)
    with pytest.raises(ValueError, match="last_edge_index"):
        model(x, ei, last_edge_index=ei, num_sampled_nodes_per_hop=nodes,
              num_sampled_edges_per_hop=edges)
    with pytest.raises(ValueError, match="beyond the 4 seed nodes"):
        model(x, ei, index=torch.tensor([0, 5]), num_sampled_nodes_per_hop=nodes,
              num_sampled_edges_per_hop=edges)
    # a negative index counts from the end of all the nodes, as without trimming
    out = model(x, ei, index=torch.tensor([-28]), num_sampled_nodes_per_hop=nodes,
                num_sampled_edges_per_hop=edges)
    torch.testing.assert_close(out, model(x, ei, index=torch.tensor([0]),
                                          num_sampled_nodes_per_hop=nodes,
                                          num_sampled_edges_per_hop=edges))
    from graphformer.graph import CausalGraph
    with pytest.raises(TypeError, match="needs an edge_index tensor, got CausalGraph"):
        model.stack(torch.randn(4, 32), CausalGraph.from_lengths([4]),
                    num_sampled_nodes_per_hop=[1, 1, 1, 1], num_sampled_edges_per_hop=[4, 3, 3])
    pooled = GraphModel.build("gat", 2, 8, 3, num_layers=3, readout="mean")
    with pytest.raises(ValueError, match="readout='node'"):
        pooled(x.float(), ei, num_sampled_nodes_per_hop=nodes, num_sampled_edges_per_hop=edges)
