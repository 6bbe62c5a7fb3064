r"""The GraphGPS study on molecules that ``benchmarks/molecules.py`` runs: four models at
one parameter budget, trained side by side for the same epochs on
:class:`~graphformer.datasets.MolecularRegression`:

* ``graphformer``: :class:`~graphformer.models.HybridModel` as GraphGPS builds it on
  ZINC (GINE with bond types + global attention, summed, then the MLP; post-norm batch
  norm; RWSE; sum pooling; a 3-layer head);
* ``gpsconv``: the same architecture on PyG's :class:`~torch_geometric.nn.conv.GPSConv`
  (GINE + ``nn.MultiheadAttention``), the same encoders and head: the same parameters;
* ``gine``: the GPS layer without global attention (GINE + MLP), widened to the budget;
* ``nesterov``: ``graphformer`` with the Nesterov dynamics (YuriiFormer).

The four models train in turn, one epoch each, on the same batches (each epoch's
batches are collated once, for all of them), so that a load on the machine hits them
alike (their ratios of seconds per epoch survive it).
"""
from __future__ import annotations

import math
import statistics
import time
import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GINEConv, GPSConv, global_add_pool
from tqdm import tqdm

from graphformer.datasets.molecules import (NUM_ATOM_TYPES, NUM_BOND_TYPES,
                                            MolecularRegression)
from graphformer.device import peak_memory
from graphformer.models import HybridModel
from graphformer.nn.conv.registry import build_conv
from graphformer.nn.encoders import FeatureEmbedding, RWSEEncoder
from graphformer.schedule import warmup_cosine

MODELS = ("graphformer", "gpsconv", "gine", "nesterov")
#: Where the command lines cache the data set (built on first use).
DATA_ROOT = Path("results/molecules_data")
#: :func:`epoch_breakdown`'s models and evaluation rounds by default.
BREAKDOWN_MODELS = ("graphformer", "gpsconv")
BREAKDOWN_ROUNDS = 3


@dataclass
class Settings:
    r"""One budget for every model (the command line reads its defaults from here).
    GraphGPS on ZINC: 10 layers, width 64, 4 heads, attention dropout 0.5, RWSE of 20
    steps (28 channels), batch 32, AdamW 1e-3 with weight decay 1e-5 and a cosine
    schedule, 2,000 epochs; the default here keeps its layer and shortens the run to fit
    about 15 minutes on 2 CPU cores (fewer layers and epochs, a larger batch)."""
    layers: int = 4
    hidden: int = 64
    heads: int = 4
    pe_channels: int = 16
    walk_length: int = 20
    attn_dropout: float = 0.5
    dropout: float = 0.0
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_epochs: int = 1
    train_size: int = 10000
    val_size: int = 1000
    test_size: int = 1000
    memory_batch: int = 128


class GPSConvModel(nn.Module):
    r"""The GraphGPS model of :class:`HybridModel` built on PyG's ``GPSConv`` (PyG's
    ``examples/graph_gps.py`` form): the same encoders, GPSConv layers (GINE +
    ``nn.MultiheadAttention``, batch norm), sum pooling and head."""

    def __init__(self, s: Settings) -> None:
        super().__init__()
        C = s.hidden
        self.encoder = FeatureEmbedding([NUM_ATOM_TYPES], C - s.pe_channels)
        self.pe_encoder = RWSEEncoder(s.walk_length, s.pe_channels)
        self.edge_encoder = FeatureEmbedding([NUM_BOND_TYPES], C, name="edge_attr")
        self.layers = nn.ModuleList(
            GPSConv(C, build_conv("gine", C), heads=s.heads, dropout=s.dropout,
                    norm="batch_norm", attn_kwargs={"dropout": s.attn_dropout})
            for _ in range(s.layers))
        self.head = head(C)

    def forward(self, x, edge_index, batch, edge_attr, pe):
        h = torch.cat([self.encoder(x), self.pe_encoder(pe)], -1)
        e = self.edge_encoder(edge_attr)
        for layer in self.layers:
            h = layer(h, edge_index, batch, edge_attr=e)
        return self.head(global_add_pool(h, batch))


