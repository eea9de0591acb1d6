"""Word-level tokenization, detokenization and the Vocabulary that maps tokens to ids.

The vocabulary is plain JSON, so it travels inside a checkpoint's metadata with the model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, reject_unknown_fields

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)

# Words (with inner hyphens/apostrophes kept, "T-shirt", "don't") and single punctuation marks.
_TOKEN_RE = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(".,!?;:%)]}'’")
_NO_SPACE_AFTER = set("([{$")


def tokenize(text: str, lowercase: bool = False) -> list[str]:
    """Split ``text`` into words and punctuation marks: ``"Hi, you!"`` -> ``["Hi", ",", "you", "!"]``."""
    if lowercase:
        text = text.lower()
    return _TOKEN_RE.findall(text)


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens back into text, with no space before closing punctuation or after opening.

    ``detokenize(tokenize(s))`` restores ordinary sentences exactly, so BLEU is computed on text
    as people write it (sacrebleu applies its own tokenizer).
    """
    out = ""
    quote_open = False
    for tok in tokens:
        if tok == '"':
            # Alternate opening/closing double quotes: space before an opening one only.
            out += (" " if out and not quote_open else "") + tok
            quote_open = not quote_open
            continue
        glue = (
            not out
            or tok in _NO_SPACE_BEFORE
            or out[-1] in _NO_SPACE_AFTER
            or (out.endswith('"') and quote_open)
        )
        out += tok if glue else " " + tok
    return out


def content_ids(ids: Iterable[int], strip: bool = True) -> Iterator[int]:
    """``ids`` as ints, up to ``<eos>`` and without ``<pad>``/``<bos>`` when ``strip`` (the specials'
    ids are the same in every vocabulary, word or subword)."""
    for i in ids:
        i = int(i)
        if strip and i == Vocabulary.eos_id:
            return
        if not (strip and i in (Vocabulary.pad_id, Vocabulary.bos_id)):
            yield i


class Vocabulary:
    """Tokens <-> ids, with ``<pad> <unk> <bos> <eos>`` as ids 0..3.

    Args:
        tokens: the non-special tokens, most frequent first.
        lowercase: whether text is lower-cased before lookup (saved with the vocabulary).
    """

    def __init__(self, tokens: Iterable[str] = (), lowercase: bool = False) -> None:
        self.itos: list[str] = list(SPECIALS)
        self.itos += [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise InvalidInputError("vocabulary tokens must be unique")
        self.lowercase = lowercase

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    @classmethod
    def build(
        cls,
        sentences: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = False,
    ) -> Vocabulary:
        """The tokens of ``sentences`` seen at least ``min_freq`` times, at most ``max_size`` of them
        (specials not counted), most frequent first, ties in alphabetical order (deterministic)."""
        if min_freq < 1:
            raise InvalidInputError(f"min_freq must be >= 1; got {min_freq}")
        counts = Counter(t.lower() if lowercase else t for s in sentences for t in s)
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls(ranked, lowercase=lowercase)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (self.itos, self.lowercase) == (
            other.itos,
            other.lowercase,
        )

    def encode(self, tokens: Sequence[str], add_eos: bool = True) -> list[int]:
        """Token ids, unknown tokens as ``<unk>``, ``<eos>`` appended when ``add_eos``."""
        ids = [self.stoi.get(t.lower() if self.lowercase else t, self.unk_id) for t in tokens]
        return [*ids, self.eos_id] if add_eos else ids

    def pieces(self, tokens: Sequence[str]) -> list[str]:
        """The tokens the model reads for ``tokens``: the words themselves (see subwords)."""
        return list(tokens)

    def unknown(self, tokens: Sequence[str]) -> list[str]:
        """The tokens of ``tokens`` that this vocabulary maps to ``<unk>``."""
        return [t for t in tokens if (t.lower() if self.lowercase else t) not in self.stoi]

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Tokens of ``ids``, stopping at ``<eos>`` and dropping ``<pad>``/``<bos>`` when ``strip``."""
        return [self.itos[i] if 0 <= i < len(self.itos) else UNK for i in content_ids(ids, strip)]

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.itos, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        """The vocabulary of :meth:`to_dict`; an unknown or missing key is an error."""
        reject_unknown_fields("vocabulary", d, ("tokens", "lowercase"))
        if "tokens" not in d:
            raise InvalidInputError(
                "a saved vocabulary needs its 'tokens' (the list that to_dict writes); got "
                f"only {sorted(d)}"
            )
        tokens = d["tokens"]
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise InvalidInputError(
                f"a saved vocabulary must start with {SPECIALS}; got {tokens[: len(SPECIALS)]}"
            )
        return cls(tokens[len(SPECIALS) :], lowercase=bool(d.get("lowercase", False)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
