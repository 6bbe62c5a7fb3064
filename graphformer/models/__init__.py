r"""Models built from the stack: the GPT language model, node/graph-level models and the
hybrid GNN/transformer."""
from graphformer.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
from graphformer.models.graph_models import GraphModel  # noqa: E402
from graphformer.models.gps import HybridModel, gps_layer  # noqa: E402
from graphformer.nn.encoders import FeatureEmbedding  # noqa: E402

__all__ += ["FeatureEmbedding", "GraphModel", "HybridModel", "gps_layer"]
