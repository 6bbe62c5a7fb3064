r"""
Edge features and attention biases
==================================

Graph users have features on their edges (bond types, distances, relation types), and
graph transformers encode structure as an additive bias on the attention scores.
:class:`~graphformer.nn.AttentionConv` takes both, as a PyG user expects:

* ``edge_dim`` and ``edge_attr``, exactly as PyG's
  :class:`~torch_geometric.nn.conv.TransformerConv`: ``lin_edge`` projects each edge's
  features into every head, and the result is added to the key and to the value of the
  message;
* ``attn_bias``: one additive score per edge and head, on every kernel (edge-wise, fused
  SDPA as a float mask, FlexAttention as a ``score_mod``).

This tutorial checks the first against ``TransformerConv``, shows ALiBi on a
:class:`~graphformer.graph.CausalGraph`, and trains a small graph transformer whose
learned bias by hop distance recovers the graph that full attention ignores.
"""

import matplotlib.pyplot as plt
import networkx as nx
import torch
from torch import nn
from torch_geometric.nn import TransformerConv

from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv, kernels

torch.manual_seed(0)

# %%
# Edge features, as in TransformerConv
# -------------------------------------
# With edge features :math:`\mathbf{e}_{ij}` the layer computes, per head,
#
# .. math::
#     \alpha_{ij} = \operatorname{softmax}_{j}\left(\frac{\mathbf{q}_i^\top
#     (\mathbf{k}_j + \mathbf{W}_e \mathbf{e}_{ij})}{\sqrt{d}}\right), \qquad
#     \mathbf{x}'_i = \mathbf{W}_s \mathbf{x}_i + \sum_j \alpha_{ij}
#     (\mathbf{v}_j + \mathbf{W}_e \mathbf{e}_{ij}).
#
# The parameter names are those of ``TransformerConv``, so its weights load as they are.
# A small molecule-like graph: a ring of 8 atoms with two chords, bonds in both
# directions, a one-hot bond type on every edge.

g = nx.cycle_graph(8)
g.add_edges_from([(0, 4), (2, 6)])
edge_index = torch.tensor(list(g.to_directed().edges)).t()
bond = torch.randint(0, 3, (edge_index.size(1),))
edge_attr = nn.functional.one_hot(bond, 3).float()
x = torch.randn(8, 16)

pyg = TransformerConv(16, 8, heads=2, edge_dim=3)
conv = AttentionConv(16, 8, heads=2, edge_dim=3)
conv.load_state_dict(pyg.state_dict())
diff = (conv(x, edge_index, edge_attr) - pyg(x, edge_index, edge_attr)).abs().max()
print(f"largest difference to TransformerConv: {diff:.1e}")

# %%
# Edge features change the value of each message, so the kernel must see every
# attention weight. The fused SDPA and FlexAttention kernels never expose them, and a
# dense ``[B, T, T, H, d]`` tensor of per-pair features was slower than the edge-wise
# kernel in the measurements (``docs/results_speed.md``). So ``"auto"`` runs the
# edge-wise kernel, and says why:

seq = CausalGraph.from_lengths([6])
print(kernels.choose_kernel(seq, x.device, edge_features=True, reason=True))
try:
    conv(torch.randn(6, 16), seq, torch.randn(seq.num_edges, 3), kernel="sdpa")
except ValueError as err:
    print("ValueError:", err)

# %%
# ALiBi on a causal graph
# -----------------------
# ALiBi (Press et al. 2022) replaces position embeddings by a penalty on the distance,
# :math:`b^h_{ij} = -m_h (i - j)`, with a fixed slope :math:`m_h` per head. As an
# ``attn_bias`` it is one value per edge of the graph, in the order of
# ``graph.edge_index``:

T, heads = 16, 4
graph = CausalGraph.from_lengths([T])
src, dst = graph.edge_index
slopes = 2.0 ** (-8.0 * torch.arange(1, heads + 1) / heads)  # 1/4, 1/16, 1/64, 1/256
distance = (graph.position[dst] - graph.position[src]).float()
alibi = -distance.unsqueeze(-1) * slopes  # [E, heads]

