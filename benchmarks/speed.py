r"""Forward+backward time and peak memory of graphformer's attention against fused SDPA
and PyG's TransformerConv.

Four groups, each against its baseline (the first row of the group):

* ``dense``: dense causal, ``B`` sequences of ``T`` tokens. ``AttentionConv`` (kernel
  auto / sdpa / edge, flex on CUDA) against "SDPA alone": the same q/k/v/skip Linear
  layers and ``F.scaled_dot_product_attention(is_causal=True)`` on reshaped tensors.
* ``window``, ``documents``: the same size with a sliding window (``--window``) or
  packed documents (mean length ``--doc-length``), against hand-written SDPA with the
  dense boolean mask given (built once, outside the timed step).
* ``tree``: an arbitrary sparse graph, ``--trees`` binary trees of depth
  ``--tree-depth`` (child-to-parent edges plus self-loops; ``--both-directions`` adds
  parent-to-child edges), width ``--tree-heads`` x ``--tree-head-dim``: edge-wise
  ``AttentionConv`` (the memory-saving kernel, and the plain reference kernel) against
  PyG's ``TransformerConv`` of the same width.
* ``tree-edge``: the same trees with ``--edge-dim`` edge features per edge:
  ``AttentionConv(edge_dim=...)`` against ``TransformerConv(edge_dim=...)``.
* ``causal-edge``: dense causal sequences (``--edge-batch`` x ``--edge-length``) with
  per-pair edge features: the edge-wise kernel (what ``auto`` runs) against the dense
  alternative, a ``[B, T, T, H, d]`` per-pair tensor with plain masked attention.

Each group runs at every thread count of ``--threads`` (by default torch's own choice,
then one thread).

Every step is forward + backward of ``(out * g).sum()`` for a fixed random ``g``, with
gradients for ``x`` and all weights. Times are the median over ``--repeats`` steps,
interleaved: each repeat runs every candidate of a group once, round-robin, after
``--warmup`` untimed rounds. The ratio is the median over rounds of the candidate's time
divided by the baseline's time in the same round (the JSON also has the ratio of the
medians). Memory is measured in separate steps afterwards:

* ``peak``: the most memory allocated at any moment of the step above what was
  allocated when it began (inputs and weights excluded): on CUDA from
  ``torch.cuda.max_memory_allocated``, on CPU from the allocator events that
  ``torch.profiler`` records (``profile_memory=True``);
* ``saved``: the bytes of the distinct tensors autograd keeps for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``), inputs and weights excluded.

Examples::

    python benchmarks/speed.py                         # CPU (or CUDA when present), fp32
    python benchmarks/speed.py --threads 1 --clock cpu # steadier on a shared CPU
    python benchmarks/speed.py --only tree,tree-edge --threads default,1
    python benchmarks/speed.py --only tree --repeats 40
    python benchmarks/speed.py --device cuda --dtype bfloat16 -T 1024

Prints a table and writes ``OUT/speed_<device>_<dtype>_T<T>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
import torch_geometric
from torch_geometric.nn import TransformerConv

from graphformer.datasets.synthetic import binary_tree_batch, packed_documents
from graphformer.device import peak_memory, resolve_device
from graphformer.graph import CausalGraph
from graphformer.io import check_writable_dir, write_json_atomic
from graphformer.nn import AttentionConv, kernels

GROUPS = ("dense", "window", "documents", "tree", "tree-edge", "causal-edge")

#: The issue's targets: the AttentionConv row (kernel auto) against the group's baseline.
TARGETS = {"dense": 1.10, "window": 1.30, "documents": 1.30, "tree": 1.00,
           "tree-edge": 1.00}


def positive(kind=int):
    r"""An argparse type: a positive ``kind``, with a message that names the value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def thread_counts(text: str) -> List[Optional[int]]:
    r"""``--threads``: comma-separated counts; ``default`` is torch's own choice."""
    counts: List[Optional[int]] = []
    for part in (p.strip() for p in text.split(",")):
        if part in ("default", "auto", ""):
            if part:
                counts.append(None)
            continue
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--threads takes counts or 'default', got {part!r}")
        if n < 1:
            raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {n}")
        counts.append(n)
    if not counts:
        raise argparse.ArgumentTypeError("--threads needs at least one count or 'default'")
    return counts


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto = cuda when present, else cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/speed/", help="output folder for the JSON")
    p.add_argument("--repeats", type=positive(), default=20, help="timed rounds (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--threads", type=thread_counts, default="default,1",
                   help="comma-separated torch CPU thread counts to run every group at; "
                        "'default' is torch's own choice")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated groups out of {', '.join(GROUPS)}")
    p.add_argument("--no-memory", action="store_true", help="skip the memory steps")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall = elapsed time; cpu = this process's CPU time (steadier on "
                        "a shared machine, meaningful with --threads 1 only: idle OpenMP "
                        "threads spin and count)")
    g = p.add_argument_group("sequences (dense, window, documents)")
    g.add_argument("-T", "--length", type=positive(), default=256, help="tokens per sequence")
    g.add_argument("--batch", type=positive(), default=8, help="sequences")
    g.add_argument("--heads", type=positive(), default=4)
    g.add_argument("--head-dim", type=positive(), default=32)
    g.add_argument("--window", type=positive(), default=64, help="sliding-window width")
    g.add_argument("--doc-length", type=positive(float), default=64,
                   help="mean document length")
    g = p.add_argument_group("sparse graph (tree, tree-edge)")
    g.add_argument("--trees", type=positive(), default=1024)
    g.add_argument("--tree-depth", type=positive(), default=4)
    g.add_argument("--tree-heads", type=positive(), default=4)
    g.add_argument("--tree-head-dim", type=positive(), default=16)
    g.add_argument("--both-directions", action="store_true",
                   help="parent-to-child edges too")
    g.add_argument("--edge-dim", type=positive(), default=16,
                   help="edge features per edge (tree-edge, causal-edge)")
    g = p.add_argument_group("edge features on a causal graph (causal-edge)")
    g.add_argument("--edge-batch", type=positive(), default=4, help="sequences")
    g.add_argument("--edge-length", type=positive(), default=64, help="tokens per sequence")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(GROUPS))
    if unknown:
        p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if not args.only:
        p.error("--only needs at least one group")
    if args.clock == "cpu" and any(n != 1 for n in args.threads):
        p.error("--clock cpu is meaningful with one thread only (idle OpenMP threads spin "
                "and count as CPU time): pass --threads 1")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(f"--device: {e}")
    if device.type != "cpu" and args.threads != [None]:
        args.threads = [None]  # CPU threads do not change a GPU kernel's time
    try:
        check_writable_dir(args.out)
    except ValueError as e:
        p.error(f"--out: {e}")
    return args


