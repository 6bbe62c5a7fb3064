r"""The GPU half of the project in one prepared run: the CUDA tests, the kernels' speed and
the kernel-choice thresholds, nanoGPT's Shakespeare configuration for ``gpt`` and
``nesterov``, and, if time remains, the tree benchmark on CUDA, within a wall-time budget
(10 minutes by default), every figure written as JSON under ``OUT``.

Run it through ``benchmarks/gpu.sh OUT`` (or ``make gpu OUT=...``), which installs what is
missing first; this driver assumes the packages are there. Steps, each a subprocess with its
own time box (a step that runs over is stopped, and what it wrote is kept):

1. ``pytest -m cuda`` (``tests/test_cuda.py``) -> ``OUT/pytest_cuda.json``;
2. ``benchmarks/speed.py --device cuda --dtype bfloat16 -T 1024`` (every kernel, FlexAttention
   included, forward + backward) -> ``OUT/speed/speed_cuda_bfloat16_T1024.json``;
3. the threshold sweep (this file, :func:`sweep_thresholds`): the density below which the
   edge-wise kernel beats the fused one (``DENSE_MIN_DENSITY["cuda"]``) and the length from
   which FlexAttention beats masked SDPA (``FLEX_MIN_LENGTH``) -> ``OUT/thresholds.json``;
4. ``benchmarks/lm.py`` with nanoGPT's GPU configuration (6 layers, 6 heads, 384 dims, block
   256, batch 64, dropout 0.2, bf16, ``--compile``) for ``gpt`` and ``nesterov``: a short
   calibration run measures tokens/s, then each gets as many iterations (at most 5,000,
   nanoGPT's number) as its share of the budget holds -> ``OUT/lm/ARCH-s0/result.json`` and
   ``OUT/lm_summary.json`` (best val loss, iterations, tokens/s, MFU);
5. if at least ``--min-oversquash`` seconds remain: ``benchmarks/oversquash.py --full
   --device cuda --tasks tree --depths 4 --models gat,ggnn`` with a step cap ->
   ``OUT/oversquash/results.json``.

``OUT/gpu_run.json`` records every step: its command, status (ok, failed, timed out,
skipped), seconds, and what was cut. ``--dry-run`` runs the same steps on the CPU at toy
sizes in well under a minute: CI runs it so that this script cannot rot. Without a GPU and
without ``--dry-run`` it says so in one line and exits with status 2.

Examples::

    benchmarks/gpu.sh results/gpu               # on a GPU machine: install, then this
    python benchmarks/gpu.py results/gpu        # the packages already installed
    python benchmarks/gpu.py results/gpu-dry-run --dry-run # the CPU rehearsal
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
#: Where the Shakespeare text may be: where ``benchmarks/prepare.py tinyshakespeare`` puts
#: it (``data/``), beside the project (``../shared``, as everywhere in the project) or
#: inside the checkout (``shared/``, as the device machine receives it).
DATA_CANDIDATES = ("data/tinyshakespeare.txt", "../shared/data/tinyshakespeare.txt",
                   "shared/data/tinyshakespeare.txt")
#: nanoGPT's ``config/train_shakespeare_char.py`` on a GPU.
NANOGPT_GPU = ["--n_layer", "6", "--n_head", "6", "--n_embd", "384", "--block_size", "256",
               "--batch_size", "64", "--dropout", "0.2", "--lr", "1e-3", "--min_lr", "1e-4",
               "--warmup", "100", "--beta2", "0.99", "--eval_interval", "250",
               "--eval_iters", "200", "--log_interval", "10", "--dtype", "bfloat16",
               "--compile"]
#: The same steps at toy sizes (``--dry-run``, CPU, float32, no compile).
TOY_LM = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
          "--batch_size", "4", "--dropout", "0.2", "--warmup", "1", "--eval_interval", "2",
          "--eval_iters", "2", "--log_interval", "1", "--sample_tokens", "8",
          "--dtype", "float32"]
ARCHS = ("gpt", "nesterov")
#: Seconds each step may take at most (real run); the LM runs share what is left.
CAPS = {"pytest": 120, "speed": 50, "thresholds": 60, "calibrate": 60}
#: Seconds kept back for the LM runs while the earlier steps are boxed (calibration
#: included), and for the two main runs while they are calibrated.
LM_RESERVE, RUNS_RESERVE = 280, 180


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", type=Path, help="output folder for every JSON file")
    p.add_argument("--dry-run", action="store_true",
                   help="the same steps on the CPU at toy sizes (under a minute)")
    p.add_argument("--budget", type=float, default=600.0,
                   help="wall seconds for all steps together, counted from GPU_SH_START "
                        "(set by gpu.sh before it installs) or from this script's start")
    p.add_argument("--iters", type=int, default=5000,
                   help="most LM iterations per variant (nanoGPT: 5000)")
    p.add_argument("--data", default=None,
                   help="the Shakespeare text (default: the first of "
                        + ", ".join(DATA_CANDIDATES) + " that exists, else the generated "
                        "stories, said so in the results)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step")
    p.add_argument("--skip", default="",
                   help="comma-separated steps to leave out: pytest, speed, thresholds, lm, "
                        "oversquash")
    p.add_argument("--min-oversquash", type=float, default=40.0,
                   help="seconds that must remain for the oversquash step to start")
    args = p.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {"pytest", "speed", "thresholds", "lm", "oversquash"}
    if unknown:
        p.error(f"--skip: unknown step(s) {', '.join(sorted(unknown))}")
    if args.budget <= 0 or args.iters < 1:
        p.error("--budget and --iters must be positive")
    if args.data is not None and not Path(args.data).is_file():
        p.error(f"--data {args.data}: no such file")
    # the steps run from the repository root: absolute paths mean the same there
    args.out = args.out.resolve()
    if args.data is not None:
        args.data = str(Path(args.data).resolve())
    return args


# ---------------------------------------------------------------------- running steps
class Steps:
    r"""Runs the steps as subprocesses, each within its time box and the whole budget, and
    keeps the record written to ``OUT/gpu_run.json``."""

    def __init__(self, out: Path, budget: float, start: float, dry_run: bool):
        self.out, self.budget, self.start, self.dry_run = out, budget, start, dry_run
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.record: Dict[str, object] = {"dry_run": dry_run, "budget_s": budget,
                                          "steps": []}

    def left(self) -> float:
        return self.budget - (time.time() - self.start)

    def run(self, name: str, cmd: List[str], cap: float, reserve: float = 0.0,
            note: str = "") -> dict:
        r"""Run :obj:`cmd` for at most ``min(cap, left - reserve)`` seconds."""
        box = min(cap, self.left() - reserve)
        step = {"step": name, "command": " ".join(cmd), "time_box_s": round(box, 1)}
        if note:
            step["note"] = note
        if box < 5:
            step.update(status="skipped", why="no time left in the budget")
            print(f"[gpu] {name}: skipped (no time left)", flush=True)
            return self._keep(step)
        print(f"[gpu] {name}: up to {box:.0f} s: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        if self.dry_run:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the rehearsal never touches a GPU
        log = self.logs / f"{name}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
            try:
                rc = proc.wait(timeout=box)
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the step and its children (compile workers)
                proc.wait()
                rc, status = None, "timed out"
        step.update(status=status, returncode=rc, seconds=round(time.time() - t0, 1),
                    log=str(log.relative_to(self.out)))
        if status != "ok":
            tail = log.read_text(errors="replace").splitlines()[-5:]
            step["log_tail"] = tail
        print(f"[gpu] {name}: {status} in {step['seconds']} s", flush=True)
        return self._keep(step)

    def _keep(self, step: dict) -> dict:
        self.record["steps"].append(step)
        self.save()
        return step

    def save(self) -> None:
        self.record["seconds"] = round(time.time() - self.start, 1)
        (self.out / "gpu_run.json").write_text(json.dumps(self.record, indent=1) + "\n")


# ---------------------------------------------------------------------- pytest
def pytest_summary(junit: Path) -> dict:
    r"""Counts and failures of a pytest JUnit XML report."""
    if not junit.is_file():
        return {"error": f"{junit.name} was not written"}
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    count = {k: sum(int(s.get(k, 0)) for s in suites)
             for k in ("tests", "failures", "errors", "skipped")}
    count["passed"] = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    failed = [f"{c.get('classname')}::{c.get('name')}: "
              + (c.find("failure") if c.find("failure") is not None
                 else c.find("error")).get("message", "")[:300]
              for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {**count, "failed": failed}


# ---------------------------------------------------------------------- thresholds
def _load_speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark",
                                                  Path(__file__).with_name("speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep_thresholds(device_name: str, dtype_name: str, *, tokens: int, length: int,
                     doc_lengths: List[float], lengths: List[int], window: int,
                     heads: int, head_dim: int, repeats: int, warmup: int,
                     seed: int, path: Optional[Path] = None) -> dict:
    r"""Measure the two kernel-choice thresholds of :mod:`graphformer.nn.kernels` by
    forward + backward of ``AttentionConv`` (speed.py's timing: interleaved rounds,
    medians):

    * ``dense_min_density``: packed documents of mean length ``L`` in ``B`` sequences of
      ``length`` tokens (density about ``L / 2T``): the edge-wise kernel against the fused
      kernel ``"auto"`` would pick above the threshold (FlexAttention from
      ``FLEX_MIN_LENGTH``, else masked SDPA). The threshold is the largest density at
      which the edge kernel still wins (``None`` if it never does);
    * ``flex_min_length``: a sliding window of ``window`` tokens, ``tokens`` tokens in all,
      in sequences of each length: masked SDPA against FlexAttention. The threshold is the
      shortest length from which FlexAttention wins at every longer one (``None`` if it
      never does).

    With :obj:`path`, the JSON is rewritten after every measurement, so that a sweep
    stopped by its time box keeps what it measured.
    """
    import torch

    from graphformer.datasets.synthetic import packed_documents
    from graphformer.graph import CausalGraph
    from graphformer.nn import AttentionConv, kernels

    speed = _load_speed()
    device, dtype = torch.device(device_name), getattr(torch, dtype_name)
    torch.manual_seed(seed)
    conv = AttentionConv(heads * head_dim, head_dim, heads=heads).to(device, dtype)
    fused = "flex" if device.type == "cuda" and length >= kernels.FLEX_MIN_LENGTH else "sdpa"

    def race(graph, names) -> Dict[str, float]:
        graph = graph.to(device)
        x = torch.randn(graph.num_nodes, heads * head_dim, device=device, dtype=dtype)
        rows = [speed.Candidate(k, conv, lambda x, k=k: conv(x, graph, kernel=k), x)
                for k in names]
        times = speed.time_group(rows, repeats, warmup, device)
        return {k: statistics.median(t) * 1e3 for k, t in times.items()}

    result = {
        "device": device_name, "dtype": dtype_name,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "heads": heads, "head_dim": head_dim, "tokens": tokens,
        "length": length, "window": window,
        "current": {"dense_min_density": kernels.DENSE_MIN_DENSITY.get(device.type),
                    "flex_min_length": kernels.FLEX_MIN_LENGTH},
        "measured": {"dense_min_density": None, "flex_min_length": None},
        "density_sweep": [], "length_sweep": [], "complete": False,
    }
    density_rows, length_rows = result["density_sweep"], result["length_sweep"]

    def keep() -> None:
        wins = [r["density"] for r in density_rows if r["edge_wins"]]
        result["measured"]["dense_min_density"] = max(wins) if wins else None
        flex_from = None
        for i, r in enumerate(length_rows):
            if all(s["flex_wins"] for s in length_rows[i:]):
                flex_from = r["length"]
                break
        result["measured"]["flex_min_length"] = flex_from
        if path is not None:
            Path(path).write_text(json.dumps(result, indent=1) + "\n")

    batch = max(1, tokens // length)
    for doc in doc_lengths:
        graph = CausalGraph.from_lengths([length] * batch).with_documents(
            packed_documents(batch, length, doc, seed=seed))
        density = graph.num_edges / int((graph.lengths ** 2).sum())
        ms = race(graph, ["edge", fused])
        density_rows.append(dict(doc_length=doc, density=density, edge_ms=ms["edge"],
                                 fused_ms=ms[fused], fused=fused,
                                 edge_wins=ms["edge"] < ms[fused]))
        keep()
    if device.type == "cuda":
        for T in lengths:
            graph = CausalGraph.from_lengths([T] * max(1, tokens // T)).with_window(window)
            ms = race(graph, ["sdpa", "flex"])
            length_rows.append(dict(length=T, sdpa_ms=ms["sdpa"], flex_ms=ms["flex"],
                                    flex_wins=ms["flex"] < ms["sdpa"]))
            keep()
    result["complete"] = True
    keep()
    return result


# ---------------------------------------------------------------------- LM
def find_data(given: Optional[str]) -> Optional[Path]:
    if given is not None:
        return Path(given)
    for candidate in DATA_CANDIDATES:
        if (ROOT / candidate).is_file():
            return (ROOT / candidate).resolve()
    return None


def read_lm(run_dir: Path) -> dict:
    r"""The figures of one LM run: ``result.json`` when it finished, else what its
    ``log.jsonl`` holds (a run stopped by its time box). ``tokens_per_sec_steady`` and
    ``mfu`` are the medians over the training logs after the first fifth (the first
    steps include the compilation); ``tokens_per_sec`` of a finished run is lm.py's
    (all of this session's steps, compilation included)."""
    recs = []
    log = run_dir / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line torn by the time box
    trains = [r for r in recs if r.get("event") == "train"]
    evals = [r for r in recs if r.get("event") == "eval"]
    tail = trains[len(trains) // 5:]
    steady = {"tokens_per_sec_steady": statistics.median(r["tokens_per_sec"] for r in tail)
              if tail else None,
              "mfu": statistics.median(r["mfu"] for r in tail if "mfu" in r)
              if any("mfu" in r for r in tail) else None}
    result = run_dir / "result.json"
    if result.is_file():
        r = json.loads(result.read_text())
        return {k: r.get(k) for k in ("arch", "iters", "best_val_loss", "val_loss",
                                      "train_loss", "tokens_per_sec", "num_params",
                                      "num_params_nanogpt", "train_time", "wall_time")
                } | steady | {"finished": True}
    if not recs:
        return {"finished": False, "error": f"no result.json and no log.jsonl in {run_dir}"}
    return {"finished": False, "iters": trains[-1]["iter"] if trains else 0,
            "best_val_loss": min((r["val_loss"] for r in evals), default=None),
            "last_eval_iter": evals[-1]["iter"] if evals else None} | steady


def plan_iters(rate: Optional[float], seconds: float, tokens_per_iter: int, most: int,
               eval_interval: int, eval_share: float) -> int:
    r"""Iterations that fit :obj:`seconds` at :obj:`rate` tokens/s, with the share of time
    evaluation takes, rounded down to whole evaluation intervals (at least one)."""
    if not rate:
        return eval_interval
    n = int(seconds * (1.0 - eval_share) * rate / tokens_per_iter)
    return max(eval_interval, min(most, n // eval_interval * eval_interval))


# ---------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    start = float(os.environ.get("GPU_SH_START", time.time()))
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu.py: no CUDA GPU here (torch {torch.__version__}, devices: cpu); run it "
              f"on a GPU machine, or use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    steps = Steps(args.out, args.budget, start, dry)
    py = sys.executable
    steps.record.update(
        torch=torch.__version__, python=sys.version.split()[0],
        gpu=torch.cuda.get_device_name() if not dry else None,
        command=" ".join([Path(sys.argv[0]).name] + (argv if argv is not None
                                                        else sys.argv[1:])))
    device, dtype = ("cpu", "float32") if dry else ("cuda", "bfloat16")
    seed = str(args.seed)

    # 1. the CUDA tests
    if "pytest" not in args.skip:
        junit = args.out / "pytest_cuda.xml"
        step = steps.run("pytest", [py, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py",
                                    "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
                         CAPS["pytest"], reserve=LM_RESERVE)
        summary = pytest_summary(junit) | {"status": step["status"]}
        (args.out / "pytest_cuda.json").write_text(json.dumps(summary, indent=1) + "\n")

    # 2. the kernels' speed: bf16, T = 1024, every kernel, forward + backward
    if "speed" not in args.skip:
        size = (["-T", "32", "--batch", "2", "--repeats", "2", "--warmup", "1",
                 "--trees", "8", "--no-memory"] if dry
                else ["-T", "1024", "--batch", "8", "--heads", "6", "--head-dim", "64",
                      "--window", "256", "--doc-length", "128", "--repeats", "20",
                      "--warmup", "3"])
        steps.run("speed", [py, "benchmarks/speed.py", "--device", device, "--dtype", dtype,
                            "--seed", seed, "--out", str(args.out / "speed")] + size,
                  CAPS["speed"], reserve=LM_RESERVE)

    # 3. the kernel-choice thresholds
    if "thresholds" not in args.skip:
        sweep = (dict(tokens=64, length=32, doc_lengths=[4, 16], lengths=[16, 32],
                      window=8, heads=2, head_dim=8, repeats=2, warmup=1) if dry
                 else dict(tokens=8192, length=1024, doc_lengths=[8, 16, 32, 64, 128, 256],
                           lengths=[256, 512, 1024, 2048], window=128, heads=6,
                           head_dim=64, repeats=10, warmup=2))
        code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import gpu; "
                f"r = gpu.sweep_thresholds({device!r}, {dtype!r}, seed={args.seed}, "
                f"path={str(args.out / 'thresholds.json')!r}, **{sweep!r}); "
                "print(json.dumps(r['measured']))")
        steps.run("thresholds", [py, "-c", code], CAPS["thresholds"], reserve=LM_RESERVE)

    # 4. nanoGPT's Shakespeare configuration, gpt and nesterov
    if "lm" not in args.skip:
        lm_out = args.out / "lm"
        data = find_data(args.data)
        data_args = ["--data", str(data)] if data else ["--num_chars", "200000"]
        data_note = (f"data: {data}" if data else
                     "tinyshakespeare.txt not found (looked for "
                     + ", ".join(DATA_CANDIDATES) + "): the generated stories instead, "
                     "NOT comparable with nanoGPT's 1.4697")
        print(f"[gpu] lm: {data_note}", flush=True)
        config = TOY_LM if dry else NANOGPT_GPU
        base = [py, "benchmarks/lm.py", "--device", device, "--seed", seed, "--quiet",
                "--overwrite"] + data_args + config
        tokens_per_iter = 4 * 16 if dry else 64 * 256
        eval_interval = 2 if dry else 250
        rates = {}
        # calibration: compile (which warms the compiler's cache for the real run), then
        # the steady rate of 60 steps (the rehearsal calibrates gpt only, to stay under a
        # minute)
        for arch in ARCHS[:1] if dry else ARCHS:
            cal_iters = "4" if dry else "60"
            steps.run(f"calibrate-{arch}", base + [
                "--arch", arch, "--max_iters", cal_iters, "--eval_interval", cal_iters,
                "--eval_iters", "1", "--out", str(args.out / "calibrate")],
                CAPS["calibrate"], reserve=RUNS_RESERVE)
            rates[arch] = read_lm(args.out / "calibrate" / f"{arch}-s{args.seed}").get(
                "tokens_per_sec_steady")
        # the same number of iterations for every variant (a fair comparison), as many as
        # the time left holds: seconds per iteration summed over the variants, an
        # evaluation of 200 forward passes every 250 steps (about 67 steps' worth: 22% of
        # the time), and 30 s of start-up and compilation per run
        known = [r for r in rates.values() if r]
        guess = min(known) if known else None
        per_iter = sum(tokens_per_iter / (rates.get(a) or guess) for a in ARCHS) if guess \
            else None
        keep_back = args.min_oversquash / 2 if "oversquash" not in args.skip and not dry \
            else 0.0
        seconds = steps.left() - keep_back - 30 * len(ARCHS)
        if per_iter:  # plan_iters with the variants' combined rate
            iters = plan_iters(tokens_per_iter / per_iter, seconds, tokens_per_iter,
                               args.iters, eval_interval, eval_share=0.22)
        else:  # no rate measured: the full count, and the time boxes may cut the runs
            iters = args.iters
        if dry:
            iters = min(iters, 4)
        plan_note = (f"{iters} iterations per variant, planned from "
                     + (", ".join(f"{a} {r:,.0f}" for a, r in rates.items() if r)
                        + " tokens/s (steady, calibration)" if known else "no measured rate"))
        print(f"[gpu] lm: {plan_note}", flush=True)
        runs = {}
        for i, arch in enumerate(ARCHS):
            later = ARCHS[i + 1:]
            # this run's box: the time left less what the later runs are planned to take
            need_later = sum(30 + iters * tokens_per_iter / (rates.get(a) or guess) / 0.78
                             for a in later) if guess else 0.0
            box = steps.left() - keep_back - need_later
            if not guess:
                box = (steps.left() - keep_back) / (len(ARCHS) - i)
            step = steps.run(arch, base + ["--arch", arch, "--max_iters", str(iters),
                                           "--out", str(lm_out)], box, note=plan_note)
            runs[arch] = read_lm(lm_out / f"{arch}-s{args.seed}") | {
                "planned_iters": iters, "status": step["status"],
                "calibration_tokens_per_sec": rates.get(arch)}
        summary = {"config": " ".join(config), "data": str(data) if data else None,
                   "data_note": data_note, "plan": plan_note, "device": device, "runs": runs,
                   "nanogpt_reference": {"best_val_loss": 1.4697, "gpu": "A100",
                                         "iters": 5000, "minutes": 3}}
        (args.out / "lm_summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    # 5. the tree benchmark on CUDA, capped, if time remains
    if "oversquash" not in args.skip:
        if steps.left() >= (5 if dry else args.min_oversquash):
            cmd = ([py, "benchmarks/oversquash.py", "--device", device, "--tasks", "tree",
                    "--depths", "2", "--models", "gat", "--max-steps", "5", "--seed", seed,
                    "--no-plots"] if dry
                   else [py, "benchmarks/oversquash.py", "--full", "--device", "cuda",
                         "--tasks", "tree", "--depths", "4", "--models", "gat,ggnn",
                         "--seed", seed, "--max-steps", "5000", "--no-plots"])
            steps.run("oversquash", cmd + ["--out", str(args.out / "oversquash")],
                      steps.left() - 5)
        else:
            steps._keep({"step": "oversquash", "status": "skipped",
                         "why": f"{steps.left():.0f} s left, "
                                f"{args.min_oversquash:.0f} s needed"})
    steps.save()
    bad = [s["step"] for s in steps.record["steps"] if s["status"] in ("failed", "timed out")]
    print(f"[gpu] done in {time.time() - start:.0f} s; wrote {args.out}/gpu_run.json"
          + (f"; not ok: {', '.join(bad)}" if bad else ""), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