attn = AttentionConv(32, 8, heads=heads, root_weight=False)
h = torch.randn(T, 32)
out_sdpa = attn(h, graph, attn_bias=alibi, kernel="sdpa")  # the bias as a float mask
out_edge = attn(h, graph, attn_bias=alibi, kernel="edge")  # the bias added per edge
print(f"SDPA vs edge-wise with ALiBi: {(out_sdpa - out_edge).abs().max():.1e}")

# %%
# The attention weights per head: the steeper the slope, the more local the head.

_, (ei, alpha) = attn(h, graph, attn_bias=alibi * 8, return_attention_weights=True)
fig, axes = plt.subplots(1, heads, figsize=(12, 3.2))
for head, ax in enumerate(axes):
    dense = torch.zeros(T, T)
    dense[ei[1], ei[0]] = alpha[:, head].detach()
    ax.imshow(dense, cmap="viridis")
    ax.set_title(f"head {head}: slope {8 * slopes[head]:.3g}")
    ax.set_xlabel("key j")
axes[0].set_ylabel("query i")
fig.suptitle("attention weights with ALiBi (x8 for contrast)")
fig.tight_layout()
plt.show()

# %%
# A learned bias by hop distance
# ------------------------------
# A graph transformer lets every node attend to every node of its graph, so the graph's
# edges are lost unless they come back as an encoding. Graphormer (Ying et al. 2021)
# adds a learned score per head and shortest-path distance, :math:`b^h_{ij} =
# \beta^h_{\mathrm{hop}(i, j)}`. Here: full attention inside each of 32 random graphs of
# 12 nodes, and a task only the structure answers, the mean of a node's neighbours'
# features.

num_graphs, n, max_hop = 32, 12, 6
graphs = [nx.connected_watts_strogatz_graph(n, 4, 0.3, seed=s) for s in range(num_graphs)]
full = CausalGraph.from_lengths([n] * num_graphs, causal=False)  # all pairs per graph
hops = torch.stack([torch.tensor([[nx.shortest_path_length(gr, i, j) for j in range(n)]
                                  for i in range(n)]) for gr in graphs])  # [B, i, j]
pair_hop = hops.view(-1)[full.pair_index(full.edge_index)].clamp(max=max_hop)

feats = torch.randn(num_graphs * n, 4)
target = torch.zeros(num_graphs * n)
for b, gr in enumerate(graphs):
    for i in range(n):
        target[b * n + i] = torch.stack([feats[b * n + j, 0] for j in gr.neighbors(i)]).mean()


class GraphTransformer(nn.Module):
    r"""One attention layer over all pairs, optionally with a learned bias per hop."""

    def __init__(self, hop_bias: bool):
        super().__init__()
        self.conv = AttentionConv(4, 16, heads=2)
        self.hop = nn.Embedding(max_hop + 1, 2) if hop_bias else None
        self.out = nn.Linear(32, 1)

    def forward(self, x):
        bias = None if self.hop is None else self.hop(pair_hop)  # [E, heads]
        return self.out(self.conv(x, full, attn_bias=bias).relu()).squeeze(-1)


curves = {}
for hop_bias in (False, True):
    torch.manual_seed(1)
    model = GraphTransformer(hop_bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(300):
        loss = nn.functional.mse_loss(model(feats), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    curves["learned hop bias" if hop_bias else "no bias (structure lost)"] = losses
    if hop_bias:
        learned = model.hop.weight.detach()

for name, losses in curves.items():
    print(f"{name:<26} final training MSE {losses[-1]:.4f}")
print("learned bias per hop (rows: hop 0..6, columns: heads):")
print(learned)

plt.figure(figsize=(5, 3.5))
for name, losses in curves.items():
    plt.semilogy(losses, label=name)
plt.xlabel("step")
plt.ylabel("training MSE")
plt.title("mean of the neighbours, full attention")
plt.legend()
plt.tight_layout()
plt.show()

# %%
# The learned bias is largest at hop 1: the model has found the graph's edges again,
# and only with it can the layer compute the neighbours' mean. The same ``attn_bias``
# runs on every kernel, here fused SDPA (``"auto"`` on a dense full graph):

print(kernels.choose_kernel(full, feats.device, reason=True))
