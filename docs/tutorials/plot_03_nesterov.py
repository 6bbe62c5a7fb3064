r"""
Nesterov-accelerated transformers
=================================

A residual network updates its state layer by layer, :math:`x \leftarrow x + f(x)`.
Read :math:`f(x)` as a descent direction and that update is one step of gradient descent.
The stack is then an optimizer, and nothing forces it to be the plainest one.
YuriiFormer (arXiv 2601.23236) treats attention as a step on an interaction energy and
the MLP as a step on a potential energy, and replaces the residual stream with
Nesterov's accelerated method.

graphformer's :class:`~graphformer.nn.Stack` runs any layers with any *update method*
(:class:`~graphformer.nn.GradientDescent`, :class:`~graphformer.nn.HeavyBall`,
:class:`~graphformer.nn.Nesterov`). First we take a stack whose layers are exact gradient
steps and watch momentum accelerate it. Then we train a tiny GPT with each method.
"""

import textwrap

import matplotlib.pyplot as plt
import torch
from torch_geometric.utils import scatter

from graphformer.datasets import TextCorpus
from graphformer.diagnostics import dirichlet_energy_per_layer
from graphformer.models import GPT, GPTConfig
from graphformer.nn import Stack
from graphformer.train import TrainConfig, train

torch.manual_seed(0)

# %%
# A stack is an optimizer
# -----------------------
# An update method turns a layer's direction :math:`d` into a move, and may carry a
# velocity :math:`v` from layer to layer:
#
# .. math::
#     \text{gradient descent:}\quad & x \leftarrow x + d(x) \\
#     \text{heavy-ball:}\quad & v \leftarrow \beta v + \gamma\, d(x), \quad
#         x \leftarrow x + v \\
#     \text{Nesterov:}\quad & v \leftarrow \beta v + \gamma\, d(x + \mu v), \quad
#         x \leftarrow x + v
#
# (in a Transformer a LayerNorm is applied to :math:`v`, and :math:`\mu, \beta, \gamma`
# are learned). To see the optimizer at work, give the stack layers whose direction is
# an exact gradient step. One such layer is :math:`d(X) = -\eta \nabla E(X)` on the
# Dirichlet energy :math:`E(X) = \tfrac12 \operatorname{tr}(X^\top L X)` of a graph. It
# is a message-passing layer: every node moves towards its neighbours.


class DirichletStep(torch.nn.Module):
    r""":math:`d(X)_i = \eta \sum_{j \in \mathcal{N}(i)} (x_j - x_i) = -\eta (LX)_i`."""

    def __init__(self, eta: float) -> None:
        super().__init__()
        self.eta = eta

    def forward(self, x, edge_index):
        src, dst = edge_index
        return self.eta * scatter(x[src] - x[dst], dst, dim=0, dim_size=x.size(0))


N, L = 24, 40  # a path of 24 nodes (a badly conditioned energy), 40 layers
src = torch.arange(N - 1)
path = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], dim=1)
x0 = torch.randn(N, 4)

momentum = dict(gamma=1.0, learn=(), velocity_norm=False)  # fixed scalars, no LN_v
methods = {
    "gradient descent": ("gd", None),
    "heavy-ball (beta=0.8)": ("heavyball", dict(beta=0.8, **momentum)),
    "Nesterov (mu=beta=0.8)": ("nesterov", dict(mu=0.8, beta=0.8, **momentum)),
}
fig, ax = plt.subplots(figsize=(5.5, 3.2), layout="constrained")
for label, (method, kwargs) in methods.items():
    stack = Stack([[DirichletStep(eta=0.25)] for _ in range(L)], method=method,
                  channels=4, method_kwargs=kwargs)
    _, states = stack(x0, path, return_states=True)
    energy = dirichlet_energy_per_layer(states, path)
    ax.semilogy(energy, label=label)
    print(f"{label:24s} energy after {L} layers: {energy[-1]:.2e}")
ax.set_xlabel("layer")
ax.set_ylabel("Dirichlet energy")
ax.set_title("a stack of exact gradient steps on a path graph")
ax.legend()
plt.show()

