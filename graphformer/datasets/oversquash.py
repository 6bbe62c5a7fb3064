r"""Synthetic over-squashing benchmarks, generated and seeded.

* :class:`TreeNeighborsMatch` -- Alon & Yahav, "On the Bottleneck of Graph
  Neural Networks and its Practical Implications" (ICLR 2021).
* :class:`RingTransfer`, :class:`CrossedRingTransfer`,
  :class:`CliquePathTransfer` -- the graph-transfer tasks of Di Giovanni et
  al., "On Over-Squashing in Message Passing Neural Networks: The Impact of
  Width, Depth, and Topology" (ICML 2023).

Every graph of these data sets has one read-out node, marked by
:obj:`root_mask` (bool, one per node) and :obj:`root_index` (its node index;
PyG increments it when graphs are batched, so :obj:`batch.root_index` points
at the read-out node of every graph of a mini-batch). A graph-level model
reads its prediction at that node: :obj:`out[batch.root_index]`.
"""
import itertools
import math
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from graphformer.datasets.base import (
    GeneratedDataset,
    check_int,
    collate_same_topology,
)
from graphformer.datasets.synthetic import binary_tree_batch

__all__ = [
    'TreeNeighborsMatch',
    'RingTransfer',
    'CrossedRingTransfer',
    'CliquePathTransfer',
]


