"""Subword vocabularies: round trips, unknown characters, the alphabet rule, files, training."""

from __future__ import annotations

import json

import pytest
import torch

from keymodels.checkpoint import CheckpointMismatchError
from keymodels.errors import InvalidInputError
from keymodels.run import TrainingError
from keymodels.runs import load_seq2seq
from keymodels.seq2seq.data import TranslationDataset, load_multi30k
from keymodels.seq2seq.subwords import SubwordVocabulary, unk_rate, vocab_from_dict
from keymodels.seq2seq.train import TrainConfig, train
from keymodels.seq2seq.translate import prepare_source, translate
from keymodels.seq2seq.vocab import Vocabulary, detokenize, tokenize

CORPUS = [
    tokenize(s)
    for s in (
        "Ein Mann fährt Fahrrad.",
        "Eine Frau fährt ein rotes Auto.",
        "Zwei Männer spielen Fußball im Park.",
        "Ein Kind spielt mit einem Hund.",
        "Die Frauen lesen Bücher.",
    )
]


@pytest.fixture(scope="module")
def multi30k_bpe(shared_data):
    train_pairs = load_multi30k(shared_data / "multi30k", "train")
    vocab = SubwordVocabulary.train(
        [s for s, _ in train_pairs] + [t for _, t in train_pairs], "bpe", 8000
    )
    return vocab, train_pairs


@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_encode_decode_round_trips_raw_sentences(model):
    vocab = SubwordVocabulary.train(CORPUS, model, 60)
    assert len(vocab) <= 60 and vocab.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    for raw in ("Ein Mann fährt Fahrrad.", "Zwei Kinder fahren im Park Auto.", "Männer und Bücher"):
        ids = vocab.encode(tokenize(raw))
        assert ids[-1] == vocab.eos_id and vocab.unk_id not in ids
        assert detokenize(vocab.decode(ids)) == raw
    # a word never seen is spelled with pieces, not <unk>
    pieces = vocab.pieces(["Fahrräder"])
    assert len(pieces) > 1 and pieces[0].startswith("▁") and "".join(pieces) == "▁Fahrräder"


def test_unseen_characters_are_the_only_unknowns():
    vocab = SubwordVocabulary.train(CORPUS, "bpe", 60)
    tokens = tokenize("Ein Mann fährt ΩFahrrad.")
    assert vocab.unknown(tokens) == ["ΩFahrrad"]
    assert vocab.decode(vocab.encode(tokens)) == ["Ein", "Mann", "fährt", "<unk>Fahrrad", "."]
    assert unk_rate(vocab, [tokens]) == pytest.approx(100 / len(vocab.encode(tokens, False)))


def test_vocab_size_below_the_alphabet_is_refused():
    alphabet = {ch for s in CORPUS for w in s for ch in w} | {"▁"}
    with pytest.raises(InvalidInputError, match=f"{len(alphabet)} distinct characters.*at least "
                       f"{len(alphabet) + 4} entries"):  # fmt: skip
        SubwordVocabulary.train(CORPUS, "bpe", len(alphabet) + 3)
    SubwordVocabulary.train(CORPUS, "bpe", len(alphabet) + 4)  # exactly enough works
    with pytest.raises(InvalidInputError, match="vocab_size must hold the 4 specials"):
        TrainConfig(vocab="bpe", vocab_size=0)
    with pytest.raises(InvalidInputError, match="subword model must be one of"):
        SubwordVocabulary.train(CORPUS, "wordpiece", 60)


