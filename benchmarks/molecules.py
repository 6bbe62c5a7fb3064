r"""GraphGPS on molecules: graphformer's GPS model against the same architecture on PyG's
``GPSConv``, GINE alone and graphformer with Nesterov dynamics, at one parameter budget
and the same epochs, on the ZINC-style set of
:class:`~graphformer.datasets.MolecularRegression` (built offline and cached on first use).

A thin command line over :mod:`graphformer.studies.molecules`. Reports test MAE
(mean ± std over seeds, at each run's best validation epoch), seconds per training epoch
(each model's training steps on the epoch's batches, which are collated once for all
models; the collation is reported on its own), and the peak memory of one training step
on a batch of 128 molecules; writes
``OUT/molecules.{json,csv,md}`` and ``OUT/molecules.png``.

Examples::

    python benchmarks/molecules.py                      # the default, about 15 min on 2 cores
    python benchmarks/molecules.py --epochs 1 --seeds 0 --train-size 500   # a smoke test
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from graphformer.device import resolve_device
from graphformer.studies import molecules as study
from graphformer.io import write_text_atomic


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    study.add_settings_arguments(p)
    p.add_argument("--models", default=",".join(study.MODELS),
                   help=f"comma-separated, of: {', '.join(study.MODELS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--seed", type=int, help="a single seed (same as --seeds N)")
    p.add_argument("--data", type=Path, default=study.DATA_ROOT,
                   help="cache folder of the data set (built on first use)")
    p.add_argument("--workers", type=int, default=3,
                   help="seeds trained in parallel processes (default: 3, one per seed)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default: 1; on a shared machine more "
                        "threads wait on each other)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--out", type=Path, default=Path("results/molecules"))
    args = p.parse_args(argv)
    args.seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in study.MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(study.MODELS)}")
    return args




def run_seed(args, seed: int):
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    splits = study.load_splits(str(args.data), study.settings_from_args(args))
    return study.run_seed(splits, study.settings_from_args(args), seed, device, args.models)


def summary(rows, memory, models):
    out = []
    for m in models:
        r = [x for x in rows if x["model"] == m]
        tests = [x["test"] for x in r]
        out.append(dict(model=m, params=r[0]["params"], seeds=len(r),
                        test_mae_mean=statistics.mean(tests),
                        test_mae_std=statistics.stdev(tests) if len(tests) > 1 else 0.0,
                        s_per_epoch=statistics.mean(x["s_per_epoch"] for x in r),
                        cpu_s_per_epoch=statistics.mean(x["cpu_s_per_epoch"] for x in r),
                        collate_cpu_s_per_epoch=statistics.mean(
                            x["collate_cpu_s_per_epoch"] for x in r),
                        peak_mib=memory[m] / 2 ** 20))
    return out


def table(summ) -> str:
    lines = ["| model | params | test MAE (mean ± std) | s/epoch | CPU s/epoch | "
             "peak MiB (128 mol.) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in summ:
        lines.append(f"| {s['model']} | {s['params']:,} | {s['test_mae_mean']:.4f} ± "
                     f"{s['test_mae_std']:.4f} | {s['s_per_epoch']:.1f} | "
                     f"{s['cpu_s_per_epoch']:.1f} | {s['peak_mib']:.1f} |")
    lines.append(f"(epochs: training and scheduler steps; the collation of each epoch's "
                 f"batches, done once for all models, took "
                 f"{summ[0]['collate_cpu_s_per_epoch']:.1f} CPU s per epoch)")
    return "\n".join(lines)


def plot(summ, rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    names = [s["model"] for s in summ]
    axes[0].bar(names, [s["test_mae_mean"] for s in summ],
                yerr=[s["test_mae_std"] for s in summ], capsize=4)
    axes[0].set_title("test MAE (mean ± std)")
    axes[1].bar(names, [s["cpu_s_per_epoch"] for s in summ])
    axes[1].set_title("CPU seconds per epoch")
    axes[2].bar(names, [s["peak_mib"] for s in summ])
    axes[2].set_title("peak MiB, one step, 128 molecules")
    for m in names:
        curves = [x["val_mae"] for x in rows if x["model"] == m]
        mean = [statistics.mean(c) for c in zip(*curves)]
        axes[3].plot(range(1, len(mean) + 1), mean, marker="o", label=m)
    axes[3].set_title("validation MAE (mean over seeds)")
    axes[3].set_xlabel("epoch")
    axes[3].legend()
    for ax in axes[:3]:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def cpu_seconds() -> float:
    r"""CPU seconds of this process and of its finished worker processes."""
    import resource
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                  resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    t0 = time.time()
    s = study.settings_from_args(args)
    splits = study.load_splits(str(args.data), s, progress=True)  # builds the cache once
    print(f"data: {splits['train'].info}", file=sys.stderr)
    memory = study.memory_rows(splits, s, device, args.models)
    rows = []
    bar = tqdm(total=len(args.seeds), desc="seeds")
    if args.workers > 1 and len(args.seeds) > 1:
        with ProcessPoolExecutor(min(args.workers, len(args.seeds)),
                                 mp_context=get_context("spawn")) as pool:
            for r in pool.map(run_seed, [args] * len(args.seeds), args.seeds):
                rows += r
                bar.update()
    else:
        for seed in args.seeds:
            rows += study.run_seed(splits, s, seed, device, args.models,
                                   progress=lambda msg: bar.set_postfix_str(msg))
            bar.update()
    bar.close()
    summ = summary(rows, memory, args.models)
    info = dict(settings=study.settings_dict(s), seeds=args.seeds, threads=args.threads,
                workers=args.workers, device=str(device), torch=torch.__version__,
                data=splits["train"].info, wall_s=time.time() - t0,
                cpu_s=cpu_seconds(),
                command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    write_text_atomic(args.out / "molecules.json",
                      json.dumps(dict(info=info, summary=summ, runs=rows), indent=1))
    tmp = args.out / "molecules.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summ[0]))
        w.writeheader()
        w.writerows(summ)
    os.replace(tmp, args.out / "molecules.csv")
    md = table(summ)
    write_text_atomic(args.out / "molecules.md", md + "\n")
    plot(summ, rows, args.out / "molecules.png")
    print(md)
    print(f"wall time {time.time() - t0:.0f} s, CPU time {info['cpu_s']:.0f} s; written to "
          f"{args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
