import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from graphformer import CausalGraph  # noqa: E402
from graphformer.plot import PAUSE_COLOR, draw_causal_graph  # noqa: E402
from graphformer.transforms import AddPauseTokens  # noqa: E402


def arrows(ax):
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


def test_one_arc_per_edge_and_pauses_marked():
    graph, pause_mask, _ = AddPauseTokens(2)(CausalGraph.from_lengths([4]))
    ax = draw_causal_graph(graph, pause_mask)
    ei = graph.edge_index
    assert len(arrows(ax)) == int((ei[0] != ei[1]).sum())  # self-loops left out
    # edges into the two pause nodes are drawn in the pause colour
    into_pause = int((pause_mask[ei[1]] & (ei[0] != ei[1])).sum())
    colored = [a for a in arrows(ax)
               if matplotlib.colors.to_rgb(a.get_edgecolor()) == matplotlib.colors.to_rgb(PAUSE_COLOR)]
    assert len(colored) == into_pause
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(["0", "1", "2", "3", "p", "p"])
    assert ax.get_legend() is not None
    plt.close(ax.figure)


def test_self_loops_sequences_and_plain_edge_index():
    graph = CausalGraph.from_lengths([2, 3])
    fig, ax = plt.subplots()
    assert draw_causal_graph(graph, ax=ax, self_loops=True) is ax
    assert len(arrows(ax)) == graph.num_edges
    assert ax.get_legend() is None  # no pauses, no legend
    ys = {round(t.get_position()[1], 6) for t in ax.texts}
    assert len(ys) == 2  # one row per sequence
    plt.close(fig)
    ax = draw_causal_graph(torch.tensor([[0, 1, 0], [1, 2, 2]]))
    assert len(arrows(ax)) == 3 and len(ax.texts) == 3
    plt.close(ax.figure)


def test_bad_input():
    graph = CausalGraph.from_lengths([3])
    with pytest.raises(ValueError, match="pause_mask has shape"):
        draw_causal_graph(graph, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        draw_causal_graph(graph, torch.zeros(3))
    with pytest.raises(TypeError, match="CausalGraph or an edge_index"):
        draw_causal_graph([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="labels has 2 entries"):
        draw_causal_graph(graph, labels=["a", "b"])
    with pytest.raises(ValueError, match="has node 3"):
        draw_causal_graph(torch.tensor([[0, 3], [1, 1]]), torch.zeros(3, dtype=torch.bool))
    plt.close("all")
