r"""Training and evaluation of graph models on the over-squashing tasks.

The pieces that ``benchmarks/oversquash.py`` runs, offered to every user: a fast batcher
for data sets whose graphs share one topology (Tree-NeighborsMatch),
the training loop of Alon & Yahav (2021) (Adam, reduce-on-plateau, stop at train accuracy
1.0 or when it stops improving), and the published numbers beside which ours are shown.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GINConv, GatedGraphConv

from graphformer.checks import check_int
from graphformer.datasets import TreeNeighborsMatch
from graphformer.diagnostics import hop_distance
from graphformer.models import GraphModel
from graphformer.nn.conv import AttentionConv, DeepSetsConv
from graphformer.studies.fit import accuracy, fit, warmup_cosine  # noqa: F401 (re-exported)
from graphformer.transforms import fully_adjacent_edges

#: Train accuracy on Tree-NeighborsMatch at depths 2..8 (Alon & Yahav 2021, Fig. 3).
PUBLISHED_TREE: Dict[str, Dict[int, float]] = {
    "ggnn": dict(zip(range(2, 9), (1.0, 1.0, 1.0, 0.60, 0.38, 0.21, 0.16))),
    "gat": dict(zip(range(2, 9), (1.0, 1.0, 1.0, 0.41, 0.21, 0.15, 0.11))),
    "gin": dict(zip(range(2, 7), (1.0, 1.0, 0.77, 0.29, 0.20))),
    "gcn": dict(zip(range(2, 9), (1.0, 1.0, 0.70, 0.19, 0.14, 0.09, 0.08))),
}

GRAPH_MODELS = ("gcn", "gin", "gat", "ggnn", "attention", "deepsets")
#: The layer block of each published tree model, as in Alon & Yahav's run scripts
#: (``run-gat-2-8.py`` passes ``no_activation``; ``run-ggnn-2-8.py`` passes
#: ``no_layer_norm``, ``no_activation`` and ``no_residual``); see
#: :data:`graphformer.models.graph_models.BLOCKS`.
#: The other layers take the default block, ``"post_norm"``.
TREE_BLOCKS: Dict[str, str] = {"gcn": "post_norm", "gin": "post_norm",
                               "gat": "post_norm_linear", "ggnn": "plain"}
SCHEDULES = ("plateau", "cosine")
# The fast budget (:meth:`Budget.fast`), one setting for every model and depth.
FAST_LR = 3e-3
FAST_WARMUP = 0.05
FAST_BATCH = 256
FAST_EPOCHS = 400
FAST_MIN_STEPS = 2000
FAST_EVAL = 5
FAST_WEIGHT_DECAY = 0.03
#: Alon & Yahav's batch size at each tree depth (their ``run-*-2-8.py`` scripts; at depth
#: 8 they accumulate two batches of 1,024, which is one batch of 2,048 here), and their
#: evaluation interval in epochs where it differs from ``main.py``'s 100 (depth 2).
PAPER_BATCH = {2: 64, 3: 64, 4: 1024, 5: 1024, 6: 1024, 7: 2048, 8: 2048}
PAPER_EVAL_EVERY = {2: 1000}


@dataclass
class Budget:
    r"""How long to train, counted in optimizer steps. Every ``eval_every`` steps the
    train accuracy is measured; training stops at train accuracy 1.0, after ``max_steps``,
    or (``patience`` set) after ``patience`` evaluations without a gain. A gain is an
    increase of more than ``min_gain`` (absolute), as in Alon & Yahav's code.

    ``eval_every_epochs`` and ``max_epochs``, when set, count in passes over the training
    split instead and replace ``eval_every`` and ``max_steps`` (so the budget scales with
    the data set, as the paper's does).

    The learning rate follows ``schedule``:

    * ``"plateau"`` (Alon & Yahav): Adam at ``lr``, halved after ``lr_patience``
      evaluations without a gain;
    * ``"cosine"`` (the *fast budget*): a linear warm-up from 0 to ``lr`` over the first
      ``warmup`` share of the ``max_steps`` steps, then a cosine decay to 0 at
      ``max_steps`` (a one-cycle schedule). The run still stops as soon as the train
      accuracy reaches 1.0.

    The optimizer is Adam, or AdamW when ``weight_decay`` is positive (the decay is
    decoupled from the gradient, as in Loshchilov & Hutter 2019, and applies to every
    parameter).

    :meth:`full` is Alon & Yahav's setting, :meth:`fast` the fast budget.

    Example:
        >>> from graphformer.studies.graph_tasks import Budget
        >>> fast = Budget.fast()
        >>> fast.batch_size, fast.lr, fast.weight_decay, fast.max_epochs, fast.schedule
        (256, 0.003, 0.03, 400, 'cosine')
    """
    max_steps: int = 1500
    eval_every: int = 100
    patience: Optional[int] = 10
    lr_patience: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0  # decoupled (AdamW) when positive; 0: plain Adam
    max_graphs: Optional[int] = 4000  # cap on the data set size (None: the paper's)
    eval_every_epochs: Optional[int] = None
    max_epochs: Optional[int] = None
    min_gain: float = 1e-4
    schedule: str = "plateau"
    warmup: float = 0.0
    max_seconds: Optional[float] = None  # wall-clock cap, checked at every evaluation
    min_steps: Optional[int] = None  # at least this many steps when counting in epochs
    paper_batches: bool = False  # tree runs take PAPER_BATCH and PAPER_EVAL_EVERY by depth

    @classmethod
    def full(cls) -> "Budget":
        r"""Alon & Yahav's budget (their ``main.py`` defaults and run scripts): the whole
        data set, Adam 1e-3, an evaluation every 100 epochs, reduce-on-plateau (factor 0.5,
        patience 10 evaluations), stop at train accuracy 1.0, after 20 evaluations
        without a gain or after 50,000 epochs. On the trees the batch size follows the
        depth as in their run scripts (:meth:`at_depth`: 64 at depths 2 and 3, 1,024 at 4
        to 6, 2,048 at 7 and 8; an evaluation every 1,000 epochs at depth 2); elsewhere
        it is ``main.py``'s 1,024."""
        return cls(eval_every_epochs=100, max_epochs=50_000, patience=20, lr_patience=10,
                   batch_size=1024, max_graphs=None, eval_every=1000, paper_batches=True)

    def at_depth(self, depth: int) -> "Budget":
        r"""The budget of a Tree-NeighborsMatch run at ``depth``: with ``paper_batches``,
        Alon & Yahav's batch size and evaluation interval for that depth; else itself."""
        if not self.paper_batches:
            return self
        if depth not in PAPER_BATCH:
            raise ValueError(f"Alon & Yahav's batch sizes cover tree depths "
                             f"{min(PAPER_BATCH)} to {max(PAPER_BATCH)}, got depth {depth}")
        return replace(self, batch_size=PAPER_BATCH[depth],
                       eval_every_epochs=PAPER_EVAL_EVERY.get(depth, self.eval_every_epochs))

    @classmethod
    def fast(cls) -> "Budget":
        r"""The fast budget: the paper's model, data and metric, another optimisation.
        The whole data set, batches of 256, AdamW (decoupled weight decay 0.03) with a
        linear warm-up to a peak of 3e-3 over the first 5% of the steps and a cosine
        decay to 0 over 400 epochs (at least 2,000 steps, which matters only for the 76
        training graphs of depth 2), an evaluation every 5 epochs, and a stop at train
        accuracy 1.0. One budget for every model and depth, never tuned per run."""
        return cls(schedule="cosine", lr=FAST_LR, warmup=FAST_WARMUP, batch_size=FAST_BATCH,
                   max_epochs=FAST_EPOCHS, eval_every_epochs=FAST_EVAL, patience=None,
                   max_graphs=None, min_steps=FAST_MIN_STEPS,
                   weight_decay=FAST_WEIGHT_DECAY)

    def validate(self) -> None:
        r"""Raises :class:`ValueError` naming the first setting that cannot work."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        for name in ("max_steps", "eval_every", "batch_size"):
            check_int(name, getattr(self, name), 1, error=ValueError)
        check_int("lr_patience", self.lr_patience, 0, error=ValueError)
        for name in ("max_graphs", "eval_every_epochs", "max_epochs", "patience", "min_steps"):
            if getattr(self, name) is not None:  # None: no such limit
                check_int(name, getattr(self, name), 1, error=ValueError)
        if self.max_seconds is not None and not 0 < self.max_seconds < math.inf:
            raise ValueError(f"max_seconds must be a positive number of seconds, got "
                             f"{self.max_seconds}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be a finite number >= 0, got "
                             f"{self.weight_decay}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a share of the steps in [0, 1), got {self.warmup}")

    def steps(self, num_train: int) -> Tuple[int, int]:
        r"""``(eval_every, max_steps)`` in optimizer steps for ``num_train`` training
        graphs."""
        per_epoch = math.ceil(num_train / self.batch_size)
        eval_every = self.eval_every if self.eval_every_epochs is None \
            else self.eval_every_epochs * per_epoch
        max_steps = self.max_steps if self.max_epochs is None else self.max_epochs * per_epoch
        if self.min_steps is not None and self.max_epochs is not None:
            max_steps = max(max_steps, self.min_steps)
        return eval_every, max_steps


class SameTopologyBatch(NamedTuple):
    r"""One mini-batch of :class:`SameTopologyLoader`."""
    x: Tensor
    edge_index: Tensor
    last_edge_index: Optional[Tensor]
    readout: Tensor  # global index of each graph's read-out node
    y: Tensor
    num_sampled_nodes_per_hop: Optional[List[int]] = None
    num_sampled_edges_per_hop: Optional[List[int]] = None

    def logits(self, model: GraphModel) -> Tensor:
        r"""``model``'s predictions at the read-out nodes."""
        return model(self.x, self.edge_index, index=self.readout,
                     last_edge_index=self.last_edge_index,
                     num_sampled_nodes_per_hop=self.num_sampled_nodes_per_hop,
                     num_sampled_edges_per_hop=self.num_sampled_edges_per_hop)


class SameTopologyLoader:
    r"""Mini-batches of a data set whose graphs all share one topology, built by indexing
    the stored tensors rather than collating :class:`~torch_geometric.data.Data` objects
    one by one (hundreds of times faster for 32,000 small trees).

    Yields :class:`SameTopologyBatch` (``x, edge_index, last_edge_index, readout, y``)
    with ``readout`` the global index of each graph's read-out node. ``last_edge_index``
    is the fully-adjacent last layer's graph (every node to its graph's read-out node)
    when ``fully_adjacent`` is set, else ``None``.

    With ``trim_layers=L`` the batch is laid out for a model of ``L`` layers to compute
    only what the read-out needs (PyG's :func:`~torch_geometric.utils.trim_to_layer`):
    the nodes sorted by their hop distance to the read-out node (every graph's read-out
    node first, then every graph's nodes one hop away, ...; nodes more than ``L`` hops
    away, which cannot reach it, left out), the edges sorted by the farther hop of their
    two ends, and the counts per hop in ``num_sampled_nodes_per_hop`` and
    ``num_sampled_edges_per_hop``. Only for layers where trimming is exact
    (:func:`trims_exactly`).
    """

    def __init__(self, dataset, index: Tensor, batch_size: int, *, shuffle: bool = False,
                 fully_adjacent: bool = False, generator: Optional[torch.Generator] = None,
                 device: torch.device = torch.device("cpu"),
                 trim_layers: Optional[int] = None) -> None:
        first = dataset[0]
        self.n = first.num_nodes
        self.x = dataset._data.x.view(len(dataset), self.n, *dataset._data.x.shape[1:])
        self.y = dataset._data.y.view(-1)
        self.root = int(first.root_index)
        self.edge_index = first.edge_index
        self.last_edge_index = None
        if fully_adjacent:
            if trim_layers is not None:
                raise ValueError("trim_layers and fully_adjacent do not go together: the "
                                 "fully-adjacent last layer reads every node")
            self.last_edge_index = fully_adjacent_edges(self.n, root_index=torch.tensor([self.root]))
        if trim_layers is not None:
            trim_layers = check_int("trim_layers", trim_layers, 1, error=ValueError)
        self.trim_layers = trim_layers
        self.index = index
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.device = device
        self._tiled: Dict[Tuple[int, bool], Tensor] = {}
        self._trimmed: Dict[int, Tuple[Tensor, Tensor, List[int], List[int]]] = {}

    def __len__(self) -> int:
        return math.ceil(self.index.numel() / self.batch_size)

    def _tile(self, edge_index: Tensor, graphs: int, key: bool) -> Tensor:
        if (graphs, key) not in self._tiled:
            offset = (torch.arange(graphs) * self.n).repeat_interleave(edge_index.size(1))
            self._tiled[(graphs, key)] = (edge_index.repeat(1, graphs) + offset).to(self.device)
        return self._tiled[(graphs, key)]

    def _trim_layout(self, graphs: int) -> Tuple[Tensor, Tensor, List[int], List[int]]:
        r"""``(gather, edge_index, nodes per hop, edges per hop)`` for ``graphs`` graphs:
        row ``i`` of the batch is row ``gather[i]`` of the graphs stacked as stored."""
        if graphs not in self._trimmed:
            L, G, n = self.trim_layers, graphs, self.n
            hop = hop_distance(self.edge_index, n, self.root)
            hop[hop < 0] = L + 1  # cannot reach the read-out node: left out
            src, dst = self.edge_index
            keep_edge = (hop[src] <= L) & (hop[dst] <= L)
            src, dst = src[keep_edge], dst[keep_edge]
            edge_hop = torch.maximum(hop[src], hop[dst])
            graph = torch.arange(G)
            gather, new_of = [], torch.full((G * n,), -1, dtype=torch.long)
            nodes_per_hop, placed = [], 0
            for h in range(L + 1):
                nodes = (hop == h).nonzero().view(-1)
                block = (graph[:, None] * n + nodes[None, :]).reshape(-1)
                new_of[block] = torch.arange(placed, placed + block.numel())
                gather.append(block)
                nodes_per_hop.append(block.numel())
                placed += block.numel()
            edges, edges_per_hop = [], []
            for h in range(L + 1):
                mine = edge_hop == h
                s = (graph[:, None] * n + src[mine][None, :]).reshape(-1)
                d = (graph[:, None] * n + dst[mine][None, :]).reshape(-1)
                edges.append(torch.stack([new_of[s], new_of[d]]))
                edges_per_hop.append(s.numel())
            # PyG's convention: L edge counts, the hop-0 edges (self-loops at the seeds)
            # counted with hop 1 since they are never trimmed
            edges_per_hop = [edges_per_hop[0] + edges_per_hop[1]] + edges_per_hop[2:]
            self._trimmed[graphs] = (torch.cat(gather), torch.cat(edges, 1).to(self.device),
                                     nodes_per_hop, edges_per_hop)
        return self._trimmed[graphs]

    def __iter__(self) -> Iterator[SameTopologyBatch]:
        order = self.index
        if self.shuffle:
            order = order[torch.randperm(order.numel(), generator=self.generator)]
        for start in range(0, order.numel(), self.batch_size):
            ids = order[start:start + self.batch_size]
            G = ids.numel()
            x = self.x[ids].reshape(G * self.n, *self.x.shape[2:])
            y = self.y[ids].to(self.device)
            if self.trim_layers is not None:
                gather, ei, nodes, edges = self._trim_layout(G)
                yield SameTopologyBatch(x[gather].to(self.device), ei, None,
                                        torch.arange(G, device=self.device), y, nodes, edges)
                continue
            ei = self._tile(self.edge_index, G, False)
            last = None if self.last_edge_index is None else self._tile(self.last_edge_index, G, True)
            readout = (torch.arange(G) * self.n + self.root).to(self.device)
            yield SameTopologyBatch(x.to(self.device), ei, last, readout, y)


#: Layers whose output at a node depends only on its in-neighbours' inputs, so that
#: trimming a batch to what the read-out needs (``trim_layers``) changes no number
#: (tested): not GCN (its normalisation reads the degree of the trimmed frontier) nor
#: batch norm (its statistics see every row, e.g. in the paper's GIN MLP).
TRIM_EXACT = (GATConv, GatedGraphConv, GINConv, AttentionConv, DeepSetsConv)


def trims_exactly(model: GraphModel) -> bool:
    r"""Whether ``model`` gives the same read-out with a trimmed batch: all its convs are
    of the :data:`TRIM_EXACT` kinds and it has no batch norm."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    return all(isinstance(o.conv, TRIM_EXACT) for layer in model.stack.layers for o in layer)


def build_tree_model(conv: str, dataset: TreeNeighborsMatch, hidden: int = 32,
                     method: str = "gd") -> GraphModel:
    r"""Alon & Yahav's model: key and value embeddings summed, ``r + 1`` layers, a linear
    read-out at the root; their layers (GAT with 4 heads, GIN's MLP with batch norm) in
    their blocks (:data:`TREE_BLOCKS`): ``x <- LayerNorm(x + ReLU(conv(x)))`` for GCN and
    GIN, ``x <- LayerNorm(x + conv(x))`` for GAT, ``x <- conv(x)`` for GGNN, whose GRU
    gates its own update (so GGNN takes no ``method`` but ``"gd"``).

    Example:
        >>> from graphformer.datasets import TreeNeighborsMatch
        >>> from graphformer.studies.graph_tasks import build_tree_model
        >>> model = build_tree_model("gin", TreeNeighborsMatch(2))     # r + 1 = 3 layers
        >>> len(model.stack.layers), sum(p.numel() for p in model.parameters())
        (3, 7364)
    """
    kwargs = {"heads": 4} if conv in ("gat", "attention") else {}
    if conv == "gin":
        kwargs = {"batch_norm": True}
    return GraphModel.build(conv, [dataset.num_keys, dataset.num_keys], hidden,
                            dataset.num_classes, num_layers=dataset.depth + 1, method=method,
                            block=TREE_BLOCKS.get(conv, "post_norm"), **kwargs)


def train_graph_task(model: GraphModel, dataset, budget: Budget, *, seed: int = 0,
                     fully_adjacent: bool = False, device: torch.device = torch.device("cpu"),
                     progress: Optional[Callable[[float], None]] = None,
                     compile: Union[bool, str] = False,
                     trim: Optional[bool] = None) -> Dict[str, float]:
    r"""Trains ``model`` on the stratified split of ``dataset`` with the studies' fit loop
    (:func:`graphformer.studies.fit.fit`: Adam, AdamW when the budget has weight decay, and
    the budget's learning-rate schedule; see :class:`Budget`; on Tree-NeighborsMatch, its
    :meth:`~Budget.at_depth`). ``compile`` trains through
    :func:`torch.compile` (``True``: inductor; a string: that backend); the evaluations
    stay eager. ``trim`` lays the batches out so that each layer computes only what the
    read-out needs (see :class:`SameTopologyLoader`); ``None`` (default) trims whenever
    that is exact (:func:`trims_exactly`) and there is no fully-adjacent layer, so the
    numbers are those of the untrimmed model up to the order of floating-point sums.

    Returns the best train accuracy (what Alon & Yahav report), the test accuracy at that
    evaluation, the steps run, the wall time and the process's CPU time (the fairer clock
    on a shared machine when torch runs one thread). ``progress`` is called with the share of
    the step budget done after every evaluation."""
    if isinstance(dataset, TreeNeighborsMatch):
        budget = budget.at_depth(dataset.depth)  # the paper's batch size at this depth
    budget.validate()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = dataset.split(seed)
    if budget.max_graphs is not None and len(dataset) > budget.max_graphs:
        keep = max(1, round(budget.max_graphs * train_idx.numel() / len(dataset)))
        train_idx = train_idx[:keep]
        test_idx = test_idx[:max(1, budget.max_graphs - keep)]
    if trim is None:
        trim = not fully_adjacent and trims_exactly(model)
    layers = model.stack.num_layers if trim else None
    make = lambda idx, shuffle, size: SameTopologyLoader(  # noqa: E731
        dataset, idx, size, shuffle=shuffle, fully_adjacent=fully_adjacent, generator=gen,
        device=device, trim_layers=layers)
    train_loader = make(train_idx, True, budget.batch_size)
    train_eval, test_loader = make(train_idx, False, 1024), make(test_idx, False, 1024)
    model.to(device)
    forward = model
    if compile:
        forward = torch.compile(model, **({} if compile is True else {"backend": compile}))
    result = fit(model, budget, train_loader, train_eval, test_loader,
                 num_train=train_idx.numel(), forward=forward, progress=progress)
    return dict(result, num_train=int(train_idx.numel()), num_test=int(test_idx.numel()))


def profile_steps(models, depths, batch_sizes, *, steps: int = 10, seed: int = 0,
                  device: torch.device = torch.device("cpu"),
                  compile: Union[bool, str] = False) -> List[Dict]:
    r"""Times one training step (forward, backward, Adam) of the tree model: the median
    over ``steps`` steps after two warm-up steps, for every model, depth and batch size,
    untrimmed and, where that is exact (:func:`trims_exactly`), trimmed to what the
    read-out needs. Returns rows with ``ms_per_step`` and ``graphs_per_s``."""
    rows = []
    for depth in depths:
        dataset = TreeNeighborsMatch(depth, seed=seed)
        for conv in models:
            for size in batch_sizes:
                torch.manual_seed(seed)
                model = build_tree_model(conv, dataset).to(device)
                for trim in (False, True) if trims_exactly(model) else (False,):
                    rows.append(_profile_one(conv, model, dataset, size, steps, device,
                                             compile, trim))
    return rows


def _profile_one(name: str, model: GraphModel, dataset, size: int, steps: int,
                 device: torch.device, compile: Union[bool, str], trim: bool) -> Dict:
    forward = model
    if compile:
        forward = torch.compile(model, **({} if compile is True else {"backend": compile}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    index = torch.arange(min(len(dataset), size * (steps + 2)))
    loader = SameTopologyLoader(dataset, index, size, device=device,
                                trim_layers=model.stack.num_layers if trim else None)
    batches = [b for b in loader if b.y.numel() == size] or list(loader)
    times = []
    for i in range(steps + 2):
        batch = batches[i % len(batches)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(batch.logits(forward), batch.y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    ms = 1e3 * sorted(times[2:])[len(times[2:]) // 2]
    return dict(model=name, depth=dataset.depth, batch_size=batch.y.numel(), trimmed=trim,
                nodes=batch.x.size(0), ms_per_step=ms,
                graphs_per_s=batch.y.numel() / ms * 1e3)


def profile_table(rows: List[Dict]) -> str:
    r"""The rows of :func:`profile_steps` as a markdown table."""
    lines = ["| model | depth | batch | trimmed | nodes | ms/step | graphs/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['depth']} | {r['batch_size']} | "
              f"{'yes' if r.get('trimmed') else 'no'} | {r['nodes']} | "
              f"{r['ms_per_step']:.1f} | {r['graphs_per_s']:.0f} |" for r in rows]
    return "\n".join(lines)