def test_saved_vocabulary_and_files(tmp_path):
    vocab = SubwordVocabulary.train(CORPUS, "unigram", 60, lowercase=True)
    again = vocab_from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.lowercase and again.model == "unigram"
    assert isinstance(vocab_from_dict(Vocabulary(["a"]).to_dict()), Vocabulary)
    # a tokenizers file as Tokenizer.save writes it, and the run folder's own format
    vocab.tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert SubwordVocabulary.from_file(tmp_path / "tokenizer.json", lowercase=True) == vocab
    assert SubwordVocabulary.from_file(vocab.save(tmp_path / "subwords.json")) == vocab
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not a tokenizers JSON file"):
        SubwordVocabulary.from_file(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError, match="no such subword model file"):
        SubwordVocabulary.from_file(tmp_path / "missing.json")
    import tokenizers

    wordlevel = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0}, unk_token="a"))
    wordlevel.save(str(tmp_path / "wordlevel.json"))
    with pytest.raises(InvalidInputError, match="holds a wordlevel model; keymodels reads BPE"):
        SubwordVocabulary.from_file(tmp_path / "wordlevel.json")
    other = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    other.add_special_tokens(["<s>", "<unk>", "</s>", "<pad>"])
    other.save(str(tmp_path / "other.json"))
    with pytest.raises(InvalidInputError, match=r"ids 0-3; this one has ids \[3, 1, None, None\]"):
        SubwordVocabulary.from_file(tmp_path / "other.json")


def test_multi30k_subwords_cut_the_unknown_rate(shared_data, multi30k_bpe):
    bpe, train_pairs = multi30k_bpe
    test = load_multi30k(shared_data / "multi30k", "test")
    words = Vocabulary.build([s for s, _ in train_pairs], min_freq=2)
    word_rate = unk_rate(words, [s for s, _ in test])
    assert word_rate > 2.0  # German compounds: one word in 25 is unknown at word level
    assert unk_rate(bpe, [s for s, _ in test]) < 0.05
    bad = [s for s, _ in test if bpe.decode(bpe.encode(s)) != s]
    assert bad == []  # every test sentence round-trips


def test_subword_length_limits_count_pieces(multi30k_bpe):
    bpe, _ = multi30k_bpe
    sentence = "Ein Mann fotografiert trägerlose Kleider."
    n = len(bpe.encode(tokenize(sentence), add_eos=False))
    assert n > len(tokenize(sentence))
    with pytest.raises(InvalidInputError, match=f"has {n} subword tokens, more than this model's "
                       f"maximum of {n - 1}"):  # fmt: skip
        prepare_source(sentence, bpe, n - 1)
    kept, truncated = prepare_source(sentence, bpe, n - 1, "truncate")
    assert truncated and kept == tokenize(sentence)[:-1]
    data = TranslationDataset([(tokenize(sentence), tokenize(sentence))], bpe, bpe, max_len=n)
    assert len(data.src[0]) == n + 1 and len(data.tgt[0]) == n + 2


SYNTH = dict(task="reverse", train_size=300, val_size=40, min_len=2, synthetic_max_len=6,
             num_symbols=12, max_len=20, epochs=1)  # fmt: skip


@pytest.mark.parametrize("model", ["transformer_tiny", "seq2seq_tiny_attn"])
def test_runs_train_with_subwords_and_refuse_a_mixed_resume(tmp_path, model):
    torch.set_num_threads(1)
    tc = TrainConfig(vocab="bpe", vocab_size=30, joint_vocab=True, **SYNTH)
    train(model, tc, tmp_path, progress=False, precision="fp32", max_steps=3)
    saved = json.loads((tmp_path / "subwords.json").read_text())
    run = load_seq2seq(tmp_path)
    assert run.src_vocab is not None and run.src_vocab == run.tgt_vocab
    assert saved == run.src_vocab.to_dict() and len(run.src_vocab) <= 30
    out = translate(run, ["10 11 3"], beam=2)[0]
    assert out.source_pieces == run.src_vocab.pieces(["10", "11", "3"])
    mixed = TrainConfig(**{**SYNTH, "epochs": 2})  # word vocabulary now
    with pytest.raises(TrainingError, match="vocab"):
        train(model, mixed, tmp_path, resume=True, progress=False)