# ---------------------------------------------------------------------- candidates
class Candidate:
    r"""One row: a module (for its weights) and the function of ``x`` it computes."""

    def __init__(self, name: str, module: torch.nn.Module, fn: Callable, x: torch.Tensor):
        self.name, self.module, self.fn = name, module, fn
        self.x = x.detach().clone().requires_grad_()
        with torch.no_grad():
            self.grad_out = torch.randn_like(fn(self.x))

    def step(self) -> None:
        self.x.grad = None
        for p in self.module.parameters():
            p.grad = None
        (self.fn(self.x) * self.grad_out).sum().backward()


def sdpa_alone(conv: AttentionConv, B: int, T: int, **sdpa_kwargs) -> Callable:
    r"""The baseline: the layer's own Linear layers and fused SDPA, written by hand on
    the ``[B, H, T, d]`` layout, no graph involved."""
    H, C = conv.heads, conv.out_channels

    def fn(x):
        q, k, v = (lin(x).view(B, T, H, C).transpose(1, 2)
                   for lin in (conv.lin_query, conv.lin_key, conv.lin_value))
        out = F.scaled_dot_product_attention(q, k, v, **sdpa_kwargs)
        return out.transpose(1, 2).reshape(B * T, H * C) + conv.lin_skip(x)
    return fn


def reference_edge(conv: AttentionConv, edge_index: torch.Tensor) -> Callable:
    r"""``AttentionConv`` with the plain edge-wise kernel (the one tests compare to)."""
    def fn(x):
        q, k, v = conv.project(x, edge_index)
        return conv.combine(kernels.edge_attention_reference(q, k, v, edge_index), x)
    return fn


def sequence_group(kind: str, args, device, dtype) -> List[Candidate]:
    B, T, H, C = args.batch, args.length, args.heads, args.head_dim
    graph = CausalGraph.from_lengths([T] * B)
    if kind == "window":
        graph = graph.with_window(args.window)
    elif kind == "documents":
        graph = graph.with_documents(packed_documents(B, T, args.doc_length, seed=args.seed))
    graph = graph.to(device)
    conv = AttentionConv(H * C, C, heads=H).to(device, dtype)
    x = torch.randn(B * T, H * C, device=device, dtype=dtype)
    if kind == "dense":
        baseline = sdpa_alone(conv, B, T, is_causal=True)
        rows = [Candidate("SDPA alone (is_causal)", conv, baseline, x)]
    else:
        mask = graph.dense_mask().unsqueeze(1)  # given: built once, outside the step
        rows = [Candidate("SDPA, mask given", conv, sdpa_alone(conv, B, T, attn_mask=mask), x)]
    kernels_to_run = ["auto", "sdpa", "edge"]
    if device.type == "cuda":
        kernels_to_run.append("flex")
    for kernel in kernels_to_run:
        used = kernels.choose_kernel(graph, device, kernel, needs_grad=True)
        label = f"AttentionConv {kernel}" + (f" (-> {used})" if kernel == "auto" else "")
        rows.append(Candidate(label, conv, lambda x, k=kernel: conv(x, graph, kernel=k), x))
    return rows


