#!/usr/bin/env python
"""Over-squashing, measured: the main job.

Tree-NeighborsMatch (Alon & Yahav 2021) at depths 2 and 3 with GCN, GIN, GAT and GGNN and
the fast budget; the graph-transfer tasks (Di Giovanni et al. 2023: clique path, ring,
crossed ring) with PyG's GCN and GAT on the paper's own budget, at distances on both sides
of each published cliff. Behind every failure runs a control on the same budget (the
fully-adjacent last layer; with --full also a Transformer over the complete graph): a
failure is over-squashing only where a control solves it. Runs go to Ray: a local instance
on this machine's cores by default (--workers at a time), or the cluster at --ray-address;
the numbers do not depend on where or how many. Writes results.json
(resumed when interrupted), results.csv, results.md and one plot per study under --out.

    python benchmarks/oversquash.py                        # the default run, 2-core CPU
    python benchmarks/oversquash.py --tasks ring --distances 9,10,11 --transfer-models gat
    python benchmarks/oversquash.py --full                 # both papers' sweeps and budgets
    python benchmarks/oversquash.py --tasks copy_first,count_ones --lengths 16  # sequences
    python benchmarks/oversquash.py --time-to-solve full,fast --depths 3
    python benchmarks/oversquash.py --profile              # ms per tree training step
    python benchmarks/oversquash.py --profile --tasks ring,clique_path  # transfer layouts
"""
import argparse
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from graphformer.device import resolve_device
from graphformer.studies import oversquash as study
from graphformer.studies import report, transfer
from graphformer.studies.graph_tasks import (FAST_WEIGHT_DECAY, PUBLISHED_TREE, profile_steps,
                                            profile_table)
from graphformer.studies.executor import (ExecutorError, RayConfig, RayExecutor, check_workers,
                                          default_workers)
from graphformer.studies.store import ResultStore, ResultsCorrupted, write_atomic
from graphformer.studies.sweep import Sweep


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values


