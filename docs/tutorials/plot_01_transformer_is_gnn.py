r"""
A Transformer is a graph neural network
=======================================

Self-attention is message passing. Every token is a node; it gathers the values of the
tokens it may look at, weighted by a softmax over those neighbours. In a decoder the
neighbours of a token are the tokens before it, so the graph is a *causal DAG*.

This tutorial builds that graph, runs :class:`~graphformer.nn.AttentionConv` on it and
checks that the result is exactly masked self-attention. Then it runs the same layer on a
tree, and compares the fused kernel with the edge-wise one to show why they give the same
answer.
"""

import time

import matplotlib.pyplot as plt
import networkx as nx
import torch
from torch_geometric.nn import GATConv
from torch_geometric.utils import from_networkx

from graphformer.graph import CausalGraph
from graphformer.nn import AttentionConv, call_conv
from graphformer.nn.kernels import choose_kernel
from graphformer.plot import draw_causal_graph

torch.manual_seed(0)
# sphinx_gallery_thumbnail_number = 2

# %%
# The causal DAG
# --------------
# A :class:`~graphformer.graph.CausalGraph` groups nodes into sequences, the way a PyG
# mini-batch groups nodes into graphs. With the causal rule, node :math:`i` of a sequence
# receives a message from every node :math:`j` of the same sequence with :math:`j \le i`,
# itself included:
#
# .. math::
#     \mathcal{E} = \{(j, i) : 0 \le j \le i < T\}.
#
# The edges follow PyG's ``source_to_target`` flow: ``edge_index[0]`` holds the sources
# and ``edge_index[1]`` the targets. The same edge set is also available as a dense
# ``[B, T, T]`` mask. That mask is what a Transformer's attention takes.

graph = CausalGraph.from_lengths([5, 3])  # two sequences, 8 nodes
print(graph)
print("edge_index (sources, then targets):")
print(graph.edge_index)
print("dense mask of the first sequence, [i, j] = 1 when j -> i:")
print(graph.dense_mask()[0].int())

ax = draw_causal_graph(graph, self_loops=True)
ax.set_title("CausalGraph.from_lengths([5, 3]): one row per sequence")
plt.show()

# %%
# Attention as message passing
# ----------------------------
# :class:`~graphformer.nn.AttentionConv` computes, for every target :math:`i` and head
# :math:`h`,
#
# .. math::
#     \mathbf{o}_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij}\, \mathbf{W}_v \mathbf{x}_j,
#     \qquad
#     \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
#     \frac{(\mathbf{W}_q \mathbf{x}_i)^\top \mathbf{W}_k \mathbf{x}_j}{\sqrt{d}},
#
# plus a skip term :math:`\mathbf{W}_s \mathbf{x}_i`. Here we switch the skip term off
# (``root_weight=False``) to compare with a Transformer's attention. The Transformer pads
# the sequences to ``[B, heads, T, d]`` and masks the scores with the causal mask.

heads, d = 2, 8
conv = AttentionConv(16, d, heads=heads, root_weight=False)
x = torch.randn(graph.num_nodes, 16)
out = conv(x, graph)  # [N, heads * d]


