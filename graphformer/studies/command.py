r"""What ``benchmarks/oversquash.py`` does with its parsed arguments: the settings (from
:class:`~graphformer.studies.oversquash.Settings`, validated once), the executor, and one
of three jobs: the study (a :class:`~graphformer.studies.sweep.Sweep` into a results store,
then the tables, CSV, markdown and plots), the time to solve the trees under each budget,
or the step profiles. Bad input is a :class:`UsageError` naming it; the command line turns
it into exit status 2."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import List, Optional

import torch

from graphformer.device import resolve_device
from graphformer.studies import oversquash as study
from graphformer.studies import report, transfer
from graphformer.studies.executor import ExecutorError, RayConfig, RayExecutor, check_workers
from graphformer.studies.graph_tasks import PUBLISHED_TREE, profile_steps, profile_table
from graphformer.studies.store import ResultStore, ResultsCorrupted, write_atomic
from graphformer.studies.sweep import Sweep

#: The tree-budget flags and the :class:`~graphformer.studies.graph_tasks.Budget` field
#: each one replaces.
BUDGET_FLAGS = {"max_steps": "--max-steps", "max_epochs": "--max-epochs",
                "batch_size": "--batch-size", "weight_decay": "--weight-decay",
                "patience": "--patience", "max_graphs": "--max-graphs"}


class UsageError(ValueError):
    r"""Bad input on the command line (exit status 2)."""


class RunsFailed(RuntimeError):
    r"""Some cells failed; the finished ones are kept (exit status 1)."""


def int_list(text: str) -> List[int]:
    r"""``"2,3"`` as ``[2, 3]``; an argparse type (an empty list is an error)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values


