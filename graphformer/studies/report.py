r"""The over-squashing study's report: text and markdown tables (one per kind of task,
each with its own size column), CSV, and one plot per study beside the published
numbers (ours solid, published dashed, controls as markers)."""
from __future__ import annotations

import csv
import io
import math
from typing import Dict, List, Sequence

import torch

from graphformer.studies import transfer
from graphformer.studies.graph_tasks import GRAPH_MODELS, PUBLISHED_TREE
from graphformer.studies.oversquash import SEQUENCE_TASKS, TASKS, sequence_cause, size_of
from graphformer.studies.transfer import TOPOLOGIES

#: The columns of each kind of task's table (and of the CSV, which holds them all).
TREE_COLUMNS = ("model", "depth", "variant", "seed", "train_acc", "test_acc", "published",
                "epochs", "seconds")
TRANSFER_COLUMNS = ("task", "model", "distance", "variant", "seed", "train_acc", "test_acc",
                    "published", "cause", "epochs", "seconds")
SEQUENCE_COLUMNS = ("task", "length", "method", "num_pause", "variant", "seed", "train_acc",
                    "test_acc", "cause", "epochs", "seconds")
CSV_COLUMNS = ("task", "model", "depth", "distance", "length", "variant", "method",
               "num_pause", "seed", "train_acc", "test_acc", "published", "cause", "epochs",
               "seconds")
ACCURACY_COLUMNS = ("train_acc", "test_acc", "published")


def format_accuracy(acc: float) -> str:
    r"""Three decimals, but never ``1.000`` for an accuracy below 1 (0.99984 is
    ``0.9998``): a reader takes 1.000 for a solved task.

    Example:
        >>> from graphformer.studies.report import format_accuracy
        >>> format_accuracy(0.99984), format_accuracy(1.0), format_accuracy(0.5)
        ('0.9998', '1.000', '0.500')
    """
    text = f"{acc:.3f}"
    return f"{math.floor(acc * 1e4) / 1e4:.4f}" if text == "1.000" and acc < 1 else text


def _fmt(v, column: str) -> str:
    r"""One table cell: accuracies by :func:`format_accuracy`, seconds to 0.1 s below
    100 s and to the second above."""
    if v is None:
        return "–"
    if isinstance(v, float):
        if column in ACCURACY_COLUMNS:
            return format_accuracy(v)
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    return str(v)


def with_causes(rows: List[Dict]) -> List[Dict]:
    r"""The rows, each plain transfer or sequence row with its ``cause``
    (:func:`~graphformer.studies.transfer.cause`,
    :func:`~graphformer.studies.oversquash.sequence_cause`) from the control rows beside it."""
    out = []
    for r in rows:
        if r["task"] in TOPOLOGIES and r["variant"] == "plain":
            ctl = [c for c in rows if c["task"] == r["task"] and c["model"] == r["model"]
                   and c["distance"] == r["distance"] and c["seed"] == r["seed"]
                   and c["variant"] != "plain"]
            r = dict(r, cause=transfer.cause(r, ctl))
        elif r["task"] in SEQUENCE_TASKS and r["variant"] == "plain":
            ctl = [c for c in rows if c["task"] == r["task"] and c["length"] == r["length"]
                   and c["method"] == r["method"] and c["num_pause"] == r["num_pause"]
                   and c["seed"] == r["seed"] and c["variant"] != "plain"]
            r = dict(r, cause=sequence_cause(r, ctl))
        out.append(r)
    return out


