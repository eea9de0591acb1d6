"""Tokenizer, Vocabulary, Multi30k reader, synthetic tasks and length-bucketed batching."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from keymodels.errors import InvalidInputError
from keymodels.seq2seq.data import (
    BucketBatchSampler,
    DataError,
    TranslationDataset,
    collate,
    load_multi30k,
    make_loader,
    make_synthetic,
    read_parallel,
    synthetic_target,
)
from keymodels.seq2seq.vocab import Vocabulary, detokenize, tokenize

SENTENCES = [
    "Two young, White males are outside near many bushes.",
    "A man in a T-shirt (and a hat) isn't smiling!",
    'A sign says "Stop" here: 3.5 meters?',
    "Zwei Männer stehen am Herd und bereiten Essen zu.",
]


def test_tokenize_splits_punctuation_and_keeps_words():
    assert tokenize("Hi, you!") == ["Hi", ",", "you", "!"]
    assert tokenize("A T-shirt isn't  red.") == ["A", "T-shirt", "isn't", "red", "."]
    assert tokenize("Ein Mädchen.", lowercase=True) == ["ein", "mädchen", "."]
    assert tokenize("   ") == []


@pytest.mark.parametrize("sentence", SENTENCES[:2] + SENTENCES[3:])
def test_detokenize_restores_ordinary_sentences(sentence):
    assert detokenize(tokenize(sentence)) == sentence


def test_detokenize_quotes():
    assert detokenize(tokenize('He said "yes" to her.')) == 'He said "yes" to her.'


def test_vocabulary_build_min_freq_max_size_and_order():
    sents = [["b", "a", "a"], ["c", "a", "b"], ["d"]]
    v = Vocabulary.build(sents)
    assert v.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "c", "d"]
    assert Vocabulary.build(sents, min_freq=2).itos[4:] == ["a", "b"]
    assert Vocabulary.build(sents, max_size=3).itos[4:] == ["a", "b", "c"]
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, 2, 3)
    assert v.encode(["a", "zzz"]) == [4, 1, 3]
    assert v.unknown(["a", "zzz"]) == ["zzz"]
    assert v.decode([4, 5, 3, 6]) == ["a", "b"]
    with pytest.raises(InvalidInputError, match="min_freq"):
        Vocabulary.build(sents, min_freq=0)


def test_vocabulary_lowercase():
    v = Vocabulary.build([["Hund", "hund"]], lowercase=True)
    assert v.itos[4:] == ["hund"]
    assert v.encode(["HUND"], add_eos=False) == [4]


def test_vocabulary_save_load_round_trip(tmp_path):
    v = Vocabulary.build([tokenize(s) for s in SENTENCES], lowercase=True)
    path = v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(path)
    assert w == v and w.lowercase and w.stoi == v.stoi
    assert Vocabulary.from_dict(v.to_dict()) == v
    with pytest.raises(InvalidInputError, match="must start with"):
        Vocabulary.from_dict({"tokens": ["a", "b"]})


def test_vocabulary_from_dict_rejects_unknown_and_missing_keys():
    d = Vocabulary.build([["a"]]).to_dict()
    with pytest.raises(
        InvalidInputError,
        match=r"unknown vocabulary field\(s\) \['lower_case'\]; valid fields: lowercase, tokens",
    ):
        Vocabulary.from_dict({**d, "lower_case": True})
    with pytest.raises(InvalidInputError, match=r"needs its 'tokens'.*got only \['lowercase'\]"):
        Vocabulary.from_dict({"lowercase": True})


def test_multi30k_official_counts(shared_data):
    root = shared_data / "multi30k"
    counts = {split: len(load_multi30k(root, split)) for split in ("train", "val", "test")}
    assert counts == {"train": 29000, "val": 1014, "test": 1000}
    src, tgt = load_multi30k(root, "test")[0]
    assert src[0] == "Ein" and tgt[0] == "A"  # German source, English target


def _write(path: Path, lines, gz=False, raw: bytes | None = None):
    data = raw if raw is not None else ("\n".join(lines) + "\n").encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def test_plain_and_gz_files_and_empty_lines(tmp_path, caplog):
    src = _write(tmp_path / "val.de", ["Ein Hund.", "", "Eine Katze."])
    tgt = _write(tmp_path / "val.en.gz", ["A dog.", "Nothing", "A cat."], gz=True)
    pairs = read_parallel(src, tgt)
    assert pairs == [
        (["Ein", "Hund", "."], ["A", "dog", "."]),
        (["Eine", "Katze", "."], ["A", "cat", "."]),
    ]
    assert "dropped 1 empty" in caplog.text
    assert len(load_multi30k(tmp_path, "val")) == 2


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path):
    src = _write(tmp_path / "a.de", ["eins", "zwei", "drei"])
    tgt = _write(tmp_path / "b.en", ["one", "two"])
    with pytest.raises(DataError, match=r"a\.de has 3 .*b\.en has 2"):
        read_parallel(src, tgt)


def test_non_utf8_gives_the_line_number(tmp_path):
    src = _write(tmp_path / "a.de", [], raw="gut\nschön\n".encode() + "Größe\n".encode("latin-1"))
    tgt = _write(tmp_path / "b.en", ["good", "nice", "size"])
    with pytest.raises(DataError, match=r"a\.de line 3 is not valid UTF-8"):
        read_parallel(src, tgt)


def test_missing_multi30k_says_where_to_put_which_files(tmp_path):
    with pytest.raises(DataError, match=r"train\.de\[\.gz\].*raw\.githubusercontent\.com/multi30k"):
        load_multi30k(tmp_path, "train")
    with pytest.raises(InvalidInputError, match="unknown Multi30k split"):
        load_multi30k(tmp_path, "dev")


@pytest.mark.parametrize(
    "task, expected",
    [
        ("copy", ["3", "1", "10", "2"]),
        ("reverse", ["2", "10", "1", "3"]),
        ("sort", ["1", "2", "3", "10"]),
        ("swap", ["10", "2", "3", "1"]),
    ],
)
def test_synthetic_targets(task, expected):
    assert synthetic_target(task, ["3", "1", "10", "2"]) == expected


def test_synthetic_data_lengths_and_determinism():
    pairs = make_synthetic("reverse", 300, 4, 9, num_symbols=7, seed=5)
    assert {len(s) for s, _ in pairs} == set(range(4, 10))
    assert all(t == s[::-1] for s, t in pairs)
    assert {x for s, _ in pairs for x in s} == {str(i) for i in range(7)}
    assert make_synthetic("reverse", 300, 4, 9, num_symbols=7, seed=5) == pairs
    assert make_synthetic("reverse", 300, 4, 9, num_symbols=7, seed=6) != pairs
    with pytest.raises(InvalidInputError, match="unknown synthetic task"):
        make_synthetic("shuffle", 3)
    with pytest.raises(InvalidInputError, match="min_len"):
        make_synthetic("copy", 3, 5, 2)


def _dataset(n=200, **kw):
    pairs = make_synthetic("copy", n, 1, 12, seed=0)
    v = Vocabulary.build(s for s, _ in pairs)
    return TranslationDataset(pairs, v, v, **kw), v


def test_dataset_ids_and_too_long_policies():
    ds, v = _dataset()
    s, t = ds[0]
    assert s[-1] == v.eos_id and t[0] == v.bos_id and t[-1] == v.eos_id
    assert max(len(x) for x in _dataset(max_len=5)[0].src) == 6  # truncated, plus <eos>
    assert len(_dataset(max_len=5, too_long="drop")[0]) < 200
    with pytest.raises(InvalidInputError, match="max_len=5"):
        _dataset(max_len=5, too_long="error")


def test_collate_pads_and_reports_lengths():
    ds, _ = _dataset()
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["src"].shape[0] == 3
    for i in range(3):
        n = int(batch["src_lengths"][i])
        assert torch.equal(batch["src"][i, :n], ds[i][0]) and (batch["src"][i, n:] == 0).all()


def test_bucket_sampler_covers_everything_once_and_is_reproducible():
    lengths = [(i * 7) % 23 + 1 for i in range(1000)]
    sampler = BucketBatchSampler(lengths, 32, shuffle=True, seed=3)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(sampler)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(
        batches
    )
    assert spread < 3  # batches hold similar lengths
    assert list(sampler) == batches
    sampler.set_epoch(2)
    assert list(sampler) != batches


def test_loader_with_a_worker_gives_the_same_batches():
    ds, _ = _dataset()
    plain = [b["src"] for b in make_loader(ds, 16, shuffle=True, seed=1)]
    worker = [b["src"] for b in make_loader(ds, 16, shuffle=True, seed=1, num_workers=1)]
    assert len(plain) == len(worker) and all(torch.equal(a, b) for a, b in zip(plain, worker))


def test_read_lines_strips_a_bom_and_names_utf16_and_folders(tmp_path):
    from keymodels.seq2seq.data import DataError, read_lines

    (tmp_path / "bom.txt").write_bytes("\ufeffein Hund\nzwei\n".encode())
    assert read_lines(tmp_path / "bom.txt") == ["ein Hund", "zwei"]
    (tmp_path / "u16.txt").write_bytes("ein Hund\n".encode("utf-16-le"))  # no BOM: NUL bytes
    with pytest.raises(DataError, match="holds NUL bytes, so the file is likely UTF-16"):
        read_lines(tmp_path / "u16.txt")
    with pytest.raises(DataError, match="is a folder; give a text file"):
        read_lines(tmp_path)
