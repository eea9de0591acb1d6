"""Subword vocabularies: BPE or unigram pieces of words, trained on the training split only.

Built on Hugging Face ``tokenizers`` rather than sentencepiece: a trained model is one JSON text
that travels inside the checkpoint like the word :class:`~keymodels.seq2seq.vocab.Vocabulary`
(sentencepiece's is a binary protobuf), it takes the words of our own :func:`tokenize` as they
are (so word and subword runs read and detokenize text identically), trains BPE and unigram
through one API in about a second on Multi30k, and ships with ``transformers`` already.
Each word's first piece carries sentencepiece's ``▁`` mark, so decoding joins pieces into words.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, reject_unknown_fields
from .vocab import SPECIALS, UNK, content_ids

SUBWORD_MODELS = ("bpe", "unigram")
MARK = "▁"  # U+2581, starts every word's first piece


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # an optional dependency, in the [translate] extra
        raise InvalidInputError(
            "subword vocabularies need the `tokenizers` package: pip install 'keymodels[translate]'"
        ) from e
    return tokenizers


def _alphabet(sentences: Sequence[Sequence[str]]) -> set[str]:
    return {MARK} | {ch for s in sentences for word in s for ch in word}


class SubwordVocabulary:
    """Words <-> subword ids, with ``<pad> <unk> <bos> <eos>`` as ids 0..3 (as ``Vocabulary``).

    ``encode`` takes words and returns piece ids; ``decode`` returns words, so the rest of the
    library (datasets, search, BLEU, translate) is the same for word and subword vocabularies.
    A character never seen in training is the only thing that becomes ``<unk>``.
    """

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def __init__(self, tokenizer: Any, model: str, lowercase: bool = False) -> None:
        if model not in SUBWORD_MODELS:
            raise InvalidInputError(f"subword model must be one of {SUBWORD_MODELS}; got {model!r}")
        self.tokenizer = tokenizer
        self.model = model
        self.lowercase = lowercase
        ids = [tokenizer.token_to_id(t) for t in SPECIALS]
        if ids != [0, 1, 2, 3]:
            raise InvalidInputError(
                f"a subword model must hold {', '.join(SPECIALS)} as ids 0-3; this one has ids "
                f"{ids}; train it with these special tokens first"
            )
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.itos = [""] * len(vocab)
        for piece, i in vocab.items():
            self.itos[i] = piece

    @classmethod
    def train(
        cls,
        sentences: Iterable[Sequence[str]],
        model: str = "bpe",
        vocab_size: int = 8000,
        lowercase: bool = False,
    ) -> SubwordVocabulary:
        """Learn ``vocab_size`` pieces (specials included) from tokenized ``sentences``.

        Raises:
            InvalidInputError: an unknown ``model``, or a ``vocab_size`` below the specials plus
                the alphabet (every character of the training text must be a piece).
        """
        if model not in SUBWORD_MODELS:
            raise InvalidInputError(f"subword model must be one of {SUBWORD_MODELS}; got {model!r}")
        sentences = [[w.lower() for w in s] if lowercase else list(s) for s in sentences]
        if not sentences:
            raise InvalidInputError("cannot train a subword vocabulary on no sentences")
        need = len(SPECIALS) + len(_alphabet(sentences))
        if vocab_size < need:
            raise InvalidInputError(
                f"vocab_size {vocab_size} is smaller than the alphabet: the training text has "
                f"{need - len(SPECIALS)} distinct characters, so a {model} vocabulary needs at "
                f"least {need} entries with the 4 specials; raise --vocab-size (e.g. 8000)"
            )
        tk = _tokenizers()
        if model == "bpe":
            tokenizer = tk.Tokenizer(tk.models.BPE(unk_token=UNK))
            trainer = tk.trainers.BpeTrainer(
                vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False
            )
        else:
            tokenizer = tk.Tokenizer(tk.models.Unigram())
            trainer = tk.trainers.UnigramTrainer(
                vocab_size=vocab_size, special_tokens=list(SPECIALS), unk_token=UNK,
                show_progress=False,
            )  # fmt: skip
        # Our words never hold whitespace, so splitting on it gives back exactly these words.
        tokenizer.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
        text = (" ".join(MARK + w for w in s) for s in sentences)
        tokenizer.train_from_iterator(text, trainer, length=len(sentences))
        return cls(tokenizer, model, lowercase)

    def __len__(self) -> int:
        return len(self.itos)

    def _identity(self) -> str:
        # What decides the ids: the pieces, BPE's merges (a unigram's scores only rank segmentations
        # and do not survive a JSON round trip bit for bit).
        merges = json.loads(self.tokenizer.to_str())["model"].get("merges")
        return json.dumps([self.model, self.lowercase, self.itos, merges], ensure_ascii=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubwordVocabulary) and self._identity() == other._identity()

    def _words(self, tokens: Sequence[str]) -> list[str]:
        return [MARK + (t.lower() if self.lowercase else t) for t in tokens]

    def encode(self, tokens: Sequence[str], add_eos: bool = True) -> list[int]:
        """Piece ids of the words ``tokens``, ``<eos>`` appended when ``add_eos``."""
        if not tokens:
            return [self.eos_id] if add_eos else []
        ids = self.tokenizer.encode(
            self._words(tokens), is_pretokenized=True, add_special_tokens=False
        ).ids
        return [*ids, self.eos_id] if add_eos else ids

    def pieces(self, tokens: Sequence[str]) -> list[str]:
        """The pieces the model reads for the words ``tokens`` (labels of attention heatmaps)."""
        return [self.itos[i] for i in self.encode(tokens, add_eos=False)]

    def unknown(self, tokens: Sequence[str]) -> list[str]:
        """The words of ``tokens`` holding a character this vocabulary maps to ``<unk>``."""
        return [t for t in tokens if self.unk_id in self.encode([t], add_eos=False)]

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Words of piece ``ids``, stopping at ``<eos>`` and dropping ``<pad>``/``<bos>`` when
        ``strip``; a piece without the word mark continues the word before it."""
        text = ""
        for i in content_ids(ids, strip):
            piece = self.itos[i] if 0 <= i < len(self.itos) else UNK
            # <unk> stands for characters inside a word; the other specials are words of their own
            text += MARK + piece if piece in SPECIALS and piece != UNK else piece
        return [w for w in text.split(MARK) if w]

    def sha256(self) -> str:
        """A fingerprint of the model, to tell two subword vocabularies apart in messages."""
        return hashlib.sha256(self._identity().encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.model,
            "tokenizer": json.loads(self.tokenizer.to_str()),
            "lowercase": self.lowercase,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubwordVocabulary:
        """The vocabulary of :meth:`to_dict`; an unknown or missing key is an error."""
        reject_unknown_fields("subword vocabulary", d, ("type", "tokenizer", "lowercase"))
        if "tokenizer" not in d or d.get("type") not in SUBWORD_MODELS:
            raise InvalidInputError(
                f"a saved subword vocabulary needs 'type' (one of {SUBWORD_MODELS}) and "
                f"'tokenizer'; got {sorted(d)}"
            )
        tokenizer = _tokenizers().Tokenizer.from_str(json.dumps(d["tokenizer"]))
        return cls(tokenizer, d["type"], bool(d.get("lowercase", False)))

    @classmethod
    def from_file(cls, path: str | Path, lowercase: bool = False) -> SubwordVocabulary:
        """A ``tokenizers`` JSON file (``Tokenizer.save``, or :meth:`save` of a run), checked to
        hold the specials as ids 0..3 and to be BPE or unigram."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"no such subword model file: {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInputError(
                f"{path} is not a tokenizers JSON file ({e}); give the tokenizer.json that "
                "tokenizers' Tokenizer.save writes"
            ) from e
        if isinstance(d, dict) and set(d) == {"type", "tokenizer", "lowercase"}:
            return cls.from_dict(d)
        kind = str((d.get("model") or {}).get("type", "")).lower() if isinstance(d, dict) else ""
        if kind not in SUBWORD_MODELS:
            raise InvalidInputError(
                f"{path} holds a {kind or 'non-tokenizer'} model; keymodels reads BPE or "
                "unigram tokenizers JSON files"
            )
        model = d["model"]
        marks = [k for k in ("continuing_subword_prefix", "end_of_word_suffix") if model.get(k)]
        if marks or "ByteLevel" in json.dumps(d.get("pre_tokenizer")):
            why = f"marks word pieces with {marks[0]}" if marks else "is byte-level (GPT-2 style)"
            raise InvalidInputError(
                f"{path} {why}; keymodels reads subword models whose pieces start words with "
                f"{MARK} (sentencepiece style, as `keymodels seq2seq train --vocab bpe` writes)"
            )
        tokenizer = _tokenizers().Tokenizer.from_str(json.dumps(d))
        # our words arrive split and marked already: nothing may split or mark them again
        tk = _tokenizers()
        tokenizer.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
        return cls(tokenizer, kind, lowercase)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path


def vocab_from_dict(d: dict[str, Any]) -> Any:
    """A word ``Vocabulary`` or a :class:`SubwordVocabulary`, as a checkpoint's meta holds it."""
    from .vocab import Vocabulary

    return SubwordVocabulary.from_dict(d) if "tokenizer" in d else Vocabulary.from_dict(d)


def unk_rate(vocab: Any, sentences: Iterable[Sequence[str]]) -> float:
    """The share (%) of ids that are ``<unk>`` when ``vocab`` encodes ``sentences`` (no <eos>)."""
    unk = total = 0
    for s in sentences:
        ids = vocab.encode(s, add_eos=False)
        unk += sum(i == vocab.unk_id for i in ids)
        total += len(ids)
    return 100.0 * unk / max(total, 1)
