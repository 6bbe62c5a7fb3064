r"""
A hybrid GNN/transformer on your own graph
==========================================

A message-passing layer sees a node's neighbours. An attention layer on the complete
graph sees every node at once, with no bottleneck, but ignores the structure. Hybrid
models such as GraphGPS (Rampášek et al. 2022) use both in every layer.
:class:`~graphformer.models.HybridModel` is such a model. Each layer has a local
message-passing oracle on your graph, a global attention oracle on the complete graph
of each input graph, and an MLP. A splitting scheme and an update method combine them.

This tutorial takes a graph from networkx and turns it into PyG tensors. It trains a
hybrid model for node classification, swaps its parts, and then classifies whole graphs
in mini-batches.
"""

import matplotlib.pyplot as plt
import networkx as nx
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import from_networkx

from graphformer.models import HybridModel

torch.manual_seed(0)

# %%
# Your graph, as PyG tensors
# --------------------------
# Zachary's karate club: 34 members of a club that split in two after a quarrel. networkx
# stores which side each member joined in the node attribute ``club``.
# :func:`torch_geometric.utils.from_networkx` gives the ``edge_index``, with both
# directions of every undirected edge. Node features are up to you. Here they are a
# one-hot identity per node, so the model has to learn from the structure alone.

G = nx.karate_club_graph()
data = from_networkx(G)
data.x = torch.eye(G.number_of_nodes())
data.y = torch.tensor([0 if G.nodes[v]["club"] == "Mr. Hi" else 1 for v in G.nodes])
data.train_mask = torch.zeros(G.number_of_nodes(), dtype=torch.bool)
data.train_mask[[0, 1, 32, 33]] = True  # two labelled members per side
del data.club, data.name, data.weight  # networkx attributes we do not need
print(data)

# %%
# The model
# ---------
# ``HybridModel(in_channels, hidden_channels, out_channels, num_layers, local=...)``. The
# local layer is any layer name of :func:`~graphformer.nn.build_conv`: PyG's ``"gcn"``,
# ``"gin"``, ``"gat"``, ``"ggnn"``, or graphformer's ``"attention"`` and ``"deepsets"``.
# The global attention runs on the complete graph of each input graph, built from the
# ``batch`` vector as a non-causal :class:`~graphformer.graph.CausalGraph`, so it uses
# the fused SDPA kernel.

model = HybridModel(in_channels=34, hidden_channels=32, out_channels=2, num_layers=2,
                    local="gcn", heads=4)
print(f"HybridModel with {sum(p.numel() for p in model.parameters()):,} parameters")


def fit(model, data, steps=100, lr=0.01):
    """Full-batch training on the labelled nodes; returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4)
    losses = []
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask],
                               data.y[data.train_mask])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model, data):
    """Accuracy on the members whose side the model was not told."""
    model.eval()
    pred = model(data.x, data.edge_index).argmax(-1)
    test = ~data.train_mask
    return float((pred[test] == data.y[test]).float().mean()), pred


losses = fit(model, data)
acc, pred = accuracy(model, data)
print(f"accuracy on the 30 unlabelled members: {acc:.2f}")

# %%
# Which side the model puts each member on: colour = prediction, a thick black ring =
# one of the four labelled members, a red ring = a wrong prediction.

pos = nx.spring_layout(G, seed=3)
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(8, 3.6), width_ratios=(1.6, 1),
                               layout="constrained")
colors = ["tab:blue" if p == 0 else "tab:orange" for p in pred.tolist()]
wrong = (pred != data.y).tolist()
edgecolors = ["black" if data.train_mask[v] else ("red" if wrong[v] else "white")
              for v in G.nodes]
nx.draw_networkx_edges(G, pos, ax=ax0, alpha=0.3)
nx.draw_networkx_nodes(G, pos, ax=ax0, node_color=colors, node_size=160,
                       edgecolors=edgecolors, linewidths=2)
ax0.set_title("predicted side (blue: Mr. Hi, orange: Officer)", fontsize=10)
ax0.set_axis_off()
ax1.plot(losses)
ax1.set_xlabel("step")
ax1.set_ylabel("training loss")
ax1.set_yscale("log")
plt.show()

# %%
# Swapping the parts
# ------------------
# Every part is an argument: the local layer, the update method of the residual stream
# (``"gd"``, ``"heavyball"``, ``"nesterov"``; see the Nesterov tutorial) and the scheme
# that orders the three oracles in a layer. ``"lie_trotter"`` applies them one after the
# other. ``"euler"`` evaluates them at the same point and sums them, which is how GPS
# combines its local and global parts. On a graph this small, with four labels, the
# differences between these variants are mostly noise. The point is that each one is a
# single argument.

for local, method, scheme in [("gcn", "gd", "euler"), ("gin", "gd", "lie_trotter"),
                              ("gat", "nesterov", "lie_trotter"),
                              ("deepsets", "gd", "lie_trotter")]:
    torch.manual_seed(0)
    variant = HybridModel(34, 32, 2, num_layers=2, local=local, method=method, scheme=scheme)
    fit(variant, data)
    print(f"local={local:9s} method={method:9s} scheme={scheme:12s} "
          f"accuracy {accuracy(variant, data)[0]:.2f}")

# %%
# Many graphs at once
# -------------------
# For graph-level tasks, batch graphs with PyG's
# :class:`~torch_geometric.loader.DataLoader` and pass the ``batch`` vector. The global
# attention then stays inside each graph, and a pooling read-out (``readout="mean"``,
# ``"sum"`` or ``"max"``) gives one output per graph. A toy task: tell cycles from paths
# of 5 to 12 nodes, with constant node features. Only a path has ends, the nodes of
# degree 1. The local layer's sum over neighbours sees the degree, and max pooling
# reports whether any node of the graph is an end.


def graph_data(nx_graph, label):
    d = from_networkx(nx_graph)
    d.x = torch.ones(nx_graph.number_of_nodes(), 1)
    d.y = torch.tensor([label])
    return d


generator = torch.Generator().manual_seed(0)
graphs = []
for _ in range(120):
    n = int(torch.randint(5, 13, (1,), generator=generator))
    label = int(torch.randint(0, 2, (1,), generator=generator))
    graphs.append(graph_data(nx.cycle_graph(n) if label else nx.path_graph(n), label))
train_graphs, test_graphs = graphs[:80], graphs[80:]

model = HybridModel(1, 32, 2, num_layers=2, local="gin", readout="max")
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for epoch in range(15):
    model.train()
    for batch in DataLoader(train_graphs, batch_size=16, shuffle=True):
        opt.zero_grad()
        F.cross_entropy(model(batch.x, batch.edge_index, batch.batch), batch.y).backward()
        opt.step()

model.eval()
batch = next(iter(DataLoader(test_graphs, batch_size=len(test_graphs))))
with torch.no_grad():
    out = model(batch.x, batch.edge_index, batch.batch)
print(f"{batch.num_graphs} test graphs, {batch.num_nodes} nodes: accuracy "
      f"{float((out.argmax(-1) == batch.y).float().mean()):.2f}")

# %%
# The global attention of one graph never sees another graph in the batch. Change the
# features of the first test graph and only its own output moves:

x2 = batch.x.clone()
x2[batch.batch == 0] += 1.0
with torch.no_grad():
    moved = (model(x2, batch.edge_index, batch.batch) - out).abs().sum(-1)
print("graphs whose output changed:", (moved > 1e-6).nonzero().view(-1).tolist())