def _grid(columns: Sequence[str], rows: List[Dict], markdown: bool) -> str:
    cells = [[_fmt(r.get(c), c) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    fmt = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([fmt(columns), fmt(["-" * w for w in widths])] + [fmt(c) for c in cells]) + "\n"


def table(rows: List[Dict], markdown: bool = False) -> str:
    r"""The rows as fixed-width text (or markdown) tables, one per kind of task."""
    rows = with_causes(rows)
    order = lambda r: (TASKS.index(r["task"]), r["variant"] != "plain",  # noqa: E731
                       r.get("model", ""), size_of(r), r.get("method", ""),
                       r.get("num_pause", 0), r["seed"])
    parts = []
    for title, columns, tasks in (("Tree-NeighborsMatch", TREE_COLUMNS, ("tree",)),
                                  ("Graph transfer", TRANSFER_COLUMNS, tuple(TOPOLOGIES)),
                                  ("Causal sequences", SEQUENCE_COLUMNS, tuple(SEQUENCE_TASKS))):
        mine = sorted((r for r in rows if r["task"] in tasks), key=order)
        if mine:
            parts.append(("### " if markdown else "") + title + "\n\n" * markdown
                         + "\n" * (not markdown) + _grid(columns, mine, markdown))
    return "\n".join(parts)


def csv_text(rows: List[Dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in with_causes(rows):
        writer.writerow({c: r.get(c) for c in CSV_COLUMNS})
    return buf.getvalue()


def plot(rows: List[Dict], out) -> List[str]:
    r"""PNG plots under ``out``: tree accuracy against depth and transfer accuracy
    against distance beside the published curves, sensitivity against distance,
    Dirichlet energy against layer, and the runway profile. Returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tree = [r for r in rows if r["task"] == "tree" and r["variant"] == "plain"]
    if tree:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, m in enumerate(sorted({r["model"] for r in tree})):
            pts = sorted((r["depth"], r["train_acc"]) for r in tree if r["model"] == m)
            line, = ax.plot(*zip(*pts), "o-", label=f"{m} (ours)", color=f"C{i}")
            if m in PUBLISHED_TREE:
                pub = sorted(PUBLISHED_TREE[m].items())
                ax.plot(*zip(*pub), "x--", color=line.get_color(), alpha=0.6,
                        label=f"{m} (Alon & Yahav)")
        for r in (r for r in rows if r["task"] == "tree" and r["variant"] == "fully_adjacent"):
            ax.plot(r["depth"], r["train_acc"], "*", ms=12, color="k", alpha=0.5)
        ax.set(xlabel="tree depth r", ylabel="train accuracy",
               title="Tree-NeighborsMatch (★ fully-adjacent last layer)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "tree_accuracy.png", dpi=120)
        plt.close(fig)
        written.append("tree_accuracy.png")

        deepest = max(r["depth"] for r in tree)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for i, r in enumerate(sorted((r for r in tree if r["depth"] == deepest),
                                     key=lambda r: r["model"])):
            axes[0].semilogy(r["sensitivity_distance"], r["sensitivity"], "o-", label=r["model"],
                             color=f"C{i}")
            axes[1].plot(range(len(r["dirichlet"])), r["dirichlet"], "o-", label=r["model"],
                         color=f"C{i}")
        axes[0].set(xlabel="hop distance to the root", ylabel="mean ||∂h_root/∂x_s||",
                    title=f"Jacobian sensitivity (depth {deepest}, trained)")
        axes[1].set(xlabel="layer", ylabel="√ Dirichlet energy",
                    title=f"Over-smoothing (depth {deepest}, trained)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "sensitivity_dirichlet.png", dpi=120)
        plt.close(fig)
        written.append("sensitivity_dirichlet.png")

    written += plot_transfer(rows, out)

    seq = [r for r in rows if r["task"] in SEQUENCE_TASKS and "runway" in r]
    if seq:
        longest = max(r["length"] for r in seq)
        task = sorted({r["task"] for r in seq})[0]
        chosen = [r for r in seq if r["length"] == longest and r["task"] == task]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, r in enumerate(sorted(chosen, key=lambda r: (r["method"], r["num_pause"]))):
            last = torch.tensor(r["runway"][-1])
            ax.semilogy(range(len(last)), (last / last.sum()).clamp(min=1e-12),
                        label=f"{r['method']}, {r['num_pause']} pauses", color=f"C{i}")
        ax.set(xlabel="input position", ylabel="share of the read-out's sensitivity",
               title=f"Runway profile: {task}, length {longest}, last layer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "runway.png", dpi=120)
        plt.close(fig)
        written.append("runway.png")
    return written


CONTROL_MARKERS = {"fully_adjacent": "*", "transformer": "D"}


def plot_transfer(rows: List[Dict], out) -> List[str]:
    r"""``transfer_accuracy.png``: best test accuracy against distance, one panel per
    model, a colour per topology; ours solid (mean over seeds), the paper's digitised
    curve dashed (:data:`~graphformer.studies.transfer.PUBLISHED_TRANSFER`), controls as
    markers (★ fully-adjacent last layer, ◆ Transformer)."""
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["task"] in TOPOLOGIES]
    if not mine:
        return []
    models = [m for m in transfer.PYG_MODELS if any(r["model"] == m for r in mine)]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        for i, topo in enumerate(TOPOLOGIES):
            color = f"C{i}"
            plain = [r for r in mine if r["model"] == m and r["task"] == topo
                     and r["variant"] == "plain"]
            if not plain:
                continue
            by_d: Dict[int, List[float]] = {}
            for r in plain:
                by_d.setdefault(r["distance"], []).append(r["test_acc"])
            ds = sorted(by_d)
            ax.plot(ds, [sum(by_d[d]) / len(by_d[d]) for d in ds], "o-", color=color,
                    label=f"{topo} (ours)")
            pub = sorted(transfer.PUBLISHED_TRANSFER[m][topo].items())
            ax.plot(*zip(*pub), "--", color=color, alpha=0.6, label=f"{topo} (paper)")
            for r in mine:
                if r["model"] == m and r["task"] == topo and r["variant"] != "plain":
                    ax.plot(r["distance"], r["test_acc"], CONTROL_MARKERS[r["variant"]],
                            ms=10, color=color, markeredgecolor="k")
        ax.axhline(0.2, ls=":", color="k", lw=0.8)
        ax.set(xlabel="distance r (layers = r)", ylabel="best test accuracy", ylim=(0, 1.05),
               title=f"{m.upper()} (★ fully-adjacent, ◆ Transformer)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "transfer_accuracy.png", dpi=120)
    plt.close(fig)
    return ["transfer_accuracy.png"]


def time_to_solve_table(rows: List[Dict], markdown: bool = True) -> str:
    r"""Seconds and epochs to train accuracy 1.0 under each budget, and their ratio
    (full over fast); a run stopped before 1.0 shows its best accuracy instead. Times are
    the run's CPU seconds where the row has them (one torch thread per run, so other
    jobs on the machine do not inflate them), else wall seconds."""
    by = {(r["model"], r["depth"], r["seed"], r["budget_name"]): r for r in rows}
    cells = sorted({k[:3] for k in by}, key=lambda k: (k[1], GRAPH_MODELS.index(k[0]), k[2]))

    def secs(r):
        return r.get("cpu_seconds", r["seconds"])

    def show(r):
        if r is None:
            return "not run", "–"
        if r["train_acc"] >= 1.0:
            return f"{secs(r):.0f} s", f"{r['epochs']:g}"
        return (f"not solved: {format_accuracy(r['train_acc'])} after {secs(r):.0f} s",
                f"{r['epochs']:g}")

    clock = "CPU time" if all("cpu_seconds" in r for r in rows) else "time"
    lines = [f"| model | depth | seed | full: {clock} | full: epochs | fast: {clock} | "
             f"fast: epochs | {clock} ratio (full / fast) | epoch ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, d, seed in cells:
        full, fast = by.get((m, d, seed, "full")), by.get((m, d, seed, "fast"))
        ratio = epochs = "–"
        if full and fast and fast["train_acc"] >= 1.0:
            ratio = f"{secs(full) / secs(fast):.1f}x"
            epochs = f"{full['epochs'] / fast['epochs']:.1f}x"
            if full["train_acc"] < 1.0:
                ratio, epochs = "> " + ratio, "> " + epochs
        lines.append(f"| {m} | {d} | {seed} | " + " | ".join(show(full)) + " | "
                     + " | ".join(show(fast)) + f" | {ratio} | {epochs} |")
    text = "\n".join(lines) + "\n"
    return text if markdown else text.replace("|", " ")


def layout_table(rows: List[Dict]) -> str:
    r"""The rows of :func:`~graphformer.studies.transfer.time_layouts` as markdown."""
    lines = ["| task | model | distance | layout | CPU ms/step | speed-up over the paper's loop |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['model']} | {r['distance']} | {r['layout']} | "
              f"{r['ms_per_step']:.1f} | {r['speedup']:.1f}x |" for r in rows]
    return "\n".join(lines)


def targets(rows: List[Dict]) -> str:
    r"""The transfer rows against the published cliffs ``c``: a row at distance
    ``<= c - 2`` should reach 0.9, one at ``>= c + 3`` stay at or below 0.5. One line per
    checked row, ``ok`` or ``MISSED``."""
    lines = []
    for r in sorted((r for r in rows if r["task"] in TOPOLOGIES and r["variant"] == "plain"),
                    key=lambda r: (r["model"], r["task"], r["distance"], r["seed"])):
        c = transfer.PUBLISHED_CLIFF[r["model"]][r["task"]]
        if r["distance"] <= c - 2:
            ok, want = r["test_acc"] >= 0.9, ">= 0.9"
        elif r["distance"] >= c + 3:
            ok, want = r["test_acc"] <= 0.5, "<= 0.5"
        else:
            continue
        lines.append(f"{r['model']} {r['task']} distance {r['distance']} (cliff {c}), seed "
                     f"{r['seed']}: {format_accuracy(r['test_acc'])}, want {want}: "
                     f"{'ok' if ok else 'MISSED'}")
    return "\n".join(lines)


__all__ = ["format_accuracy", "table", "csv_text", "plot", "plot_transfer",
           "time_to_solve_table", "layout_table", "targets", "with_causes"]
