r"""graphformer's GPT side by side with nanoGPT's ``model.py``: training steps and generation,
interleaved in one process on one thread, so that the ratios survive a loaded machine.

nanoGPT is not part of this project: point ``--nanogpt`` at a checkout of
``karpathy/nanoGPT`` (a folder holding its ``model.py``); nothing of it is copied.

Measured, at nanoGPT's CPU configuration (4 layers, 4 heads, 128 dims, vocabulary 65,
dropout 0):

* a training step (forward, backward, clipping, AdamW) at batch 12, block 64, each side with
  its own optimizer set-up (nanoGPT's ``configure_optimizers``, graphformer's
  :func:`~graphformer.train.configure_optimizer`), as tokens per second;
* generation at batch 1: block 256 with a 1-token prompt and 255 new tokens, block 64 with a
  1-token prompt and 63 new tokens, and block 64 with a full 64-token prompt and 200 new
  tokens (past the window: learned positions recompute the cropped context), cached and
  uncached, against nanoGPT's ``generate``.

Times are CPU seconds of this thread (``time.thread_time``), the median over ``--reps``
interleaved rounds. Example::

    python benchmarks/vs_nanogpt.py --nanogpt PATH/TO/nanoGPT --out results/vs_nanogpt
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from graphformer.io import check_writable_dir, write_json_atomic
from graphformer.models import GPT, GPTConfig
from graphformer.train import TrainConfig, configure_optimizer

SIZES = dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
GENERATION = ((256, 1, 255), (64, 1, 63), (64, 64, 200))  # block, prompt, new tokens


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--nanogpt", required=True, help="folder with nanoGPT's model.py")
    p.add_argument("--what", default="all", choices=["all", "train", "generate"])
    p.add_argument("--reps", type=int, default=15, help="interleaved rounds (median)")
    p.add_argument("--steps", type=int, default=2, help="training steps per round")
    p.add_argument("--device", default="cpu", choices=["cpu"], help="CPU only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/vs_nanogpt")
    args = p.parse_args(argv)
    if not (Path(args.nanogpt) / "model.py").is_file():
        p.error(f"--nanogpt {args.nanogpt}: no model.py there (a checkout of karpathy/nanoGPT)")
    try:
        check_writable_dir(args.out)
    except ValueError as e:
        p.error(f"--out: {e}")
    return args


def load_nanogpt(folder: str):
    spec = importlib.util.spec_from_file_location("nanogpt_model", Path(folder) / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_times(fns: dict, reps: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.thread_time()
            f()
            times[k].append(time.thread_time() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def training(nano, args) -> dict:
    g = torch.Generator().manual_seed(args.seed)
    x, y = (torch.randint(0, 65, (12, 64), generator=g) for _ in range(2))
    models = {}
    torch.manual_seed(args.seed)
    m = nano.GPT(nano.GPTConfig(block_size=64, bias=False, **SIZES))  # its train.py default
    models["nanoGPT"] = (m, m.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu"))
    for arch, method in (("gpt", "gd"), ("nesterov", "nesterov")):
        torch.manual_seed(args.seed)
        m = GPT(GPTConfig(block_size=64, method=method, **SIZES))  # lm.py's default (biases)
        models[arch] = (m, configure_optimizer(m, TrainConfig()))

    def step_fn(model, opt):
        def steps():
            for _ in range(args.steps):
                _, loss = model(x, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
        return steps

    fns = {k: step_fn(*v) for k, v in models.items()}
    for f in fns.values():
        f()  # warm up
    sec = {k: v / args.steps for k, v in median_times(fns, args.reps).items()}
    tps = {k: 12 * 64 / v for k, v in sec.items()}
    return dict(step_seconds=sec, tokens_per_sec=tps,
                vs_nanogpt={k: v / tps["nanoGPT"] for k, v in tps.items()},
                nesterov_step_vs_gpt=sec["nesterov"] / sec["gpt"])


def generation(nano, args) -> list:
    rows = []
    for block, prompt, new in GENERATION:
        torch.manual_seed(args.seed)
        sides = {"nanoGPT": (nano.GPT(nano.GPTConfig(block_size=block, bias=False, **SIZES)),
                             {})}
        for arch, method in (("gpt", "gd"), ("nesterov", "nesterov")):
            torch.manual_seed(args.seed)
            m = GPT(GPTConfig(block_size=block, method=method, bias=False, **SIZES))
            sides[f"{arch} cached"] = (m, {})
            sides[f"{arch} uncached"] = (m, {"use_cache": False})
        idx = torch.zeros(1, prompt, dtype=torch.long)

        def gen(model, kw):
            model.eval()
            return lambda: model.generate(idx, new, **kw)

        sec = median_times({k: gen(*v) for k, v in sides.items()}, args.reps)
        rows.append(dict(block=block, prompt=prompt, new_tokens=new, seconds=sec,
                         tokens_per_sec={k: new / v for k, v in sec.items()},
                         speedup_vs_nanogpt={k: sec["nanoGPT"] / v for k, v in sec.items()}))
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    nano = load_nanogpt(args.nanogpt)
    result = dict(threads=1, torch=torch.__version__, reps=args.reps)
    if args.what in ("all", "train"):
        result["train"] = tr = training(nano, args)
        print("training step, batch 12 x block 64 (tokens/s, ratio to nanoGPT):")
        for k, v in tr["tokens_per_sec"].items():
            print(f"  {k:10s} {v:8,.0f}  {tr['vs_nanogpt'][k]:.3f}x")
        print(f"  nesterov step / gpt step: {tr['nesterov_step_vs_gpt']:.3f}")
    if args.what in ("all", "generate"):
        result["generation"] = rows = generation(nano, args)
        print("generation at batch 1 (seconds, speed-up over nanoGPT's generate):")
        for r in rows:
            print(f"  block {r['block']}, prompt {r['prompt']}, {r['new_tokens']} new: " + ", ".join(
                f"{k} {v:.3f} s ({r['speedup_vs_nanogpt'][k]:.2f}x)"
                for k, v in r["seconds"].items()))
    path = Path(args.out) / "vs_nanogpt.json"
    write_json_atomic(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
