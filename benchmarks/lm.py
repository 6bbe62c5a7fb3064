r"""Language modelling on the causal DAG: train a GPT variant, or compare several.

A thin command line over :mod:`graphformer.train`, :mod:`graphformer.datasets` and
:class:`graphformer.models.GPT`. The defaults are nanoGPT's CPU configuration for
character-level Shakespeare (4 layers, 4 heads, 128 dims, block 64, batch 12, 2000 steps,
learning rate 1e-3 decayed to 1e-4, dropout 0), on the generated stories unless ``--data``
names a text file or a folder of ``train.bin``/``val.bin``.

Examples::

    python benchmarks/lm.py                                   # gpt on the generated stories
    python benchmarks/lm.py --data ../shared/data/tinyshakespeare.txt --arch nesterov
    python benchmarks/lm.py --data ../shared/data/tinyshakespeare.txt \
        --compare gpt nesterov nesterov0 heavyball strang diff pause --seeds 0 1 2
    torchrun --nproc_per_node=2 benchmarks/lm.py --device cpu      # DDP (gloo on CPU)
    python benchmarks/lm.py --resume                          # continue a killed run
    python benchmarks/lm.py --compare gpt nesterov --seeds 0 1 2 --table   # table only

Every run writes ``OUT/<arch>-s<seed>/`` (``ckpt.pt``, ``log.jsonl``, ``vocab.json``,
``result.json``); ``--compare`` adds ``OUT/compare.{json,csv,md}`` (best validation loss, mean
and spread over seeds, parameter counts, wall time, tokens/s) and ``OUT/loss_curves.png``.
``--table`` writes them from the finished runs already in ``OUT`` (their ``result.json``) and
trains nothing, so runs made separately (in parallel, or with more seeds for some variants)
go into one table.
"""
from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from graphformer.datasets import load_corpus
from graphformer.device import check_compile, resolve_device
from graphformer.io import (atomic_write, check_writable_dir, write_json_atomic,
                            write_text_atomic)
from graphformer.models import GPT, GPTConfig
from graphformer.train import CHECKPOINT_NAME, TrainConfig, TrainingInterrupted, train

#: ``--arch`` name -> GPTConfig fields.
ARCHS = {
    "gpt": dict(method="gd", scheme="lie_trotter"),
    "nesterov": dict(method="nesterov", scheme="lie_trotter", v0="embedding"),
    "nesterov0": dict(method="nesterov", scheme="lie_trotter", v0="zero"),
    "heavyball": dict(method="heavyball", scheme="lie_trotter", v0="embedding"),
    "strang": dict(method="gd", scheme="strang"),
    "diff": dict(method="gd", scheme="lie_trotter", attention="diff"),
    "pause": dict(method="gd", scheme="lie_trotter"),  # + pause_every
}

#: The defaults of every flag: one place for each (the dataclasses).
RUN, MODEL = TrainConfig(), GPTConfig()
CORPUS = {k: p.default for k, p in inspect.signature(load_corpus).parameters.items()}

