r"""Shared plumbing of the generated data sets."""
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data, InMemoryDataset

from graphformer.checks import check_int  # re-exported: the data sets' argument check
from graphformer.datasets.split import stratified_split

__all__ = ['GeneratedDataset', 'collate_same_topology', 'check_int']


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
    :meth:`split`, and fast mini-batches (:meth:`batch`,
    :meth:`iter_batches`) for graphs that share one size."""

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

    # ------------------------------------------------------------ batching
    def _positions(self, index: Union[Tensor, Sequence[int]]) -> Tensor:
        r"""Graph positions from integer indices (negative ones count from the
        end) or a boolean mask with one entry per graph, checked."""
        n = len(self)
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            if index.numel() != n:
                raise ValueError(f"a boolean index needs one entry per graph "
                                 f"({n}), got {index.numel()}")
            return index.view(-1).nonzero().view(-1)
        if index.dtype.is_floating_point or index.is_complex():
            raise TypeError(f"index must hold integers, got {index.dtype}")
        index = index.long().view(-1)
        if index.numel() and (int(index.max()) >= n or int(index.min()) < -n):
            bad = int(index.max()) if int(index.max()) >= n else int(index.min())
            raise IndexError(f"index {bad} is out of range for a data set of "
                             f"{n} graphs")
        return index % max(n, 1)

    def _global_index(self, index: Union[Tensor, Sequence[int], None]) -> Tensor:
        own = torch.as_tensor(list(self.indices()), dtype=torch.long)
        if index is None:
            return own
        return own[self._positions(index)]

    def _strides(self) -> Optional[Dict[str, int]]:
        r"""Per-graph size of every stored attribute when all graphs have the
        same sizes (else :obj:`None`)."""
        if not hasattr(self, '_stride_cache'):
            strides: Optional[Dict[str, int]] = {}
            for key, s in self.slices.items():
                d = s[1:] - s[:-1]
                if d.numel() == 0 or bool((d != d[0]).any()):
                    strides = None
                    break
                strides[key] = int(d[0])
            if strides is not None and 'x' not in strides:
                strides = None
            self._stride_cache = strides
        return self._stride_cache

    def batch(self, index: Union[Tensor, Sequence[int], None] = None) -> Batch:
        r"""The graphs at :obj:`index` (positions in this data set or subset;
        all when :obj:`None`) as one mini-batch, equal to
        :obj:`Batch.from_data_list([self[i] for i in index])` but built by
        slicing the stored tensors, without a Python loop over graphs, when
        all graphs have the same size (always so for the generated data
        sets). :obj:`transform` is then applied once to the whole batch, so
        it must accept a batch, as graphformer's transforms do.

        Args:
            index (torch.Tensor or list, optional): Graph positions, or a
                boolean mask. (default: :obj:`None`)
        """
        gidx = self._global_index(index)
        strides = self._strides()
        if strides is None:
            return Batch.from_data_list([self.get(int(i)) if self.transform
                                         is None else self.transform(
                                             self.get(int(i))) for i in gidx])
        B = gidx.numel()
        n = strides['x']
        offset = torch.arange(B) * n
        out = {}
        for key, stride in strides.items():
            value = self._data[key]
            dim = self._data.__cat_dim__(key, value)
            dim = dim % value.dim()
            v = value.movedim(dim, 0)
            rest = v.shape[1:]
            v = v.reshape(-1, stride, *rest)[gidx]  # [B, stride, ...]
            if 'index' in key and 'batch' not in key:
                v = v + offset.view(B, 1, *([1] * len(rest)))
            out[key] = v.reshape(B * stride, *rest).movedim(0, dim)
        batch = Batch(**out, batch=torch.arange(B).repeat_interleave(n),
                      ptr=torch.arange(B + 1) * n)
        if self.transform is not None:
            batch = self.transform(batch)
        return batch

    def iter_batches(
        self,
        batch_size: int,
        index: Union[Tensor, Sequence[int], None] = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> Iterator[Batch]:
        r"""Mini-batches of :meth:`batch` over :obj:`index` (all graphs when
        :obj:`None`), in order or shuffled with a :obj:`seed` (pass e.g.
        :obj:`seed=epoch` for a new, reproducible order every epoch); the
        last batch may be smaller.

        Args:
            batch_size (int): Graphs per batch.
            index (torch.Tensor or list, optional): Graph positions.
            shuffle (bool, optional): Shuffle the order. (default:
                :obj:`False`)
            seed (int, optional): Seed of the shuffle. (default: :obj:`0`)
        """
        batch_size = check_int('batch_size', batch_size, 1)
        pos = torch.arange(len(self)) if index is None else \
            self._positions(index)
        if shuffle:
            gen = torch.Generator().manual_seed(int(seed))
            pos = pos[torch.randperm(pos.numel(), generator=gen)]
        for start in range(0, pos.numel(), batch_size):
            yield self.batch(pos[start:start + batch_size])
