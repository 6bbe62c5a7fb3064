r"""The sweep's executor: independent runs ("cells") as Ray tasks, on this machine or a
cluster.

A sweep of small trainings (one per model, size, variant and seed) is embarrassingly
parallel. :class:`RayExecutor` sends each cell to Ray as a task that asks for
:attr:`RayConfig.num_cpus` CPUs (one torch thread each) or a share of a GPU
(:attr:`RayConfig.gpus_per_run`), hands every finished row to ``on_done`` in this process
(which writes it to the results file at once) and relays the running cells' progress
through a Ray queue. Each cell seeds itself, so its numbers do not depend on how many
cells ran at once, in which order, or on which node.

With no address, a local Ray instance starts on loopback (``127.0.0.1``: Ray's
single-machine mode, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), without the dashboard and
with the workers' logs kept out of the progress bar; it shuts down at the end, on Ctrl-C
and on SIGTERM, and dies with this process if it is killed. With an address (``auto``,
``host:port``) it joins a running cluster instead (see ``docs/cluster.md``).

A cell whose task raises, or whose worker process dies (a crash, ``kill -9``, the
out-of-memory killer), is returned as a :class:`CellFailure` naming it; the other cells
run on, and what finished is kept.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from graphformer.checks import check_int

#: ``fn(payload, progress) -> row``: one cell's work; ``progress(share)`` reports how far.
CellFn = Callable[[Any, Callable[[float], None]], Dict]

#: The install extra that brings Ray (``pip install 'graphformer[study]'``).
EXTRA = "study"

#: Seconds between two progress messages of one running cell (the bar needs no more).
PROGRESS_INTERVAL = 0.5

#: Ray's switch for its single-machine mode, in which every Ray process uses 127.0.0.1.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass
class CellFailure:
    r"""A cell that did not finish: its key and why (a traceback or how its worker died)."""
    key: str
    reason: str


class ExecutorError(RuntimeError):
    r"""The executor cannot run the sweep (Ray missing, a cluster that does not answer);
    the message says what to do."""


class RayNotInstalled(ExecutorError, ImportError):
    r"""Ray, the sweep's executor, is not installed."""


