"""keymodels: the key attention models (RNN seq2seq with attention, Vision Transformer) in PyTorch,
and a small ResNet to distil them from.

``create_model(name)`` builds any registered config; ``list_models()`` names them.
"""

from .attention import Attention, MultiHeadAttention, attend, attention_scores
from .cnn import ResNet, ResNetConfig
from .errors import InvalidInputError, KeymodelsError
from .hub import from_pretrained
from .registry import create_model, get_config, list_models
from .runtime import optimize
from .seq2seq import model as _seq2seq_model  # noqa: F401  (registers the seq2seq configs)
from .vit import VisionTransformer, ViTConfig

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "InvalidInputError",
    "KeymodelsError",
    "MultiHeadAttention",
    "ResNet",
    "ResNetConfig",
    "ViTConfig",
    "VisionTransformer",
    "__version__",
    "attend",
    "attention_scores",
    "create_model",
    "from_pretrained",
    "get_config",
    "list_models",
    "optimize",
]