# %%
# Gradient descent stalls on the slow, smooth modes of the path. Momentum keeps moving
# along them: heavy-ball oscillates but ends lower, and Nesterov's look-ahead damps the
# oscillation. The same machinery wraps any layer: a Nesterov stack of ``GCNConv`` is as
# valid as one of attention.
#
# A tiny language model with each method
# --------------------------------------
# :class:`~graphformer.models.GPT` is nanoGPT's model on the causal DAG of tokens. Its
# ``method`` field picks the update method of the residual stream (the *scheme*,
# Lie-Trotter here, orders attention and MLP inside a layer). We train three 4-layer
# models on the package's generated corpus of stories
# (:func:`~graphformer.datasets.generate_stories`; no download), character by character,
# with the same data, seed and budget. ``v0="zero"`` starts the velocity at rest, so the
# three models have the same parameters except the six scalars per layer of the momentum
# methods.

corpus = TextCorpus.generated(200_000, seed=0)
print(corpus)
excerpt = corpus.tokenizer.decode(corpus.data["train"][:160])
print(textwrap.fill(excerpt[: excerpt.rfind(" ")], 80))  # cut at the last word boundary

run = TrainConfig(max_iters=150, batch_size=16, block_size=32, learning_rate=3e-3,
                  warmup_iters=15, eval_interval=25, eval_iters=8, log_interval=5,
                  out_dir=None, progress=False, seed=0)
curves, models = {}, {}
for method in ("gd", "heavyball", "nesterov"):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=corpus.vocab_size, block_size=32, n_layer=4, n_head=2,
                       n_embd=64, method=method, v0="zero")
    model = GPT(config)
    result = train(model, corpus, run)
    models[method] = model
    curves[method] = result.history
    print(f"{method:10s} best validation loss {result.best_val_loss:.3f} "
          f"({result.num_params:,} parameters, {result.train_time:.1f} s)")

# %%
# The loss curves: training loss (thin, every 5 steps) and validation loss (markers,
# every 25 steps).

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for (method, history), color in zip(curves.items(), ("tab:blue", "tab:orange", "tab:green")):
    train_pts = [(h["iter"], h["loss"]) for h in history if h.get("event") == "train"]
    val_pts = [(h["iter"], h["val_loss"]) for h in history if h.get("event") == "eval"]
    ax.plot(*zip(*train_pts), color=color, lw=0.8, alpha=0.6)
    ax.plot(*zip(*val_pts), "o-", color=color, label=method)
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats per character)")
ax.set_ylim(top=3.5)
ax.legend(title="validation")
ax.set_title("4-layer character GPT on generated stories")
plt.show()

# %%
# At this size and budget the three are close, and plain gradient descent is usually
# ahead. Heavy-ball and Nesterov nearly coincide: in a freshly initialised GPT the
# layers' outputs are small, so looking ahead by :math:`\mu v` hardly moves the point
# where the next layer looks. The paper's gains (for example a best validation loss of 1.078 against 1.106 on
# TinyStories) come from 12-layer models trained for 10,000 steps. The :doc:`results page
# <../results>` has graphformer's own comparison, with the command that runs it. What
# the momentum models learned shows in their scalars, one per sub-step (attention, then
# MLP) and layer:

nesterov = models["nesterov"]
for layer, dynamics in enumerate(nesterov.transformer.h.dynamics):
    mu, beta, gamma = (dynamics.scalar(name).detach() for name in ("mu", "beta", "gamma"))
    print(f"layer {layer}: mu {mu.numpy().round(2)}, beta {beta.numpy().round(2)}, "
          f"gamma {gamma.numpy().round(2)}")

# %%
# And a sample from the Nesterov model, after 150 steps:

torch.manual_seed(1)
prompt = torch.tensor([corpus.tokenizer.encode("Once upon a time")])
print(textwrap.fill(corpus.tokenizer.decode(nesterov.generate(prompt, 120, top_k=5)[0]), 80))