def head(C: int) -> nn.Module:
    r"""GraphGPS's 3-layer graph head on ZINC (width halved at each layer)."""
    return nn.Sequential(nn.Linear(C, C // 2), nn.ReLU(), nn.Linear(C // 2, C // 4),
                         nn.ReLU(), nn.Linear(C // 4, 1))


def hybrid(s: Settings, hidden: Optional[int] = None, **kw) -> HybridModel:
    r"""The graphformer GPS model of the study (``kw`` overrides: ``method``,
    ``global_attention``)."""
    return HybridModel([NUM_ATOM_TYPES], hidden or s.hidden, 1, num_layers=s.layers,
                       local="gine", heads=s.heads, scheme="gps", readout="sum",
                       dropout=s.dropout, attn_dropout=s.attn_dropout, norm="batch",
                       norm_position="post", edge_dim=[NUM_BOND_TYPES], pe="rwse",
                       pe_dim=s.walk_length, pe_channels=s.pe_channels, head_layers=3, **kw)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gine_width(s: Settings) -> int:
    r"""The width at which the GINE-only model has the GPS model's parameters (the
    closest, in steps of ``heads``)."""
    budget = num_params(hybrid(s))
    widths = range(s.pe_channels + s.heads, 4 * s.hidden + 1, s.heads)
    return min(widths, key=lambda w: abs(num_params(hybrid(s, w, global_attention=False))
                                         - budget))


def build_model(name: str, s: Settings) -> nn.Module:
    if name == "graphformer":
        return hybrid(s)
    if name == "gpsconv":
        return GPSConvModel(s)
    if name == "gine":
        return hybrid(s, gine_width(s), global_attention=False)
    if name == "nesterov":
        return hybrid(s, method="nesterov")
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def predict(model: nn.Module, data) -> Tensor:
    if isinstance(model, HybridModel):
        out = model(data.x, data.edge_index, data.batch, edge_attr=data.edge_attr,
                    pe=data.random_walk_pe)
    else:
        out = model(data.x, data.edge_index, data.batch, data.edge_attr, data.random_walk_pe)
    return out.view(-1)


@torch.no_grad()
def mae(model: nn.Module, loader, device) -> float:
    model.eval()
    total, n = 0.0, 0
    for data in loader:
        data = data.to(device)
        total += float((predict(model, data) - data.y).abs().sum())
        n += data.num_graphs
    return total / n


def load_splits(root: str, s: Settings, seed: int = 0, progress: bool = False):
    sizes = (s.train_size, s.val_size, s.test_size)
    return {split: MolecularRegression(root, split, sizes=sizes, seed=seed,
                                       walk_length=s.walk_length, progress=progress)
            for split in ("train", "val", "test")}


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    r"""One ``--option`` per :class:`Settings` field, its default the field's."""
    for f in fields(Settings):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default),
                            default=f.default, help=f"(default: {f.default})")


def settings_from_args(args: argparse.Namespace) -> Settings:
    r"""The :class:`Settings` of the options :func:`add_settings_arguments` added."""
    return Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})


def train_step(model, data, optimizer) -> float:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.l1_loss(predict(model, data), data.y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def memory_step(model: nn.Module, batch, device) -> int:
    r"""Peak bytes of one forward and backward pass of ``model`` on ``batch``."""
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        F.l1_loss(predict(model, batch), batch.y).backward()
    step()  # warm (lazy buffers, first-call allocations)
    model.zero_grad(set_to_none=True)
    return peak_memory(step, device)


def trainer(name: str, s: Settings, seed: int, device: torch.device,
            num_train: Optional[int] = None):
    r"""``(model, optimizer, scheduler)`` of ``name`` as the study trains it: seeded
    initialisation, AdamW, ``s.warmup_epochs`` of linear warm-up, then a cosine decay to
    0 at the end of ``s.epochs`` epochs of ``num_train`` molecules
    (:func:`~graphformer.schedule.warmup_cosine`: the shape of GraphGPS's
    ``cosine_with_warmup``) (by default ``s.train_size``; the
    scheduler steps once per training step). AdamW runs its
    multi-tensor (``foreach``) implementation: the same updates, bit for bit, as the
    per-tensor loop that is torch's CPU default, at about 0.7x its time here."""
    steps_per_epoch = math.ceil((num_train or s.train_size) / s.batch_size)
    total = s.epochs * steps_per_epoch
    warm = s.warmup_epochs * steps_per_epoch
    torch.manual_seed(seed)
    model = build_model(name, s).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay,
                            foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: warmup_cosine(i, total, warm))
    return model, opt, sched


