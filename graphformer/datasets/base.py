r"""Shared plumbing of the generated data sets."""
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset

from graphformer.datasets.split import stratified_split

__all__ = ['GeneratedDataset', 'collate_same_topology', 'check_int']


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def collate_same_topology(
    x: Tensor,
    edge_index: Optional[Tensor],
    y: Tensor,
    root: int,
    **graph_attrs: Tensor,
) -> Tuple[Data, Dict[str, Tensor]]:
    r"""Builds :class:`InMemoryDataset` storage for :obj:`G` graphs that share
    one topology, without a Python loop over graphs.

    :obj:`x` is :obj:`[G, n, ...]`, :obj:`edge_index` the shared
    :obj:`[2, E]` local edge list (or :obj:`None`: no edges stored),
    :obj:`y` is :obj:`[G]`, :obj:`root` the read-out node, and every extra attribute a per-graph :obj:`[G]` tensor of
    node indices (stored like :obj:`root_index`). Equal to
    :meth:`InMemoryDataset.collate` on the list of per-graph :class:`Data`.
    """
    G, n = x.size(0), x.size(1)
    root_mask = torch.zeros(G, n, dtype=torch.bool)
    root_mask[:, root] = True
    data = Data(
        x=x.reshape(G * n, *x.shape[2:]),
        y=y.view(-1),
        root_mask=root_mask.view(-1),
        root_index=torch.full((G, ), root, dtype=torch.long),
        **{k: v.view(-1) for k, v in graph_attrs.items()},
    )
    ar = torch.arange(G + 1)
    slices = {'x': ar * n, 'y': ar.clone(), 'root_mask': ar * n,
              'root_index': ar.clone()}
    if edge_index is not None:
        data.edge_index = edge_index.repeat(1, G)
        slices['edge_index'] = ar * edge_index.size(1)
    for k in graph_attrs:
        slices[k] = ar.clone()
    return data, slices


class GeneratedDataset(InMemoryDataset):
    r"""Base of the generated data sets: an :class:`InMemoryDataset` built in
    :obj:`__init__` (nothing read or written on disk), with integer graph
    labels, a fixed :obj:`num_classes`, a :obj:`seed` and a stratified
    :meth:`split`."""

    default_test_fraction: float = 0.2

    def _store(self, data: Data, slices: Dict[str, Tensor]) -> None:
        if self.pre_transform is not None:
            self._data, self.slices = data, slices
            data_list = [self.pre_transform(self.get(i))
                         for i in range(self.len())]
            data, slices = self.collate(data_list)
        self.data, self.slices = data, slices

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def labels(self) -> Tensor:
        r"""The graph labels, :obj:`[len(self)]` (of the selected graphs
        only, for a subset such as :obj:`dataset[train_idx]`)."""
        return self._select(self._data.y)

    def _select(self, per_graph: Tensor) -> Tensor:
        if self._indices is None:
            return per_graph
        return per_graph[torch.as_tensor(list(self.indices()),
                                         dtype=torch.long)]

    def split(
        self,
        seed: Optional[int] = None,
        test_fraction: Optional[float] = None,
    ) -> Tuple[Tensor, Tensor]:
        r"""Stratified train/test split of the graph indices, see
        :func:`~graphformer.datasets.split.stratified_split`.

        Args:
            seed (int, optional): Seed of the split; the data set's own seed
                when :obj:`None`. (default: :obj:`None`)
            test_fraction (float, optional): Share of every class in the test
                set; :obj:`default_test_fraction` of the class when
                :obj:`None`. (default: :obj:`None`)

        Returns:
            (train_idx, test_idx); use them as :obj:`dataset[train_idx]`.
        """
        return stratified_split(
            self.labels,
            self.default_test_fraction
            if test_fraction is None else test_fraction,
            self.seed if seed is None else seed,
        )
