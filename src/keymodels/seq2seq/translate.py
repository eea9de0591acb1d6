"""Translating sentences with a trained run: input checks, unknown words, too-long inputs, n-best.

The CLI's ``keymodels translate`` is a thin layer over :func:`translate`.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..runs import LoadedRun
from ..runtime import autocast, check_precision
from .data import fit_words, pad_batch
from .search import Hypothesis, beam_search, greedy_search, output_limit
from .subwords import SubwordVocabulary
from .train import choose_decode_precision
from .transformer import Transformer
from .vocab import Vocabulary, detokenize, tokenize

Vocab = Vocabulary | SubwordVocabulary

log = logging.getLogger(__name__)


@dataclass
class Translation:
    """One translated sentence.

    ``source_tokens`` are the source words the model saw (after truncation), ``unknown`` those it
    mapped to ``<unk>``; ``source_pieces``/``pieces`` are what it read and wrote (the words, or
    subword pieces), the axes of ``attention``, α [pieces (+<eos>), source pieces (+<eos>)].
    """

    source: str
    source_tokens: list[str]
    tokens: list[str]
    text: str
    score: float
    unknown: list[str] = field(default_factory=list)
    truncated: bool = False
    attention: Tensor | None = None
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # n-best after the first
    source_pieces: list[str] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # the output ids, <eos> included if reached


# Invisible characters that may stay in a sentence: zero-width (non-)joiners shape scripts and emoji.
_ALLOWED_FORMAT_CHARS = {"\u200c", "\u200d"}


def check_sentence_text(sentence: str) -> str:
    """``sentence`` without a leading byte-order mark, refusing what would silently become <unk>.

    Raises:
        InvalidInputError: the sentence holds bytes that are not UTF-8 (``os.fsdecode`` of a
            Latin-1 command-line argument gives lone surrogates), or control / invisible format
            characters (NUL, U+202E RIGHT-TO-LEFT OVERRIDE …).
    """
    sentence = sentence.removeprefix("\ufeff")
    for i, ch in enumerate(sentence, start=1):
        if "\udc80" <= ch <= "\udcff":
            raise InvalidInputError(
                f"the sentence is not valid UTF-8: byte 0x{ord(ch) - 0xDC00:02x} at character {i} "
                "(Latin-1 or another encoding?); give UTF-8 text (set a UTF-8 locale or convert "
                "it, e.g. with iconv -f latin1 -t utf-8)"
            )
        category = unicodedata.category(ch)
        if (category == "Cc" and not ch.isspace()) or (
            category in ("Cf", "Cs") and ch not in _ALLOWED_FORMAT_CHARS
        ):
            name = unicodedata.name(ch, "a control character")
            raise InvalidInputError(
                f"the sentence holds U+{ord(ch):04X} ({name}) at character {i}, an invisible "
                "control or format character the model cannot read; remove it"
            )
    return sentence


def prepare_source(
    sentence: str, vocab: Vocab, max_len: int, too_long: str = "error", limit: str = ""
) -> tuple[list[str], bool]:
    """Words of ``sentence`` and whether they were cut so the model reads at most ``max_len``
    tokens (words, or subword pieces for a subword vocabulary).

    Raises:
        InvalidInputError: the sentence is empty or whitespace only, holds control characters or
            bytes that are not UTF-8 (see :func:`check_sentence_text`), or is longer than
            ``max_len`` tokens with ``too_long="error"`` (``limit``: what sets it, for the message).
    """
    if too_long not in ("error", "truncate"):
        raise InvalidInputError(f"too_long must be 'error' or 'truncate'; got {too_long!r}")
    tokens = tokenize(check_sentence_text(sentence), vocab.lowercase)
    if not tokens:
        raise InvalidInputError(
            f"cannot translate an empty or whitespace-only sentence ({sentence!r}); give some words"
        )
    n = len(vocab.encode(tokens, add_eos=False))
    if n > max_len:
        unit = "subword tokens" if n != len(tokens) else "tokens"
        if too_long == "error":
            raise InvalidInputError(
                f"the sentence has {n} {unit}, more than this model's maximum of {max_len}"
                f"{f' ({limit})' if limit else ''}; shorten it or pass --too-long truncate "
                "(too_long='truncate')"
            )
        kept = fit_words(vocab, tokens, max_len)
        if not kept:
            raise InvalidInputError(
                f"the first word of the sentence alone has more than this model's maximum of "
                f"{max_len} {unit}; nothing would be left to translate: shorten it"
            )
        log.warning("sentence of %d %s truncated to the model's maximum of %d", n, unit, max_len)
        return kept, True
    return tokens, False


@torch.no_grad()
def translate(
    run: LoadedRun,
    sentences: Sequence[str],
    beam: int = 5,
    alpha: float = 0.6,
    n_best: int = 1,
    too_long: str = "error",
    batch_size: int = 64,
    precision: str = "fp32",
) -> list[Translation]:
    """Translate ``sentences`` with greedy search (``beam=1``) or beam search.

    ``precision``: "fp32", "bf16", or "auto" (timed on the first batch, see
    :func:`~keymodels.seq2seq.train.choose_decode_precision`).
    """
    check_precision(precision)
    if not math.isfinite(alpha):
        raise InvalidInputError(
            f"alpha, the length penalty exponent, must be a finite number (e.g. 0.6); got {alpha}"
        )
    model, src_vocab, tgt_vocab = run.model.eval(), run.src_vocab, run.tgt_vocab
    limit = ""
    if isinstance(model, Transformer):
        limit = f"its position table holds {model.max_positions}, <eos> included"
    prepared = [
        prepare_source(s, src_vocab, model.max_source_tokens, too_long, limit) for s in sentences
    ]
    results: list[Translation] = []
    for i in range(0, len(sentences), batch_size):
        chunk = prepared[i : i + batch_size]
        src, lengths = pad_batch([torch.tensor(src_vocab.encode(toks)) for toks, _ in chunk])
        if precision == "auto":
            precision = choose_decode_precision(
                precision, model, tgt_vocab, src, lengths, beam
            ).precision
        with autocast(precision):
            nbest = _search(model, tgt_vocab, src, lengths, beam, alpha, n_best)
        for j, ((toks, truncated), hyps) in enumerate(zip(chunk, nbest)):
            best = hyps[0]
            out_tokens = tgt_vocab.decode(best.tokens)
            results.append(
                Translation(
                    source=sentences[i + j],
                    source_tokens=toks,
                    tokens=out_tokens,
                    text=detokenize(out_tokens),
                    score=best.score,
                    unknown=src_vocab.unknown(toks),
                    truncated=truncated,
                    attention=best.attention,
                    alternatives=[
                        (detokenize(tgt_vocab.decode(h.tokens)), h.score) for h in hyps[1:]
                    ],
                    source_pieces=src_vocab.pieces(toks),
                    pieces=[tgt_vocab.itos[k] for k in best.tokens if k != tgt_vocab.eos_id],
                    ids=list(best.tokens),
                )
            )
    return results


def _search(
    model: Any,
    tgt_vocab: Vocab,
    src: torch.Tensor,
    lengths: torch.Tensor,
    beam: int,
    alpha: float,
    n_best: int,
) -> list[list[Hypothesis]]:
    limit, bos, eos = output_limit(model, lengths), tgt_vocab.bos_id, tgt_vocab.eos_id
    if beam == 1:
        return [[h] for h in greedy_search(model, src, lengths, limit, bos, eos, alpha)]
    return beam_search(model, src, lengths, beam, limit, bos, eos, alpha, n_best)
