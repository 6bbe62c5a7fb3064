r"""Layers, kernels and the dynamics that stack them."""
from graphformer.nn.adapt import accepts_causal_graph, call_conv
from graphformer.nn.conv import (CONVS, AttentionConv, DeepSetsConv, DiffAttentionConv,
                                 FeedForward, build_conv)
from graphformer.nn.dynamics import (GPS, Euler, GradientDescent, HeavyBall, LieTrotter,
                                     Nesterov, Oracle, Replace, Stack, Strang)
from graphformer.nn.encoders import FeatureEmbedding, LapPEEncoder, RWSEEncoder

__all__ = ["AttentionConv", "DiffAttentionConv", "DeepSetsConv", "FeedForward", "CONVS",
           "build_conv", "call_conv", "accepts_causal_graph", "Stack", "Oracle",
           "LieTrotter", "Strang", "Euler", "GPS", "GradientDescent", "HeavyBall", "Replace", "Nesterov",
           "FeatureEmbedding", "RWSEEncoder", "LapPEEncoder"]