class TreeNeighborsMatch(GeneratedDataset):
    r"""Tree-NeighborsMatch ("dictionary look-up" on a binary tree), from
    Alon & Yahav, `"On the Bottleneck of Graph Neural Networks and its
    Practical Implications" <https://arxiv.org/abs/2006.05205>`_ (ICLR 2021).

    Every graph is a complete binary tree of depth :math:`r` with
    :math:`2^{r+1}-1` nodes, numbered in heap order (root 0, children of
    :math:`i` at :math:`2i+1, 2i+2`, leaves :math:`2^r-1, \dots, 2^{r+1}-2`
    from left to right). Edges point from every child to its parent (the
    direction messages flow towards the root), plus one self-loop per node.
    Leaf :math:`k \in \{0, \dots, 2^r-1\}` holds key :math:`k+1` and value
    :math:`\pi(k)+1` for a random permutation :math:`\pi` of the
    :math:`2^r` leaves; the root holds a query key :math:`q+1`; the label is
    the value of the leaf with that key,

    .. math::
        y = \pi(q) \in \{0, \dots, 2^r - 1\} \quad (2^r \text{ classes}),

    and an :math:`r`-hop message path from the queried leaf to the root is
    needed to answer. Node features are integer pairs :obj:`x[i] = (key,
    value)` (:obj:`LongTensor [n, 2]`, 0 = absent: interior nodes are
    :obj:`(0, 0)`, the root :obj:`(q+1, 0)`). The paper's code concatenates
    one-hot key and one-hot value and applies a linear layer, which is the
    same as summing a key embedding and a value embedding
    (:obj:`Embedding(2**r + 1, h)` for each; the learned rows of the absent
    index 0 play the part of the linear layer's bias).

    Data-set size, as in the paper's code: for :math:`r \le 3` up to 1000
    distinct permutations drawn from all :math:`(2^r)!` (all 24 for
    :math:`r=2`); for :math:`r > 3`,
    :math:`\min(1000, (2^r)!, \lfloor 32000 / 2^r \rfloor)` random
    permutations (distinct here; the paper's code does not check, a
    collision being vanishingly rare); each permutation is combined with
    every one of the :math:`2^r` query keys. This gives 96, 8000, 16000 and
    32000 graphs for :math:`r = 2, 3, 4, \geq 5`, every class exactly
    equally often. :meth:`split` gives the paper's 80/20 stratified split.
    The paper reports *train* accuracy.

    Args:
        depth (int): Tree depth :math:`r \geq 1`.
        seed (int, optional): Seed of the permutations and of the default
            split. (default: :obj:`0`)
        num_permutations (int, optional): Cap on the number of permutations.
            (default: :obj:`1000`)
        max_examples (int, optional): Cap on permutations times keys for
            :math:`r > 3`. (default: :obj:`32000`)
        self_loops (bool, optional): Add a self-loop to every node.
            (default: :obj:`True`)
        transform (callable, optional): Applied on access. (default:
            :obj:`None`)
        pre_transform (callable, optional): Applied once to every graph.
            (default: :obj:`None`)

    Every graph stores :obj:`x`, :obj:`edge_index`, :obj:`y`,
    :obj:`root_mask` and :obj:`root_index` (always 0); the fully-adjacent
    last layer of the paper adds an edge from every node to
    :obj:`root_index`, see :class:`graphformer.transforms.FullyAdjacentLastLayer`.

    Example:
        >>> from graphformer.datasets import TreeNeighborsMatch
        >>> dataset = TreeNeighborsMatch(2)       # all 24 permutations x 4 query keys
        >>> len(dataset), dataset.num_classes, dataset[0].num_nodes
        (96, 4, 7)
    """

    def __init__(
        self,
        depth: int,
        seed: int = 0,
        num_permutations: int = 1000,
        max_examples: int = 32000,
        self_loops: bool = True,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
    ) -> None:
        depth = check_int('depth', depth, 1)
        if depth > 12:
            raise ValueError(
                f"depth {depth} gives trees of {2 ** (depth + 1) - 1} nodes; "
                f"depths above 12 are not supported")
        self.depth = depth
        self.seed = int(seed)
        self.num_permutations = check_int('num_permutations',
                                           num_permutations, 1)
        self.max_examples = check_int('max_examples', max_examples, 1)
        self.self_loops = bool(self_loops)
        self.num_leaves = 2**depth
        self._num_classes = self.num_leaves
        super().__init__(None, transform, pre_transform)

        perms = self._permutations()  # [P, L]
        P, L = perms.shape
        n = 2 * L - 1
        keys = torch.arange(L).repeat(P)  # query key of each example
        perms_g = perms.repeat_interleave(L, dim=0)  # [G, L]
        G = P * L
        x = torch.zeros(G, n, 2, dtype=torch.long)
        x[:, 0, 0] = keys + 1
        x[:, L - 1:, 0] = torch.arange(1, L + 1)
        x[:, L - 1:, 1] = perms_g + 1
        y = perms_g.gather(1, keys.view(-1, 1)).view(-1)
        data, slices = collate_same_topology(x, self.tree_edge_index(), y, 0)
        self._store(data, slices)

    def tree_edge_index(self) -> Tensor:
        r"""The shared :obj:`[2, E]` edge list: child :math:`\to` parent
        edges, then the self-loops."""
        edge_index, _ = binary_tree_batch(1, self.depth, self_loops=self.self_loops)
        return edge_index

    @property
    def leaf_index(self) -> Tensor:
        r"""Node index of leaf :math:`k` (key :math:`k+1`), :obj:`[2^r]`."""
        return torch.arange(self.num_leaves - 1, 2 * self.num_leaves - 1)

    @property
    def num_keys(self) -> int:
        r"""Size of the key and the value vocabularies, 0 (absent)
        included: :math:`2^r + 1`."""
        return self.num_leaves + 1

    @staticmethod
    def permutation_count(depth: int, num_permutations: int = 1000,
                          max_examples: int = 32000) -> int:
        r"""How many permutations the data set at ``depth`` holds (its size is that
        times :math:`2^r`), known without generating it."""
        L = 2**depth
        count = num_permutations if depth <= 3 else min(num_permutations, max_examples // L)
        return count if L > 20 else min(count, math.factorial(L))

    def _permutations(self) -> Tensor:
        L = self.num_leaves
        rng = np.random.default_rng(self.seed)
        total = math.factorial(L) if L <= 20 else None
        count = self.permutation_count(self.depth, self.num_permutations, self.max_examples)
        if self.depth <= 3:
            all_perms = np.array(list(itertools.permutations(range(L))))
            if count < total:
                pick = np.sort(rng.choice(total, size=count, replace=False))
                all_perms = all_perms[pick]
            perms = all_perms[rng.permutation(len(all_perms))]
        else:
            if count < 1:
                raise ValueError(
                    f"max_examples={self.max_examples} is smaller than the "
                    f"{L} keys of one permutation at depth {self.depth}")
            seen, rows = set(), []
            while len(rows) < count:
                p = rng.permutation(L)
                t = tuple(p.tolist())
                if t not in seen:
                    seen.add(t)
                    rows.append(p)
            perms = np.stack(rows)
        return torch.from_numpy(np.ascontiguousarray(perms)).long()

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(depth={self.depth}, '
                f'num_graphs={len(self)}, num_classes={self.num_classes})')


class _GraphTransfer(GeneratedDataset):
    r"""Base of the graph-transfer tasks of Di Giovanni et al. (2023)."""

    # The paper's code trains on 5000 and tests on 500 graphs.
    default_test_fraction: float = 1.0 / 11.0

    def __init__(
        self,
        distance: int,
        num_graphs: int = 5500,
        num_classes: int = 5,
        seed: int = 0,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        num_test: Optional[int] = None,
    ) -> None:
        self.distance = check_int('distance', distance, self._min_distance)
        self._num_classes = check_int('num_classes', num_classes, 2)
        num_graphs = check_int('num_graphs', num_graphs, 1)
        if num_graphs < 2 * num_classes:
            raise ValueError(
                f"num_graphs={num_graphs} is too small: a split holding every "
                f"one of the {num_classes} classes on both sides needs at "
                f"least {2 * num_classes} graphs")
        self.seed = int(seed)
        self.num_test = (round(num_graphs / 11) if num_test is None else
                         check_int('num_test', num_test, 1))
        if self.num_test >= num_graphs:
            raise ValueError(f"num_test={self.num_test} leaves no training graph of "
                             f"the {num_graphs}")
        super().__init__(None, transform, pre_transform)

        num_nodes, edge_index, root, label_node = self._topology()
        self.num_graph_nodes = num_nodes
        gen = torch.Generator().manual_seed(self.seed)
        y = torch.arange(num_graphs) % num_classes
        y = y[torch.randperm(num_graphs, generator=gen)]
        x = torch.ones(num_graphs, num_nodes, num_classes)
        x[:, root] = 0.0
        x[:, label_node] = torch.nn.functional.one_hot(y, num_classes).float()
        data, slices = collate_same_topology(
            x, edge_index, y, root,
            label_node_index=torch.full((num_graphs, ), label_node))
        self._store(data, slices)

    _min_distance = 2

    def _topology(self) -> Tuple[int, Tensor, int, int]:
        raise NotImplementedError

    @staticmethod
    def _both_ways(edges: List[Tuple[int, int]]) -> Tensor:
        r"""Every listed pair in both directions, in the listed order,
        duplicates kept (the edge multiset of the paper's generator)."""
        pairs = [e for a, b in edges for e in ((a, b), (b, a))]
        return torch.tensor(pairs, dtype=torch.long).t().contiguous()

    @property
    def train_index(self) -> Tensor:
        r"""The paper's training graphs: all but the last :obj:`num_test`
        of the (shuffled) data set."""
        return torch.arange(len(self) - self.num_test)

    @property
    def test_index(self) -> Tensor:
        r"""The paper's test graphs: the last :obj:`num_test` of the
        (shuffled) data set, never trained on."""
        return torch.arange(len(self) - self.num_test, len(self))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(distance={self.distance}, '
                f'num_graphs={len(self)}, num_classes={self.num_classes})')


_TRANSFER_DOC = r"""

    The features follow the paper's public code: every node holds a vector of
    ones, the *read-out* node (:obj:`root_index`, where the prediction is
    made, node 0) holds zeros, and the *label* node (:obj:`label_node_index`,
    at shortest-path distance :math:`r` from the read-out node) holds the
    one-hot class, :obj:`x: [n, num_classes]` floats. Information must
    travel :math:`r` hops from the label node to the read-out node, so the
    paper uses :math:`L = r` layers. (The design document calls the
    one-hot node the "target" and the zero node the "source", the naming of
    the code's comments; in message-passing terms the one-hot node is the
    sender and the zero node the receiver. The attributes here are named by
    role to avoid that ambiguity.) Edges are undirected (both directions
    stored), without self-loops. All graphs share one topology; they differ
    only in the class, which is balanced (counts differ by at most one) and
    shuffled with :obj:`seed`, as the paper's code shuffles its
    class-sorted list before taking the first 5,000 graphs for training and
    the last 500 for testing (:attr:`train_index`, :attr:`test_index`;
    :meth:`split` gives a stratified split instead). The edge list is the
    paper's generator's, duplicates included (its clique path lists every
    clique edge twice, its crossed ring two edges twice), because GCN's
    degree normalisation and GAT's softmax count a duplicate edge twice.

    Args:
        distance (int): Shortest-path distance :math:`r` between read-out
            and label node.
        num_graphs (int, optional): Number of graphs; the paper's code uses
            5000 + 500. (default: :obj:`5500`)
        num_classes (int, optional): Number of classes. (default: :obj:`5`)
        seed (int, optional): Seed of the class order and of the default
            split. (default: :obj:`0`)
        transform (callable, optional): Applied on access.
        pre_transform (callable, optional): Applied once to every graph.
        num_test (int, optional): Graphs held out at the end
            (:attr:`test_index`); :obj:`num_graphs / 11` when :obj:`None`
            (the paper's 500 of 5,500).
"""


class RingTransfer(_GraphTransfer):
    __doc__ = r"""Ring transfer (Di Giovanni et al., 2023): a cycle of
    :math:`2r` nodes, read-out node 0, label node :math:`r` diametrically
    opposite; two paths of length :math:`r` connect them.""" + _TRANSFER_DOC + r"""
    Example:
        >>> from graphformer.datasets import RingTransfer
        >>> dataset = RingTransfer(3, num_graphs=10)
        >>> dataset[0].num_nodes, dataset.num_classes     # a ring of 2r nodes, 5 classes
        (6, 5)
    """

    def _topology(self) -> Tuple[int, Tensor, int, int]:
        r = self.distance
        n = 2 * r
        edges = [(i, i + 1) for i in range(n - 1)] + [(0, n - 1)]
        return n, self._both_ways(edges), 0, r


class CrossedRingTransfer(_GraphTransfer):
    __doc__ = r"""Crossed-ring transfer (Di Giovanni et al., 2023): the ring
    of :class:`RingTransfer` (:math:`2r` nodes) plus crossing edges between
    its two halves. With :math:`\bar{i} = 2r - i` the mirror image of node
    :math:`i`, node :math:`i` gains edges to :math:`\overline{i+1}` and
    :math:`\overline{i-1}` for :math:`1 \le i \le r-1` (the ring edges
    among them kept once), the construction of the paper's code. Every new
    edge joins nodes whose distance to node 0 differs by one, so the
    distance stays :math:`r` while the number of paths and the commute time
    improve.""" + _TRANSFER_DOC + r"""
    Example:
        >>> from graphformer.datasets import CrossedRingTransfer
        >>> dataset = CrossedRingTransfer(3, num_graphs=10)
        >>> dataset
        CrossedRingTransfer(distance=3, num_graphs=10, num_classes=5)
        >>> dataset[0].num_nodes, dataset[0].num_edges  # ring 12, crossing 4, duplicates 4
        (6, 20)
    """

    def _topology(self) -> Tuple[int, Tensor, int, int]:
        r = self.distance
        n = 2 * r
        edges = []
        for i in range(n - 1):  # the paper's loop, in its order
            edges.append((i, i + 1))
            if i < r:
                edges.append((i, n - 1 - i))
                if n + 1 - i < n:
                    edges.append((i, n + 1 - i))
        edges.append((0, n - 1))
        return n, self._both_ways(edges), 0, r


class CliquePathTransfer(_GraphTransfer):
    __doc__ = r"""Clique-path ("lollipop") transfer (Di Giovanni et al.,
    2023): a clique of :math:`c` nodes :math:`0, \dots, c-1` whose node
    :math:`c-1` starts a path :math:`c-1, c, \dots, c+r-2`; read-out node 0
    in the clique, label node :math:`c+r-2` at the end of the path, distance
    :math:`r` (one clique hop plus :math:`r-1` path hops). The default
    :math:`c = \max(2, r-1)` follows the paper's code, which splits
    :math:`n` nodes into a clique of :math:`\lfloor n/2 \rfloor` and a
    path. The high commute time makes this the hardest of the three
    tasks.""" + _TRANSFER_DOC + r"""        clique_size (int, optional): Clique
            size :math:`c \geq 2`; :math:`\max(2, r-1)` when :obj:`None`.

    Example:
        >>> from graphformer.datasets import CliquePathTransfer
        >>> dataset = CliquePathTransfer(4, num_graphs=10)    # clique of max(2, r-1) = 3
        >>> data = dataset[0]
        >>> dataset.clique_size, data.num_nodes, int(data.label_node_index)
        (3, 6, 5)
"""

    def __init__(
        self,
        distance: int,
        num_graphs: int = 5500,
        num_classes: int = 5,
        seed: int = 0,
        clique_size: Optional[int] = None,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        num_test: Optional[int] = None,
    ) -> None:
        if clique_size is not None:
            clique_size = check_int('clique_size', clique_size, 2)
        self.clique_size = clique_size
        super().__init__(distance, num_graphs, num_classes, seed, transform,
                         pre_transform, num_test)

    def _topology(self) -> Tuple[int, Tensor, int, int]:
        r = self.distance
        c = self.clique_size or max(2, r - 1)
        self.clique_size = c
        n = c + r - 1
        # the paper's loops: every ordered clique pair (so each edge twice),
        # the path, then the edge from the clique to the path
        edges = [(i, j) for i in range(c) for j in range(c) if i != j]
        edges += [(i, i + 1) for i in range(c, n - 1)] + [(c - 1, c)]
        return n, self._both_ways(edges), 0, n - 1
