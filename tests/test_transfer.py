"""The graph-transfer study: the paper's generator, PyG's models on the dense layout, the
paper's loop (held-out evaluation, best test accuracy), the controls hook and the sweep."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from graphformer.studies import oversquash as study
from graphformer.studies import transfer
from graphformer.studies.store import ResultStore
from graphformer.studies.sweep import Sweep
from graphformer.studies.transfer import (DenseTopology, TransferBudget, TransferCell,
                                          build_model, dense_forward, make_dataset)

pytestmark = pytest.mark.usefixtures("ray_local")  # the sweeps run on one local Ray

TINY = TransferBudget(num_train=40, num_test=10, max_epochs=2)

# Edge lists printed by the paper's own generator (lrnzgiusti/on-oversquashing,
# data/ring_transfer.py) at distance 3: generate_ring_transfer_graph(6, ..., False / True)
# and generate_lollipop_transfer_graph(4, ...) (its size for distance 3 is 2 * (3 - 1)).
PAPER_EDGES = {
    "ring": [[0, 1], [1, 0], [1, 2], [2, 1], [2, 3], [3, 2], [3, 4], [4, 3], [4, 5], [5, 4],
             [0, 5], [5, 0]],
    "crossed_ring": [[0, 1], [1, 0], [0, 5], [5, 0], [1, 2], [2, 1], [1, 4], [4, 1], [2, 3],
                     [3, 2], [2, 3], [3, 2], [2, 5], [5, 2], [3, 4], [4, 3], [4, 5], [5, 4],
                     [0, 5], [5, 0]],
    "clique_path": [[0, 1], [1, 0], [1, 0], [0, 1], [2, 3], [3, 2], [1, 2], [2, 1]],
}
PAPER_TARGET = {"ring": 3, "crossed_ring": 3, "clique_path": 3}  # the one-hot node


@pytest.mark.parametrize("topology", list(transfer.TOPOLOGIES))
def test_generator_equals_the_papers_construction(topology):
    ds = make_dataset(TransferCell(topology, "gcn", 3), TINY)
    g = ds[0]
    assert g.edge_index.t().tolist() == PAPER_EDGES[topology]  # the multiset, in its order
    target, n = PAPER_TARGET[topology], g.num_nodes
    x = torch.ones(n, 5)
    x[0] = 0.0
    x[target] = F.one_hot(g.y.view(()), 5).float()
    torch.testing.assert_close(g.x, x)
    assert int(g.root_index) == 0 and int(g.label_node_index) == target
    # 1,100 graphs a class in the paper's 5,500; the last 500 held out
    full = make_dataset(TransferCell(topology, "gcn", 3), TransferBudget())
    assert torch.bincount(full._data.y).tolist() == [1100] * 5
    assert full.test_index.tolist() == list(range(5000, 5500))
    assert not set(full.train_index.tolist()) & set(full.test_index.tolist())


@pytest.mark.parametrize("name", list(transfer.PYG_MODELS))
@pytest.mark.parametrize("variant", ["plain", "fully_adjacent"])
def test_dense_forward_equals_pygs_forward(name, variant):
    cell = TransferCell("clique_path", name, 5, variant=variant)
    ds = make_dataset(cell, TINY)
    n, G = ds.num_graph_nodes, 6
    x = ds._data.x.view(len(ds), n, -1)[:G]
    ei = ds[0].edge_index
    tiled = torch.cat([ei + g * n for g in range(G)], 1)
    last = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long)])
    topology = DenseTopology(ei, n, 0, last if variant == "fully_adjacent" else None)
    torch.manual_seed(0)
    model = build_model(name, cell.distance)
    assert isinstance(model, transfer.PYG_MODELS[name])
    assert type(model.norms[0]).__name__ == "BatchNorm" and model.hidden_channels == 64
    for mode in ("train", "eval"):
        getattr(model, mode)()
        if variant == "plain":
            ref = model(x.reshape(G * n, -1), tiled)[torch.arange(G) * n]
        else:  # PyG's layers, the last on the fully-adjacent edges
            h = x.reshape(G * n, -1)
            for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
                last_layer = i == len(model.convs) - 1
                h = conv(h, torch.cat([last + g * n for g in range(G)], 1)) if last_layer \
                    else model.act(norm(conv(h, tiled)))
            ref = h[torch.arange(G) * n]
        torch.testing.assert_close(dense_forward(model, x, topology), ref, atol=1e-5, rtol=1e-4)


def test_evaluation_uses_exactly_the_held_out_graphs_and_test_acc_by_hand(monkeypatch):
    # a stand-in model that answers the class of the one-hot node when it is 0 or 1 and
    # 4 otherwise: its accuracy is computable by hand on any set of graphs
    cell = TransferCell("ring", "gcn", 3, seed=2)
    seen = []
    evaluate = transfer.evaluate
    monkeypatch.setattr(transfer, "evaluate",
                        lambda f, m, x, y, index: seen.append(index.clone()) or evaluate(f, m, x, y, index))

    def answer(model, x, topology):
        cls = x[:, 3].argmax(-1)
        pred = torch.where(cls < 2, cls, torch.full_like(cls, 4))
        return 10 * F.one_hot(pred, 5).float() + 0 * next(model.parameters()).sum()

    monkeypatch.setattr(transfer, "dense_forward", answer)
    row = transfer.fit_transfer(cell, TINY)
    ds = make_dataset(cell, TINY)
    assert all(s.tolist() == list(range(40, 50)) for s in seen) and len(seen) == 2
    y_test, y_train = ds._data.y[40:], ds._data.y[:40]
    by_hand = sum(int(v) in (0, 1, 4) for v in y_test) / 10
    on_train = sum(int(v) in (0, 1, 4) for v in y_train) / 40
    assert by_hand != on_train  # so that evaluating on the training split would show
    assert row["test_acc"] == pytest.approx(by_hand) and row["train_acc"] == pytest.approx(on_train)
    assert (row["distance"], row["variant"], row["epochs"]) == (3, "plain", 2)
    assert "size" not in row


def test_thresholds_are_pinned():
    assert transfer.SOLVED == 0.9
    assert study.solved_threshold(2) == study.solved_threshold(3) == 0.99
    assert study.solved_threshold(4) == study.solved_threshold(8) == 0.9
    row = dict(task="ring", model="gcn", distance=14, variant="plain", seed=1)
    assert [c.variant for c in transfer.controls_for(dict(row, test_acc=0.899),
                                                     transfer.CONTROLS)] == list(transfer.CONTROLS)
    assert transfer.controls_for(dict(row, test_acc=0.9), transfer.CONTROLS) == []
    assert transfer.controls_for(dict(row, variant="fully_adjacent", test_acc=0.2),
                                 transfer.CONTROLS) == []
    fail = dict(row, test_acc=0.2)
    assert transfer.cause(dict(row, test_acc=0.95), []) == "solved"
    assert transfer.cause(fail, []) == "no control run"
    assert transfer.cause(fail, [dict(test_acc=1.0)]) == "over-squashing"
    assert transfer.cause(fail, [dict(test_acc=0.89)]).startswith("not over-squashing")
    assert transfer.PUBLISHED_CLIFF["gcn"] == {"clique_path": 8, "ring": 10, "crossed_ring": 14}
    assert transfer.PUBLISHED_CLIFF["gat"] == {"clique_path": 8, "ring": 11, "crossed_ring": 14}


def test_default_distances_bracket_every_published_cliff():
    for model in ("gcn", "gat"):
        for topo, cliff in transfer.PUBLISHED_CLIFF[model].items():
            ds = study.DEFAULT_DISTANCES[topo]
            assert any(d <= cliff - 2 for d in ds), (model, topo)
            if cliff + 3 <= transfer.MAX_DISTANCE:
                assert any(d >= cliff + 3 for d in ds), (model, topo)


def test_controls_run_and_the_transformer_sees_the_complete_graph():
    for variant in transfer.CONTROLS:
        row = transfer.fit_transfer(TransferCell("ring", "gcn", 3, variant=variant), TINY)
        assert row["variant"] == variant and row["published"] is None
        assert 0.0 <= row["test_acc"] <= 1.0


def _sweep(tmp_path, name, settings, workers, fn=None):
    store = ResultStore(tmp_path / name, settings.meta())
    from functools import partial
    fn = fn or partial(study.run_cell, settings=settings, device=torch.device("cpu"))
    sweep = Sweep(store, fn,
                  cost=partial(study.cost, settings=settings),
                  controls=partial(study.controls, settings), workers=workers)
    assert sweep.run(study.plan(settings)) == []
    rows = {k: {c: v for c, v in r.items() if c not in ("seconds", "cpu_seconds")}
            for k, r in store.rows.items()}
    return sweep, rows


def _retrained(cell, progress):
    raise AssertionError(f"{cell.key} was trained again on resume")


def test_sweep_rows_identical_for_one_and_two_workers_and_resume(tmp_path, monkeypatch, capsys):
    settings = study.Settings(tasks=("ring", "clique_path"), transfer_models=("gcn",),
                              distances={"ring": (3,), "clique_path": (3,)},
                              transfer_budget=replace(TINY, max_epochs=1))
    _, one = _sweep(tmp_path, "one", settings, 1)
    _, two = _sweep(tmp_path, "two", settings, 2)
    assert one == two and {"ring/gcn/3/plain/1", "clique_path/gcn/3/plain/1"} <= set(one)
    # resume: a second sweep over the same store trains nothing (a cell that ran would
    # fail, and the sweep would report it)
    _, again = _sweep(tmp_path, "one", settings, 1, fn=_retrained)
    assert again == one and "resuming: " in capsys.readouterr().out


def test_controls_hook_queues_controls_exactly_where_a_row_fails(tmp_path):
    settings = study.Settings(tasks=("ring",), transfer_models=("gcn", "gat"),
                              distances={"ring": (4, 9)},
                              transfer_controls=transfer.CONTROLS)
    fails = {("gcn", 9), ("gat", 4)}

    def fake(cell, progress):
        acc = 0.2 if (cell.model, cell.distance) in fails else 1.0
        if cell.variant == "fully_adjacent":
            acc = 1.0
        return dict(task=cell.topology, model=cell.model, distance=cell.distance,
                    variant=cell.variant, seed=cell.seed, test_acc=acc)

    store = ResultStore(tmp_path / "hook", settings.meta())
    sweep = Sweep(store, fake, cost=lambda c: 1.0, controls=lambda rows: study.controls(settings, rows))
    sweep.run(study.plan(settings))
    controls = sorted(k for k, r in store.rows.items() if r["variant"] != "plain")
    assert controls == sorted(f"ring/{m}/{d}/{v}/1" for m, d in fails for v in transfer.CONTROLS)
    from graphformer.studies.report import with_causes
    causes = {(r["model"], r["distance"]): r["cause"] for r in with_causes(sweep.rows())
              if r["variant"] == "plain"}
    assert causes == {("gcn", 4): "solved", ("gcn", 9): "over-squashing",
                      ("gat", 4): "over-squashing", ("gat", 9): "solved"}
    # --no-controls: none
    quiet = replace(settings, controls=False)
    assert study.controls(quiet, sweep.rows()) == []


def test_bad_cells_name_the_valid_values():
    with pytest.raises(ValueError, match="distance 16 is outside the paper's sweep: transfer "
                                         "distances run from 2 to 15"):
        TransferCell("ring", "gcn", 16).validate()
    with pytest.raises(ValueError, match="unknown transfer model 'mlp'; valid: gcn, gat, gin, sage"):
        TransferCell("ring", "mlp", 5).validate()
    with pytest.raises(ValueError, match="unknown topology 'grid'; valid: clique_path, ring"):
        TransferCell("grid", "gcn", 5).validate()
    with pytest.raises(ValueError, match="unknown task\\(s\\) maze; valid tasks: tree"):
        study.Settings(tasks=("maze",)).validate()
    with pytest.raises(ValueError, match="seeds is empty"):
        study.Settings(seeds=()).validate()


def test_dense_gat_with_several_heads_equals_pygs_forward():
    from torch_geometric.nn.models import GAT
    ds = make_dataset(TransferCell("crossed_ring", "gat", 4), TINY)
    n, G = ds.num_graph_nodes, 6
    x = ds._data.x.view(len(ds), n, -1)[:G]
    ei = ds[0].edge_index
    torch.manual_seed(0)
    model = GAT(5, 64, 4, 5, norm="BatchNorm", heads=4)
    ref = model(x.reshape(G * n, -1), torch.cat([ei + g * n for g in range(G)], 1))
    torch.testing.assert_close(dense_forward(model, x, DenseTopology(ei, n, 0)),
                               ref[torch.arange(G) * n], atol=1e-5, rtol=1e-4)