def transformer_attention(conv, x, graph):
    """Masked softmax attention, written the way a Transformer does it."""
    q, k, v = (lin(x).view(-1, heads, d) for lin in (conv.lin_query, conv.lin_key,
                                                     conv.lin_value))
    q, k, v = (graph.to_padded(t).transpose(1, 2) for t in (q, k, v))  # [B, H, T, d]
    scores = q @ k.transpose(-1, -2) / d**0.5
    scores = scores.masked_fill(~graph.dense_mask().unsqueeze(1), float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v
    return graph.from_padded(o.transpose(1, 2)).reshape(-1, heads * d)


ref = transformer_attention(conv, x, graph)
print(f"largest difference to masked self-attention: {(out - ref).abs().max():.1e}")

# %%
# The attention weights are weights on the edges: with ``return_attention_weights=True``
# the layer returns one weight per edge and head. Put them back into a matrix and the
# lower triangle of causal attention appears. Every row sums to one over the edges into
# that node.

out, (edge_index, alpha) = conv(x, graph, return_attention_weights=True)
A = torch.zeros(graph.num_nodes, graph.num_nodes)
A[edge_index[1], edge_index[0]] = alpha[:, 0].detach()  # head 0, row = target
fig, ax = plt.subplots(figsize=(4.6, 3.8), layout="constrained")
im = ax.imshow(A, cmap="viridis")
ax.set_xlabel("source j")
ax.set_ylabel("target i")
ax.set_title("attention weights (head 0), both sequences")
fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()
print("row sums:", [round(v, 4) for v in A.sum(1).tolist()])

# %%
# The same layer on a tree
# ------------------------
# Nothing in the layer is specific to sequences. Hand it any PyG ``edge_index``, here a
# binary tree built with networkx, and it attends over the neighbours in that graph. On a
# plain edge list the layer uses the edge-wise kernel. We add self-loops so that every node
# also attends to itself, as a token does.

tree = nx.balanced_tree(2, 3)  # 15 nodes, undirected
tree.add_edges_from((v, v) for v in tree.nodes)
tree_edges = from_networkx(tree).edge_index  # both directions, and the self-loops
xt = torch.randn(tree.number_of_nodes(), 16)
out_tree, (ei, alpha_tree) = conv(xt, tree_edges, return_attention_weights=True)
print("tree:", tree.number_of_nodes(), "nodes,", tree_edges.size(1), "edges;",
      "output", tuple(out_tree.shape))

# %%
# A message crosses one edge per layer, so the root's output depends on its neighbours
# and on nothing else. Changing a leaf three hops away leaves it unchanged:

leaf = 14
xt2 = xt.clone()
xt2[leaf] += 1.0
change = (conv(xt2, tree_edges) - out_tree).norm(dim=1)
print(f"change at the root: {change[0]:.1e}; at the leaf's parent: {change[6]:.2f}")

# %%
# Draw the tree with each edge as wide as the attention it carries into its target
# (head 0):

pos = {}
for v in tree.nodes:  # heap layout: level by level, children under their parent
    level = (v + 1).bit_length() - 1
    index = v + 1 - 2**level
    pos[v] = ((index + 0.5) / 2**level, -level)
G = nx.DiGraph()
weights = {}
for (j, i), a in zip(ei.t().tolist(), alpha_tree[:, 0].tolist()):
    if i != j:
        G.add_edge(j, i)
        weights[(j, i)] = a
fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
nx.draw_networkx_nodes(G, pos, ax=ax, node_size=260, node_color="tab:blue")
nx.draw_networkx_labels(G, pos, ax=ax, font_size=8, font_color="white")
nx.draw_networkx_edges(G, pos, ax=ax, width=[6 * weights[e] for e in G.edges],
                       connectionstyle="arc3,rad=0.12", arrows=True, node_size=260)
ax.set_title("AttentionConv on a tree: edge width = attention weight into the target")
ax.set_axis_off()
plt.show()

# %%
# PyG's own layers run on the causal DAG too: :func:`~graphformer.nn.call_conv` hands
# graphformer's layers the :class:`~graphformer.graph.CausalGraph`, and every other layer
# its ``edge_index``. A GAT on the causal DAG is a Transformer with a different score.

gat = GATConv(16, 8, heads=2)
print("GATConv on the causal DAG:", tuple(call_conv(gat, x, graph).shape))

# %%
# Fused kernels, and why they give the same answer
# ------------------------------------------------
# The edge-wise kernel gathers one score per edge, runs PyG's segment softmax over the
# edges into each node, and scatter-adds the messages. It runs on any graph but does a
# lot of memory traffic per edge. When the nodes form sequences, the same computation is
# a dense matrix product with a mask. The dense mask *is* the adjacency matrix of the
# DAG, so a masked softmax over row :math:`i` is the softmax over :math:`\mathcal{N}(i)`:
# the same numbers, added in a different order. PyTorch's fused
# :func:`~torch.nn.functional.scaled_dot_product_attention` (SDPA) computes it without
# ever storing the scores. A row with no allowed key gives 0 on every kernel, never NaN.
#
# Here are four sequences of 128 tokens with a sliding window of 32 (a structured graph:
# SDPA with a boolean mask). We check outputs and gradients for both kernels, and time
# them on the machine that built this page.

big = CausalGraph.from_lengths([128] * 4).with_window(32)
conv = AttentionConv(64, 16, heads=4)
xb = torch.randn(big.num_nodes, 64, requires_grad=True)
print(big)
print("edges:", big.num_edges)
print("kernel='auto' picks:", choose_kernel(big, xb.device))

results = {}
for kernel in ("edge", "sdpa"):
    out = conv(xb, big, kernel=kernel)
    (grad,) = torch.autograd.grad(out.square().sum(), xb)
    start = time.perf_counter()
    for _ in range(5):
        conv(xb, big, kernel=kernel).sum().backward()
    results[kernel] = (out.detach(), grad, (time.perf_counter() - start) / 5)

(o_e, g_e, t_e), (o_s, g_s, t_s) = results["edge"], results["sdpa"]
print(f"outputs differ by at most {(o_e - o_s).abs().max():.1e}, "
      f"gradients by {(g_e - g_s).abs().max():.1e}")
print(f"forward + backward: edge {1e3 * t_e:.1f} ms, sdpa {1e3 * t_s:.1f} ms "
      f"({t_e / t_s:.1f}x)")

# %%
# The differences are float32 rounding. On a dense causal graph ``"auto"`` uses SDPA's
# ``is_causal=True`` path, with no mask at all. On CUDA, long structured graphs use
# FlexAttention with the graph's block mask. An arbitrary sparse graph (the tree above)
# uses the edge-wise kernel. The :doc:`results page <../results>` has the full timings.
