r"""Stopping a run cleanly: a SIGTERM (what a cluster scheduler sends) or a Ctrl-C lets the
current step finish, then the run stops with its last checkpoint kept and says how to
resume. A second Ctrl-C stops at once."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["TrainingInterrupted", "StopSignals"]


class TrainingInterrupted(KeyboardInterrupt):
    r"""A run stopped by a signal between two steps. ``step`` is where it stopped,
    ``checkpoint_step`` the step of the checkpoint kept (``None``: none was written), and
    ``signal`` the signal's name; the message says how to resume.

    Example:
        >>> from graphformer.train import TrainingInterrupted
        >>> try:
        ...     raise TrainingInterrupted("stopped by SIGTERM at step 120; resume=True "
        ...                               "continues from step 100", 120, 100, "SIGTERM")
        ... except KeyboardInterrupt as stop:          # a Ctrl-C handler catches it too
        ...     print(stop.step, stop.checkpoint_step, stop.signal)
        120 100 SIGTERM
    """

    def __init__(self, message: str, step: int, checkpoint_step: int | None, signal_name: str):
        super().__init__(message)
        self.step, self.checkpoint_step, self.signal = step, checkpoint_step, signal_name

    def __str__(self) -> str:
        return self.args[0]


class StopSignals:
    r"""Within ``with StopSignals() as stop:`` a SIGTERM or SIGINT is noted, not acted on;
    :meth:`check` (between two steps) raises :class:`TrainingInterrupted` once one came. A
    second SIGINT raises :class:`KeyboardInterrupt` at once. Only the main thread can
    catch signals; elsewhere this does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def check(self, step: int, checkpoint_step: int | None, checkpoint: Path | None,
              ddp=None, device: torch.device | None = None, every: int = 1) -> None:
        r"""Raise :class:`TrainingInterrupted` if a signal came (on any process). With
        several processes they agree every ``every`` steps (a synchronisation), so that
        all stop at the same step."""
        got = self.received or 0
        if ddp is not None and ddp.enabled:
            if step % every:
                return
            flag = torch.tensor([got], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            got = int(flag)
        if not got:
            return
        name = signal.Signals(got).name
        if checkpoint is None:
            kept = "no out_dir, so nothing to resume from"
        elif checkpoint_step is None:
            kept = "no checkpoint was written yet: start again"
        else:
            kept = (f"{checkpoint} (step {checkpoint_step}) is kept; resume=True "
                    f"(benchmarks/lm.py --resume) continues from it")
        raise TrainingInterrupted(f"stopped by {name} after step {step}: {kept}", step,
                                  checkpoint_step, name)
