"""Parallel data for seq2seq: the Multi30k reader, synthetic tasks, and length-bucketed batches.

Everything returns lists of (source tokens, target tokens); ``TranslationDataset`` maps them to ids.
"""

from __future__ import annotations

import gzip
import logging
import random
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import InvalidInputError, KeymodelsError
from .vocab import Vocabulary, tokenize

log = logging.getLogger(__name__)

Pair = tuple[list[str], list[str]]

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
SYNTHETIC_TASKS = ("copy", "reverse", "sort", "swap")
TASKS = (*SYNTHETIC_TASKS, "multi30k")


class DataError(KeymodelsError):
    """A data file that is missing, unreadable or inconsistent."""


# ---------------------------------------------------------------------------- text files


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (plain or ``.gz``; ``-``: standard input), without line
    endings or a leading UTF-8 byte-order mark.

    Raises:
        DataError: the file is missing, a folder, UTF-16 or otherwise not UTF-8 (the message gives
            the line number).
    """
    if str(path) == "-":
        return _decode_lines(sys.stdin.buffer, "standard input")
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a text file with one sentence per line")
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    lines: list[str] = []
    try:
        with opener(path, "rb") as f:
            return _decode_lines(f, str(path), lines)
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz
        raise DataError(
            f"{path}: cannot read it after line {len(lines)} ({e}); the gzip file is truncated or "
            "corrupt, download it again"
        ) from e


def _decode_lines(f, name: str, lines: list[str] | None = None) -> list[str]:
    """Decode the lines of the binary file ``f`` (named ``name`` in errors) into ``lines``."""
    lines = [] if lines is None else lines
    for n, raw in enumerate(f, start=1):
        utf16_bom = n == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff"))
        if utf16_bom or b"\x00" in raw:
            why = "starts with a UTF-16 byte-order mark" if utf16_bom else "holds NUL bytes"
            raise DataError(
                f"{name} line {n} is not UTF-8: it {why}, so the file is likely UTF-16 (or "
                "binary); convert it to UTF-8 (e.g. iconv -f utf-16 -t utf-8)"
            )
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{name} line {n} is not valid UTF-8 ({e.reason} at byte {e.start}); "
                "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from e
        lines.append(line.removeprefix("\ufeff") if n == 1 else line)
    return lines


def read_parallel(
    src_path: str | Path, tgt_path: str | Path, lowercase: bool = False
) -> list[Pair]:
    """Tokenized sentence pairs from two aligned files (line i of one translates line i of the other).

    Pairs where either side is empty are dropped (logged): they carry nothing to learn.

    Raises:
        DataError: the files have different numbers of lines (both counts and files named).
    """
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"source and target files must have the same number of lines; {src_path} has "
            f"{len(src)} and {tgt_path} has {len(tgt)}"
        )
    pairs = [(tokenize(s, lowercase), tokenize(t, lowercase)) for s, t in zip(src, tgt)]
    kept = [(s, t) for s, t in pairs if s and t]
    if len(kept) < len(pairs):
        log.warning("dropped %d empty line pair(s) from %s", len(pairs) - len(kept), src_path)
    return kept


def _find(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def multi30k_files(data_dir: str | Path, split: str, src_lang: str = "de", tgt_lang: str = "en"):
    """The (source, target) files of a Multi30k split in ``data_dir``, plain or gzipped."""
    if split not in MULTI30K_SPLITS:
        raise InvalidInputError(
            f"unknown Multi30k split {split!r}; known: {', '.join(MULTI30K_SPLITS)}"
        )
    data_dir = Path(data_dir)
    stem = MULTI30K_SPLITS[split]
    files = [_find(data_dir, f"{stem}.{lang}") for lang in (src_lang, tgt_lang)]
    if None in files:
        wanted = ", ".join(
            f"{s}.{lang}[.gz]" for s in MULTI30K_SPLITS.values() for lang in ("de", "en")
        )
        raise DataError(
            f"Multi30k files for split {split!r} not found in {data_dir}. Put the official raw files "
            f"there ({wanted}) from {MULTI30K_URL}, or run download_multi30k('{data_dir}') "
            "(`keymodels seq2seq train --task multi30k --download`) on a machine with internet"
        )
    return files[0], files[1]


def load_multi30k(
    data_dir: str | Path,
    split: str,
    src_lang: str = "de",
    tgt_lang: str = "en",
    lowercase: bool = False,
) -> list[Pair]:
    """Tokenized Multi30k task-1 pairs: train 29,000, val 1,014, test (test_2016_flickr) 1,000."""
    src, tgt = multi30k_files(data_dir, split, src_lang, tgt_lang)
    return read_parallel(src, tgt, lowercase)


def download_multi30k(data_dir: str | Path) -> Path:
    """Fetch the six official raw ``.gz`` files of Multi30k task 1 (de, en) into ``data_dir``."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for stem in MULTI30K_SPLITS.values():
        for lang in ("de", "en"):
            name = f"{stem}.{lang}.gz"
            if (data_dir / name).is_file():
                continue
            tmp = data_dir / (name + ".part")
            try:
                urllib.request.urlretrieve(MULTI30K_URL + name, tmp)
            except (urllib.error.URLError, OSError) as e:
                tmp.unlink(missing_ok=True)
                raise DataError(
                    f"could not download {MULTI30K_URL + name} ({e}); without internet, copy the "
                    f"files {', '.join(f'{s}.{{de,en}}.gz' for s in MULTI30K_SPLITS.values())} "
                    f"into {data_dir}"
                ) from e
            tmp.replace(data_dir / name)
    return data_dir