#: Dense bf16 peak FLOP/s per GPU, for the model FLOPs utilisation.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to run")
    g.add_argument("--arch", default="gpt", choices=sorted(ARCHS),
                   help="gpt = gradient descent + Lie-Trotter; nesterov = YuriiFormer (v0 from "
                        "its own embeddings); nesterov0 = Nesterov with v0 = 0 "
                        "(parameter-matched); heavyball; strang = GD + Strang splitting; "
                        "diff = differential attention; pause = pause tokens")
    g.add_argument("--compare", nargs="+", metavar="ARCH", choices=sorted(ARCHS),
                   help="run these variants on the same seeds and data and write a table")
    g.add_argument("--seed", type=int, default=0, help="seed of one run")
    g.add_argument("--seeds", type=int, nargs="+", help="seeds of --compare (default: --seed)")
    g.add_argument("--out", default="results/lm", help="output folder")
    g.add_argument("--resume", action="store_true",
                   help="continue every run that has a checkpoint in --out (others start)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh over existing checkpoints")
    g.add_argument("--table", action="store_true",
                   help="with --compare: write the table from the finished runs in --out "
                        "(ARCH-sSEED/result.json) and train nothing; missing runs are left out")
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None,
                   help="a UTF-8 text file, a folder with train.bin/val.bin, or nothing for "
                        "the generated stories")
    d.add_argument("--val_fraction", type=float, default=CORPUS["val_fraction"],
                   help="last share of a text file held out for validation")
    d.add_argument("--num_chars", type=int, default=1_000_000,
                   help="size of the generated stories")
    d.add_argument("--data_seed", type=int, default=0, help="seed of the generated stories")
    d.add_argument("--vocab_size", type=int, default=None,
                   help="vocabulary size of .bin files without meta.json/meta.pkl")
    m = p.add_argument_group("model")
    m.add_argument("--n_layer", type=int, default=MODEL.n_layer)
    m.add_argument("--n_head", type=int, default=MODEL.n_head)
    m.add_argument("--n_embd", type=int, default=MODEL.n_embd)
    m.add_argument("--block_size", type=int, default=RUN.block_size)
    m.add_argument("--dropout", type=float, default=MODEL.dropout)
    m.add_argument("--bias", action=argparse.BooleanOptionalAction, default=MODEL.bias)
    m.add_argument("--pause_every", type=int, default=8, help="pause token period of --arch pause")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch_size", type=int, default=RUN.batch_size,
                   help="global rows per micro-step")
    o.add_argument("--grad_accum", type=int, default=RUN.grad_accum)
    o.add_argument("--max_iters", type=int, default=RUN.max_iters)
    o.add_argument("--lr", type=float, default=RUN.learning_rate)
    o.add_argument("--min_lr", type=float, default=RUN.min_lr, help="default: --lr / 10")
    o.add_argument("--warmup", type=int, default=RUN.warmup_iters)
    o.add_argument("--lr_decay_iters", type=int, default=RUN.lr_decay_iters,
                   help="default: max_iters")
    o.add_argument("--scalar_lr", type=float, default=RUN.scalar_lr,
                   help="learning rate of the dynamics' scalars (default: --lr)")
    o.add_argument("--weight_decay", type=float, default=RUN.weight_decay)
    o.add_argument("--beta1", type=float, default=RUN.beta1)
    o.add_argument("--beta2", type=float, default=RUN.beta2)
    o.add_argument("--grad_clip", type=float, default=RUN.grad_clip)
    e = p.add_argument_group("evaluation and system")
    e.add_argument("--eval_interval", type=int, default=RUN.eval_interval)
    e.add_argument("--eval_iters", type=int, default=RUN.eval_iters)
    e.add_argument("--log_interval", type=int, default=RUN.log_interval)
    e.add_argument("--sample_interval", type=int, default=RUN.sample_interval,
                   help="0: sample at the end only")
    e.add_argument("--sample_tokens", type=int, default=RUN.sample_tokens)
    e.add_argument("--device", default=RUN.device, help="auto, cpu, cuda, cuda:1, ...")
    e.add_argument("--dtype", default=RUN.dtype, choices=["auto", "float32", "bfloat16"])
    e.add_argument("--compile", action="store_true", help="torch.compile the model")
    e.add_argument("--peak_flops", type=float, default=None,
                   help="peak FLOP/s of one device for MFU (default: known GPUs)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [args.seed]
    if args.table and not args.compare:
        p.error("--table needs --compare ARCH ...")
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite contradict each other")
    check_args(p, args)
    return args


#: ``TrainConfig`` fields whose flag has another name.
FLAG_OF = {"learning_rate": "--lr", "warmup_iters": "--warmup"}


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    r"""Refuse bad flags before any data is read or any run starts: with the parser's
    usage line, the flag and what is wrong with its value (``p.error`` exits with 2)."""
    for name, values in (("--compare", args.compare or []), ("--seeds", args.seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            p.error(f"{name} names {', '.join(repeated)} more than once")
    try:
        check_writable_dir(args.out)
    except ValueError as e:
        p.error(f"--out: {e}")
    if not 0.0 < args.val_fraction < 1.0:
        p.error(f"--val_fraction must be in (0, 1), got {args.val_fraction}")
    if args.num_chars < 1:
        p.error(f"--num_chars must be positive, got {args.num_chars}")
    if args.vocab_size is not None and args.vocab_size < 1:
        p.error(f"--vocab_size must be positive, got {args.vocab_size}")
    if args.pause_every < 1 and "pause" in (args.compare or [args.arch]):
        p.error(f"--pause_every must be positive for the pause variant, got "
                f"{args.pause_every}")
    if not 0.0 <= args.dropout < 1.0:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    try:
        device = resolve_device(args.device)
        if args.compile:
            check_compile(device)
    except (ValueError, TypeError, RuntimeError) as e:
        p.error(f"--device {args.device}{' --compile' if args.compile else ''}: {e}")
    try:  # the configurations check every value they hold
        for arch in args.compare or [args.arch]:
            model_config(args, arch, args.vocab_size or 256)
        train_config(args, args.seeds[0], Path(args.out))
    except (ValueError, TypeError) as e:
        field = re.search(r"TrainConfig\.(\w+)", str(e))
        flag = FLAG_OF.get(field.group(1), f"--{field.group(1)}") if field else None
        p.error(f"{flag}: {e}" if flag else str(e))


def model_config(args: argparse.Namespace, arch: str, vocab_size: int) -> GPTConfig:
    fields = dict(ARCHS[arch])
    if arch == "pause":
        fields["pause_every"] = args.pause_every
    return GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                     block_size=args.block_size, vocab_size=vocab_size, dropout=args.dropout,
                     bias=args.bias, **fields)


def train_config(args: argparse.Namespace, seed: int, out_dir: Path) -> TrainConfig:
    peak = args.peak_flops
    if peak is None and torch.cuda.is_available() and args.device != "cpu":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return TrainConfig(
        max_iters=args.max_iters, batch_size=args.batch_size, block_size=args.block_size,
        grad_accum=args.grad_accum, learning_rate=args.lr, min_lr=args.min_lr,
        warmup_iters=args.warmup, lr_decay_iters=args.lr_decay_iters,
        weight_decay=args.weight_decay, beta1=args.beta1, beta2=args.beta2,
        grad_clip=args.grad_clip, scalar_lr=args.scalar_lr, eval_interval=args.eval_interval,
        eval_iters=args.eval_iters, log_interval=args.log_interval,
        sample_interval=args.sample_interval or args.max_iters,
        sample_tokens=args.sample_tokens, compile=args.compile, dtype=args.dtype,
        device=args.device, seed=seed, out_dir=str(out_dir), overwrite=args.overwrite,
        progress=not args.quiet, peak_flops=peak)


def run_one(args, arch: str, seed: int, corpus, master: bool) -> dict:
    out_dir = Path(args.out) / f"{arch}-s{seed}"
    resume = args.resume and (out_dir / CHECKPOINT_NAME).is_file()
    torch.manual_seed(seed)  # the model's initial weights
    model = GPT(model_config(args, arch, corpus.vocab_size))
    if master:
        print(f"== {arch}, seed {seed}: {'resuming' if resume else 'training'} in {out_dir}",
              flush=True)
    res = train(model, corpus, train_config(args, seed, out_dir), resume=resume)
    done = out_dir / "result.json"
    if resume and done.is_file():  # a finished run resumed: what it wrote stays as it was
        old = read_results(Path(args.out), [arch], [seed])[0]
        if old["iters"] == res.iters:
            if master:
                print(f"   already finished: {done} kept", flush=True)
            return old
    gen = generation_speed(model, args.sample_tokens)
    mfu = [r["mfu"] for r in res.history if r["event"] == "train" and "mfu" in r]
    sample = next((r["text"] for r in reversed(res.history) if r["event"] == "sample"), "")
    summary = dict(
        arch=arch, seed=seed, best_val_loss=res.best_val_loss, val_loss=res.val_loss,
        train_loss=res.train_loss, iters=res.iters, num_params=res.num_params,
        num_params_nanogpt=model.get_num_params(), wall_time=res.wall_time,
        train_time=res.train_time, tokens_per_sec=res.tokens_per_sec,
        mfu=statistics.mean(mfu[len(mfu) // 5:]) if mfu else None,
        generate_tokens_per_sec=gen,
        model_config=model.config_dict(), corpus=corpus.describe(), sample=sample,
        history=[{k: r[k] for k in ("event", "iter", "loss", "val_loss") if k in r}
                 for r in res.history if r["event"] in ("train", "eval")])
    if master:
        write_json_atomic(done, summary)
        print(f"   best val loss {res.best_val_loss:.4f}, {res.num_params:,} params, "
              f"{res.wall_time:.0f} s, {res.tokens_per_sec:,.0f} tokens/s; generation "
              f"{gen['cached']:,.0f} tokens/s cached, {gen['uncached']:,.0f} uncached"
              + (f", MFU {summary['mfu']:.1%}" if summary["mfu"] is not None else ""),
              flush=True)
    return summary


def generation_speed(model: GPT, tokens: int) -> dict:
    r"""Tokens per second of sampling ``tokens`` tokens at batch 1 after a 1-token prompt,
    with the cache (one new node per token) and without (the whole context every time)."""
    model.eval()
    device = next(model.parameters()).device
    idx = torch.zeros(1, 1, dtype=torch.long, device=device)
    speed = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name, use_cache in (("cached", True), ("uncached", False)):
            t = time.perf_counter()
            model.generate(idx, tokens, use_cache=use_cache)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            speed[name] = tokens / (time.perf_counter() - t)
    return speed


def read_results(out: Path, archs: list[str], seeds: list[int]) -> list[dict]:
    r"""The ``result.json`` of every finished run ``OUT/<arch>-s<seed>`` (missing ones are
    skipped with a message)."""
    runs = []
    for arch in archs:
        for seed in seeds:
            path = out / f"{arch}-s{seed}" / "result.json"
            if not path.is_file():
                print(f"   {arch}, seed {seed}: no {path}, left out", flush=True)
                continue
            try:
                r = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not a result file ({e})") from e
            if r.get("arch") != arch or r.get("seed") != seed:
                raise ValueError(f"{path}: holds {r.get('arch')!r} seed {r.get('seed')!r}, "
                                 f"expected {arch!r} seed {seed}")
            runs.append(r)
    if not runs:
        raise FileNotFoundError(f"{out}: no finished runs of {archs} with seeds {seeds}")
    return runs


def _stats(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def write_comparison(runs: list[dict], out: Path, archs: list[str]) -> list[dict]:
    r"""The table of a comparison as JSON, CSV and markdown, and the loss curves as PNG."""
    archs = [a for a in archs if any(r["arch"] == a for r in runs)]
    rows = []
    for arch in archs:
        rs = [r for r in runs if r["arch"] == arch]
        mean, std = _stats([r["best_val_loss"] for r in rs])
        rows.append(dict(
            arch=arch, seeds=[r["seed"] for r in rs], best_val_loss_mean=mean,
            best_val_loss_std=std, best_val_loss_min=min(r["best_val_loss"] for r in rs),
            best_val_loss_max=max(r["best_val_loss"] for r in rs),
            num_params=rs[0]["num_params"], num_params_nanogpt=rs[0]["num_params_nanogpt"],
            wall_time_mean=_stats([r["wall_time"] for r in rs])[0],
            tokens_per_sec_mean=_stats([r["tokens_per_sec"] for r in rs])[0],
            iters=rs[0]["iters"]))
    write_json_atomic(out / "compare.json", {"rows": rows, "runs": [
        {k: v for k, v in r.items() if k != "history"} for r in runs]})
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for row in rows:
        w.writerow({**row, "seeds": " ".join(map(str, row["seeds"]))})
    write_text_atomic(out / "compare.csv", buf.getvalue())
    lines = ["| arch | best val loss (mean ± std) | min | max | seeds | params (nanoGPT) | "
             "params (total) | wall time (s) | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = f" ± {r['best_val_loss_std']:.4f}" if len(r["seeds"]) > 1 else " (1 seed)"
        lines.append(f"| {r['arch']} | {r['best_val_loss_mean']:.4f}{spread} | "
                     f"{r['best_val_loss_min']:.4f} | "
                     f"{r['best_val_loss_max']:.4f} | {len(r['seeds'])} | "
                     f"{r['num_params_nanogpt']:,} | {r['num_params']:,} | "
                     f"{r['wall_time_mean']:.0f} | {r['tokens_per_sec_mean']:,.0f} |")
    write_text_atomic(out / "compare.md", "\n".join(lines) + "\n")
    plot_curves(runs, archs, out / "loss_curves.png")
    return rows


def plot_curves(runs: list[dict], archs: list[str], path: Path) -> None:
    """Per variant, the mean over its seeds: the train loss smoothed over 50 steps, and
    the validation loss with its seed-to-seed range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def mean_curve(histories: list[dict], event: str, key: str) -> tuple:
        curves = [{h["iter"]: h[key] for h in hist if h["event"] == event and h["iter"] > 0}
                  for hist in histories]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        values = np.array([[c[s] for s in steps] for c in curves]).reshape(len(curves), -1)
        return np.array(steps), values

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, arch in enumerate(archs):
        color = plt.get_cmap("tab10")(i % 10)
        histories = [r["history"] for r in runs if r["arch"] == arch]
        label = f"{arch} ({len(histories)} seed{'s' if len(histories) > 1 else ''})"
        steps, train = mean_curve(histories, "train", "loss")
        if steps.size:
            spacing = int(steps[1] - steps[0]) if steps.size > 1 else 1
            width = max(1, min(steps.size, round(50 / spacing)))
            smooth = np.convolve(train.mean(0), np.ones(width) / width, mode="valid")
            axes[0].plot(steps[width - 1:], smooth, color=color, lw=1.2, label=label)
        # the evaluation before training (loss ~ log V) would flatten the differences
        steps, val = mean_curve(histories, "eval", "val_loss")
        if steps.size:
            axes[1].plot(steps, val.mean(0), color=color, marker="o", ms=3, label=label)
            if len(val) > 1:
                axes[1].fill_between(steps, val.min(0), val.max(0), color=color, alpha=0.15)
    titles = ("train loss (mean over seeds, 50-step moving average)",
              "validation loss (mean over seeds; shaded: min to max)")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    # one process group for all runs of a torchrun launch (train() reuses it)
    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        use_cuda = args.device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
    master = not dist.is_initialized() or dist.get_rank() == 0
    try:
        t0 = time.time()
        if args.table:
            out = Path(args.out)
            rows = write_comparison(read_results(out, args.compare, args.seeds), out,
                                    args.compare) if master else []
            if master:
                print((out / "compare.md").read_text(), end="")
            return rows
        corpus = load_corpus(args.data, val_fraction=args.val_fraction,
                             vocab_size=args.vocab_size, seed=args.data_seed,
                             num_chars=args.num_chars)
        if master:
            print(f"data: {corpus}", flush=True)
        archs = args.compare or [args.arch]
        seeds = args.seeds if args.compare else [args.seed]
        runs = [run_one(args, arch, seed, corpus, master) for arch in archs for seed in seeds]
        if master and args.compare:
            out = Path(args.out)
            rows = write_comparison(runs, out, archs)
            print((out / "compare.md").read_text(), end="")
            print(f"wrote {out / 'compare.md'}, compare.json, compare.csv, loss_curves.png "
                  f"({time.time() - t0:.0f} s)")
            return rows
        if master and runs and runs[0].get("sample"):
            print("--- sample ---\n" + runs[0]["sample"])
        return runs
    finally:
        if created:
            dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except TrainingInterrupted as e:  # SIGTERM or Ctrl-C between two steps: one line
        print(f"{e}", file=sys.stderr)
        sys.exit(143 if e.signal == "SIGTERM" else 130)
    except KeyboardInterrupt:  # a second Ctrl-C: at once
        print("interrupted; the last checkpoint is kept: run again with --resume",
              file=sys.stderr)
        sys.exit(130)
