r"""Training and diagnosis of attention stacks on the causal sequence tasks (Barbero et
al. 2024), with and without pause tokens, with gradient-descent or Nesterov stacking."""
from __future__ import annotations

import time
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphformer.datasets import CopyFirstToken, CopyLastToken, CountOnes
from graphformer.diagnostics import runway_profile
from graphformer.graph import CausalGraph
from graphformer.models import FeatureEmbedding, GraphModel
from graphformer.nn import AttentionConv, FeedForward, Oracle, Stack
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


class SequenceBatcher:
    r"""Mini-batches ``(x, graph, readout, y)`` of equal-length token sequences on the
    causal DAG; with ``num_pause > 0`` every sequence gets that many pause tokens
    appended (:class:`~graphformer.transforms.AddPauseTokens`, suffix layout) and the
    read-out moves to the last pause, so the answer is given after "thinking"."""

    def __init__(self, dataset, index: Tensor, batch_size: int, num_pause: int = 0,
                 shuffle: bool = False, generator: Optional[torch.Generator] = None,
                 device: torch.device = torch.device("cpu")) -> None:
        self.tokens = dataset.tokens
        self.y = dataset.labels
        self.length = self.tokens.size(1)
        self.pause_id = dataset.vocab_size  # the extra embedding row
        self.index, self.batch_size, self.shuffle = index, batch_size, shuffle
        self.generator, self.device = generator, device
        self.pauses = AddPauseTokens(num_pause) if num_pause else None
        self._graphs: Dict[int, Tuple[CausalGraph, Optional[Tensor]]] = {}

    def graph(self, num_sequences: int) -> Tuple[CausalGraph, Optional[Tensor]]:
        if num_sequences not in self._graphs:
            graph = CausalGraph.from_lengths([self.length] * num_sequences)
            index = None
            if self.pauses is not None:
                graph, _, index = self.pauses(graph)
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

    def __iter__(self) -> Iterator[Tuple[Tensor, CausalGraph, Tensor, Tensor]]:
        order = self.index
        if self.shuffle:
            order = order[torch.randperm(order.numel(), generator=self.generator)]
        for start in range(0, order.numel(), self.batch_size):
            ids = order[start:start + self.batch_size]
            x, graph, readout = self.make(self.tokens[ids])
            yield x, graph, readout, self.y[ids].to(self.device)


@torch.no_grad()
def sequence_accuracy(model: GraphModel, batcher: SequenceBatcher) -> float:
    model.eval()
    right = total = 0
    for x, graph, readout, y in batcher:
        right += int((model(x, graph, index=readout).argmax(-1) == y).sum())
        total += y.numel()
    return right / max(total, 1)


def train_sequence_task(model: GraphModel, dataset, *, num_pause: int = 0, epochs: int = 30,
                        batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                        device: torch.device = torch.device("cpu")) -> Dict[str, float]:
    r"""Trains on the stratified split with AdamW and reports the best test accuracy
    (and the train accuracy at that epoch)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = dataset.split(seed)
    train = SequenceBatcher(dataset, train_idx, batch_size, num_pause, True, gen, device)
    train_eval = SequenceBatcher(dataset, train_idx, 512, num_pause, device=device)
    test = SequenceBatcher(dataset, test_idx, 512, num_pause, device=device)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    best = dict(test_acc=-1.0, train_acc=0.0, epoch=0)
    start = time.perf_counter()
    steps = 0
    for epoch in range(1, epochs + 1):
        model.train()
        for x, graph, readout, y in train:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x, graph, index=readout), y).backward()
            opt.step()
            steps += 1
        test_acc = sequence_accuracy(model, test)
        if test_acc > best["test_acc"]:
            best = dict(test_acc=test_acc, train_acc=sequence_accuracy(model, train_eval),
                        epoch=epoch)
        if best["train_acc"] >= 1.0 and best["test_acc"] >= 1.0:
            break
    best.update(epochs=epoch, steps=steps, seconds=time.perf_counter() - start)
    return best


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
