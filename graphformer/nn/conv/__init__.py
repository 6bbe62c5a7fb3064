r"""The layers: every one a PyG ``MessagePassing`` called ``conv(x, edge_index)`` where
``edge_index`` is a ``[2, E]`` tensor or a :class:`~graphformer.graph.CausalGraph`."""
from graphformer.nn.conv.attention import AttentionConv, rotary_embedding
from graphformer.nn.conv.deepsets import DeepSetsConv
from graphformer.nn.conv.diff_attention import DiffAttentionConv, lambda_init_for_depth
from graphformer.nn.conv.feedforward import FeedForward
from graphformer.nn.conv.registry import CONVS, build_conv

__all__ = ["AttentionConv", "DiffAttentionConv", "DeepSetsConv", "FeedForward",
           "rotary_embedding", "lambda_init_for_depth", "CONVS", "build_conv"]
