r"""Input encoders of graph models: integer features to vectors, and the positional and
structural encodings (PE/SE) of GraphGPS (Rampášek et al. 2022) on the encodings that
PyG's transforms compute,

* :class:`RWSEEncoder`: random-walk structural encodings
  (:class:`~torch_geometric.transforms.AddRandomWalkPE`, ``data.random_walk_pe``
  ``[N, walk_length]``): a batch norm of the raw encodings, then a linear map (GraphGPS's
  ``KernelPENodeEncoder`` with ``model: Linear, raw_norm_type: BatchNorm``);
* :class:`LapPEEncoder`: Laplacian eigenvector encodings
  (:class:`~torch_geometric.transforms.AddLaplacianEigenvectorPE`,
  ``data.laplacian_eigenvector_pe`` ``[N, k]``), with a random sign flip of each
  eigenvector in training only (an eigenvector's sign is arbitrary), then GraphGPS's
  DeepSet encoder over the ``k`` eigenvectors.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from graphformer.checks import check_int

__all__ = ["FeatureEmbedding", "RWSEEncoder", "LapPEEncoder", "PE_ENCODERS", "build_pe_encoder"]


class FeatureEmbedding(nn.Module):
    r"""Integer features ``[N, F]`` (or ``[N]`` for one column) to vectors: the sum of
    one embedding per column, :math:`\mathbf{h}_i = \sum_f \mathbf{E}_f[x_{if}]` (key plus
    value in Tree-NeighborsMatch; atom or bond type in ZINC).

    Example:
        >>> import torch
        >>> from graphformer.nn import FeatureEmbedding
        >>> embed = FeatureEmbedding([10, 4], 16)     # two integer columns, 10 and 4 values
        >>> embed(torch.tensor([[3, 1], [9, 0]])).shape
        torch.Size([2, 16])
    """

    def __init__(self, num_embeddings: Sequence[int], channels: int, name: str = "x") -> None:
        super().__init__()
        self.num_embeddings = [check_int(f"num_embeddings[{i}]", n, 1, error=ValueError)
                               for i, n in enumerate(num_embeddings)]
        if not self.num_embeddings:
            raise ValueError("num_embeddings needs one vocabulary size per feature column")
        self.name = name
        self.embeddings = nn.ModuleList(nn.Embedding(n, channels) for n in self.num_embeddings)

    def forward(self, x: Tensor) -> Tensor:
        F = len(self.embeddings)
        if isinstance(x, Tensor) and x.dim() == 1 and F == 1:
            x = x.view(-1, 1)
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != F:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{self.name} must be integer features [N, {F}], got {got}")
        if x.is_floating_point() or x.dtype == torch.bool:
            raise TypeError(f"{self.name} must hold integer types (an embedding per column), "
                            f"got dtype {x.dtype}")
        for f, n in enumerate(self.num_embeddings):
            col = x[:, f]
            if torch.compiler.is_compiling():
                break  # checked on the eager path; a check here would break the graph
            if col.numel() and (int(col.min()) < 0 or int(col.max()) >= n):
                bad = int(col.max()) if int(col.max()) >= n else int(col.min())
                raise ValueError(f"{self.name} column {f} has value {bad} outside [0, {n})")
        return sum(emb(x[:, f]) for f, emb in enumerate(self.embeddings))


def _check_pe(pe: Tensor, width: int, transform: str, attr: str) -> None:
    if not isinstance(pe, Tensor) or not pe.is_floating_point():
        got = getattr(pe, "dtype", type(pe).__name__)
        raise TypeError(f"pe must be a float tensor [num_nodes, {width}] from {transform} "
                        f"(data.{attr}), got {got}")
    if pe.dim() != 2 or pe.size(1) != width:
        raise ValueError(f"pe must have shape [num_nodes, {width}] (the encoder was built "
                         f"for {width} columns, as {transform} gives them in data.{attr}), "
                         f"got {list(pe.shape)}")


class RWSEEncoder(nn.Module):
    r"""Random-walk structural encodings to ``channels``: :math:`\mathbf{W}\,
    \mathrm{BN}(\mathbf{p}_i)` with :math:`\mathbf{p}_i = (RW^k_{ii})_{k=1..K}`, the
    return probabilities of :class:`~torch_geometric.transforms.AddRandomWalkPE`.

    Args:
        walk_length (int): :math:`K`, the columns of ``data.random_walk_pe``.
        channels (int): output size.
        raw_norm (bool): the batch norm on the raw encodings (GraphGPS: on for ZINC).

    Example:
        >>> import torch
        >>> from graphformer.nn import RWSEEncoder
        >>> encoder = RWSEEncoder(20, 8)              # walk length 20 -> 8 channels
        >>> encoder(torch.rand(5, 20)).shape
        torch.Size([5, 8])
    """
    transform = "AddRandomWalkPE"
    attr = "random_walk_pe"

    def __init__(self, walk_length: int, channels: int, raw_norm: bool = True) -> None:
        super().__init__()
        self.walk_length = check_int("walk_length", walk_length, 1, error=ValueError)
        self.channels = check_int("channels", channels, 1, error=ValueError)
        self.raw_norm = nn.BatchNorm1d(walk_length) if raw_norm else None
        self.lin = nn.Linear(walk_length, channels)

    def forward(self, pe: Tensor) -> Tensor:
        _check_pe(pe, self.walk_length, self.transform, self.attr)
        if self.raw_norm is not None:
            pe = self.raw_norm(pe)
        return self.lin(pe)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.walk_length}, {self.channels})"


class LapPEEncoder(nn.Module):
    r"""Laplacian eigenvector encodings to ``channels`` with GraphGPS's DeepSet encoder,

    .. math::
        \mathbf{h}_i = \sum_{m=1}^{k} \phi(s_m u_{im}), \qquad
        \phi(u) = \mathrm{ReLU}(\mathbf{W}_2\, \mathrm{ReLU}(\mathbf{w}_1 u + \mathbf{b}_1)
        + \mathbf{b}_2),

    where :math:`u_{im}` is node :math:`i`'s entry of the :math:`m`-th eigenvector and
    :math:`s_m = \pm 1` a random sign drawn per eigenvector and batch in training
    (:math:`s_m = 1` in evaluation), as GraphGPS does: an eigenvector's sign is
    arbitrary, so the model must not learn it. PyG's transform gives no eigenvalues, so
    unlike GraphGPS the eigenvalue is not an input of :math:`\phi`. NaN entries (GraphGPS's
    padding of graphs with fewer than ``k + 1`` nodes) are masked out.

    Args:
        k (int): the columns of ``data.laplacian_eigenvector_pe``.
        channels (int): output size.

    Example:
        >>> import torch
        >>> from graphformer.nn import LapPEEncoder
        >>> encoder = LapPEEncoder(4, 8)              # 4 eigenvectors -> 8 channels
        >>> encoder(torch.randn(5, 4)).shape
        torch.Size([5, 8])
    """
    transform = "AddLaplacianEigenvectorPE"
    attr = "laplacian_eigenvector_pe"

    def __init__(self, k: int, channels: int) -> None:
        super().__init__()
        self.k = check_int("k", k, 1, error=ValueError)
        self.channels = check_int("channels", channels, 1, error=ValueError)
        self.lin_in = nn.Linear(1, channels)
        self.lin_out = nn.Linear(channels, channels)

    def sign_flip(self, pe: Tensor) -> Tensor:
        r"""``pe`` with each eigenvector (column) multiplied by a random sign in
        training; unchanged in evaluation."""
        if not self.training:
            return pe
        sign = torch.randint(0, 2, (1, pe.size(1)), device=pe.device).to(pe.dtype) * 2 - 1
        return pe * sign

    def forward(self, pe: Tensor) -> Tensor:
        _check_pe(pe, self.k, self.transform, self.attr)
        pe = self.sign_flip(pe)
        h = torch.relu(self.lin_out(torch.relu(self.lin_in(pe.unsqueeze(-1)))))  # [N, k, C]
        h = h.masked_fill(torch.isnan(pe).unsqueeze(-1), 0.0)
        return h.sum(1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.k}, {self.channels})"


PE_ENCODERS = {"rwse": RWSEEncoder, "lappe": LapPEEncoder}


def build_pe_encoder(name: str, pe_dim: int, channels: int) -> nn.Module:
    r"""A PE/SE encoder by name: ``"rwse"`` (``pe_dim`` = walk length) or ``"lappe"``
    (``pe_dim`` = number of eigenvectors ``k``)."""
    if name not in PE_ENCODERS:
        raise ValueError(f"unknown pe {name!r}; choose one of {', '.join(PE_ENCODERS)}")
    return PE_ENCODERS[name](pe_dim, channels)
