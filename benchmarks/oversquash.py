#!/usr/bin/env python
"""Over-squashing, over-smoothing and the causal runway, measured: the main job.

Trains GCN, GIN, GAT and GGNN (PyG's layers, in the blocks of Alon & Yahav's run
scripts) on Tree-NeighborsMatch (Alon & Yahav 2021) at depths 2 and 3 with the fast
budget (the paper's model, data and metric; batches of 256, AdamW with weight decay 0.03,
warm-up to lr 3e-3, cosine decay over 400 epochs, stop at train accuracy 1.0), beside the
published numbers, with the fully-adjacent last layer where each fails (train accuracy
below 0.99 at depths 2 and 3, below 0.9 from depth 4; the control: a failure is
over-squashing only when the same budget solves the fully-adjacent variant); the Ring /
CrossedRing / CliquePath transfer tasks (Di Giovanni et al. 2023); and the causal
sequence tasks (Barbero et al. 2024) with and without pause tokens, with
gradient-descent and Nesterov stacks. The runs are spread over --workers processes
(default: every core), one torch thread each; the numbers do not depend on how many.
Writes results.json, results.csv, results.md and PNG plots under
--out; an interrupted or failed run resumes where it stopped.

    python benchmarks/oversquash.py                       # the default run, 2-core CPU
    python benchmarks/oversquash.py --depths 2,3,4        # adds depth 4 (longer)
    python benchmarks/oversquash.py --tasks tree --depths 4 --models ggnn \
        --max-epochs 800 --no-controls                    # one longer run, no control
    python benchmarks/oversquash.py --time-to-solve full,fast --depths 3
    python benchmarks/oversquash.py --profile             # ms per training step
    python benchmarks/oversquash.py --full --device cuda  # the paper's sweep and loop
"""
import argparse
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from graphformer.device import resolve_device
from graphformer.experiments.graph_tasks import (GRAPH_MODELS, PUBLISHED_TREE, profile_steps,
                                                 profile_table)
from graphformer.experiments.oversquash import (TASKS, TEST_NOTE, Settings, cost, csv_text,
                                                format_accuracy, plan, plan_fully_adjacent,
                                                plot, run_cell, run_key, table,
                                                time_to_solve_cell, time_to_solve_cells,
                                                time_to_solve_table)
from graphformer.experiments.pool import check_workers, default_workers, run_cells
from graphformer.experiments.store import ResultStore, ResultsCorrupted, write_atomic


def int_list(text):
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def name_list(text):
    return [v for v in text.split(",") if v]


