r"""Models built from the stack: the GPT language model, node/graph-level models and the
hybrid GNN/transformer."""
from graphformer.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
from graphformer.models.graph_models import FeatureEmbedding, GraphModel, HybridModel  # noqa: E402

__all__ += ["FeatureEmbedding", "GraphModel", "HybridModel"]
