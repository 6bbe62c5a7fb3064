"""The order in which the over-squashing sweep starts its runs: the longest expected chain
(a run and the controls expected to follow it) first, fresh and resumed. The rows never
depend on it (1 and 2 workers: tests/test_transfer.py, tests/test_oversquash_workers.py)."""
import heapq
from dataclasses import replace
from functools import partial

from graphformer.studies import oversquash as study
from graphformer.studies.graph_tasks import Budget
from graphformer.studies.oversquash import (FAST_BUDGET_RUNS, Settings, TreeCell, cost,
                                            expected_controls, priority, solved_threshold)
from graphformer.studies.store import ResultStore
from graphformer.studies.sweep import Sweep
from graphformer.studies.transfer import TransferCell

GCN3 = TreeCell("gcn", 3)
GCN3_CONTROL = TreeCell("gcn", 3, "fully_adjacent")
#: The plain runs of the default run that fail (below 0.99 on the trees, 0.9 on transfer)
FAILS = (GCN3.key, "ring/gat/14/plain/1", "ring/gcn/14/plain/1", "clique_path/gat/11/plain/1",
         "clique_path/gcn/11/plain/1")


class Clock:
    """An executor that runs each cell's ``fn`` here and keeps ``workers`` cells "running"
    on a simulated clock, a cell taking its row's ``cpu_seconds``; cells a finished cell
    queues go to the head of the queue, as :class:`RayExecutor` does."""

    def __init__(self, workers=1):
        self.workers, self.queued, self.started, self.finished = workers, None, [], []

    def run_cells(self, cells, fn, *, on_done, on_progress=None, on_start=None):
        self.queued = [key for key, _ in cells]  # the order the sweep asked for
        pending, running, clock = list(cells), [], 0.0
        while pending or running:
            while pending and len(running) < self.workers:
                key, cell = pending.pop(0)
                self.started.append(key)
                row = fn(cell, lambda share: None)
                heapq.heappush(running, (clock + row["cpu_seconds"], key, row))
            clock, key, row = heapq.heappop(running)
            self.finished.append((clock, key))
            pending[:0] = on_done(key, row)
        return []


def fake_run(cell, progress, *, settings, fails=FAILS):
    """A row that says what the controls hook reads: the cells in ``fails`` end at 0.2,
    the others at 1.0; each takes its expected cost in CPU seconds."""
    size = {"depth": cell.depth} if isinstance(cell, TreeCell) else {"distance": cell.distance}
    acc = 0.2 if cell.key in fails else 1.0
    return dict(task=cell.task if isinstance(cell, TreeCell) else cell.topology,
                model=cell.model, variant=cell.variant, seed=cell.seed, train_acc=acc,
                test_acc=acc, cpu_seconds=cost(cell, settings), **size)


def sweep_of(tmp_path, settings, clock):
    store = ResultStore(tmp_path / "out", settings.meta())
    return store, Sweep(store, partial(fake_run, settings=settings),
                        cost=partial(cost, settings=settings),
                        priority=partial(priority, settings=settings),
                        controls=partial(study.controls, settings), executor=clock)


def test_expected_cost_follows_the_measured_runs():
    settings = Settings.default()
    for (model, depth), (epochs, acc) in FAST_BUDGET_RUNS.items():
        assert study.expected_to_fail(TreeCell(model, depth), settings) == (
            acc < solved_threshold(depth))
    # a run that stops early costs its share of the whole budget's (its control's): at
    # depth 3 GIN stopped after 130 of the 400 epochs, GCN ran them all
    whole = lambda cell: cost(replace(cell, variant="fully_adjacent"), settings)  # noqa: E731
    gin = TreeCell("gin", 3)
    share = FAST_BUDGET_RUNS[("gin", 3)][0] / Budget.fast().max_epochs
    assert abs(cost(gin, settings) / whole(gin) - share) < 1e-9
    assert cost(GCN3, settings) == whole(GCN3)
    # GCN at depth 3 is measured to use the whole budget and end below 0.99; the others fit
    assert FAST_BUDGET_RUNS[("gcn", 3)][1] < solved_threshold(3)
    assert [m for m in ("gcn", "gin", "gat", "ggnn")
            if study.expected_to_fail(TreeCell(m, 3), settings)] == ["gcn"]
    # measured with the fast budget only: another budget expects the whole of it, and a
    # possible failure, as does a depth nobody measured
    other = Settings.default(budget=replace(Budget.fast(), max_epochs=200))
    assert study.expected_to_fail(TreeCell("gin", 3), other)
    assert cost(TreeCell("gin", 3), other) == cost(TreeCell("gin", 3, "fully_adjacent"), other)
    assert study.expected_to_fail(TreeCell("gin", 4), Settings.default(depths=(2, 3, 4)))
    # transfer: the published curve says which cells fail (GAT on the ring at 14: 0.41)
    assert study.expected_to_fail(TransferCell("ring", "gat", 14), settings)
    assert not study.expected_to_fail(TransferCell("ring", "gat", 8), settings)
    assert not study.expected_to_fail(TransferCell("ring", "gat", 14, variant="fully_adjacent"),
                                      settings)