def time_to_solve(p, args, workers: int, device) -> None:
    r"""The ``--time-to-solve`` mode: both budgets on the same trees, one results file."""
    models = args.models or list(PUBLISHED_TREE)
    depths, seeds = args.depths or [3], [args.seed] if args.seed is not None else (args.seeds or [0])
    try:
        cells = time_to_solve_cells(models, depths, seeds, args.time_to_solve,
                                    args.max_epochs, args.max_seconds)
        for _, (run, budget) in cells:
            budget.validate()
        store = ResultStore(args.out, {"time_to_solve": True}, restart=args.restart)
    except (ValueError, ResultsCorrupted) as e:
        p.exit(2, f"oversquash.py: error: {e}\n")
    todo = [(k, c) for k, c in cells
            if k not in store or store.rows[k]["budget"] != asdict(c[1])]
    if len(todo) < len(cells):
        print(f"resuming: {len(cells) - len(todo)} of {len(cells)} runs already in {store.path}")
    tqdm.monitor_interval = 0
    with tqdm(total=len(todo), unit="run", desc="time to solve") as bar:
        def finished(key, row):
            store.add(key, row)
            bar.update(1)
            bar.write(f"{key}: train accuracy {format_accuracy(row['train_acc'])} after "
                      f"{row['seconds']:.0f} s, {row['epochs']:g} epochs")
            return ()
        failures = run_cells(todo, partial(time_to_solve_cell, device=device), workers=workers,
                             on_done=finished)
    rows = store.values([k for k, _ in cells])
    text = time_to_solve_table(rows)
    print(text)
    write_atomic(args.out / "time_to_solve.md",
                 f"Command: `python benchmarks/oversquash.py "
                 f"{' '.join(sys.argv[1:])}` on {device}, {workers} worker(s).\n\n{text}")
    if failures:
        p.exit(1, f"oversquash.py: error: {len(failures)} run(s) failed: "
                  f"{', '.join(f.key for f in failures)}; run the same command again to "
                  "finish them.\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=name_list,
                   help=f"comma-separated, of: {', '.join(GRAPH_MODELS)} (default: all; the "
                        "transfer tasks use gcn, gat, attention unless --models or --full)")
    p.add_argument("--tasks", type=name_list, help=f"comma-separated, of: {', '.join(TASKS)}")
    p.add_argument("--depths", type=int_list, help="tree depths, e.g. 2,3,4,5 (2..8)")
    p.add_argument("--distances", type=int_list, help="transfer-task distances, e.g. 3,6")
    p.add_argument("--lengths", type=int_list, help="causal-task sequence lengths, e.g. 16,64")
    p.add_argument("--seeds", type=int_list, help="seeds, e.g. 0,1,2")
    p.add_argument("--seed", type=int, help="a single seed (same as --seeds N)")
    p.add_argument("--full", action="store_true", help="the papers' sweep (depths 2-8) and budget")
    p.add_argument("--max-steps", type=int,
                   help="override the optimizer-step budget of the tree and transfer runs "
                        "(it replaces the epoch budget of the trees: 50,000 epochs with "
                        "--full, the fast budget's schedule length otherwise)")
    p.add_argument("--max-epochs", type=int,
                   help="override the trees' epoch budget (the fast budget's cosine "
                        "schedule stretches to it; with --full, the 50,000-epoch cap)")
    p.add_argument("--batch-size", type=int,
                   help="override the trees' graph batch size (with --full it replaces the "
                        "paper's batch size per depth)")
    p.add_argument("--weight-decay", type=float,
                   help="override the trees' decoupled weight decay (the fast budget's 0.1; "
                        "0: plain Adam)")
    p.add_argument("--patience", type=int,
                   help="evaluations without a gain in train accuracy before a run stops")
    p.add_argument("--max-graphs", type=int,
                   help="cap on graphs per tree data set (default: the paper's sizes)")
    p.add_argument("--fully-adjacent", action="store_true",
                   help="run every tree with the fully-adjacent last layer (the control "
                        "alone, at the --depths given)")
    p.add_argument("--no-controls", action="store_true",
                   help="do not add the fully-adjacent control where a model fails (e.g. a "
                        "longer plain run whose control was measured on its own)")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (inductor); slower on a CPU for this "
                        "default run, see docs/results_oversquash.md")
    p.add_argument("--time-to-solve", type=name_list, metavar="BUDGETS",
                   help="instead of the study: seconds and epochs to train accuracy 1.0 on "
                        "the trees (--depths, default 3; --models, default the four "
                        "published) under each budget named (full,fast), in one results "
                        "file, with the ratio; --max-epochs and --max-seconds cap the "
                        "paper's loop")
    p.add_argument("--max-seconds", type=float,
                   help="with --time-to-solve: stop a run of the paper's loop after this "
                        "many seconds (checked at every evaluation)")
    p.add_argument("--profile", action="store_true",
                   help="time one training step of the tree models (ms/step, graphs/s) at "
                        "the --depths (default 3,4) and --batch-size (default 64,256,1024) "
                        "instead of training")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--out", type=Path, default=Path("results/oversquash"))
    p.add_argument("--restart", action="store_true",
                   help="move earlier results aside (results.json.bak) instead of resuming")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="finish a run that stopped (the default whenever --out holds a "
                        "results.json written with the same settings)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, one run and one torch thread each (default: the "
                        f"cores of this machine, {default_workers()}); the numbers do not "
                        "depend on it")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch with --workers 1 (default 1: these graphs are "
                        "small, and OpenMP threads slow small kernels down on a busy machine)")
    args = p.parse_args(argv)
    if args.resume and args.restart:
        p.error("--resume and --restart contradict each other")
    try:
        workers = check_workers(default_workers() if args.workers is None else args.workers)
    except ValueError:
        p.error(f"--workers must be at least 1 (worker processes), got {args.workers}")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(f"--device: {e}")
    if workers > 1 and device.type != "cpu":
        workers = 1  # one accelerator: its runs go one after another

    torch.set_num_threads(max(1, args.threads))
    seeds = [args.seed] if args.seed is not None else args.seeds
    overrides = dict(models=args.models, transfer_models=args.models, tasks=args.tasks, depths=args.depths,
                     distances=args.distances, lengths=args.lengths, seeds=seeds)
    settings = (Settings.full if args.full else Settings.default)(**overrides)
    if args.max_steps is not None:
        settings.budget.max_steps = settings.transfer_steps = args.max_steps
        settings.budget.max_epochs = None  # a step budget replaces the epoch budget
    if args.max_epochs is not None:
        settings.budget.max_epochs = args.max_epochs
    if args.batch_size is not None:
        settings.budget.batch_size = args.batch_size
        settings.budget.paper_batches = False  # one batch size at every depth
    if args.weight_decay is not None:
        settings.budget.weight_decay = args.weight_decay
    if args.patience is not None:
        settings.budget.patience = args.patience
    if args.max_graphs is not None:
        settings.budget.max_graphs = args.max_graphs
    settings.compile = args.compile
    if args.fully_adjacent:
        settings.tree_variant = "fully_adjacent"
    settings.controls = not args.no_controls
    if args.fully_adjacent and args.no_controls:
        p.error("--no-controls does nothing with --fully-adjacent: every tree run there has "
                "the fully-adjacent layer, and no control is added")
    if args.time_to_solve:
        ignored = [flag for flag, value in (("--compile", args.compile),
                                            ("--batch-size", args.batch_size),
                                            ("--patience", args.patience),
                                            ("--weight-decay", args.weight_decay is not None),
                                            ("--max-graphs", args.max_graphs),
                                            ("--fully-adjacent", args.fully_adjacent),
                                            ("--no-controls", args.no_controls),
                                            ("--max-steps", args.max_steps)) if value]
        if ignored:
            p.error(f"--time-to-solve compares the two budgets as they are; it does not take "
                    f"{', '.join(ignored)}")
        return time_to_solve(p, args, workers, device)
    if args.profile:
        depths = args.depths or [3, 4]
        sizes = [args.batch_size] if args.batch_size else [64, 256, 1024]
        rows = profile_steps(settings.models if args.models else PUBLISHED_TREE, depths, sizes,
                             device=device, compile=args.compile)
        print(profile_table(rows))
        return
    try:
        settings.validate()
        store = ResultStore(args.out, settings.meta(), restart=args.restart)
    except (ValueError, ResultsCorrupted) as e:
        p.exit(2, f"oversquash.py: error: {e}\n")

    runs = [r for r in plan(settings)]
    done = sum(run_key(r) in store for r in runs)
    if done:
        print(f"resuming: {done} of {len(runs)} runs already in {store.path}")
    start = time.perf_counter()
    fa_runs: list = []
    tqdm.monitor_interval = 0  # no monitor thread: the workers are forked
    with tqdm(total=sum(cost(r, settings) for r in runs), unit="cost", desc="oversquash",
              bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}") as bar:
        shares: dict = {}  # the share of its cost each running cell has reported

        def advance(key: str, share: float) -> None:
            run_cost = cost(by_key[key], settings)
            gain = run_cost * min(max(share, 0.0), 1.0) - shares.get(key, 0.0)
            gain = min(gain, bar.total - bar.n)  # float sums must not pass the total
            if gain > 0:
                shares[key] = shares.get(key, 0.0) + gain
                bar.update(gain)

        def show() -> None:
            bar.set_postfix_str(", ".join(k for k in shares if k not in store) or "")

        def more() -> list:  # fully-adjacent runs, once a model's plain runs are all in
            new = [r for r in plan_fully_adjacent(settings, store.values([run_key(r) for r in runs]),
                                                  complete=True)
                   if run_key(r) not in by_key]
            for r in new:
                by_key[run_key(r)] = r
                fa_runs.append(r)
            bar.total += sum(cost(r, settings) for r in new)
            return [(run_key(r), r) for r in new if run_key(r) not in store]

        def finished(key: str, row: dict) -> list:
            store.add(key, row)
            advance(key, 1.0)
            show()
            return more()

        def started(key: str) -> None:
            shares.setdefault(key, 0.0)
            show()

        by_key = {run_key(r): r for r in runs}
        for r in runs:
            if run_key(r) in store:
                advance(run_key(r), 1.0)
        todo = [(run_key(r), r) for r in sorted(runs, key=lambda r: -cost(r, settings))
                if run_key(r) not in store]
        todo += more()
        failures = run_cells(todo, partial(run_cell, settings=settings, device=device),
                             workers=workers, on_done=finished, on_progress=advance,
                             on_start=started)
    if failures:
        for f in failures:
            print(f"\n--- {f.key} failed:\n{f.reason.rstrip()}", file=sys.stderr)
        kept = sum(run_key(r) in store for r in runs + fa_runs)
        p.exit(1, f"oversquash.py: error: {len(failures)} run(s) failed: "
                  f"{', '.join(f.key for f in failures)}. The {kept} finished runs are in "
                  f"{store.path}; run the same command again (--resume) to finish the rest.\n")
    keys = [run_key(r) for r in runs + fa_runs]
    rows = store.values(keys)

    text = table(rows)
    print(text)
    print(TEST_NOTE)
    write_atomic(args.out / "results.csv", csv_text(rows))
    header = (f"# Over-squashing results\n\nCommand: `python benchmarks/oversquash.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}` on {device} "
              f"({time.perf_counter() - start:.0f} s this session).\n\n")
    write_atomic(args.out / "results.md", header + table(rows, markdown=True) + "\n" + TEST_NOTE + "\n")
    if not args.no_plots:
        written = plot(rows, args.out)
        print(f"plots: {', '.join(written)}")
    print(f"results in {args.out}/ (results.json, results.csv, results.md)")


if __name__ == "__main__":
    main()