def name_list(text: str) -> List[str]:
    r"""``"gcn,gat"`` as ``["gcn", "gat"]``; an argparse type (an empty list is an error)."""
    values = [v for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one name, got {text!r}")
    return values


def settings_of(args: argparse.Namespace) -> study.Settings:
    r"""The study's settings: :meth:`~study.Settings.default` (or ``full``) with what the
    command line gives in place of their fields (validated by the caller, once)."""
    seeds = [args.seed] if args.seed is not None else args.seeds
    base = (study.Settings.full if args.full else study.Settings.default)()
    budget = replace(base.budget, **{k: getattr(args, k) for k in BUDGET_FLAGS
                                     if getattr(args, k) is not None})
    if args.max_steps is not None:
        budget = replace(budget, max_epochs=None)  # a step budget replaces epochs
    if args.batch_size is not None:
        budget = replace(budget, paper_batches=False)
    overrides = dict(tasks=args.tasks, models=args.models, transfer_models=args.transfer_models,
                     depths=args.depths, lengths=args.lengths, seeds=seeds, transfer_seeds=seeds,
                     distances=args.distances and {t: args.distances for t in study.TOPOLOGIES},
                     budget=budget, compile=args.compile, controls=not args.no_controls,
                     tree_variant="fully_adjacent" if args.fully_adjacent else None)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def executor_of(args: argparse.Namespace):
    r"""``(executor, device)``: a local Ray instance or the cluster at ``--ray-address``,
    and where the cells train."""
    try:
        workers = None if args.workers is None else check_workers(args.workers)
    except ValueError:
        raise UsageError(f"--workers must be at least 1 (worker processes), got {args.workers}")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(f"--device: {e}") from None
    try:
        executor = RayExecutor(RayConfig(address=args.ray_address, gpus_per_run=args.gpus_per_run,
                                         num_cpus=args.threads), workers, device_type=device.type)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if executor.config.uses_gpu(device.type) and device.type == "cpu":
        device = torch.device("cuda")  # the cluster's GPUs (this machine may have none)
    return executor, device


def check_flags(args: argparse.Namespace) -> None:
    r"""The flags that contradict each other."""
    if args.fully_adjacent and args.no_controls:
        raise UsageError("--no-controls does nothing with --fully-adjacent: every tree run "
                         "there has the fully-adjacent layer, and no control is added")
    ignored = ["--compile"] * args.compile + [
        BUDGET_FLAGS[k] for k in BUDGET_FLAGS  # --max-epochs caps the paper's loop
        if k != "max_epochs" and getattr(args, k) is not None]
    ignored += [f"--{k.replace('_', '-')}" for k in ("no_controls", "fully_adjacent")
                if getattr(args, k)]
    if args.time_to_solve and ignored:
        raise UsageError(f"--time-to-solve compares the two budgets as they are; it does not "
                         f"take {', '.join(ignored)}")


def profile(args: argparse.Namespace, device: torch.device) -> None:
    r"""``--profile``: ms per training step of the trees and of the transfer layouts."""
    tasks = args.tasks or ["tree"]
    if "tree" in tasks:
        print(profile_table(profile_steps(args.models or PUBLISHED_TREE, args.depths or [3, 4],
                                          [args.batch_size] if args.batch_size else [64, 256, 1024],
                                          device=device, compile=args.compile)))
    defaults = study.Settings.default()
    cells = transfer.plan([t for t in study.TOPOLOGIES if t in tasks],
                          args.transfer_models or defaults.transfer_models,
                          {t: args.distances or defaults.distances[t] for t in study.TOPOLOGIES},
                          defaults.transfer_seeds)
    print(report.layout_table([r for c in cells for r in transfer.time_layouts(c)]))


def main(args: argparse.Namespace, argv: Optional[List[str]] = None) -> None:
    r"""Runs what ``args`` ask for (see the module's docstring); ``argv`` is the command
    line as given, for the results' record."""
    executor, device = executor_of(args)
    check_flags(args)
    torch.set_num_threads(max(1, args.threads))
    if args.profile:
        return profile(args, device)
    try:
        settings = settings_of(args)
        settings.validate()
        if args.time_to_solve:
            cells = study.time_to_solve_cells(args.models or list(PUBLISHED_TREE),
                                              args.depths or [3], settings.seeds,
                                              args.time_to_solve, args.max_epochs,
                                              args.max_seconds)
            store = ResultStore(args.out, {"time_to_solve": True}, restart=args.restart)
            sweep = Sweep(store, partial(study.time_to_solve_cell, device=device),
                          cost=lambda c: 1.0, executor=executor, desc="time to solve")
        else:
            cells = study.plan(settings)
            store = ResultStore(args.out, settings.meta(), restart=args.restart)
            sweep = Sweep(store, partial(study.run_cell, settings=settings, device=device),
                          cost=partial(study.cost, settings=settings),
                          priority=partial(study.priority, settings=settings),
                          controls=partial(study.controls, settings), executor=executor,
                          desc="oversquash")
        start = time.perf_counter()
        failures = sweep.run(cells)
    except (ValueError, ResultsCorrupted, ExecutorError) as e:
        raise UsageError(str(e)) from None
    if failures:
        for f in failures:
            print(f"\n--- {f.key} failed:\n{f.reason.rstrip()}", file=sys.stderr)
        raise RunsFailed(f"{len(failures)} run(s) failed: {', '.join(f.key for f in failures)}. "
                         f"The finished runs are in {store.path}; run the same command again "
                         "to finish the rest.")
    write_results(sweep.rows(), args.out, argv, device, args.time_to_solve,
                  time.perf_counter() - start, plots=not args.no_plots,
                  workers=executor.workers)


def write_results(rows, out: Path, argv: Optional[List[str]], device: torch.device,
                  time_to_solve, seconds: float, plots: bool = True,
                  workers: Optional[int] = None) -> None:
    r"""The short table on stdout and the files under ``out``."""
    command = f"`python benchmarks/oversquash.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
    if time_to_solve:
        text = report.time_to_solve_table(rows)
        print(text)
        write_atomic(out / "time_to_solve.md", f"Command: {command} on {device}, "
                     f"{workers or 'Ray-scheduled'} worker(s).\n\n{text}")
        return
    print(report.table(rows) + "\n" + study.TEST_NOTE + "\n" + report.targets(rows))
    write_atomic(out / "results.csv", report.csv_text(rows))
    write_atomic(out / "results.md", f"# Over-squashing results\n\nCommand: {command} on "
                 f"{device} ({seconds:.0f} s this session).\n\n"
                 + report.table(rows, markdown=True) + "\n" + study.TEST_NOTE + "\n")
    if plots:
        print(f"plots: {', '.join(report.plot(rows, out))}")
    print(f"results in {out}/ (results.json, results.csv, results.md)")
