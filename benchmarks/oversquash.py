#!/usr/bin/env python
"""Over-squashing, over-smoothing and the causal runway, measured: the main job.

Trains GCN, GIN, GAT, GGNN (PyG's layers), graph attention and Deep Sets on
Tree-NeighborsMatch (Alon & Yahav 2021) beside the published numbers, with the
fully-adjacent last layer where each fails; the Ring / CrossedRing / CliquePath transfer
tasks (Di Giovanni et al. 2023); and the causal sequence tasks (Barbero et al. 2024) with
and without pause tokens, with gradient-descent and Nesterov stacks. Writes results.json,
results.csv, results.md and PNG plots under --out; an interrupted run resumes.

    python benchmarks/oversquash.py                      # about 15 min on a 2-core CPU
    python benchmarks/oversquash.py --full --device cuda # the papers' sweep and budget
"""
import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from graphformer.experiments.graph_tasks import GRAPH_MODELS
from graphformer.experiments.oversquash import (TASKS, Settings, cost, csv_text, plan,
                                                plan_fully_adjacent, plot, run_key, run_one,
                                                table)
from graphformer.experiments.store import ResultStore, ResultsCorrupted, write_atomic


def int_list(text):
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def name_list(text):
    return [v for v in text.split(",") if v]


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
                        "(with --full it replaces the 50,000-epoch cap; evaluations stay "
                        "every 100 epochs)")
    p.add_argument("--batch-size", type=int, help="override the graph batch size")
    p.add_argument("--patience", type=int,
                   help="evaluations without a gain in train accuracy before a run stops")
    p.add_argument("--max-graphs", type=int, help="override the cap on graphs per data set")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--out", type=Path, default=Path("results/oversquash"))
    p.add_argument("--restart", action="store_true",
                   help="move earlier results aside (results.json.bak) instead of resuming")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1: these graphs are small, and "
                        "OpenMP threads slow small kernels down on a busy machine)")
    args = p.parse_args(argv)

    torch.set_num_threads(max(1, args.threads))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    seeds = [args.seed] if args.seed is not None else args.seeds
    overrides = dict(models=args.models, transfer_models=args.models, tasks=args.tasks, depths=args.depths,
                     distances=args.distances, lengths=args.lengths, seeds=seeds)
    settings = (Settings.full if args.full else Settings.default)(**overrides)
    if args.max_steps is not None:
        settings.budget.max_steps = settings.transfer_steps = args.max_steps
        settings.budget.max_epochs = None  # a step budget replaces --full's epoch budget
    if args.batch_size is not None:
        settings.budget.batch_size = args.batch_size
    if args.patience is not None:
        settings.budget.patience = args.patience
    if args.max_graphs is not None:
        settings.budget.max_graphs = args.max_graphs
    try:
        settings.validate()
        store = ResultStore(args.out, settings.meta(), restart=args.restart)
    except (ValueError, ResultsCorrupted) as e:
        p.exit(2, f"oversquash.py: error: {e}\n")

    runs = plan(settings)
    done = sum(run_key(r) in store for r in runs)
    if done:
        print(f"resuming: {done} of {len(runs)} runs already in {store.path}")
    start = time.perf_counter()
    with tqdm(total=sum(cost(r, settings) for r in runs), unit="cost", desc="oversquash",
              bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}") as bar:
        def bump(amount: float) -> float:
            amount = min(amount, bar.total - bar.n)  # float sums must not pass the total
            if amount > 0:
                bar.update(amount)
            return max(amount, 0.0)

        def execute(batch):
            for run in batch:
                key, run_cost, done = run_key(run), cost(run, settings), 0.0
                bar.set_postfix_str(key)

                def advance(share: float) -> None:  # within a run, after every evaluation
                    nonlocal done
                    done += bump(run_cost * min(share, 1.0) - done)

                if key not in store:
                    store.add(key, run_one(run, settings, device, progress=advance))
                bump(run_cost - done)
        execute(runs)
        fa_runs = plan_fully_adjacent(settings, store.values([run_key(r) for r in runs]))
        bar.total += sum(cost(r, settings) for r in fa_runs)
        execute(fa_runs)
    keys = [run_key(r) for r in runs + fa_runs]
    rows = store.values(keys)

    text = table(rows)
    print(text)
    write_atomic(args.out / "results.csv", csv_text(rows))
    header = (f"# Over-squashing results\n\nCommand: `python benchmarks/oversquash.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}` on {device} "
              f"({time.perf_counter() - start:.0f} s this session).\n\n")
    write_atomic(args.out / "results.md", header + table(rows, markdown=True))
    if not args.no_plots:
        written = plot(rows, args.out)
        print(f"plots: {', '.join(written)}")
    print(f"results in {args.out}/ (results.json, results.csv, results.md)")


if __name__ == "__main__":
    main()
