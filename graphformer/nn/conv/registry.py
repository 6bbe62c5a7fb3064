r"""Layers by name, so that models and command lines can say ``conv="gin"``."""
from __future__ import annotations

from typing import Callable, Dict

from torch import nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, GINEConv, GatedGraphConv

from graphformer.nn.conv.attention import AttentionConv
from graphformer.nn.conv.deepsets import DeepSetsConv
from graphformer.nn.conv.diff_attention import DiffAttentionConv


def _gin(channels: int, batch_norm: bool = False, **kw) -> nn.Module:
    # batch_norm: Xu et al.'s MLP as Alon & Yahav use it, Linear-BN-ReLU twice
    if batch_norm:
        mlp = nn.Sequential(nn.Linear(channels, channels), nn.BatchNorm1d(channels), nn.ReLU(),
                            nn.Linear(channels, channels), nn.BatchNorm1d(channels), nn.ReLU())
    else:
        mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(),
                            nn.Linear(channels, channels))
    return GINConv(mlp, **kw)


def _gine(channels: int, **kw) -> nn.Module:
    # GraphGPS's GINE: GIN's MLP (Linear-ReLU-Linear) on x_j + ReLU(e_ji), bond features
    # already embedded to `channels` (else pass edge_dim=<width> to project them)
    mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(),
                        nn.Linear(channels, channels))
    return GINEConv(mlp, **kw)


def _heads(channels: int, heads: int) -> int:
    if channels % heads:
        raise ValueError(f"heads={heads} must divide the width {channels}")
    return channels // heads


CONVS: Dict[str, Callable[..., nn.Module]] = {
    "gcn": lambda c, **kw: GCNConv(c, c, **kw),
    "gin": _gin,
    "gine": _gine,
    "gat": lambda c, heads=1, **kw: GATConv(c, _heads(c, heads), heads=heads, **kw),
    "ggnn": lambda c, **kw: GatedGraphConv(c, num_layers=1, **kw),
    "attention": lambda c, heads=1, **kw: AttentionConv(c, _heads(c, heads), heads=heads, **kw),
    "diff_attention": lambda c, heads=1, **kw: DiffAttentionConv(c, _heads(c, heads), heads=heads, **kw),
    "deepsets": lambda c, **kw: DeepSetsConv(c, c, **kw),
}


def build_conv(name: str, channels: int, **kwargs) -> nn.Module:
    r"""A width-preserving layer ``channels -> channels`` by name: ``"gcn"``, ``"gin"``,
    ``"gine"``, ``"gat"``, ``"ggnn"`` (PyG's own), ``"attention"``, ``"diff_attention"``,
    ``"deepsets"`` (graphformer's). ``kwargs`` go to the layer (``heads=`` for the
    attention layers; ``batch_norm=True`` gives ``"gin"`` the MLP of Xu et al.,
    Linear-BatchNorm-ReLU twice).

    Example:
        >>> from graphformer.nn import build_conv
        >>> build_conv("attention", 32, heads=4)
        AttentionConv(32, 8, heads=4)
    """
    if name not in CONVS:
        raise ValueError(f"unknown conv {name!r}; valid convs: {', '.join(CONVS)}")
    return CONVS[name](channels, **kwargs)
