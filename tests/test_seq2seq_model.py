"""Seq2seq models: every registered config trains end to end; masking; parallel == step path."""

from __future__ import annotations

import pytest
import torch

from keymodels.errors import InvalidInputError
from keymodels.registry import create_model, get_config, list_models
from keymodels.seq2seq.model import Seq2Seq, Seq2SeqConfig

NAMES = list_models("seq2seq_*")
SCORES = ("dot", "general", "concat", "scaled_dot")


def _batch(lengths, vocab=20, seed=0, tgt_len=5):
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab, (n,), generator=g)
    tgt = torch.randint(4, vocab, (len(lengths), tgt_len), generator=g)
    tgt[:, 0] = 2
    return src, torch.tensor(lengths), tgt


def _small(name, **kw):
    # The multi30k configs keep their architecture but get small vocabularies here.
    return create_model(name, src_vocab_size=20, tgt_vocab_size=20, **kw)


def test_registry_has_plain_and_attention_configs():
    assert {
        "seq2seq_gru_plain_small",
        "seq2seq_gru_attn_small",
        "seq2seq_gru_attn_multi30k",
    } <= set(NAMES)
    assert get_config("seq2seq_gru_plain_small").attention == "none"
    assert get_config("seq2seq_gru_attn_small").attention == "concat"


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_every_parameter_learns(name):
    torch.manual_seed(0)
    model = _small(name)
    src, lengths, tgt = _batch([6, 3, 1])
    logits, weights = model(src, lengths, tgt)
    assert logits.shape == (3, 5, 20)
    assert torch.isfinite(logits).all()
    if model.has_attention:
        assert weights.shape == (3, 5, 6)
        # weights are a distribution over the real source tokens only
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
        assert (weights[1, :, 3:] == 0).all() and (weights[2, :, 1:] == 0).all()
    else:
        assert weights is None
    logits.logsumexp(-1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_outputs(name):
    torch.manual_seed(1)
    model = _small(name).eval()
    other = Seq2Seq(model.config).eval()
    other.load_state_dict(model.state_dict())
    src, lengths, tgt = _batch([4, 2])
    torch.testing.assert_close(
        model(src, lengths, tgt)[0], other(src, lengths, tgt)[0], rtol=0, atol=0
    )


VARIANTS = [
    dict(attention=s, style=st, rnn=r, bidirectional=b, input_feeding=f)
    for s in SCORES
    for st in ("bahdanau", "luong")
    for r, b in (("gru", True), ("lstm", False))
    for f in ((True, False) if st == "luong" else (True,))
] + [dict(attention="none", rnn=r, bidirectional=b) for r, b in (("gru", True), ("lstm", False))]


def _variant(kw, layers=1):
    return Seq2Seq(
        Seq2SeqConfig(
            src_vocab_size=20,
            tgt_vocab_size=20,
            emb_dim=8,
            hidden_dim=12,
            num_layers=layers,
            dropout=0.0,
            **kw,
        )
    ).eval()


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_padding_never_changes_outputs(kw):
    """A padded batch gives the same encoder states and logits as each sentence alone."""
    torch.manual_seed(2)
    model = _variant(kw, layers=2)
    lengths = [7, 4, 1, 5]
    src, lens, tgt = _batch(lengths, seed=3)
    with torch.no_grad():
        memory = model.encode(src, lens)
        logits, weights = model(src, lens, tgt)
        for i, n in enumerate(lengths):
            alone = model.encode(src[i : i + 1, :n], lens[i : i + 1])
            torch.testing.assert_close(
                memory["states"][i, :n], alone["states"][0], atol=1e-6, rtol=1e-5
            )
            assert (memory["states"][i, n:] == 0).all()
            torch.testing.assert_close(memory["final"][i], alone["final"][0], atol=1e-6, rtol=1e-5)
            single, w = model(src[i : i + 1, :n], lens[i : i + 1], tgt[i : i + 1])
            torch.testing.assert_close(logits[i], single[0], atol=1e-5, rtol=1e-5)
            if weights is not None:
                torch.testing.assert_close(weights[i, :, :n], w[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "kw", [dict(attention="none"), dict(attention="general", style="luong", input_feeding=False)]
)
def test_all_steps_at_once_equals_one_step_at_a_time(kw):
    torch.manual_seed(4)
    model = _variant(kw)
    assert model.decoder.parallel
    src, lens, tgt = _batch([5, 3], seed=5, tgt_len=6)
    with torch.no_grad():
        fast, w_fast = model(src, lens, tgt)
        memory = model.encode(src, lens)
        state = model.init_state(memory)
        steps, weights = [], []
        for t in range(tgt.shape[1]):
            logp, state, w = model.decode_step(tgt[:, t], state, memory)
            steps.append(logp)
            weights.append(w)
    torch.testing.assert_close(fast.log_softmax(-1), torch.stack(steps, 1), atol=1e-5, rtol=1e-5)
    if w_fast is not None:
        torch.testing.assert_close(w_fast, torch.stack(weights, 1), atol=1e-6, rtol=1e-5)


def test_plain_decoder_has_no_attention_module():
    model = _variant(dict(attention="none"))
    assert not any("attention" in n for n, _ in model.named_parameters())


def test_teacher_forcing_zero_feeds_own_predictions():
    torch.manual_seed(6)
    model = _variant(dict(attention="dot"))
    src, lens, tgt = _batch([4, 4], seed=7)
    with torch.no_grad():
        free, _ = model(src, lens, tgt, teacher_forcing=0.0)
        other_tgt = tgt.clone()
        other_tgt[:, 1:] = 5  # only the first input can matter without teacher forcing
        free2, _ = model(src, lens, other_tgt, teacher_forcing=0.0)
        forced, _ = model(src, lens, other_tgt)
    torch.testing.assert_close(free, free2)
    assert not torch.allclose(free, forced)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(rnn="transformer"), "rnn type"),
        (dict(attention="cosine"), "attention"),
        (dict(style="vaswani"), "style"),
        (dict(hidden_dim=0), "hidden_dim"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_config_is_a_clear_error(kw, match):
    with pytest.raises(InvalidInputError, match=match):
        Seq2SeqConfig(**kw)


def test_config_from_dict_rejects_unknown_keys():
    config = Seq2SeqConfig(hidden_dim=32)
    assert Seq2SeqConfig.from_dict(config.to_dict()) == config
    with pytest.raises(
        InvalidInputError,
        match=r"unknown seq2seq config field\(s\) \['hiden_dim'\]; valid fields: attention, "
        r".*hidden_dim.*Did you mean 'hidden_dim'\?",
    ):
        Seq2SeqConfig.from_dict({"hiden_dim": 32})


def test_empty_source_is_rejected():
    model = _variant(dict(attention="dot"))
    with pytest.raises(InvalidInputError, match="at least one token"):
        model.encode(torch.zeros(1, 3, dtype=torch.long), torch.tensor([0]))