def name_list(text):
    values = [v for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one name, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--tasks", type=name_list, help=f"of: {', '.join(study.TASKS)}")
    add("--models", type=name_list, help="tree models (default gcn,gin,gat,ggnn)")
    add("--transfer-models", type=name_list, help="transfer models, of gcn,gat,gin,sage")
    add("--depths", type=int_list, help="tree depths, 2..8 (default 2,3)")
    add("--distances", type=int_list, help="transfer distances for every topology, 2..15")
    add("--lengths", type=int_list, help="causal-sequence lengths")
    add("--seeds", type=int_list, help="seeds of every task (default: trees 0, transfer 1)")
    add("--full", action="store_true", help="the papers' sweeps, seeds and budgets")
    add("--max-steps", type=int, help="trees: a step budget in place of the epoch budget")
    add("--max-epochs", type=int, help="trees: the epoch budget")
    add("--batch-size", type=int, help="trees: one batch size at every depth")
    add("--weight-decay", type=float,
        help=f"trees: decoupled weight decay (default {FAST_WEIGHT_DECAY})")
    add("--patience", type=int, help="trees: evaluations without a gain before a stop")
    add("--max-graphs", type=int, help="trees: cap on graphs per data set")
    add("--fully-adjacent", action="store_true", help="every tree run with that last layer")
    add("--no-controls", action="store_true", help="no control behind a failure")
    add("--compile", action="store_true", help="train the trees through torch.compile")
    add("--time-to-solve", type=name_list, metavar="BUDGETS",
        help="instead: seconds to train accuracy 1.0 on the trees under each budget (full,fast)")
    add("--max-seconds", type=float, help="with --time-to-solve: cap on a run of the paper's loop")
    add("--profile", action="store_true",
        help="instead: ms per training step of the trees, and of the transfer layouts for "
             "the topologies in --tasks")
    add("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    add("--seed", type=int, help="a single seed (same as --seeds N)")
    add("--out", type=Path, default=Path("results/oversquash"))
    add("--restart", action="store_true", help="move earlier results aside, start over")
    add("--no-plots", action="store_true")
    add("--workers", type=int, help=f"runs at a time (default: the cores, {default_workers()}; "
        "with --ray-address or CUDA: as many as the cluster's resources allow)")
    add("--ray-address", help="join this Ray cluster ('auto': the one this machine belongs "
        "to; host:port: its head) instead of a local Ray instance")
    add("--gpus-per-run", type=float, help="share of a GPU per run (0.25: four on a card; "
        "default on CUDA: 1)")
    add("--threads", type=int, default=1, help="CPUs and torch threads of each run")
    return p


def settings_of(args) -> study.Settings:
    r"""The study's settings from the command line (validated by the caller, once)."""
    seeds = [args.seed] if args.seed is not None else args.seeds
    base = (study.Settings.full if args.full else study.Settings.default)()
    budget = replace(base.budget, **{k: v for k, v in dict(
        max_steps=args.max_steps, max_epochs=args.max_epochs, batch_size=args.batch_size,
        weight_decay=args.weight_decay, patience=args.patience,
        max_graphs=args.max_graphs).items() if v is not None})
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


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    try:
        workers = None if args.workers is None else check_workers(args.workers)
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(f"--workers must be at least 1 (worker processes), got {args.workers}"
                if "workers" in str(e) else f"--device: {e}")
    try:  # the executor: a local Ray instance, or the cluster at --ray-address
        executor = RayExecutor(RayConfig(address=args.ray_address, gpus_per_run=args.gpus_per_run,
                                         num_cpus=args.threads), workers, device_type=device.type)
    except ValueError as e:
        p.error(str(e))
    if executor.config.uses_gpu(device.type) and device.type == "cpu":
        device = torch.device("cuda")  # the cluster's GPUs (this machine may have none)
    if args.fully_adjacent and args.no_controls:
        p.error("--no-controls does nothing with --fully-adjacent: every tree run there has "
                "the fully-adjacent layer, and no control is added")
    ignored = [f for f, v in (("--compile", args.compile), ("--batch-size", args.batch_size),
                              ("--patience", args.patience), ("--max-steps", args.max_steps),
                              ("--weight-decay", args.weight_decay is not None),
                              ("--max-graphs", args.max_graphs), ("--no-controls", args.no_controls),
                              ("--fully-adjacent", args.fully_adjacent)) if v]
    if args.time_to_solve and ignored:
        p.error(f"--time-to-solve compares the two budgets as they are; it does not take "
                f"{', '.join(ignored)}")
    torch.set_num_threads(max(1, args.threads))
    if args.profile:
        tasks = args.tasks or ["tree"]
        if "tree" in tasks:
            print(profile_table(profile_steps(args.models or PUBLISHED_TREE, args.depths or [3, 4],
                                              [args.batch_size] if args.batch_size else [64, 256, 1024],
                                              device=device, compile=args.compile)))
        cells = transfer.plan([t for t in study.TOPOLOGIES if t in tasks],
                              args.transfer_models or ["gcn", "gat"],
                              {t: args.distances or study.DEFAULT_DISTANCES[t]
                               for t in study.TOPOLOGIES}, [1])
        print(report.layout_table([r for c in cells for r in transfer.time_layouts(c)]))
        return
    try:
        settings = settings_of(args)
        settings.validate()
        if args.time_to_solve:
            cells = study.time_to_solve_cells(args.models or list(PUBLISHED_TREE), args.depths or [3],
                                              settings.seeds, args.time_to_solve, args.max_epochs,
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
    except (ValueError, ResultsCorrupted) as e:
        p.exit(2, f"oversquash.py: error: {e}\n")
    start = time.perf_counter()
    try:
        failures = sweep.run(cells)
    except ExecutorError as e:
        p.exit(2, f"oversquash.py: error: {e}\n")
    if failures:
        for f in failures:
            print(f"\n--- {f.key} failed:\n{f.reason.rstrip()}", file=sys.stderr)
        p.exit(1, f"oversquash.py: error: {len(failures)} run(s) failed: "
                  f"{', '.join(f.key for f in failures)}. The finished runs are in "
                  f"{store.path}; run the same command again to finish the rest.\n")
    rows = sweep.rows()
    command = f"`python benchmarks/oversquash.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
    if args.time_to_solve:
        text = report.time_to_solve_table(rows)
        print(text)
        write_atomic(args.out / "time_to_solve.md", f"Command: {command} on {device}, "
                     f"{workers or 'Ray-scheduled'} worker(s).\n\n{text}")
        return
    print(report.table(rows) + "\n" + study.TEST_NOTE + "\n" + report.targets(rows))
    write_atomic(args.out / "results.csv", report.csv_text(rows))
    write_atomic(args.out / "results.md", f"# Over-squashing results\n\nCommand: {command} on "
                 f"{device} ({time.perf_counter() - start:.0f} s this session).\n\n"
                 + report.table(rows, markdown=True) + "\n" + study.TEST_NOTE + "\n")
    if not args.no_plots:
        print(f"plots: {', '.join(report.plot(rows, args.out))}")
    print(f"results in {args.out}/ (results.json, results.csv, results.md)")


if __name__ == "__main__":
    main()
