r"""
GraphGPS on molecules: bond features and random-walk encodings
==============================================================

GraphGPS (Rampášek et al. 2022) combines, in every layer, a local message-passing
network on the molecule's bonds with global attention over all of its atoms: the two are
summed, then an MLP follows. On ZINC it uses GINE with bond types as the local network,
random-walk structural encodings (RWSE) as the node's structural identity, and batch
norm. :class:`~graphformer.models.HybridModel` builds this model on the library's stack:

* ``local="gine"`` with ``edge_dim=[4]``: bond types embedded and handed to PyG's
  :class:`~torch_geometric.nn.conv.GINEConv`;
* the global attention is :class:`~graphformer.nn.AttentionConv` on each molecule's
  complete graph (the fused SDPA kernel);
* ``scheme="gps"`` is GPS's arrangement (local + global summed, then the MLP), and
  ``norm_position="post"``, ``norm="batch"`` its norms: with gradient descent a layer
  is PyG's :class:`~torch_geometric.nn.conv.GPSConv` (the tests check it with copied
  weights);
* ``pe="rwse"``: PyG's :class:`~torch_geometric.transforms.AddRandomWalkPE` gives
  ``data.random_walk_pe``, which GraphGPS's encoder (batch norm, linear) turns into
  channels concatenated to the atom embedding.

The molecules are ZINC molecules from the MOSES package, with the ZINC benchmark's
target (penalised logP) computed by RDKit: see
:class:`~graphformer.datasets.MolecularRegression`. This page builds a small sample of
them (a few seconds); without the MOSES package it falls back to a handful of SMILES.
"""

import importlib.util
import tempfile

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import AddRandomWalkPE

from graphformer.datasets.molecules import (ATOM_TYPES, NUM_ATOM_TYPES, NUM_BOND_TYPES,
                                            MolecularRegression, build_graphs)
from graphformer.models import HybridModel

torch.manual_seed(0)
WALK = 8

# %%
# The data
# --------
# Each molecule is a graph: one node per heavy atom with an integer atom type (ZINC's
# vocabulary), one edge per bond and direction with an integer bond type (single,
# double, triple on the Kekulé form), the target ``y`` and the RWSE of ``WALK`` steps.

if importlib.util.find_spec("moses") is not None:
    root = tempfile.mkdtemp()
    train = MolecularRegression(root, "train", sizes=(240, 60, 60), walk_length=WALK)
    test = MolecularRegression(root, "test", sizes=(240, 60, 60), walk_length=WALK)
    print(f"MOSES sample: {len(train)} train, {len(test)} test molecules, "
          f"{train.skipped} SMILES skipped")
else:  # no MOSES: a few molecules by hand, with RDKit
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CN1CCC[C@H]1c1cccnc1",
              "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C(O)c1ccccc1OC(C)=O", "C1CCCCCCC1",
              "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CCN(CC)CC", "c1ccc2ccccc2c1"] * 10
    graphs, skipped = build_graphs(smiles)
    graphs = [AddRandomWalkPE(WALK, attr_name="random_walk_pe")(g) for g in graphs]
    train, test = graphs[:80], graphs[80:]
    print(f"hand-made set: {len(train)} train, {len(test)} test, {skipped} skipped")

mol = train[0]
print(mol.smiles)
print("first atoms:", [ATOM_TYPES[t] if t < len(ATOM_TYPES) else "other"
                       for t in mol.x[:12].tolist()])
print("bond types:", mol.edge_attr[::2].tolist())
print(f"penalised logP: {float(mol.y):.3f}; RWSE of atom 0: "
      f"{[round(p, 3) for p in mol.random_walk_pe[0].tolist()]}")

# %%
# The model
# ---------
# Two GPS layers of width 64, GINE with bond types, four attention heads with GraphGPS's
# attention dropout of 0.5, sum pooling and GraphGPS's three-layer head.

model = HybridModel([NUM_ATOM_TYPES], 64, 1, num_layers=2, local="gine",
                    edge_dim=[NUM_BOND_TYPES], heads=4, scheme="gps", norm="batch",
                    norm_position="post", attn_dropout=0.5, pe="rwse", pe_dim=WALK,
                    pe_channels=16, readout="sum", head_layers=3)
print(model.stack.layers[0])
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %%
# Training
# --------
# A few epochs of AdamW on the L1 loss (the ZINC benchmark reports the mean absolute
# error), against the error of always predicting the training mean.

loader = DataLoader(train, batch_size=32, shuffle=True)
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-5)


def test_mae():
    model.eval()
    with torch.no_grad():
        batch = next(iter(DataLoader(test, batch_size=len(test))))
        out = model(batch.x, batch.edge_index, batch.batch, edge_attr=batch.edge_attr,
                    pe=batch.random_walk_pe).view(-1)
        return float((out - batch.y).abs().mean()), batch.y


maes = []
for epoch in range(6):
    model.train()
    for batch in loader:
        opt.zero_grad()
        out = model(batch.x, batch.edge_index, batch.batch, edge_attr=batch.edge_attr,
                    pe=batch.random_walk_pe).view(-1)
        F.l1_loss(out, batch.y).backward()
        opt.step()
    maes.append(test_mae()[0])
mean_y = torch.cat([g.y for g in train]).mean()
_, y = test_mae()
baseline = float((y - mean_y).abs().mean())
print(f"test MAE after {len(maes)} epochs: {maes[-1]:.3f} (training-mean predictor: "
      f"{baseline:.3f})")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(range(1, len(maes) + 1), maes, marker="o", label="GPS model")
ax.axhline(baseline, color="0.5", ls="--", label="predict the mean")
ax.set_xlabel("epoch")
ax.set_ylabel("test MAE")
ax.legend()
fig.tight_layout()

# %%
# Structure in the attention: ``attn_bias``
# -----------------------------------------
# The model's attention runs on each molecule's complete graph,
# ``HybridModel.global_graph(batch)``; an additive score bias per edge of that graph and
# head (``attn_bias``, e.g. a learned bias by shortest-path distance as in Graphormer)
# reaches every layer's attention. Here a large negative bias on every pair of
# different atoms leaves each atom attending to itself only, which changes the output.

batch = next(iter(DataLoader(test, batch_size=8)))
everyone = HybridModel.global_graph(batch.batch)
src, dst = everyone.edge_index
self_only = torch.where(src == dst, 0.0, -1e4).unsqueeze(-1).expand(-1, 4)
model.eval()
with torch.no_grad():
    kw = dict(edge_attr=batch.edge_attr, pe=batch.random_walk_pe)
    plain = model(batch.x, batch.edge_index, batch.batch, **kw)
    biased = model(batch.x, batch.edge_index, batch.batch, attn_bias=self_only, **kw)
print(f"{everyone.num_edges} attention edges for {batch.num_nodes} atoms; largest change "
      f"of a prediction under the bias: {float((plain - biased).abs().max()):.3f}")

# %%
# The study ``python benchmarks/molecules.py`` trains this model against the same
# architecture on PyG's ``GPSConv``, GINE alone and a Nesterov variant on the full
# 10k/1k/1k set; its results are on the :doc:`molecules results page
# <../results_molecules>`.
