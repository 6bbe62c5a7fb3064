r"""Layers, kernels and the dynamics that stack them."""
from graphformer.nn.conv import AttentionConv, DeepSetsConv, FeedForward
from graphformer.nn.adapt import call_conv, accepts_causal_graph

__all__ = ["AttentionConv", "DeepSetsConv", "FeedForward", "call_conv",
           "accepts_causal_graph"]
