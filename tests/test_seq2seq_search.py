"""Greedy and beam search: beam 1 == greedy, batched beam == the reference loop, optimality."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from keymodels.errors import InvalidInputError
from keymodels.registry import create_model
from keymodels.seq2seq.search import (
    beam_search,
    beam_search_reference,
    greedy_search,
    length_penalty,
)

BOS, EOS = 2, 3
MODELS = ["seq2seq_tiny_plain", "seq2seq_tiny_attn", "seq2seq_tiny_lstm_luong"]


def _model(name, seed=0):
    torch.manual_seed(seed)
    model = create_model(name).eval()
    # Sharper output distributions than at init, so that beams really diverge from greedy.
    with torch.no_grad():
        model.decoder.out.weight.mul_(8.0)
    return model


def _src(lengths, vocab=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab, (n,), generator=g)
    return src, torch.tensor(lengths)


@pytest.mark.parametrize("name", MODELS)
def test_beam_one_equals_greedy(name):
    model = _model(name)
    src, lengths = _src([5, 2, 7, 1, 4])
    greedy = greedy_search(model, src, lengths, 12, BOS, EOS, alpha=0.6)
    beam = beam_search(model, src, lengths, 1, 12, BOS, EOS, alpha=0.6)
    for g, (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert g.score == pytest.approx(b.score, abs=1e-5)
        if g.attention is not None:
            torch.testing.assert_close(g.attention, b.attention)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("beam, alpha, n_best", [(5, 0.0, 1), (5, 0.6, 3), (3, 1.0, 3)])
def test_batched_beam_equals_reference_loop(name, beam, alpha, n_best):
    model = _model(name, seed=beam)
    lengths = [6, 3, 8, 1, 5, 6]
    src, lens = _src(lengths, seed=beam)
    batched = beam_search(model, src, lens, beam, 10, BOS, EOS, alpha, n_best)
    differs_from_greedy = False
    greedy = greedy_search(model, src, lens, 10, BOS, EOS, alpha)
    for i, n in enumerate(lengths):
        ref = beam_search_reference(model, src[i, :n], beam, 10, BOS, EOS, alpha, n_best)
        assert [h.tokens for h in batched[i]] == [h.tokens for h in ref]
        for b, r in zip(batched[i], ref):
            assert b.score == pytest.approx(r.score, abs=1e-4)
            assert b.log_prob == pytest.approx(r.log_prob, abs=1e-4)
            assert b.score == pytest.approx(
                b.log_prob / length_penalty(len(b.tokens), alpha), abs=1e-5
            )
            if r.attention is not None:
                assert b.attention.shape == (len(b.tokens), n)
                torch.testing.assert_close(b.attention, r.attention, atol=1e-5, rtol=1e-4)
        scores = [h.score for h in batched[i]]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in batched[i]}) == len(batched[i])
        differs_from_greedy |= batched[i][0].tokens != greedy[i].tokens
        # beam search never returns something worse than greedy (by its own score)
        assert batched[i][0].score >= greedy[i].score - 1e-5 or batched[i][0].tokens[-1] != EOS
    assert differs_from_greedy or beam == 3  # the sharp models make beams matter


class MarkovModel:
    """A hand-built 'model': p(y_t | y_{t-1}) from a fixed table, the same for every source."""

    def __init__(self, table: torch.Tensor) -> None:
        self.logp = table.log()  # [V, V] rows: previous token, columns: next token

    def encode(self, src, src_lengths):
        return {"states": torch.zeros(src.shape[0], 1)}

    def init_state(self, memory):
        return {"dummy": memory["states"]}

    def decode_step(self, prev, state, memory):
        return self.logp[prev], state, None


A, B = 4, 5  # the two real tokens; pad 0, unk 1, bos 2, eos 3


def _table(rows: dict[int, dict[int, float]]) -> torch.Tensor:
    t = torch.zeros(6, 6)
    for prev, probs in rows.items():
        for tok, p in probs.items():
            t[prev, tok] = p
    return t


def _brute_force(model: MarkovModel, max_len: int, alpha: float):
    """Score of every possible output (EOS-terminated, or cut at max_len) and the best one."""
    best = None
    for n in range(max_len + 1):
        for body in itertools.product((A, B), repeat=n):
            seqs = [[*body, EOS]] if n < max_len else []
            if n == max_len:
                seqs.append(list(body))
            for seq in seqs:
                lp, prev = 0.0, BOS
                for tok in seq:
                    lp += float(model.logp[prev, tok])
                    prev = tok
                score = lp / length_penalty(len(seq), alpha)
                if best is None or score > best[0]:
                    best = (score, seq)
    return best


def test_beam_finds_the_best_sequence_where_greedy_does_not():
    # After <bos>: 'a' is likelier (0.6) but leads nowhere certain; 'b' (0.4) is then followed
    # by <eos> with 0.9. Greedy: a <eos> = 0.6 × 0.34; best: b <eos> = 0.4 × 0.9.
    table = _table(
        {
            BOS: {A: 0.6, B: 0.4},
            A: {A: 0.33, B: 0.33, EOS: 0.34},
            B: {A: 0.05, B: 0.05, EOS: 0.9},
        }
    )
    model = MarkovModel(table)
    src, lens = torch.ones(1, 1, dtype=torch.long), torch.tensor([1])
    greedy = greedy_search(model, src, lens, 3, BOS, EOS)[0]
    beam = beam_search(model, src, lens, 2, 3, BOS, EOS)[0][0]
    best_score, best_seq = _brute_force(model, 3, 0.0)
    assert greedy.tokens == [A, EOS]
    assert beam.tokens == best_seq == [B, EOS]
    assert beam.score == pytest.approx(best_score, abs=1e-6)
    assert beam.score == pytest.approx(math.log(0.4 * 0.9), abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_equals_brute_force_on_random_tables(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.zeros(6, 6)
    table[:, [A, B, EOS]] = torch.rand(6, 3, generator=g) + 0.05
    table = table / table.sum(1, keepdim=True)
    model = MarkovModel(table)
    src, lens = torch.ones(1, 1, dtype=torch.long), torch.tensor([1])
    hyp = beam_search(model, src, lens, 16, 4, BOS, EOS, alpha)[0][0]
    best_score, best_seq = _brute_force(model, 4, alpha)
    assert hyp.tokens == best_seq
    assert hyp.score == pytest.approx(best_score, abs=1e-5)
    ref = beam_search_reference(model, src[0], 16, 4, BOS, EOS, alpha)[0]
    assert ref.tokens == best_seq


def test_max_len_cuts_hypotheses_without_eos():
    table = _table({BOS: {A: 1.0}, A: {A: 0.99, EOS: 0.01}})
    model = MarkovModel(table)
    src, lens = torch.ones(2, 1, dtype=torch.long), torch.tensor([1, 1])
    for (hyp,) in beam_search(model, src, lens, 1, 5, BOS, EOS):
        assert hyp.tokens == [A] * 5  # never ends: cut at max_len without <eos>
        assert hyp.log_prob == pytest.approx(4 * math.log(0.99), abs=1e-5)
    # A wider beam finishes <eos> hypotheses ranked in its top K, and stops once it has K of them.
    for hyps in beam_search(model, src, lens, 2, 5, BOS, EOS, n_best=2):
        assert [h.tokens for h in hyps] == [[A, EOS], [A, A, EOS]]
    assert greedy_search(model, src, lens, 5, BOS, EOS)[0].tokens == [A] * 5


@pytest.mark.parametrize(
    "kw, match",
    [(dict(beam_size=0), "beam_size"), (dict(n_best=3), "n_best"), (dict(max_len=0), "max_len")],
)
def test_bad_search_arguments(kw, match):
    model = MarkovModel(_table({BOS: {A: 1.0}, A: {EOS: 1.0}}))
    args = dict(beam_size=2, max_len=3, bos_id=BOS, eos_id=EOS, n_best=1) | kw
    with pytest.raises(InvalidInputError, match=match):
        beam_search(model, torch.ones(1, 1, dtype=torch.long), torch.tensor([1]), **args)