def test_a_subword_model_file_that_no_longer_matches_is_refused(tmp_path):
    torch.set_num_threads(1)
    corpus = [[str(i) for i in range(j, j + 5)] for j in range(12)]
    SubwordVocabulary.train(corpus, "bpe", 30).save(tmp_path / "sw.json")
    tc = TrainConfig(vocab="bpe", subword_model=str(tmp_path / "sw.json"), **SYNTH)
    train("transformer_tiny", tc, tmp_path / "run", progress=False, precision="fp32",
          max_steps=2)  # fmt: skip
    run = load_seq2seq(tmp_path / "run")
    assert run.src_vocab == SubwordVocabulary.from_file(tmp_path / "sw.json")
    SubwordVocabulary.train(corpus, "bpe", 25).save(tmp_path / "sw.json")  # replaced
    more = TrainConfig(**{**tc.to_dict(), "epochs": 2})
    with pytest.raises(CheckpointMismatchError, match=r"sw\.json .*does not match the one .* was "
                       "trained with"):  # fmt: skip
        train("transformer_tiny", more, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(
        InvalidInputError, match="--joint-vocab and --subword-model are for subword"
    ):
        TrainConfig(joint_vocab=True)


def test_settings_a_transformer_cannot_use_are_refused_before_training(tmp_path):
    torch.set_num_threads(1)
    from keymodels.registry import get_config
    from keymodels.seq2seq.train import check_model_fits

    # two languages' own vocabularies of one size cannot share one embedding table
    german = SubwordVocabulary.train(CORPUS, "bpe", 60)
    english = SubwordVocabulary.train([tokenize("A man rides a red bike.")] * 3, "bpe", 60)
    tied = get_config("transformer_tiny", tie_embeddings="all", src_vocab_size=60,
                      tgt_vocab_size=60)  # fmt: skip
    with pytest.raises(InvalidInputError, match="needs one joint vocabulary; add --joint-vocab"):
        check_model_fits(tied, TrainConfig(vocab="bpe", vocab_size=60), german, english)
    check_model_fits(tied, TrainConfig(vocab="bpe", vocab_size=60), german, german)
    tf = TrainConfig(teacher_forcing=0.5, **SYNTH)
    with pytest.raises(InvalidInputError, match=r"teacher forcing 1\.0 only; got 0\.5"):
        train("transformer_tiny", tf, tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "config.json").exists()
    # learned positions stop at the longest training sentence: later rows would never train
    train("transformer_tiny", TrainConfig(**SYNTH), tmp_path / "c", progress=False,
          precision="fp32", max_steps=1, positions="learned")  # fmt: skip
    assert load_seq2seq(tmp_path / "c").model.config.max_len == SYNTH["max_len"] + 2


def test_subword_model_files_must_fit_how_keymodels_marks_words(tmp_path):
    import tokenizers

    wordpiece_style = tokenizers.Tokenizer(
        tokenizers.models.BPE(unk_token="<unk>", continuing_subword_prefix="##")
    )
    wordpiece_style.add_special_tokens(["<pad>", "<unk>", "<bos>", "<eos>"])
    wordpiece_style.save(str(tmp_path / "hash.json"))
    with pytest.raises(InvalidInputError, match="marks word pieces with continuing_subword_prefix"):
        SubwordVocabulary.from_file(tmp_path / "hash.json")
    SubwordVocabulary.train(CORPUS, "unigram", 60).save(tmp_path / "uni.json")
    tc = TrainConfig(vocab="bpe", subword_model=str(tmp_path / "uni.json"), **SYNTH)
    with pytest.raises(InvalidInputError, match="is a unigram model but --vocab bpe"):
        train("transformer_tiny", tc, tmp_path / "run", progress=False)


def test_too_long_pairs_and_sentences_are_cut_at_whole_words(multi30k_bpe):
    bpe, _ = multi30k_bpe
    words = tokenize("Ein Mann fotografiert trägerlose Kleider.")
    n_first = len(bpe.encode(words[:3], add_eos=False))
    data = TranslationDataset([(words, words)], bpe, bpe, max_len=n_first + 1)
    assert data.pairs[0][0] == words[:3]  # the 4th word's pieces would not fit
    assert len(data.src[0]) == n_first + 1  # + <eos>
    long_word = ["Donaudampfschifffahrtsgesellschaftskapitänsmütze"]
    with pytest.raises(InvalidInputError, match="its first source word alone is longer"):
        TranslationDataset([(long_word, ["a"])], bpe, bpe, max_len=2)
    with pytest.raises(InvalidInputError, match="first word of the sentence alone has more"):
        prepare_source(long_word[0] + " fährt", bpe, 2, "truncate")
