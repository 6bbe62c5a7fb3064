r"""One training step (forward, backward, AdamW) of each model of
``benchmarks/molecules.py`` (graphformer's GPS model, the same architecture on PyG's
``GPSConv``, GINE alone, graphformer with Nesterov dynamics), ratios to ``GPSConv``, on
the first ``--steps`` batches of the molecular training set, timed interleaved in one
process (one step of each model in turn) with the process's CPU time, and the peak
memory of one step on ``--memory-batch`` molecules.

Examples::

    python benchmarks/gps_step.py                         # the study's settings
    python benchmarks/gps_step.py --attn-dropout 0 --batch-size 128
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from graphformer.device import resolve_device
from graphformer.io import write_json_atomic
from graphformer.studies import molecules as study

def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    study.add_settings_arguments(p)
    p.add_argument("--steps", type=int, default=3, help="batches per round")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (median)")
    p.add_argument("--data", type=Path, default=study.DATA_ROOT)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/gps_step"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    s = study.settings_from_args(args)
    splits = study.load_splits(str(args.data), s)
    loader = DataLoader(splits["train"], batch_size=s.batch_size)
    batches = [b.to(device) for _, b in zip(range(args.steps), loader)]
    built = {name: study.trainer(name, s, args.seed, device) for name in study.MODELS}
    times = study.step_times(built, batches, args.rounds)
    memory = study.memory_rows(splits, s, device, list(study.MODELS))
    rows = []
    for name in study.MODELS:
        ratio = statistics.median(a / b for a, b in zip(times[name], times["gpsconv"]))
        rows.append(dict(model=name, ms_per_step=1e3 * statistics.median(times[name]),
                         ratio=ratio, speedup=1 / ratio, peak_mib=memory[name] / 2 ** 20))
        print(f"{name:12s} {rows[-1]['ms_per_step']:7.1f} ms/step  ratio {ratio:.3f}  "
              f"peak {rows[-1]['peak_mib']:.1f} MiB")
    nodes = [b.num_nodes for b in batches]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / f"gps_step_b{s.batch_size}_p{s.attn_dropout}.json",
                      dict(settings=study.settings_dict(s), nodes=nodes, rows=rows,
                           times_s=times, torch=torch.__version__))


if __name__ == "__main__":
    main()
