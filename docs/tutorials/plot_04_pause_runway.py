r"""
Pause tokens and the runway
===========================

In a decoder the answer is read at the last position. Seen as a graph, the causal mask
treats tokens unequally. A message from an early token reaches the read-out along many
paths through the layers. The last token reaches it along one: it has no *runway*
(Barbero et al. 2024). Pause tokens (Goyal et al. 2024) are extra positions after the
input, whose outputs nobody reads. In graph terms they are new nodes of the causal DAG
that lengthen the runway.

This tutorial counts the paths, then looks at what a model's gradients show, before and
after :class:`~graphformer.transforms.AddPauseTokens`.
"""

import math

import matplotlib.pyplot as plt
import torch

from graphformer.datasets import CopyLastToken
from graphformer.diagnostics import causal_path_counts, path_counts
from graphformer.studies.sequence_tasks import build_sequence_model, sequence_runway
from graphformer.graph import CausalGraph
from graphformer.plot import draw_causal_graph
from graphformer.transforms import AddPauseTokens

torch.manual_seed(0)

# %%
# Counting paths
# --------------
# With :math:`L` layers a message travels along :math:`L` edges of the DAG, self-loops
# included. The number of such paths from position :math:`i` to the read-out at position
# :math:`n` is the number of non-decreasing chains
# :math:`i \le k_1 \le \dots \le k_{L-1} \le n`:
#
# .. math::
#     P_{ni} = \binom{n - i + L - 1}{L - 1}.
#
# :func:`~graphformer.diagnostics.path_counts` computes :math:`A^L` on any graph, and
# :func:`~graphformer.diagnostics.causal_path_counts` uses the closed form. They agree:

T, L, M = 10, 3, 4  # tokens, layers, pause tokens
graph = CausalGraph.from_lengths([T])
by_matrix = path_counts(graph, num_layers=L)[-1]  # row of the last position
closed_form = causal_path_counts(T, L)
print("paths to the last token:", closed_form.long().tolist())
print("A^L agrees with the closed form:", torch.equal(by_matrix, closed_form))

# %%
# Now append :math:`M` pause tokens and read out at the last of them.
# :class:`~graphformer.transforms.AddPauseTokens` returns the new graph, a mask of the
# pause nodes, and the new index of every old node. The last real token is now
# :math:`M` positions before the read-out, so its paths grow from 1 to
# :math:`\binom{M + L - 1}{L - 1}`.

paused, pause_mask, index = AddPauseTokens(M)(graph)
print(paused)
print("pause nodes:", pause_mask.nonzero().view(-1).tolist())
after = path_counts(paused, num_layers=L)[-1][index]  # paths from each real token
print("paths to the read-out after the pauses:", after.long().tolist())
print(f"last token: 1 -> {int(after[-1])} = C({M + L - 1}, {L - 1}) = "
      f"{math.comb(M + L - 1, L - 1)}")

fig, axes = plt.subplots(2, 1, figsize=(8, 4.6), layout="constrained")
draw_causal_graph(graph, ax=axes[0], legend=False)
axes[0].set_title(f"{T} tokens", fontsize=10)
draw_causal_graph(paused, pause_mask, ax=axes[1])
axes[1].set_title(f"the same tokens with {M} pause tokens (AddPauseTokens({M}))",
                  fontsize=10)
plt.show()

# %%
# The share of the paths tells how much of the read-out's "attention budget" each
# token can get. Pauses flatten the profile, most of all for the last tokens:

fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
positions = torch.arange(T)
ax.bar(positions - 0.2, closed_form / closed_form.sum(), width=0.4, label="no pauses")
ax.bar(positions + 0.2, after / after.sum(), width=0.4, label=f"{M} pause tokens")
ax.set_xlabel("token position i")
ax.set_ylabel("share of paths to the read-out")
ax.set_xticks(positions)
ax.legend()
ax.set_title(f"{L} layers")
plt.show()

# %%
# The runway in the gradients
# ---------------------------
# Path counts describe the graph. What a model does shows in its Jacobian:
# :func:`~graphformer.diagnostics.runway_profile` measures
# :math:`\lVert \partial x^{(\ell)}_n / \partial x^{(0)}_i \rVert` for every layer
# :math:`\ell` and input position :math:`i`. We build the small causal Transformer of the
# main benchmark's sequence tasks
# (:func:`~graphformer.studies.sequence_tasks.build_sequence_model`: rotary attention
# and an MLP per layer, pre-norm, residual stream) and take
# :func:`~graphformer.studies.sequence_tasks.sequence_runway` on a copy-the-last-token
# sequence, with and without pauses. The model is freshly initialised here: this
# measures the architecture, not something it learned.

dataset = CopyLastToken(length=T, num_sequences=8, vocab_size=4)
model = build_sequence_model(dataset.vocab_size, dataset.num_classes, hidden=32,
                             num_layers=L)
runway = {m: sequence_runway(model, dataset, num_pause=m) for m in (0, M)}
share = {m: r[-1] / r[-1].sum() for m, r in runway.items()}  # last layer, normalised
for m, s in share.items():
    print(f"{m} pauses, share of each token, first to last:",
          " ".join(f"{v:.2f}" for v in s.tolist()))

fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
for m, color in ((0, "tab:blue"), (M, "tab:orange")):
    ax.plot(positions, share[m], "o-", color=color,
            label=f"sensitivity, {m} pauses" if m else "sensitivity, no pauses")
ax.plot(positions, after / after.sum(), "--", color="tab:orange", alpha=0.6,
        label=f"path share, {M} pauses")
ax.set_xlabel("token position i")
ax.set_ylabel("share at the read-out")
ax.set_xticks(positions)
ax.legend()
ax.set_title(f"fresh {L}-layer causal Transformer, last layer")
plt.show()

# %%
# Without pauses the read-out *is* the last token. The residual stream carries its own
# input straight up, so it holds most of the sensitivity, and every earlier token gets a
# small, flat share. With pauses the read-out is a fresh position with no input of its
# own. Everything it knows comes through attention, from every real token, and the
# profile roughly follows the path counts, the first token most.
#
# So pauses do not make the last token louder. They give it a runway: 15 routes to the
# read-out instead of 1, each through a position that has seen the whole input. That
# buys the model :math:`M` more positions of :math:`L` layers of computation before it
# answers. Whether a model uses them is a matter of training. ``make run`` trains these
# models on the causal sequence tasks with and without pauses (see the :doc:`results
# page <../results>`). In a language model, ``GPTConfig(pause_every=k)`` inserts a
# learned pause token after every :math:`k` tokens.