def tree_batch(args, device) -> tuple:
    r"""The tree batch of the tree groups: its edges, node count, heads and head size."""
    ei, _ = binary_tree_batch(args.trees, args.tree_depth,
                              both_directions=args.both_directions)
    return ei.to(device), int(ei.max()) + 1, args.tree_heads, args.tree_head_dim


def tree_group(args, device, dtype) -> List[Candidate]:
    ei, num_nodes, H, C = tree_batch(args, device)
    x = torch.randn(num_nodes, H * C, device=device, dtype=dtype)
    pyg = TransformerConv(H * C, C, heads=H).to(device, dtype)
    conv = AttentionConv(H * C, C, heads=H).to(device, dtype)
    conv.load_state_dict(pyg.state_dict())
    return [
        Candidate("TransformerConv (PyG)", pyg, lambda x: pyg(x, ei), x),
        Candidate("AttentionConv edge", conv, lambda x: conv(x, ei, kernel="edge"), x),
        Candidate("AttentionConv edge, reference kernel", conv, reference_edge(conv, ei), x),
    ]


def tree_edge_group(args, device, dtype) -> List[Candidate]:
    ei, num_nodes, H, C = tree_batch(args, device)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(num_nodes, H * C, generator=gen).to(device, dtype)
    edge_attr = torch.randn(ei.size(1), args.edge_dim, generator=gen).to(device, dtype)
    pyg = TransformerConv(H * C, C, heads=H, edge_dim=args.edge_dim).to(device, dtype)
    conv = AttentionConv(H * C, C, heads=H, edge_dim=args.edge_dim).to(device, dtype)
    conv.load_state_dict(pyg.state_dict())
    return [
        Candidate("TransformerConv (PyG), edge_dim", pyg, lambda x: pyg(x, ei, edge_attr), x),
        Candidate("AttentionConv edge, edge_dim", conv,
                  lambda x: conv(x, ei, edge_attr, kernel="edge"), x),
    ]


def dense_pair_attention(conv: AttentionConv, graph: CausalGraph,
                         edge_attr: torch.Tensor) -> Callable:
    r"""The dense alternative for edge features on a :class:`CausalGraph`: the projected
    edge features scattered into a ``[B, T, T, H, d]`` per-pair tensor, then plain
    masked attention ``softmax(q (k + e)^T / sqrt(d)) (v + e)`` on the padded layout
    (SDPA cannot take a per-pair value term)."""
    B, T, H, C = graph.num_sequences, graph.max_length, conv.heads, conv.out_channels
    flat = graph.pair_index(graph.edge_index)
    mask = graph.dense_mask().view(B, 1, T, T)

    def fn(x):
        q, k, v = conv.project(x, graph)
        e = conv.lin_edge(edge_attr).view(-1, H, C)
        pairs = e.new_zeros(B * T * T, H, C).index_put((flat,), e).view(B, T, T, H, C)
        qp, kp, vp = (graph.to_padded(t) for t in (q, k, v))  # [B, T, H, C]
        s = torch.einsum("bihc,bjhc->bhij", qp, kp) + torch.einsum("bihc,bijhc->bhij", qp, pairs)
        a = (s / C ** 0.5).masked_fill(~mask, float("-inf")).softmax(-1)
        out = torch.einsum("bhij,bjhc->bihc", a, vp) + torch.einsum("bhij,bijhc->bihc", a, pairs)
        return conv.combine(graph.from_padded(out), x)
    return fn


def causal_edge_group(args, device, dtype) -> List[Candidate]:
    B, T, H, C = args.edge_batch, args.edge_length, args.heads, args.head_dim
    graph = CausalGraph.from_lengths([T] * B).to(device)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(B * T, H * C, generator=gen).to(device, dtype)
    edge_attr = torch.randn(graph.num_edges, args.edge_dim, generator=gen).to(device, dtype)
    conv = AttentionConv(H * C, C, heads=H, edge_dim=args.edge_dim).to(device, dtype)
    used = kernels.choose_kernel(graph, device, edge_features=True)
    return [
        Candidate(f"AttentionConv auto (-> {used}), edge_dim", conv,
                  lambda x: conv(x, graph, edge_attr), x),
        Candidate("dense per-pair edge tensor", conv,
                  dense_pair_attention(conv, graph, edge_attr), x),
    ]


GROUP_BUILDERS = {"tree": tree_group, "tree-edge": tree_edge_group,
                  "causal-edge": causal_edge_group}


