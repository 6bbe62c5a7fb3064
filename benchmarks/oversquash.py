#!/usr/bin/env python
"""Over-squashing, measured: the main job.

Tree-NeighborsMatch (Alon & Yahav 2021) at depths 2 and 3 with GCN, GIN, GAT and GGNN and
the fast budget; the graph-transfer tasks (Di Giovanni et al. 2023: clique path, ring,
crossed ring) with PyG's GCN and GAT on the paper's own budget, at distances on both sides
of each published cliff. Behind every failure runs a control on the same budget (the
fully-adjacent last layer; with --full also a Transformer over the complete graph; for the
causal sequences the model without the causal mask): a failure is blamed on the bottleneck
only where a control solves it. Runs go to Ray (a local instance, or --ray-address); the
numbers do not depend on where or how many. Writes results.json (resumed when
interrupted), results.csv, results.md and one plot per study under --out.

    python benchmarks/oversquash.py                        # the default run, 2-core CPU
    python benchmarks/oversquash.py --tasks ring --distances 9,10,11 --transfer-models gat
    python benchmarks/oversquash.py --full                 # both papers' sweeps and budgets
    python benchmarks/oversquash.py --tasks copy_first,copy_last,count_ones  # sequences
    python benchmarks/oversquash.py --time-to-solve full,fast --depths 3
    python benchmarks/oversquash.py --profile --tasks tree,ring   # ms per training step
"""
import argparse
from pathlib import Path

from graphformer.studies import command, oversquash as study, transfer
from graphformer.studies.executor import default_workers


def parser() -> argparse.ArgumentParser:
    d, ints, names = study.Settings.default(), command.int_list, command.name_list
    join = lambda values: ",".join(map(str, values))  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--tasks", type=names, help=f"of {join(study.TASKS)} (default {join(d.tasks)})")
    add("--models", type=names, help=f"tree models (default {join(d.models)})")
    add("--transfer-models", type=names,
        help=f"of {join(transfer.PYG_MODELS)} (default {join(d.transfer_models)})")
    add("--depths", type=ints, help=f"tree depths, 2..{study.MAX_TREE_DEPTH} "
                                    f"(default {join(d.depths)})")
    per_topology = "; ".join(f"{t} {join(v)}" for t, v in d.distances.items())
    add("--distances", type=ints, help=f"transfer distances of every topology, "
        f"{transfer.MIN_DISTANCE}..{transfer.MAX_DISTANCE} (default {per_topology})")
    add("--lengths", type=ints, help=f"sequence lengths (default {join(d.lengths)})")
    add("--seeds", type=ints, help=f"seeds of every task (default: trees {join(d.seeds)}, "
                                   f"transfer {join(d.transfer_seeds)})")
    add("--seed", type=int, help="a single seed (same as --seeds N)")
    add("--full", action="store_true", help="the papers' sweeps, seeds and budgets")
    for field, flag in command.BUDGET_FLAGS.items():
        add(flag, type=float if field == "weight_decay" else int,
            help=f"trees: the budget's {field} (default {getattr(d.budget, field)})")
    add("--fully-adjacent", action="store_true", help="every tree run with that last layer")
    add("--no-controls", action="store_true", help="no control behind a failure")
    add("--compile", action="store_true", help="train the trees through torch.compile")
    add("--time-to-solve", type=names, metavar="BUDGETS", help="instead: seconds to train "
        "accuracy 1.0 on the trees under each budget (full,fast)")
    add("--max-seconds", type=float, help="with --time-to-solve: cap on a run of the paper's loop")
    add("--profile", action="store_true", help="instead: ms per training step of the trees "
        "and of the transfer layouts of the topologies in --tasks")
    add("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    add("--out", type=Path, default=Path("results/oversquash"))
    add("--restart", action="store_true", help="move earlier results aside, start over")
    add("--no-plots", action="store_true")
    add("--workers", type=int, help=f"runs at a time (default: the cores, {default_workers()}; "
        "with --ray-address or CUDA: as many as the cluster's resources allow)")
    add("--ray-address", help="join this Ray cluster ('auto' or host:port) instead of a "
        "local Ray instance")
    add("--gpus-per-run", type=float, help="share of a GPU per run (default on CUDA: 1)")
    add("--threads", type=int, default=1, help="CPUs and torch threads of each run")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    try:
        command.main(args, argv)
    except command.UsageError as e:
        p.exit(2, f"oversquash.py: error: {e}\n")
    except command.RunsFailed as e:
        p.exit(1, f"oversquash.py: error: {e}\n")


if __name__ == "__main__":
    main()