def test_only_a_run_expected_to_fail_carries_its_controls_cost():
    settings = Settings.default()
    assert expected_controls(GCN3, settings) == [GCN3_CONTROL]
    assert priority(GCN3, settings) == cost(GCN3, settings) + cost(GCN3_CONTROL, settings)
    # GCN's control runs once its runs at every depth are in: depth 2 is on the chain too
    assert expected_controls(TreeCell("gcn", 2), settings) == [GCN3_CONTROL]
    for model in ("gin", "gat", "ggnn"):
        cell = TreeCell(model, 3)
        assert expected_controls(cell, settings) == []
        assert priority(cell, settings) == cost(cell, settings)
    ring = TransferCell("ring", "gat", 14)
    assert expected_controls(ring, settings) == [replace(ring, variant="fully_adjacent")]
    assert expected_controls(TransferCell("ring", "gat", 8), settings) == []
    assert expected_controls(GCN3, Settings.default(controls=False)) == []
    assert expected_controls(GCN3_CONTROL, settings) == []


def test_the_default_run_starts_gcn_depth_3_and_its_control_in_time(tmp_path):
    settings = Settings.default()
    clock = Clock(workers=2)
    store, sweep = sweep_of(tmp_path, settings, clock)
    assert sweep.run(study.plan(settings)) == []
    queued = clock.queued
    assert queued == sorted(queued, key=lambda k: -priority(sweep.cells[k], settings))
    # GCN's depth-3 chain (400 epochs, then its control) starts at once on two workers,
    # ahead of the depth-3 runs that stop early; the dearest failing transfer cell beside it
    assert queued[:2] == ["ring/gat/14/plain/1", GCN3.key]
    trees = [k for k in queued if k.startswith("tree/") and k.endswith("/3/plain/0")]
    assert trees == [GCN3.key, "tree/gat/3/plain/0", "tree/ggnn/3/plain/0", "tree/gin/3/plain/0"]
    # with each run taking its expected cost, its control runs and does not end the sweep
    # alone: the sweep ends less than the cheapest depth-3 run (GIN's) after an even split
    assert GCN3_CONTROL.key in store
    end = dict((k, t) for t, k in clock.finished)
    last = max(end.values())
    assert end[GCN3_CONTROL.key] < last
    total = sum(cost(sweep.cells[k], settings) for k in store.rows)
    assert last - total / 2 < cost(TreeCell("gin", 3), settings)


def test_a_resumed_sweep_orders_what_is_left_by_the_same_rule_and_queues_the_missing_control(
        tmp_path):
    settings = Settings.default()
    store = ResultStore(tmp_path / "out", settings.meta())
    done = [TreeCell("gcn", 2), GCN3, TreeCell("gin", 3), TransferCell("ring", "gat", 14),
            TransferCell("ring", "gat", 14, variant="fully_adjacent")]
    for cell in done:  # as an interrupted run left them: GCN failed, its control not run
        store.add(cell.key, fake_run(cell, None, settings=settings))
    assert GCN3_CONTROL.key not in store
    resumed = Clock()
    store, sweep = sweep_of(tmp_path, settings, resumed)
    assert sweep.run(study.plan(settings)) == []
    # nothing that is in the store ran again; the missing control is queued at the start
    assert not {c.key for c in done} & set(resumed.started)
    assert GCN3_CONTROL.key in resumed.queued
    assert resumed.started.count(GCN3_CONTROL.key) == 1
    # what is left, the control included, starts longest expected chain first
    left = [c.key for c in study.plan(settings) if c.key not in {d.key for d in done}]
    expect = sorted(left + [GCN3_CONTROL.key],
                    key=lambda k: -priority(sweep.cells[k], settings))
    assert resumed.queued == expect
    assert expect.index(GCN3_CONTROL.key) < expect.index("tree/gin/2/plain/0")
    assert set(store.rows) == {c.key for c in study.plan(settings)} | {
        GCN3_CONTROL.key, "ring/gat/14/fully_adjacent/1", "ring/gcn/14/fully_adjacent/1",
        "clique_path/gcn/11/fully_adjacent/1", "clique_path/gat/11/fully_adjacent/1"}
