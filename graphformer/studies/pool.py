r"""Independent runs spread over worker processes, one torch thread each.

A sweep of small trainings (one per model, depth, variant and seed) is embarrassingly
parallel: :func:`run_cells` starts one process per cell, at most ``workers`` at a time,
and hands every finished row to ``on_done`` in the parent (which writes it to the results
file at once). Each cell seeds itself, so its numbers do not depend on how many workers
ran or in which order: with one torch thread per process, ``workers=1`` (in the calling
process) and ``workers=2`` give bit-identical rows.

A cell whose process dies (a crash, ``kill -9``, the out-of-memory killer) or raises is
reported by its key; the other cells run on, and what finished is kept.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import signal
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from graphformer.checks import check_int

#: ``fn(payload, progress) -> row``: one cell's work; ``progress(share)`` reports how far.
CellFn = Callable[[Any, Callable[[float], None]], Dict]


@dataclass
class CellFailure:
    r"""A cell that did not finish: its key and why (a traceback or an exit status)."""
    key: str
    reason: str


def default_workers() -> int:
    r"""The cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int) -> int:
    r"""``workers`` if it is a positive int; else a :class:`TypeError` (not an int) or a
    :class:`ValueError` (below 1) that says so."""
    return check_int("workers", workers, 1, hint=" (the number of worker processes)")


def _exit_reason(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            return f"the worker process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the worker process was killed by signal {-code}"
    return f"the worker process exited with status {code} before returning a result"


def _work(fn: CellFn, key: str, payload: Any, results) -> None:
    torch.set_num_threads(1)
    try:
        row = fn(payload, lambda share: results.put(("progress", key, share)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which names the cell
        results.put(("error", key, traceback.format_exc()))
        results.close()
        results.join_thread()
        os._exit(1)
    results.put(("done", key, row))
    results.close()
    results.join_thread()


def run_cells(cells: Sequence[Tuple[str, Any]], fn: CellFn, *, workers: int = 1,
              on_done: Optional[Callable[[str, Dict], Sequence[Tuple[str, Any]]]] = None,
              on_progress: Optional[Callable[[str, float], None]] = None,
              on_start: Optional[Callable[[str], None]] = None) -> List[CellFailure]:
    r"""Runs ``fn(payload, progress)`` for every ``(key, payload)`` cell and returns the
    cells that failed (an empty list when all finished).

    Args:
        cells: the work, in the order to start it (put the longest first).
        fn: one cell's work, returning its row. With ``workers > 1`` it runs in a forked
            process (spawned where fork is not available: ``fn`` and the payloads must then
            pickle).
        workers (int): processes at a time; ``1`` runs every cell here, one after another.
        on_done: called in this process with each finished ``(key, row)``; it may return
            more cells, which join the queue (e.g. runs planned from these results).
        on_progress: ``(key, share)`` as a cell reports progress.
        on_start: ``key`` when a cell starts.
    """
    check_workers(workers)
    pending = list(cells)
    failures: List[CellFailure] = []
    done = on_done or (lambda key, row: ())
    report = on_progress or (lambda key, share: None)
    started = on_start or (lambda key: None)
    if workers == 1:
        while pending:
            key, payload = pending.pop(0)
            started(key)
            try:
                row = fn(payload, lambda share, key=key: report(key, share))
            except Exception:  # noqa: BLE001 - named below; KeyboardInterrupt still stops
                failures.append(CellFailure(key, traceback.format_exc()))
                continue
            pending.extend(done(key, row))
        return failures

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    results = ctx.Queue()
    running: Dict[str, Any] = {}
    finished: set = set()

    def handle(message) -> None:
        kind, key, value = message
        if kind == "progress":
            report(key, value)
        elif kind == "error":
            failures.append(CellFailure(key, value))
            finished.add(key)
        else:
            finished.add(key)
            pending.extend(done(key, value))

    def terminate(signum, frame):  # SIGTERM: stop like Ctrl-C, so that the workers go too
        raise SystemExit(128 + signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        while pending or running:
            while pending and len(running) < workers:
                key, payload = pending.pop(0)
                process = ctx.Process(target=_work, args=(fn, key, payload, results),
                                      name=f"cell {key}", daemon=True)
                process.start()
                running[key] = process
                started(key)
            try:
                handle(results.get(timeout=0.5))
            except queue_module.Empty:
                pass
            for key, process in list(running.items()):
                if process.exitcode is None:
                    continue
                while key not in finished:  # read what it sent before it ended
                    try:
                        handle(results.get(timeout=0.5))
                    except queue_module.Empty:
                        break
                process.join()
                del running[key]
                if key not in finished:
                    failures.append(CellFailure(key, _exit_reason(process.exitcode)))
                    finished.add(key)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for process in running.values():  # interrupted: no orphans
            process.kill()
            process.join()
    return failures
