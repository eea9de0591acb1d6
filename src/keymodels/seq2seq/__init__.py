"""Sequence-to-sequence models: RNNs with and without attention, and the Transformer.

``create_model("seq2seq_gru_attn_small", src_vocab_size=…, tgt_vocab_size=…)`` builds a registered one.
"""

from typing import Any

from .data import load_multi30k, make_synthetic
from .model import AttentionDecoder, Encoder, PlainDecoder, Seq2Seq, Seq2SeqConfig
from .search import Hypothesis, beam_search, beam_search_reference, greedy_search
from .subwords import SubwordVocabulary
from .transformer import Transformer, TransformerConfig
from .vocab import Vocabulary, detokenize, tokenize

__all__ = [
    "AttentionDecoder",
    "Encoder",
    "Hypothesis",
    "PlainDecoder",
    "Seq2Seq",
    "Seq2SeqConfig",
    "SubwordVocabulary",
    "Transformer",
    "TransformerConfig",
    "Vocabulary",
    "beam_search",
    "beam_search_reference",
    "build_model",
    "detokenize",
    "greedy_search",
    "load_multi30k",
    "make_synthetic",
    "model_config_from_dict",
    "tokenize",
]


def model_config_from_dict(d: dict[str, Any]) -> Seq2SeqConfig | TransformerConfig:
    """The model config a checkpoint records: a Transformer's says ``arch``, an RNN's does not."""
    if d.get("arch") == "transformer":
        return TransformerConfig.from_dict(d)
    return Seq2SeqConfig.from_dict(d)


def build_model(config: Seq2SeqConfig | TransformerConfig) -> Seq2Seq | Transformer:
    """The model of ``config``: a :class:`Transformer` or an RNN :class:`Seq2Seq`."""
    return Transformer(config) if isinstance(config, TransformerConfig) else Seq2Seq(config)