# ---------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_group(rows: List[Candidate], repeats: int, warmup: int,
               device: torch.device, clock: str = "wall") -> Dict[str, List[float]]:
    now = time.process_time if clock == "cpu" else time.perf_counter
    times: Dict[str, List[float]] = {r.name: [] for r in rows}
    for i in range(warmup + repeats):
        for r in rows:  # round-robin: every candidate sees the same machine load
            sync(device)
            t0 = now()
            r.step()
            sync(device)
            if i >= warmup:
                times[r.name].append(now() - t0)
    return times


def peak_bytes(r: Candidate, device: torch.device) -> int:
    return peak_memory(r.step, device)


def saved_bytes(r: Candidate) -> int:
    seen: Dict[int, int] = {}
    skip = {r.x.data_ptr()} | {p.data_ptr() for p in r.module.parameters()}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    r.x.grad = None
    for p in r.module.parameters():
        p.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = r.fn(r.x)
    (out * r.grad_out).sum().backward()
    return sum(seen.values())


# ---------------------------------------------------------------------- report
def machine(device: torch.device) -> Dict[str, object]:
    info: Dict[str, object] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__, "device": str(device),
        "threads": torch.get_num_threads(), "platform": platform.platform(),
        "torch_scatter": None,
    }
    try:
        import torch_scatter
        info["torch_scatter"] = torch_scatter.__version__
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15min"] = list(os.getloadavg())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            names = [l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")]
        info["cpu"] = f"{names[0]} x {len(names)}" if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    return info


def run_groups(args, device: torch.device, dtype: torch.dtype, info: Dict[str, object],
               threads: int, default: bool) -> List[Dict[str, object]]:
    r"""Times (and measures the memory of) every group of ``--only`` at ``threads``."""
    label = f"{threads} thread{'s' if threads > 1 else ''}" + (" (torch's default)" if default else "")
    print(f"# {info['cpu'] if device.type == 'cpu' else info.get('gpu')}, "
          f"torch {info['torch']}, PyG {info['torch_geometric']}, "
          f"torch-scatter {info['torch_scatter'] or 'not installed'}, "
          f"{label}, {args.dtype}, {args.clock} clock")
    results = []
    header = (f"{'group':<11} {'candidate':<40} {'ms':>9} {'q1-q3 ms':>15} {'ratio':>6} "
              f"{'peak MiB':>9} {'saved MiB':>9}")
    print(header)
    print("-" * len(header))
    for group in args.only:
        rows = (GROUP_BUILDERS[group](args, device, dtype) if group in GROUP_BUILDERS
                else sequence_group(group, args, device, dtype))
        times = time_group(rows, args.repeats, args.warmup, device, args.clock)
        base = statistics.median(times[rows[0].name])
        for r in rows:
            t = times[r.name]
            med = statistics.median(t)
            q = statistics.quantiles(t, n=4, method="inclusive") if len(t) > 1 else [med] * 3
            peak = saved = None
            if not args.no_memory:
                peak = peak_bytes(r, device)
                saved = saved_bytes(r)
            # Ratio to the baseline in the same round, then the median over rounds:
            # neighbours in time see the same machine load, so this is steadier on a
            # shared machine than the ratio of the two medians (also written).
            paired = statistics.median(a / b for a, b in zip(t, times[rows[0].name]))
            res = dict(group=group, candidate=r.name, threads=threads,
                       default_threads=default, median_ms=med * 1e3,
                       q1_ms=q[0] * 1e3, q3_ms=q[2] * 1e3, ratio=paired,
                       ratio_of_medians=med / base,
                       peak_bytes=peak, saved_bytes=saved, times_ms=[s * 1e3 for s in t])
            results.append(res)
            mib = lambda b: "-" if b is None else f"{b / 2**20:9.1f}"  # noqa: E731
            iqr = f"{q[0] * 1e3:.1f}-{q[2] * 1e3:.1f}"
            print(f"{group:<11} {r.name:<40} {med * 1e3:9.2f} {iqr:>15} {paired:6.2f} "
                  f"{mib(peak):>9} {mib(saved):>9}", flush=True)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    default_threads = torch.get_num_threads()
    info = machine(device)
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        torch.manual_seed(args.seed)
        results += run_groups(args, device, dtype, info, threads or default_threads,
                              default=threads is None)
    torch.set_num_threads(default_threads)
    out = Path(args.out)
    clock = "" if args.clock == "wall" else "_cputime"
    path = out / f"speed_{device.type}_{args.dtype}_T{args.length}{clock}.json"
    payload = dict(machine=info, args={k: v for k, v in vars(args).items()},
                   targets=TARGETS, results=results)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = list(os.getloadavg())
    write_json_atomic(path, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
