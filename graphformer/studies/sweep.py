r"""A sweep: cells run by an executor (Ray) into a results store, with a progress bar and a
controls hook that queues more cells from the rows as they come in."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from tqdm import tqdm

from graphformer.studies.executor import CellFailure, RayExecutor
from graphformer.studies.store import ResultStore


class Sweep:
    r"""Runs cells (anything with a ``key``) through ``fn(cell, progress) -> row``.

    Args:
        store (ResultStore): finished rows by key; cells already there are not rerun
            (resume), and every new row is written at once.
        fn: one cell's work (see :meth:`~graphformer.studies.executor.RayExecutor.run_cells`).
        cost: a cell's expected cost (CPU seconds, roughly): the progress bar counts it.
        priority: the order in which cells start, the highest first (default: ``cost``;
            a study passes the expected cost of a cell and of the controls expected to
            follow it). A resumed sweep orders what is left, and the controls its rows
            already call for, by the same rule.
        controls: the controls hook, ``controls(rows) -> cells``, called with every
            finished row so far; the cells it returns that the sweep has not seen join the
            head of the queue (a control behind a failure).
        workers (int): runs at a time (the rows do not depend on it).
        executor (RayExecutor, optional): runs the cells (default: a local Ray instance
            with ``workers`` CPUs).
        desc (str): the progress bar's label.
    """

    def __init__(self, store: ResultStore, fn: Callable[[Any, Callable], Dict], *,
                 cost: Callable[[Any], float],
                 priority: Optional[Callable[[Any], float]] = None, controls: Callable[[List[Dict]], Sequence] =
                 lambda rows: (), workers: int = 1, desc: str = "sweep",
                 executor: Optional[RayExecutor] = None) -> None:
        self.store, self.fn, self.cost, self.controls = store, fn, cost, controls
        self.priority = priority or cost
        self.workers, self.desc = workers, desc
        self.executor = executor or RayExecutor(workers=workers)
        self.cells: Dict[str, Any] = {}  # every cell planned, controls included
        self.failures: List[CellFailure] = []

    def rows(self) -> List[Dict]:
        r"""The finished rows of this sweep's cells, in planning order."""
        return self.store.values(list(self.cells))

    def run(self, cells: Sequence) -> List[CellFailure]:
        r"""Runs ``cells`` and the controls they call for; returns the failed cells."""
        for c in cells:
            self.cells.setdefault(c.key, c)
        done = sum(k in self.store for k in self.cells)
        if done:
            print(f"resuming: {done} of {len(self.cells)} runs already in {self.store.path}")
        tqdm.monitor_interval = 0  # no monitor thread
        shares: Dict[str, float] = {}
        with tqdm(total=sum(self.cost(c) for c in self.cells.values()), unit="cost",
                  desc=self.desc,
                  bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}") as bar:
            def advance(key: str, share: float) -> None:
                gain = self.cost(self.cells[key]) * min(max(share, 0.0), 1.0) - shares.get(key, 0.0)
                gain = min(gain, bar.total - bar.n)  # float sums must not pass the total
                if gain > 0:
                    shares[key] = shares.get(key, 0.0) + gain
                    bar.update(gain)

            def show() -> None:
                bar.set_postfix_str(", ".join(k for k in shares if k not in self.store))

            def more() -> list:
                new = [c for c in self.controls(self.rows()) if c.key not in self.cells]
                for c in new:
                    self.cells[c.key] = c
                bar.total += sum(self.cost(c) for c in new)
                return [(c.key, c) for c in new if c.key not in self.store]

            def finished(key: str, row: Dict) -> list:
                self.store.add(key, row)
                advance(key, 1.0)
                show()
                return more()

            def started(key: str) -> None:
                shares.setdefault(key, 0.0)
                show()

            for key in self.cells:
                if key in self.store:
                    advance(key, 1.0)
            todo = [(k, c) for k, c in self.cells.items() if k not in self.store]
            todo += more()  # on a resume, the controls its rows already call for
            todo.sort(key=lambda kc: -self.priority(kc[1]))
            self.failures = self.executor.run_cells(todo, self.fn, on_done=finished,
                                                    on_progress=advance, on_start=started)
        return self.failures
