r"""What one training epoch of ``benchmarks/molecules.py`` consists of, per model: the
collation of the epoch's batches (shared by the models), the training steps (forward,
backward, AdamW), the scheduler steps, and the evaluation passes on the validation and
test sets (no dropout; not part of the study's seconds per epoch), in CPU seconds,
timed batch by batch with the models interleaved in one process on one thread (see
:func:`graphformer.studies.molecules.epoch_breakdown`).

Examples::

    python benchmarks/gps_epoch.py                        # the first epoch, all 157 steps
    python benchmarks/gps_epoch.py --steps 40 --models graphformer,gpsconv,gine
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from graphformer.device import resolve_device
from graphformer.io import check_writable_dir, write_json_atomic, write_text_atomic
from graphformer.studies import molecules as study


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    study.add_settings_arguments(p)
    p.add_argument("--models", default=",".join(study.BREAKDOWN_MODELS),
                   help=f"comma-separated, of: {', '.join(study.MODELS)} (default: "
                        f"{','.join(study.BREAKDOWN_MODELS)})")
    p.add_argument("--steps", type=int, default=0,
                   help="training steps timed (scaled to the epoch); 0: the whole epoch")
    p.add_argument("--rounds", type=int, default=study.BREAKDOWN_ROUNDS,
                   help=f"evaluation rounds (median; default: {study.BREAKDOWN_ROUNDS})")
    p.add_argument("--data", type=Path, default=study.DATA_ROOT)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/gps_epoch"))
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in study.MODELS]
    if unknown or not args.models:
        p.error(f"unknown models {unknown}; choose from {', '.join(study.MODELS)}")
    if args.steps < 0 or args.rounds < 1:
        p.error("--steps must be >= 0 and --rounds >= 1")
    try:
        check_writable_dir(args.out)
    except ValueError as e:
        p.error(str(e))
    return args


def table(result) -> str:
    ref = next((r for r in result["rows"] if r["model"] == "gpsconv"), None)
    lines = [f"collation of the epoch's {result['batches']} batches (shared): "
             f"{result['collate_s']:.2f} CPU s; of the validation and test batches: "
             f"{result['eval_collate_s']:.2f} CPU s",
             "| model | train steps CPU s | ms / step | scheduler CPU s | epoch CPU s "
             "(steps + scheduler) | + collation | eval CPU s | epoch speed-up vs gpsconv "
             "(without / with collation) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    c = result["collate_s"]
    for r in result["rows"]:
        epoch = r["train_s"] + r["sched_s"]
        speed = "-"
        if ref is not None:
            ref_epoch = ref["train_s"] + ref["sched_s"]
            speed = f"{ref_epoch / epoch:.3f}x / {(ref_epoch + c) / (epoch + c):.3f}x"
        lines.append(f"| {r['model']} | {r['train_s']:.2f} | {r['ms_per_step']:.1f} | "
                     f"{r['sched_s']:.3f} | {epoch:.2f} | {epoch + c:.2f} | "
                     f"{r['eval_s']:.2f} | {speed} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    s = study.settings_from_args(args)
    splits = study.load_splits(str(args.data), s)
    result = study.epoch_breakdown(splits, s, device, args.models, seed=args.seed,
                                   steps=args.steps or None, rounds=args.rounds)
    md = table(result)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "gps_epoch.json",
                      dict(settings=study.settings_dict(s), models=args.models,
                           steps=args.steps, torch=torch.__version__, **result))
    write_text_atomic(args.out / "gps_epoch.md", md + "\n")


if __name__ == "__main__":
    main()
