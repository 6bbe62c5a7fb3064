r"""Training and diagnosis of attention stacks on the causal sequence tasks (Barbero et
al. 2024), with and without pause tokens, with gradient-descent or Nesterov stacking."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from graphformer.datasets import CopyFirstToken, CopyLastToken, CountOnes
from graphformer.diagnostics import runway_profile
from graphformer.graph import CausalGraph
from graphformer.models import FeatureEmbedding, GraphModel
from graphformer.nn import AttentionConv, FeedForward, Oracle, Stack
from graphformer.studies.fit import fit
from graphformer.studies.graph_tasks import Budget
from graphformer.transforms import AddPauseTokens

SEQUENCE_TASKS = {"copy_first": CopyFirstToken, "copy_last": CopyLastToken,
                  "count_ones": CountOnes}


def build_sequence_model(vocab_size: int, num_classes: int, hidden: int = 32,
                         num_layers: int = 2, heads: int = 2, method: str = "gd",
                         scheme: str = "lie_trotter") -> GraphModel:
    r"""A small causal Transformer as a :class:`GraphModel`: token embedding (one extra
    id for the pause token), pre-norm blocks of rotary :class:`AttentionConv` and
    :class:`FeedForward`, a read-out at one position per sequence."""
    layers = [[Oracle(AttentionConv(hidden, hidden // heads, heads=heads, root_weight=False,
                                    rotary=True),
                      norm=nn.LayerNorm(hidden), out=nn.Linear(hidden, hidden)),
               Oracle(FeedForward(hidden), norm=nn.LayerNorm(hidden))]
              for _ in range(num_layers)]
    stack = Stack(layers, method=method, scheme=scheme, channels=hidden)
    head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_classes))
    return GraphModel(FeatureEmbedding([vocab_size + 1], hidden), stack, head, readout="node")


#: The sequence tasks' budget: the fast budget's optimisation (AdamW, a warm-up over 5% of
#: the steps to 3e-3 and a cosine decay) over ``epochs`` passes of batches of 64, an
#: evaluation after every epoch, a stop at train accuracy 1.0.
SEQUENCE_BATCH = 64


def sequence_budget(epochs: int) -> Budget:
    r"""The budget of a sequence run of at most ``epochs`` epochs (:data:`SEQUENCE_BATCH`)."""
    return replace(Budget.fast(), batch_size=SEQUENCE_BATCH, max_epochs=epochs,
                   eval_every_epochs=1, min_steps=None)


class SequenceBatch(NamedTuple):
    r"""One mini-batch of :class:`SequenceBatcher`."""
    x: Tensor
    graph: CausalGraph
    readout: Tensor
    y: Tensor

    def logits(self, model: GraphModel) -> Tensor:
        r"""``model``'s predictions at the read-out positions."""
        return model(self.x, self.graph, index=self.readout)


class SequenceBatcher:
    r"""Mini-batches (:class:`SequenceBatch`) of equal-length token sequences on the
    causal DAG (with ``causal=False``, every pair of a sequence: the control without the
    causal mask); with ``num_pause > 0`` every sequence gets that many pause tokens
    appended (:class:`~graphformer.transforms.AddPauseTokens`, suffix layout) and the
    read-out moves to the last pause, so the answer is given after "thinking"."""

    def __init__(self, dataset, index: Tensor, batch_size: int, num_pause: int = 0,
                 shuffle: bool = False, generator: Optional[torch.Generator] = None,
                 device: torch.device = torch.device("cpu"), causal: bool = True) -> None:
        self.tokens = dataset.tokens
        self.y = dataset.labels
        self.length = self.tokens.size(1)
        self.pause_id = dataset.vocab_size  # the extra embedding row
        self.index, self.batch_size, self.shuffle = index, batch_size, shuffle
        self.generator, self.device = generator, device
        self.pauses = AddPauseTokens(num_pause) if num_pause else None
        self.causal = causal
        self._graphs: Dict[int, Tuple[CausalGraph, Optional[Tensor]]] = {}

    def graph(self, num_sequences: int) -> Tuple[CausalGraph, Optional[Tensor]]:
        if num_sequences not in self._graphs:
            graph = CausalGraph.from_lengths([self.length] * num_sequences)
            index = None
            if self.pauses is not None:
                graph, _, index = self.pauses(graph)
            if not self.causal:  # the same sequences (pauses included), every pair
                graph = CausalGraph(graph.ptr, causal=False)
            self._graphs[num_sequences] = (graph.to(self.device),
                                           None if index is None else index.to(self.device))
        return self._graphs[num_sequences]

    def make(self, tokens: Tensor) -> Tuple[Tensor, CausalGraph, Tensor]:
        graph, index = self.graph(tokens.size(0))
        x = tokens.reshape(-1).to(self.device)
        if index is not None:
            full = torch.full((graph.num_nodes,), self.pause_id, dtype=torch.long, device=self.device)
            x = full.index_copy(0, index, x)
        return x.view(-1, 1), graph, graph.ptr[1:] - 1

    def __len__(self) -> int:
        return -(-self.index.numel() // self.batch_size)

    def __iter__(self) -> Iterator[SequenceBatch]:
        order = self.index
        if self.shuffle:
            order = order[torch.randperm(order.numel(), generator=self.generator)]
        for start in range(0, order.numel(), self.batch_size):
            ids = order[start:start + self.batch_size]
            x, graph, readout = self.make(self.tokens[ids])
            yield SequenceBatch(x, graph, readout, self.y[ids].to(self.device))


def train_sequence_task(model: GraphModel, dataset, budget: Budget, *, num_pause: int = 0,
                        causal: bool = True, seed: int = 0,
                        device: torch.device = torch.device("cpu"),
                        progress: Optional[Callable[[float], None]] = None) -> Dict[str, float]:
    r"""Trains ``model`` on the stratified split of ``dataset`` with the studies' fit loop
    (:func:`graphformer.studies.fit.fit`) under ``budget`` (e.g. :func:`sequence_budget`);
    ``causal=False`` drops the causal mask (every position attends to every other: the
    control). Returns the best train accuracy, the test accuracy on the held-out split at
    that evaluation, the steps, epochs and seconds."""
    budget.validate()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = dataset.split(seed)
    make = lambda idx, size, shuffle: SequenceBatcher(  # noqa: E731
        dataset, idx, size, num_pause, shuffle, gen, device, causal)
    model.to(device)
    result = fit(model, budget, make(train_idx, budget.batch_size, True),
                 make(train_idx, 512, False), make(test_idx, 512, False),
                 num_train=train_idx.numel(), progress=progress)
    return dict(result, num_train=int(train_idx.numel()), num_test=int(test_idx.numel()))


def sequence_runway(model: GraphModel, dataset, num_pause: int = 0) -> Tensor:
    r"""Runway profile of one sequence: ``[L + 1, T]``, the sensitivity of the read-out
    state after each layer to each real input token (pause inputs left out)."""
    model.eval()
    batcher = SequenceBatcher(dataset, torch.arange(1), 1, num_pause)
    x, graph, readout = batcher.make(batcher.tokens[:1])
    h = model.encoder(x).detach()
    profile = runway_profile(lambda z: model.stack(z, graph, return_states=True)[1], h,
                             target=int(readout[0]))
    _, index = batcher.graph(1)
    return profile if index is None else profile[:, index]
