r"""The over-squashing study that ``python benchmarks/oversquash.py`` runs: the plan of
runs, one run, the diagnostics, and the report (table, CSV, markdown, plots).

Every run is a plain dict (a *row*) keyed by a string, so an interrupted study resumes
from what it wrote (:class:`~graphformer.experiments.store.ResultStore`).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch

from graphformer.datasets import TreeNeighborsMatch
from graphformer.diagnostics import dirichlet_energy_per_layer, sensitivity_vs_distance
from graphformer.experiments.graph_tasks import (GRAPH_MODELS, PUBLISHED_TREE, TRANSFER_TASKS,
                                                 Budget, SameTopologyLoader, build_transfer_model,
                                                 build_tree_model, train_graph_task)
from graphformer.experiments.sequence_tasks import (SEQUENCE_TASKS, build_sequence_model,
                                                    sequence_runway, train_sequence_task)

TASKS = ("tree",) + tuple(TRANSFER_TASKS) + tuple(SEQUENCE_TASKS)
MAX_TREE_DEPTH = 8
SEQUENCE_METHODS = ("gd", "nesterov")
TREE_VARIANTS = ("plain", "fully_adjacent")
#: The default run's tree models: the paper's four (graph attention and Deep Sets run
#: with ``--models``; they do not fit the 15 minutes beside them).
DEFAULT_TREE_MODELS = ("gcn", "gin", "gat", "ggnn")
#: What the test-accuracy column means where the data set is small.
TEST_NOTE = ("test_acc: accuracy on the held-out 20% at the evaluation with the best train "
             "accuracy. At depth 2 that is 20 trees (96 in all), so one tree is 0.05 and the "
             "number is coarse; the paper reports train accuracy, the column to compare.")


@dataclass
class Settings:
    r"""What a study runs. :meth:`default` fits a 2-core CPU in about 15 minutes with the
    fast budget (:meth:`~graphformer.experiments.graph_tasks.Budget.fast`) on the trees;
    :meth:`full` is the papers' sweep and budget."""
    models: Sequence[str]
    transfer_models: Sequence[str]
    tasks: Sequence[str]
    depths: Sequence[int]
    distances: Sequence[int]
    lengths: Sequence[int]
    seeds: Sequence[int]
    budget: Budget
    num_pause: int = 8
    sequence_epochs: int = 8
    num_sequences: int = 400
    transfer_graphs: Optional[int] = 1100
    transfer_steps: int = 400
    compile: Union[bool, str] = False
    tree_variant: str = "plain"  # "fully_adjacent": every tree run with that last layer
    controls: bool = True  # a fully-adjacent control where a model fails (plan_fully_adjacent)

    @classmethod
    def default(cls, **overrides) -> "Settings":
        base = dict(models=DEFAULT_TREE_MODELS, transfer_models=("gcn", "gat", "attention"),
                    tasks=TASKS,
                    depths=(2, 3), distances=(3, 5), lengths=(16, 48), seeds=(0,),
                    budget=Budget.fast())
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    @classmethod
    def full(cls, **overrides) -> "Settings":
        base = dict(models=GRAPH_MODELS, transfer_models=GRAPH_MODELS, tasks=TASKS,
                    depths=tuple(range(2, 9)),
                    distances=(3, 5, 8, 10), lengths=(16, 64, 256), seeds=(0,),
                    budget=Budget.full(), sequence_epochs=100, num_sequences=4000,
                    transfer_graphs=None, transfer_steps=20_000)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        bad = [m for m in dict.fromkeys((*self.models, *self.transfer_models))
               if m not in GRAPH_MODELS]
        if bad:
            raise ValueError(f"unknown model(s) {', '.join(bad)}; valid models: "
                             f"{', '.join(GRAPH_MODELS)}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"unknown task(s) {', '.join(bad)}; valid tasks: {', '.join(TASKS)}")
        bad = [d for d in self.depths if not 2 <= d <= MAX_TREE_DEPTH]
        if bad:
            raise ValueError(f"unsupported tree depth(s) {bad}: Tree-NeighborsMatch runs at "
                             f"depths 2 to {MAX_TREE_DEPTH}")
        bad = [d for d in self.distances if d < 2]
        if bad:
            raise ValueError(f"unsupported distance(s) {bad}: transfer tasks need distance >= 2")
        bad = [n for n in self.lengths if n < 2]
        if bad:
            raise ValueError(f"unsupported sequence length(s) {bad}: need length >= 2")
        self.budget.validate()
        if self.tree_variant not in TREE_VARIANTS:
            raise ValueError(f"unknown tree variant {self.tree_variant!r}; valid: "
                             f"{', '.join(TREE_VARIANTS)}")

    def meta(self) -> Dict:
        r"""The settings that make two results comparable (budget and sizes)."""
        return dict(budget=asdict(self.budget), num_pause=self.num_pause,
                    sequence_epochs=self.sequence_epochs, num_sequences=self.num_sequences,
                    transfer_graphs=self.transfer_graphs, transfer_steps=self.transfer_steps)


def run_key(row: Dict) -> str:
    return "/".join(str(row[k]) for k in ("task", "model", "size", "variant", "seed"))


def plan(settings: Settings) -> List[Dict]:
    r"""The runs of a study, in order (the fully-adjacent runs are planned later, once the
    depth where each model fails is known: see :func:`plan_fully_adjacent`)."""
    runs = []
    for seed in settings.seeds:
        if "tree" in settings.tasks:
            runs += [dict(task="tree", model=m, size=d, variant=settings.tree_variant, seed=seed)
                     for d in settings.depths for m in settings.models]
        for task in TRANSFER_TASKS:
            if task in settings.tasks:
                runs += [dict(task=task, model=m, size=r, variant="plain", seed=seed)
                         for r in settings.distances for m in settings.transfer_models]
        for task in SEQUENCE_TASKS:
            if task in settings.tasks:
                runs += [dict(task=task, model="attention", size=n,
                              variant=f"{method}+pause{p}", seed=seed)
                         for n in settings.lengths for method in SEQUENCE_METHODS
                         for p in (0, settings.num_pause)]
    return runs


def solved_threshold(depth: int) -> float:
    r"""The train accuracy a tree run must reach to count as solved at ``depth``: 0.99 at
    depths 2 and 3, where the paper's models all reach 1.0, and 0.9 from depth 4, where
    the paper's best (GAT, GGNN) reach 1.0 and the others stop at 0.70 to 0.77."""
    return 0.99 if depth <= 3 else 0.9


def failing_depth(rows: List[Dict], model: str, seed: int) -> Optional[int]:
    r"""The smallest depth where ``model`` stays below :func:`solved_threshold`."""
    depths = sorted(r["size"] for r in rows if r["task"] == "tree" and r["model"] == model
                    and r["variant"] == "plain" and r["seed"] == seed
                    and r["train_acc"] < solved_threshold(r["size"]))
    return depths[0] if depths else None


def plan_fully_adjacent(settings: Settings, rows: List[Dict],
                        complete: bool = False) -> List[Dict]:
    r"""One fully-adjacent run per model and seed, at the depth where the model fails;
    none for a model that reached the threshold at every depth studied (there is no
    bottleneck to remove); none at all when ``settings.controls`` is off. With
    ``complete``, only for the models and seeds whose plain tree runs are all in ``rows``
    (so that a sweep can start them while others run)."""
    if not settings.controls or "tree" not in settings.tasks or settings.tree_variant != "plain":
        return []
    runs = []
    for seed in settings.seeds:
        for m in settings.models:
            have = {r["size"] for r in rows if r["task"] == "tree" and r["model"] == m
                    and r["variant"] == "plain" and r["seed"] == seed}
            if complete and not set(settings.depths) <= have:
                continue
            depth = failing_depth(rows, m, seed)
            if depth is not None:
                runs.append(dict(task="tree", model=m, size=depth, variant="fully_adjacent",
                                 seed=seed))
    return runs


def transfer_budget(settings: Settings) -> Budget:
    r"""The transfer tasks' budget: ``transfer_steps`` steps of the study's budget when that
    is Alon & Yahav's loop (``--full``), else of the short plateau loop (the fast budget's
    schedule is the trees')."""
    base = settings.budget if settings.budget.schedule == "plateau" else Budget()
    return replace(base, max_graphs=None, max_steps=settings.transfer_steps, max_epochs=None,
                   eval_every_epochs=None)


#: Relative cost of a training step per layer (``--profile``, depth 3, batches of 256):
#: the sweep starts the dearest runs first, so that a GGNN run does not end it alone.
STEP_COST = {"gcn": 1.0, "gin": 1.3, "gat": 1.2, "ggnn": 2.5}


def cost(run: Dict, settings: Settings) -> float:
    r"""A rough relative cost of a run, for the progress bar's ETA and the order in which
    a sweep starts its runs (the dearest first)."""
    b = settings.budget
    if run["task"] == "tree":
        b = b.at_depth(run["size"])
        leaves = 2 ** run["size"]
        graphs = leaves * TreeNeighborsMatch.permutation_count(run["size"])
        if b.max_graphs is not None:
            graphs = min(graphs, b.max_graphs)
        _, steps = b.steps(math.ceil(0.8 * graphs))
        return (steps * b.batch_size * 2 * leaves * (run["size"] + 1) / 1e6
                * STEP_COST.get(run["model"], 1.0))
    if run["task"] in TRANSFER_TASKS:
        return settings.transfer_steps * transfer_budget(settings).batch_size * 2 \
            * run["size"] ** 2 / 1e6
    return settings.sequence_epochs * settings.num_sequences * run["size"] / 1e5


def run_cell(run: Dict, progress: Optional[Callable[[float], None]] = None, *,
             settings: Settings, device: torch.device) -> Dict:
    r""":func:`run_one` with the arguments in the order of
    :func:`~graphformer.experiments.pool.run_cells` (looked up when called, so that a
    worker runs whatever ``run_one`` is then)."""
    return run_one(run, settings, device, progress=progress)


def run_one(run: Dict, settings: Settings, device: torch.device,
            progress: Optional[Callable[[float], None]] = None) -> Dict:
    r"""Trains and evaluates one run; returns its row (the run plus the measurements).
    ``progress`` is called with the share of a graph run's step budget done, after every
    evaluation."""
    torch.manual_seed(run["seed"])
    row = dict(run)
    if run["task"] == "tree":
        dataset = TreeNeighborsMatch(run["size"], seed=run["seed"])
        model = build_tree_model(run["model"], dataset)
        row.update(train_graph_task(model, dataset, settings.budget, seed=run["seed"],
                                    fully_adjacent=run["variant"] == "fully_adjacent",
                                    device=device, progress=progress, compile=settings.compile))
        row["published"] = PUBLISHED_TREE.get(run["model"], {}).get(run["size"]) \
            if run["variant"] == "plain" else None
        if run["variant"] == "plain":
            row.update(tree_diagnostics(model, dataset, device))
    elif run["task"] in TRANSFER_TASKS:
        kwargs = {} if settings.transfer_graphs is None else {"num_graphs": settings.transfer_graphs}
        dataset = TRANSFER_TASKS[run["task"]](run["size"], seed=run["seed"], **kwargs)
        model = build_transfer_model(run["model"], dataset)
        budget = transfer_budget(settings)
        row.update(train_graph_task(model, dataset, budget, seed=run["seed"], device=device,
                                    progress=progress))
    else:
        method, pause = run["variant"].split("+pause")
        dataset = SEQUENCE_TASKS[run["task"]](run["size"], num_sequences=settings.num_sequences,
                                              seed=run["seed"])
        model = build_sequence_model(dataset.vocab_size, dataset.num_classes, method=method)
        row.update(train_sequence_task(model, dataset, num_pause=int(pause), seed=run["seed"],
                                       epochs=settings.sequence_epochs, device=device))
        profile = sequence_runway(model.cpu(), dataset, int(pause))
        row["runway"] = profile.tolist()  # [L + 1, T]
        last = profile[-1]
        row["runway_last_share"] = float(last[-1] / last.sum().clamp(min=1e-30))
    return row


def tree_diagnostics(model, dataset: TreeNeighborsMatch, device: torch.device) -> Dict:
    r"""Dirichlet energy per layer (over-smoothing) and Jacobian sensitivity of the root
    to every node against hop distance (over-squashing), on a few trained trees."""
    model.eval().to(device)
    loader = SameTopologyLoader(dataset, torch.arange(min(8, len(dataset))), 8, device=device)
    batch = next(iter(loader))
    with torch.no_grad():
        _, states = model(batch.x, batch.edge_index, index=batch.readout, return_states=True)
    energy = dirichlet_energy_per_layer(states, batch.edge_index, sqrt=True)
    one = SameTopologyLoader(dataset, torch.arange(1), 1, device=device)
    tree = next(iter(one))
    h = model.encoder(tree.x).detach()
    prof = sensitivity_vs_distance(lambda z: model.stack(z, tree.edge_index), h,
                                   tree.edge_index, int(tree.readout[0]))
    return dict(dirichlet=[float(e) for e in energy],
                sensitivity_distance=prof.distance.tolist(),
                sensitivity=[float(s) for s in prof.mean])


# ---------------------------------------------------------------------- report
COLUMNS = ("task", "model", "size", "variant", "seed", "train_acc", "test_acc", "published",
           "steps", "seconds")


def format_accuracy(acc: float) -> str:
    r"""Three decimals, but never ``1.000`` for an accuracy below 1 (0.99984 is
    ``0.9998``): a reader takes 1.000 for a solved task."""
    text = f"{acc:.3f}"
    return f"{math.floor(acc * 1e4) / 1e4:.4f}" if text == "1.000" and acc < 1 else text


ACCURACY_COLUMNS = ("train_acc", "test_acc", "published")


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


def table(rows: List[Dict], markdown: bool = False) -> str:
    r"""The rows as a fixed-width text table (or a markdown table)."""
    rows = sorted(rows, key=lambda r: (TASKS.index(r["task"]), r["variant"], r["model"],
                                       r["size"], r["seed"]))
    cells = [[_fmt(r.get(c), c) for c in COLUMNS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(COLUMNS)]
    fmt = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([fmt(COLUMNS), fmt(["-" * w for w in widths])] + [fmt(c) for c in cells]) + "\n"


def csv_text(rows: List[Dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c) for c in COLUMNS})
    return buf.getvalue()


def plot(rows: List[Dict], out) -> List[str]:
    r"""PNG plots under ``out``: tree accuracy against depth beside the published
    numbers, sensitivity against distance, Dirichlet energy against layer, and the
    runway profile. Returns the file names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tree = [r for r in rows if r["task"] == "tree" and r["variant"] == "plain"]
    if tree:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, m in enumerate(sorted({r["model"] for r in tree})):
            pts = sorted((r["size"], r["train_acc"]) for r in tree if r["model"] == m)
            line, = ax.plot(*zip(*pts), "o-", label=f"{m} (ours)", color=f"C{i}")
            if m in PUBLISHED_TREE:
                pub = sorted(PUBLISHED_TREE[m].items())
                ax.plot(*zip(*pub), "x--", color=line.get_color(), alpha=0.6,
                        label=f"{m} (Alon & Yahav)")
        fa = [r for r in rows if r["task"] == "tree" and r["variant"] == "fully_adjacent"]
        for r in fa:
            ax.plot(r["size"], r["train_acc"], "*", ms=12, color="k", alpha=0.5)
        ax.set(xlabel="tree depth r", ylabel="train accuracy",
               title="Tree-NeighborsMatch (★ fully-adjacent last layer)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / "tree_accuracy.png", dpi=120)
        plt.close(fig)
        written.append("tree_accuracy.png")

        deepest = max(r["size"] for r in tree)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for i, r in enumerate(sorted((r for r in tree if r["size"] == deepest),
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

    seq = [r for r in rows if r["task"] in SEQUENCE_TASKS and "runway" in r]
    if seq:
        longest = max(r["size"] for r in seq)
        task = sorted({r["task"] for r in seq})[0]
        chosen = [r for r in seq if r["size"] == longest and r["task"] == task]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, r in enumerate(sorted(chosen, key=lambda r: r["variant"])):
            last = torch.tensor(r["runway"][-1])
            ax.semilogy(range(len(last)), (last / last.sum()).clamp(min=1e-12), label=r["variant"],
                        color=f"C{i}")
        ax.set(xlabel="input position", ylabel="share of the read-out's sensitivity",
               title=f"Runway profile: {task}, length {longest}, last layer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "runway.png", dpi=120)
        plt.close(fig)
        written.append("runway.png")
    return written


# ---------------------------------------------------------------- time to solve
TIME_TO_SOLVE_BUDGETS = ("full", "fast")


def time_to_solve_budget(name: str, max_epochs: Optional[int] = None,
                         max_seconds: Optional[float] = None) -> Budget:
    r"""``"full"`` (Alon & Yahav's loop) or ``"fast"`` (the fast budget), with an optional
    cap on the epochs or the seconds of the paper's loop (its own cap, 50,000 epochs, is
    days on a CPU). The fast budget is never changed: it is what the default run uses."""
    if name == "fast":
        return Budget.fast()
    if name != "full":
        raise ValueError(f"unknown budget {name!r}; valid: {', '.join(TIME_TO_SOLVE_BUDGETS)}")
    return replace(Budget.full(), max_seconds=max_seconds,
                   **({} if max_epochs is None else {"max_epochs": max_epochs}))


def time_to_solve_cells(models: Sequence[str], depths: Sequence[int], seeds: Sequence[int],
                        budgets: Sequence[str], max_epochs: Optional[int] = None,
                        max_seconds: Optional[float] = None) -> List:
    r"""``(key, (run, budget))`` cells: every model, depth and seed under every budget
    (at that depth: :meth:`~graphformer.experiments.graph_tasks.Budget.at_depth`); the key
    is the run's key followed by ``@`` and the budget's name."""
    cells = []
    for name in budgets:
        budget = time_to_solve_budget(name, max_epochs, max_seconds)
        for seed in seeds:
            for depth in depths:
                for m in models:
                    run = dict(task="tree", model=m, size=depth, variant="plain", seed=seed,
                               budget_name=name)
                    cells.append((f"{run_key(run)}@{name}", (run, budget.at_depth(depth))))
    return cells


def time_to_solve_cell(payload, progress: Optional[Callable[[float], None]] = None, *,
                       device: torch.device = torch.device("cpu")) -> Dict:
    r"""Trains one time-to-solve cell; its row records the budget it ran under."""
    run, budget = payload
    torch.manual_seed(run["seed"])
    dataset = TreeNeighborsMatch(run["size"], seed=run["seed"])
    model = build_tree_model(run["model"], dataset)
    row = dict(run, budget=asdict(budget))
    row.update(train_graph_task(model, dataset, budget, seed=run["seed"], device=device,
                                progress=progress))
    return row


def time_to_solve_table(rows: List[Dict], markdown: bool = True) -> str:
    r"""Seconds and epochs to train accuracy 1.0 under each budget, and their ratio
    (full over fast); a run stopped before 1.0 shows its best accuracy instead. Times are
    the run's CPU seconds where the row has them (one torch thread per run, so other
    jobs on the machine do not inflate them), else wall seconds."""
    by = {(r["model"], r["size"], r["seed"], r["budget_name"]): r for r in rows}
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