# ---------------------------------------------------------------------------- synthetic tasks


def synthetic_target(task: str, source: Sequence[str]) -> list[str]:
    """The output of ``task`` for one input sequence.

    ``copy`` x; ``reverse`` x backwards; ``sort`` x in ascending symbol order; ``swap`` the second
    half first, then the first half (the output order differs from the input order, in blocks).
    """
    source = list(source)
    if task == "copy":
        return source
    if task == "reverse":
        return source[::-1]
    if task == "sort":
        return sorted(source, key=lambda s: (len(s), s))
    if task == "swap":
        h = len(source) // 2
        return source[h:] + source[:h]
    raise InvalidInputError(f"unknown synthetic task {task!r}; known: {', '.join(SYNTHETIC_TASKS)}")


def make_synthetic(
    task: str,
    n: int,
    min_len: int = 3,
    max_len: int = 10,
    num_symbols: int = 20,
    seed: int = 0,
) -> list[Pair]:
    """``n`` random pairs for a synthetic task, lengths uniform in [min_len, max_len].

    Symbols are the strings ``"0"``..``str(num_symbols - 1)``; the same seed gives the same data.
    """
    if not 1 <= min_len <= max_len:
        raise InvalidInputError(f"need 1 <= min_len <= max_len; got {min_len}, {max_len}")
    if num_symbols < 2:
        raise InvalidInputError(f"num_symbols must be >= 2; got {num_symbols}")
    rng = random.Random(seed)
    symbols = [str(i) for i in range(num_symbols)]
    pairs = []
    for _ in range(n):
        src = [rng.choice(symbols) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((src, synthetic_target(task, src)))
    return pairs


# ---------------------------------------------------------------------------- tensors and batches


def fit_words(vocab, words: Sequence[str], max_len: int) -> list[str]:
    """The longest prefix of whole ``words`` that ``vocab`` encodes in at most ``max_len`` tokens
    (words, or subword pieces: a word's pieces do not depend on its neighbours)."""
    kept, used = [], 0
    for word in words:
        used += len(vocab.encode([word], add_eos=False))
        if used > max_len:
            break
        kept.append(word)
    return kept


class TranslationDataset(Dataset):
    """Pairs as id tensors: source ids end with ``<eos>``; target ids are ``<bos> y… <eos>``.

    Args:
        pairs: tokenized (source, target) pairs.
        max_len: longest source/target (in tokens, without specials) kept.
        too_long: ``"truncate"`` cuts longer sentences, ``"drop"`` leaves them out,
            ``"error"`` raises.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        src_vocab: Vocabulary,
        tgt_vocab: Vocabulary,
        max_len: int | None = None,
        too_long: str = "truncate",
    ) -> None:
        if too_long not in ("truncate", "drop", "error"):
            raise InvalidInputError(f"too_long must be truncate, drop or error; got {too_long!r}")
        self.src: list[Tensor] = []
        self.tgt: list[Tensor] = []
        self.pairs: list[Pair] = []
        for i, (s, t) in enumerate(pairs):
            # Lengths count what the model reads: words, or subword pieces.
            s_ids, t_ids = src_vocab.encode(s, add_eos=False), tgt_vocab.encode(t, add_eos=False)
            if max_len is not None and max(len(s_ids), len(t_ids)) > max_len:
                if too_long == "error":
                    raise InvalidInputError(
                        f"pair {i} has {len(s_ids)} source / {len(t_ids)} target tokens, more "
                        f"than max_len={max_len}; raise --max-len (max_len) or pass --too-long "
                        "truncate (too_long='truncate')"
                    )
                if too_long == "drop":
                    continue
                # whole words, so the pairs kept (references, length buckets) are what the ids say
                s, t = fit_words(src_vocab, s, max_len), fit_words(tgt_vocab, t, max_len)
                if not s or not t:
                    raise InvalidInputError(
                        f"pair {i}: its first {'source' if not s else 'target'} word alone is "
                        f"longer than max_len={max_len} tokens; raise --max-len (max_len)"
                    )
                s_ids, t_ids = (
                    src_vocab.encode(s, add_eos=False),
                    tgt_vocab.encode(t, add_eos=False),
                )
            self.pairs.append((list(s), list(t)))
            self.src.append(torch.tensor([*s_ids, src_vocab.eos_id], dtype=torch.long))
            self.tgt.append(
                torch.tensor([tgt_vocab.bos_id, *t_ids, tgt_vocab.eos_id], dtype=torch.long)
            )

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.src[i], self.tgt[i]


def pad_batch(seqs: Sequence[Tensor], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-padded [B, T] ids and their lengths [B]."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def collate(batch: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Batch of pairs -> ``src`` [B, S], ``src_lengths`` [B], ``tgt`` [B, T+1] (with <bos>)."""
    src, src_lengths = pad_batch([b[0] for b in batch])
    tgt, _ = pad_batch([b[1] for b in batch])
    return {"src": src, "src_lengths": src_lengths, "tgt": tgt}


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar source length: little padding, and a new random order every epoch.

    Indices are shuffled, cut into pools of ``100 × batch_size``, each pool sorted by length and
    cut into batches, and the batches shuffled. The order depends only on (seed, epoch), so a
    resumed run sees exactly the batches of an uninterrupted one.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1; got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Batches of ``epoch``, from its ``start``-th on (to finish an interrupted epoch)."""
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: self.lengths[i])
            yield from (order[i : i + self.batch_size] for i in range(0, n, self.batch_size))
            return
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        idx = torch.randperm(n, generator=g).tolist()
        pool = self.batch_size * 100
        batches = []
        for p in range(0, n, pool):
            chunk = sorted(idx[p : p + pool], key=lambda i: self.lengths[i])
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        for j in torch.randperm(len(batches), generator=g).tolist()[self.start :]:
            yield batches[j]

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def make_loader(
    dataset: TranslationDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over length-bucketed batches (see :class:`BucketBatchSampler`)."""
    sampler = BucketBatchSampler([len(s) for s in dataset.src], batch_size, shuffle, seed)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
