r"""Pictures of token DAGs, drawn with networkx and matplotlib.

:func:`draw_causal_graph` lays every sequence of a
:class:`~graphformer.graph.CausalGraph` out on a row, one node per position, and draws
each edge :math:`j \to i` as an arc: forward edges (:math:`j < i`, the causal ones) bend
above the row and backward edges (full attention) below it, so longer edges rise
higher. Pause tokens (:class:`~graphformer.transforms.AddPauseTokens`) are drawn as
orange squares, and the edges into them in orange.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from graphformer.graph import CausalGraph, check_edge_index

__all__ = ["draw_causal_graph"]

TOKEN_COLOR = "tab:blue"
PAUSE_COLOR = "tab:orange"
EDGE_COLOR = "0.55"


def draw_causal_graph(graph: Union[CausalGraph, Tensor], pause_mask: Optional[Tensor] = None,
                      ax: Optional[Any] = None, *, labels: Optional[Sequence[str]] = None,
                      self_loops: bool = False, rad: float = 0.4,
                      node_size: int = 360, legend: bool = True) -> Any:
    r"""Draws a token DAG: one row per sequence, nodes at their positions, every edge
    :math:`j \to i` (message from source :math:`j` to target :math:`i`) as an arc.

    Args:
        graph (CausalGraph or torch.Tensor): the graph; a plain ``[2, E]`` edge list is
            drawn as one sequence with node ``k`` at position ``k``.
        pause_mask (torch.Tensor, optional): ``[N]`` boolean, ``True`` at pause nodes
            (the ``pause_mask`` of :class:`~graphformer.transforms.PausedGraph`).
        ax (matplotlib.axes.Axes, optional): where to draw (a new figure when ``None``).
        labels (sequence of str, optional): a label per node. By default real tokens
            are numbered from 0 in each sequence and pause nodes are labelled ``p``.
        self_loops (bool): also draw the self-loops :math:`i \to i` (every node of a
            causal DAG has one; they are left out by default to keep the picture clear).
        rad (float): curvature of the arcs (matplotlib's ``arc3`` style).
        node_size (int): marker area in points squared.
        legend (bool): add a legend (tokens, pause tokens) when there are pauses.

    Returns:
        the :class:`matplotlib.axes.Axes` drawn on.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> from graphformer import CausalGraph
        >>> from graphformer.plot import draw_causal_graph
        >>> from graphformer.transforms import AddPauseTokens
        >>> graph, pause_mask, _ = AddPauseTokens(2)(CausalGraph.from_lengths([4, 3]))
        >>> ax = draw_causal_graph(graph, pause_mask)  # then ax.figure.savefig("dag.png")
        >>> len(ax.patches)  # one arrow per edge, self-loops left out: 36 - 11
        25
    """
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.lines import Line2D

    if isinstance(graph, CausalGraph):
        num_nodes = graph.num_nodes
        edge_index = graph.edge_index.cpu()
        position = graph.position.cpu()
        row = graph.batch.cpu()
    elif isinstance(graph, Tensor):
        check_edge_index(graph, name="graph")
        if pause_mask is not None:
            num_nodes = int(pause_mask.numel())
        else:
            num_nodes = int(graph.max()) + 1 if graph.numel() else 0
        check_edge_index(graph, num_nodes, name="graph", of="pause_mask")
        edge_index = graph.long().cpu()
        position = torch.arange(num_nodes)
        row = torch.zeros(num_nodes, dtype=torch.long)
    else:
        raise TypeError(f"graph must be a CausalGraph or an edge_index tensor [2, E], got "
                        f"{type(graph).__name__}")
    if pause_mask is None:
        pause = torch.zeros(num_nodes, dtype=torch.bool)
    else:
        if not isinstance(pause_mask, Tensor) or pause_mask.dtype != torch.bool:
            raise TypeError("pause_mask must be a boolean tensor [N]")
        if pause_mask.shape != (num_nodes,):
            raise ValueError(f"pause_mask has shape {list(pause_mask.shape)} but the graph "
                             f"has {num_nodes} nodes")
        pause = pause_mask.cpu()
    if labels is not None and len(labels) != num_nodes:
        raise ValueError(f"labels has {len(labels)} entries but the graph has {num_nodes} "
                         f"nodes")
    if labels is None:  # real tokens numbered from 0 in each sequence, pauses "p"
        count: dict = {}
        labels = []
        for k in range(num_nodes):
            r = int(row[k])
            labels.append("p" if bool(pause[k]) else str(count.get(r, 0)))
            count[r] = count.get(r, 0) + (0 if bool(pause[k]) else 1)

    length = int(position.max()) + 1 if num_nodes else 1
    span = int((position[edge_index[0]] - position[edge_index[1]]).abs().max()) \
        if edge_index.numel() else 1
    height = abs(rad) * max(span, 1) / 2  # peak of the longest arc
    backward = bool((edge_index[0] > edge_index[1]).any()) if edge_index.numel() else False
    gap = height * (2 if backward else 1) + 1.2
    pos = {k: (float(position[k]), -float(row[k]) * gap) for k in range(num_nodes)}

    G = nx.DiGraph()
    G.add_nodes_from(range(num_nodes))
    edges = [(int(j), int(i)) for j, i in edge_index.t().tolist() if self_loops or j != i]
    G.add_edges_from(edges)

    ys = [p[1] for p in pos.values()] or [0.0]
    xlim = (-0.7, length - 0.3)
    ylim = (min(ys) - (height if backward else 0) - 0.5, max(ys) + height + 0.3)
    if ax is None:  # about 0.6 inch per position, the height to match (equal aspect)
        scale = min(0.6, 14 / (xlim[1] - xlim[0]), 10 / (ylim[1] - ylim[0]))
        _, ax = plt.subplots(figsize=((xlim[1] - xlim[0]) * scale + 0.2,
                                      (ylim[1] - ylim[0]) * scale + 0.5))
    into_pause = [e for e in edges if bool(pause[e[1]])]
    other = [e for e in edges if not bool(pause[e[1]])]
    for edgelist, color in ((other, EDGE_COLOR), (into_pause, PAUSE_COLOR)):
        if edgelist:
            nx.draw_networkx_edges(G, pos, edgelist=edgelist, ax=ax, edge_color=color,
                                   arrows=True, arrowsize=9, width=1.0, alpha=0.8,
                                   node_size=node_size, connectionstyle=f"arc3,rad={-rad}")
    tokens = [k for k in range(num_nodes) if not bool(pause[k])]
    pauses = [k for k in range(num_nodes) if bool(pause[k])]
    for nodes, color, shape in ((tokens, TOKEN_COLOR, "o"), (pauses, PAUSE_COLOR, "s")):
        if nodes:
            nx.draw_networkx_nodes(G, pos, nodelist=nodes, ax=ax, node_color=color,
                                   node_shape=shape, node_size=node_size,
                                   edgecolors="black", linewidths=0.6)
    nx.draw_networkx_labels(G, pos, labels={k: labels[k] for k in range(num_nodes)}, ax=ax,
                            font_size=8, font_color="white")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    # equal scales, so that the arcs (curved in display space) keep the height computed
    # above and never leave the axes
    ax.set_aspect("equal", adjustable="box")
    ax.set_axis_off()
    if legend and pauses:
        ax.legend(handles=[
            Line2D([], [], marker="o", ls="", color=TOKEN_COLOR, mec="black", label="token"),
            Line2D([], [], marker="s", ls="", color=PAUSE_COLOR, mec="black",
                   label="pause token"),
        ], loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False,
            fontsize=8)
    return ax
