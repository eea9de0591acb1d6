"""keymodels: the key attention models (RNN seq2seq with attention, Vision Transformer) in PyTorch.

``create_model(name)`` builds any registered config; ``list_models()`` names them.
"""

from .attention import Attention, MultiHeadAttention, attend, attention_scores
from .errors import InvalidInputError, KeymodelsError
from .registry import create_model, get_config, list_models
from .vit import VisionTransformer, ViTConfig

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "InvalidInputError",
    "KeymodelsError",
    "MultiHeadAttention",
    "ViTConfig",
    "VisionTransformer",
    "__version__",
    "attend",
    "attention_scores",
    "create_model",
    "get_config",
    "list_models",
]