def default_workers() -> int:
    r"""The cores this process may use (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int) -> int:
    r"""``workers`` if it is a positive int; else a :class:`TypeError` (not an int) or a
    :class:`ValueError` (below 1) that says so."""
    return check_int("workers", workers, 1, hint=" (the number of runs at a time)")


@dataclass(frozen=True)
class RayConfig:
    r"""Where and with what the cells run.

    Args:
        address (str, optional): a running Ray cluster to join (``"auto"``: the one this
            machine belongs to; ``"host:port"``: its head). ``None`` starts a local Ray
            instance on loopback for the sweep.
        num_cpus (float): CPUs each cell asks for; it trains with that many torch threads
            (at least one).
        gpus_per_run (float, optional): the share of a GPU each cell asks for (e.g. 0.25
            packs four runs onto one card; above 1, whole GPUs). ``None``: 1 when the cells
            train on CUDA, none on the CPU. Asking for it where there is no CUDA is an error.
        max_retries (int): how often Ray reruns a cell whose worker died (0: the cell is
            reported as failed, and a rerun of the sweep finishes it).
        connect_timeout (float): seconds to wait for a cluster at :attr:`address`.
    """
    address: Optional[str] = None
    num_cpus: float = 1.0
    gpus_per_run: Optional[float] = None
    max_retries: int = 0
    connect_timeout: float = 15.0

    def validate(self) -> "RayConfig":
        r"""Returns ``self`` if every field is valid, else raises a :class:`ValueError`
        that names the field (``--gpus-per-run`` without CUDA on a local run included)."""
        if self.address is not None and (not isinstance(self.address, str)
                                         or not self.address.strip()):
            raise ValueError(f"--ray-address must be 'auto' or host:port, got {self.address!r}")
        if not _positive(self.num_cpus):
            raise ValueError(f"num_cpus (CPUs and torch threads per run, --threads) must be "
                             f"a positive number, got {self.num_cpus!r}")
        if self.gpus_per_run is not None:
            g = self.gpus_per_run
            if not _positive(g):
                raise ValueError(f"--gpus-per-run must be a positive number (a share of a "
                                 f"GPU such as 0.25, or whole GPUs), got {g!r}")
            if g > 1 and g != int(g):
                raise ValueError(f"--gpus-per-run above 1 must be a whole number of GPUs "
                                 f"(Ray packs only shares below one GPU), got {g!r}")
            if self.address is None:
                import torch
                if not torch.cuda.is_available():
                    raise ValueError(
                        f"--gpus-per-run {g} asks for a share of a GPU per run, but CUDA is "
                        f"not available on this machine (torch {torch.__version__}); leave "
                        "it out to train on the CPU, or join a cluster with GPUs "
                        "(--ray-address)")
        check_int("max_retries", self.max_retries, 0)
        if not _positive(self.connect_timeout):
            raise ValueError(f"connect_timeout must be a positive number of seconds, "
                             f"got {self.connect_timeout!r}")
        return self

    def uses_gpu(self, device_type: str) -> bool:
        r"""Whether the cells ask Ray for GPUs: on CUDA, or wherever a share is given."""
        return device_type == "cuda" or self.gpus_per_run is not None

    def resources(self, device_type: str) -> Dict[str, float]:
        r"""What each cell asks Ray for, when the cells train on ``device_type``."""
        gpus = (1.0 if self.gpus_per_run is None else self.gpus_per_run) \
            if self.uses_gpu(device_type) else 0.0
        return dict(num_cpus=self.num_cpus, num_gpus=gpus)


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def import_ray(local: bool = True):
    r"""Imports Ray, in its loopback mode when ``local`` and Ray is not imported yet (the
    mode is read once, at Ray's import); a missing Ray is a :class:`RayNotInstalled`
    naming the extra that brings it."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    try:
        import ray
    except ImportError as e:
        raise RayNotInstalled(
            f"the sweep runs on Ray, which is not installed here ({e}). Install the "
            f"'{EXTRA}' extra: pip install 'graphformer[{EXTRA}]' (make run and make test "
            "do).") from None
    return ray


def _probe(address: str, timeout: float) -> None:
    r"""Waits up to ``timeout`` seconds for something to accept a TCP connection at
    ``host:port``; a :class:`ExecutorError` naming the address if nothing does."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address!r} is neither 'auto' nor host:port")
    deadline, last = time.monotonic() + timeout, None
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)),
                                          timeout=max(0.1, min(2.0, timeout))):
                return
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            raise ExecutorError(
                f"--ray-address {address}: no Ray cluster answers there after {timeout:g} s "
                f"({last.strerror or last}). Start its head with `ray start --head`, or "
                "check the address and port (`ray status` on the head prints them).")
        time.sleep(0.2)


def _run_cell(fn: CellFn, key: str, payload: Any, board, threads: int):
    r"""One cell, in a Ray worker: its row and where it ran."""
    import ray
    import torch

    torch.set_num_threads(threads)
    board.put(("start", key, None))
    last = [0.0]

    def progress(share: float) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            board.put(("progress", key, float(share)))

    row = fn(payload, progress)
    ctx = ray.get_runtime_context()
    return row, dict(node=ray.util.get_node_ip_address(), node_id=ctx.get_node_id(),
                     gpu_ids=[str(g) for g in ray.get_gpu_ids()])


class RayExecutor:
    r"""Runs cells as Ray tasks (see the module's docstring).

    Args:
        config (RayConfig): the cluster and each cell's resources.
        workers (int, optional): cells at a time at most; ``None``: as many as the
            cluster's resources allow (a local instance gets one CPU per core).
        device_type (str): where the cells train (``"cpu"`` or ``"cuda"``), which decides
            whether they ask for GPUs.
    """

    name = "ray"

    def __init__(self, config: RayConfig = RayConfig(), workers: Optional[int] = None,
                 device_type: str = "cpu") -> None:
        self.config = config.validate()
        self.workers = None if workers is None else check_workers(workers)
        self.device_type = device_type
        self.placement: Dict[str, Any] = {}  # what every row records, set on connecting
        self.capacity = 1  # cells the cluster holds at once, set on connecting

    # ------------------------------------------------------------------ the cluster
    def connect(self):
        r"""Joins Ray (starting the local instance when there is no address); returns
        ``(ray, started)``, ``started`` when this call started it (and so must stop it).
        A process already connected to Ray keeps that connection."""
        ray = import_ray(local=self.config.address is None)
        started = not ray.is_initialized()
        if started:
            self._connect_new(ray)
        resources = ray.cluster_resources()
        needs = self.config.resources(self.device_type)
        cluster = ray.get_runtime_context().gcs_address
        if needs["num_gpus"] > 0 and resources.get("GPU", 0) == 0:
            if started:
                ray.shutdown()
            raise ExecutorError(f"the runs ask for {needs['num_gpus']:g} GPU each, but the Ray "
                                f"cluster at {cluster} has no GPU (CUDA not found there)")
        # at most as many cells at once as the cluster holds: a cell blocked in a Ray call
        # (its progress messages) hands its CPU back, and Ray would start one more
        fits = [resources.get("CPU", 0.0) / needs["num_cpus"]]
        if needs["num_gpus"] > 0:
            fits.append(resources["GPU"] / needs["num_gpus"])
        self.capacity = max(1, int(min(fits) + 1e-9))
        self.placement = dict(
            executor=self.name, ray=ray.__version__, cluster=cluster,
            address=self.config.address or "local",
            nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
            resources={k: resources[k] for k in ("CPU", "GPU") if k in resources})
        return ray, started

    def _connect_new(self, ray) -> None:
        address = self.config.address
        if address is None:
            import logging
            # the workers at this process's priority, as a process pool's would be (Ray's
            # default, niceness 15, lets every other process on a shared machine go first)
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address="local", num_cpus=self.workers or default_workers(),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            return
        if address != "auto" and "://" not in address:
            _probe(address, self.config.connect_timeout)
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ExecutorError(
                f"--ray-address {address}: could not join a Ray cluster there: {e}. A head "
                "with token authentication needs RAY_AUTH_MODE=token (and its token: "
                "~/.ray/auth_token or RAY_AUTH_TOKEN) here too.") from None

    # ------------------------------------------------------------------ the sweep
    def run_cells(self, cells: Sequence[Tuple[str, Any]], fn: CellFn, *,
                  on_done: Optional[Callable[[str, Dict], Sequence[Tuple[str, Any]]]] = None,
                  on_progress: Optional[Callable[[str, float], None]] = None,
                  on_start: Optional[Callable[[str], None]] = None) -> List[CellFailure]:
        r"""Runs ``fn(payload, progress)`` for every ``(key, payload)`` cell and returns the
        cells that failed (an empty list when all finished).

        Args:
            cells: the work, in the order to start it (put the longest first).
            fn: one cell's work, returning its row (a dict). It and the payloads are
                pickled to the workers (functions of an installed module by reference).
            on_done: called here with each finished ``(key, row)``, the row with a
                ``ran_on`` entry added (executor, Ray's version, cluster, its resources,
                the node); it may return more cells, which go to the head of the queue.
            on_progress: ``(key, share)`` as a running cell reports progress.
            on_start: ``key`` when a cell starts running on a worker.
        """
        pending = list(cells)
        if not pending:
            return []
        ray, started = self.connect()
        done = on_done or (lambda key, row: ())
        report = on_progress or (lambda key, share: None)
        begun = on_start or (lambda key: None)
        failures: List[CellFailure] = []
        running: Dict[Any, str] = {}  # ObjectRef -> key
        from ray.util.queue import Queue
        task = ray.remote(max_retries=self.config.max_retries)(_run_cell).options(
            **self.config.resources(self.device_type))
        threads = max(1, int(self.config.num_cpus))

        def terminate(signum, frame):  # SIGTERM: stop like Ctrl-C, and the cells go too
            raise SystemExit(128 + signum)

        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, terminate)
        board = None
        try:
            board = Queue(actor_options=dict(num_cpus=0))
            fn_ref = ray.put(fn)

            def drain() -> None:
                size = board.size()
                for kind, key, value in (board.get_nowait_batch(size) if size else ()):
                    if kind == "start":
                        begun(key)
                    else:
                        report(key, value)

            while pending or running:
                limit = min(self.workers or self.capacity, self.capacity)
                while pending and len(running) < limit:
                    key, payload = pending.pop(0)
                    running[task.remote(fn_ref, key, payload, board, threads)] = key
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
                drain()  # a cell's messages are queued before its result is ready
                for ref in ready:
                    key = running.pop(ref)
                    try:
                        row, where = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the cell raised
                        failures.append(CellFailure(key, str(e)))
                        continue
                    except ray.exceptions.RayError as e:  # its worker died
                        failures.append(CellFailure(key, (
                            "the worker process running it died before returning a result "
                            "(killed, e.g. kill -9 (SIGKILL) or the out-of-memory killer, or "
                            f"crashed): {type(e).__name__}: {e}")))
                        continue
                    row = dict(row, ran_on=dict(self.placement, **where))
                    # more cells (controls) go first: each is the tail of a chain whose
                    # head has just finished, and a dear one started last would run alone
                    pending[:0] = done(key, row)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            for ref in running:  # interrupted: no cell runs on
                ray.cancel(ref, force=True)
            if board is not None and not started:
                ray.kill(board.actor)
            if started:
                ray.shutdown()
        return failures


def run_cells(cells: Sequence[Tuple[str, Any]], fn: CellFn, *, workers: Optional[int] = 1,
              on_done: Optional[Callable[[str, Dict], Sequence[Tuple[str, Any]]]] = None,
              on_progress: Optional[Callable[[str, float], None]] = None,
              on_start: Optional[Callable[[str], None]] = None,
              config: RayConfig = RayConfig()) -> List[CellFailure]:
    r""":meth:`RayExecutor.run_cells` with ``workers`` cells at a time on CPUs: the
    executor as a function, for callers that need no more."""
    return RayExecutor(config, workers).run_cells(cells, fn, on_done=on_done,
                                                  on_progress=on_progress, on_start=on_start)
