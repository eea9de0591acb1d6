"""RNN sequence-to-sequence models with and without attention: data, model, search, training.

``create_model("seq2seq_gru_attn_small", src_vocab_size=…, tgt_vocab_size=…)`` builds a registered one.
"""

from .data import load_multi30k, make_synthetic
from .model import AttentionDecoder, Encoder, PlainDecoder, Seq2Seq, Seq2SeqConfig
from .search import Hypothesis, beam_search, beam_search_reference, greedy_search
from .vocab import Vocabulary, detokenize, tokenize

__all__ = [
    "AttentionDecoder",
    "Encoder",
    "Hypothesis",
    "PlainDecoder",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Vocabulary",
    "beam_search",
    "beam_search_reference",
    "detokenize",
    "greedy_search",
    "load_multi30k",
    "make_synthetic",
    "tokenize",
]