def epoch_batches(train, s: Settings, seed: int, epoch: int, device: torch.device) -> List:
    r"""The training batches of ``epoch``, collated (and moved to ``device``) once: a
    shuffle seeded by ``(seed, epoch)``, so every model of the study trains on the same
    batches in the same order."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    loader = DataLoader(train, batch_size=s.batch_size, shuffle=True, generator=g)
    return [data.to(device) for data in loader]


def eval_batches(split, device: torch.device, batch_size: int = 256) -> List:
    r"""The batches of a validation or test split, collated once (no shuffle)."""
    return [data.to(device) for data in DataLoader(split, batch_size=batch_size)]


def run_seed(splits, s: Settings, seed: int, device: torch.device,
             models: List[str] = MODELS, progress: Optional[Callable[[str], None]] = None
             ) -> List[Dict]:
    r"""Trains every model of ``models`` with ``seed`` for ``s.epochs`` epochs, one
    epoch of each in turn; returns one row per model (test MAE at the best validation
    epoch, wall and CPU seconds per training epoch, parameters).

    Each epoch's batches are collated once (:func:`epoch_batches`) and every model
    trains on them: a model's epoch time (``epoch_s``, ``epoch_cpu_s``) is its training
    steps and scheduler steps on those batches; the collation, shared by all models,
    is timed on its own (``collate_cpu_s``: the same list in every row of the seed).
    The validation and test batches are collated once per seed; evaluation is not
    part of the epoch time."""
    built = {name: trainer(name, s, seed, device, len(splits["train"]))
             for name in models}
    val = eval_batches(splits["val"], device)
    test = eval_batches(splits["test"], device)
    rows = {n: dict(model=n, seed=seed, params=num_params(built[n][0]), epoch_s=[],
                    epoch_cpu_s=[], collate_cpu_s=[], val_mae=[], test_mae=[],
                    train_loss=[])
            for n in models}
    for epoch in range(s.epochs):
        c0 = time.process_time()
        batches = epoch_batches(splits["train"], s, seed, epoch, device)
        collate = time.process_time() - c0
        for name in models:
            model, opt, sched = built[name]
            t0, c0, losses = time.perf_counter(), time.process_time(), []
            for data in batches:
                losses.append(train_step(model, data, opt))
                sched.step()
            rows[name]["epoch_s"].append(time.perf_counter() - t0)
            # CPU time of this process: what a shared machine's load does not inflate
            # (with one torch thread per process, the benchmark's default)
            rows[name]["epoch_cpu_s"].append(time.process_time() - c0)
            rows[name]["collate_cpu_s"].append(collate)
            rows[name]["train_loss"].append(sum(losses) / len(losses))
            rows[name]["val_mae"].append(mae(model, val, device))
            rows[name]["test_mae"].append(mae(model, test, device))
            if progress:
                progress(f"seed {seed} epoch {epoch + 1}/{s.epochs} {name}: val MAE "
                         f"{rows[name]['val_mae'][-1]:.3f}")
    out = []
    for name in models:
        r = rows[name]
        best = min(range(s.epochs), key=lambda e: r["val_mae"][e])
        r.update(best_epoch=best + 1, test=r["test_mae"][best], val=r["val_mae"][best],
                 s_per_epoch=sum(r["epoch_s"]) / len(r["epoch_s"]),
                 cpu_s_per_epoch=sum(r["epoch_cpu_s"]) / len(r["epoch_cpu_s"]),
                 collate_cpu_s_per_epoch=sum(r["collate_cpu_s"]) / len(r["collate_cpu_s"]))
        out.append(r)
    return out


def epoch_breakdown(splits, s: Settings, device: torch.device,
                    models: Sequence[str] = BREAKDOWN_MODELS, seed: int = 0,
                    steps: Optional[int] = None, rounds: int = BREAKDOWN_ROUNDS) -> Dict:
    r"""CPU seconds of the parts of one training epoch of the study (the first, of
    ``seed``), for each model of ``models``, timed interleaved in this process (batch
    by batch, the models' order alternating), so that the ratios survive a load on
    the machine: the collation of the epoch's batches (shared), each model's training
    steps (forward, backward, AdamW) and scheduler steps on the first ``steps``
    batches (all by default, scaled to the whole epoch), and the evaluation passes on
    the validation and test sets (no dropout; median of ``rounds``) with their
    collation. Run with one torch thread for CPU times that a load does not
    inflate."""
    built = {name: trainer(name, s, seed, device, len(splits["train"]))
             for name in models}
    c0 = time.process_time()
    batches = epoch_batches(splits["train"], s, seed, 0, device)
    collate = time.process_time() - c0
    used = batches[:steps] if steps else batches
    train = {n: 0.0 for n in models}
    sched = {n: 0.0 for n in models}
    for i, data in enumerate(used):
        for name in (models if i % 2 == 0 else models[::-1]):
            model, opt, scheduler = built[name]
            c0 = time.process_time()
            train_step(model, data, opt)
            c1 = time.process_time()
            scheduler.step()
            train[name] += c1 - c0
            sched[name] += time.process_time() - c1
    scale = len(batches) / len(used)
    c0 = time.process_time()
    evals = eval_batches(splits["val"], device) + eval_batches(splits["test"], device)
    eval_collate = time.process_time() - c0
    evaluation = {n: [] for n in models}
    for _ in range(rounds):
        for name in models:
            c0 = time.process_time()
            mae(built[name][0], evals, device)
            evaluation[name].append(time.process_time() - c0)
    rows = [dict(model=n, train_s=train[n] * scale, sched_s=sched[n] * scale,
                 ms_per_step=1e3 * train[n] / len(used),
                 eval_s=statistics.median(evaluation[n]))
            for n in models]
    return dict(batches=len(batches), timed_steps=len(used), collate_s=collate,
                eval_collate_s=eval_collate, rows=rows)


def step_times(built: Dict[str, tuple], batches: Sequence, rounds: int) -> Dict[str, List[float]]:
    r"""CPU seconds per training step of each model of ``built`` (``name -> (model,
    optimizer, scheduler)`` as :func:`trainer` makes them; the scheduler is not stepped),
    one value a round: each round trains every model on all ``batches`` in turn, so a
    load on the machine hits them alike. One untimed round first warms them up."""
    for model, opt, _ in built.values():
        for data in batches:
            train_step(model, data, opt)
    times = {name: [] for name in built}
    for _ in tqdm(range(rounds), desc="rounds"):
        for name, (model, opt, _) in built.items():
            c0 = time.process_time()
            for data in batches:
                train_step(model, data, opt)
            times[name].append((time.process_time() - c0) / len(batches))
    return times


def memory_rows(splits, s: Settings, device: torch.device,
                models: List[str] = MODELS) -> Dict[str, int]:
    r"""Peak bytes of a training step of each model on the first ``s.memory_batch``
    training molecules."""
    batch = next(iter(DataLoader(splits["train"], batch_size=s.memory_batch))).to(device)
    out = {}
    for name in models:
        torch.manual_seed(0)
        out[name] = memory_step(build_model(name, s).to(device), batch, device)
    return out


def settings_dict(s: Settings) -> Dict:
    return asdict(s)
