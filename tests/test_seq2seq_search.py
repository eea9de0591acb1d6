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


def test_pruning_can_still_lose_greedys_output():
    # The stopping rule loses nothing, but pruning can: with K=2, greedy's a b <eos> (0.182) is
    # outranked at step 3 by a a b (0.209) and a a a (0.192), so it never finishes, and neither
    # survivor leads anywhere as good. So "beam >= greedy" holds only where nothing is pruned
    # (test_beam_equals_exhaustive_search_where_nothing_is_pruned); K=1 and K>=3 find it here.
    table = _table(
        {
            BOS: {EOS: 0.03, A: 0.87, B: 0.10},
            A: {EOS: 0.02, A: 0.47, B: 0.51},
            B: {EOS: 0.41, A: 0.28, B: 0.31},
        }
    )
    model = MarkovModel(table)
    src, lens = torch.ones(1, 1, dtype=torch.long), torch.tensor([1])
    greedy = greedy_search(model, src, lens, 6, BOS, EOS)[0]
    assert greedy.tokens == _brute_force(model, 6, 0.0)[1] == [A, B, EOS]
    for beam in (1, 3, 4):
        assert beam_search(model, src, lens, beam, 6, BOS, EOS)[0][0].tokens == [A, B, EOS]
    assert beam_search(model, src, lens, 2, 6, BOS, EOS)[0][0].score < greedy.score - 2.0


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
    # A wider beam finishes <eos> hypotheses ranked in its top K, but does not stop at K of them:
    # the live A A A (log-prob 2 log 0.99) still beats them, and ends best, cut at max_len.
    for hyps in beam_search(model, src, lens, 2, 5, BOS, EOS, n_best=2):
        assert [h.tokens for h in hyps] == [[A] * 5, [A, EOS]]
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


# ------------------------------------------------ random Markov tables, many at once

OUT = 3  # ids below EOS (pad, unk, bos) are never produced; EOS and 4.. are


class MarkovTables:
    """Many Markov 'models' in one batch: sentence i uses table ``src[i, 0]`` of ``logp``.

    ``logp`` [M, V, V] holds log p(next | previous); the table index travels in the state, so
    that beam search's reordering keeps each hypothesis with its own table.
    """

    def __init__(self, logp: torch.Tensor) -> None:
        self.logp = logp

    def encode(self, src, src_lengths):
        return {"table": src[:, 0]}

    def init_state(self, memory):
        return {"table": memory["table"]}

    def decode_step(self, prev, state, memory):
        return self.logp[state["table"], prev], state, None


def _random_tables(m, n_out, seed, sharpness=2.0, sparsity=0.0):
    """``m`` random tables over EOS + ``n_out - 1`` real tokens: logp [m, V, V], V = 3 + n_out.

    ``sparsity``: the chance that a transition is impossible (log-prob -inf), which shrinks the
    search space; every row keeps at least one possible next token.
    """
    g = torch.Generator().manual_seed(seed)
    V = OUT + n_out
    logits = torch.randn(m, V, V, generator=g) * sharpness
    cut = torch.rand(m, V, V, generator=g) < sparsity
    cut[:, :, :OUT] = True
    keep = OUT + torch.randint(n_out, (m, V, 1), generator=g)
    cut.scatter_(2, keep, False)
    return logits.masked_fill(cut, float("-inf")).log_softmax(-1)


def _decode_all(logp, beam, max_len, alpha, n_best):
    model = MarkovTables(logp)
    src, lens = torch.arange(len(logp))[:, None], torch.ones(len(logp), dtype=torch.long)
    return model, src, beam_search(model, src, lens, beam, max_len, BOS, EOS, alpha, n_best)


def _padded_scores(hyps_per_sentence, n_best):
    """Scores of each sentence's n-best list as [M, n_best], padded with -inf."""
    out = torch.full((len(hyps_per_sentence), n_best), float("-inf"), dtype=torch.float64)
    for i, hyps in enumerate(hyps_per_sentence):
        out[i, : len(hyps)] = torch.tensor([h.score for h in hyps], dtype=torch.float64)
    return out


def _beam_without_early_stop(logp, beam, max_len, alpha, n_best):
    """What beam search must return, written independently: [M, n_best] scores, -inf padded.

    Each step keeps the same candidates as :func:`beam_search` (the 2K best extensions; <eos>
    ones among the first K finish, the K best others live on), but never stops before max_len,
    where the live hypotheses end as they are. Stopping early must lose nothing of this.
    """
    M, V, _ = logp.shape
    K = beam
    scores = torch.full((M, K), float("-inf"))
    scores[:, 0] = 0.0
    last = torch.full((M, K), BOS)
    ended = []
    for step in range(1, max_len + 1):
        cand = (scores[:, :, None] + logp[torch.arange(M)[:, None], last]).view(M, K * V)
        top, idx = cand.topk(min(2 * K, K * V), dim=1)
        is_eos = idx % V == EOS
        ended.append(top[:, :K].masked_fill(~is_eos[:, :K], float("-inf")).double())
        ended[-1] /= length_penalty(step, alpha)
        scores, sel = top.masked_fill(is_eos, float("-inf")).topk(K, dim=1)
        last = (idx % V).gather(1, sel)
    ended.append(scores.double() / length_penalty(max_len, alpha))
    return torch.cat(ended, 1).topk(n_best, dim=1).values


def _all_outputs(n_out, max_len):
    """Every output: real tokens then <eos> (up to max_len in all), or max_len real tokens."""
    real = range(OUT + 1, OUT + n_out)
    seqs = [[*body, EOS] for n in range(max_len) for body in itertools.product(real, repeat=n)]
    return seqs + [list(body) for body in itertools.product(real, repeat=max_len)]


def _exhaustive(logp, max_len, alpha, n_best):
    """Scores [M, n_best] of the n best outputs, by enumeration of all of them."""
    n_out = logp.shape[1] - OUT
    seqs = _all_outputs(n_out, max_len)
    toks = torch.full((len(seqs), max_len), EOS)
    lengths = torch.tensor([len(s) for s in seqs])
    for i, s in enumerate(seqs):
        toks[i, : len(s)] = torch.tensor(s)
    prev = torch.cat([torch.full((len(seqs), 1), BOS), toks[:, :-1]], 1)
    step_lp = logp[:, prev, toks].double()  # [M, N, max_len]
    inside = torch.arange(max_len) < lengths[:, None]
    lp = torch.where(inside, step_lp, torch.zeros(())).sum(-1)
    penalty = torch.tensor([length_penalty(int(n), alpha) for n in lengths], dtype=torch.float64)
    return (lp / penalty).topk(n_best, dim=1).values


def _prunes(logp, beam, max_len):
    """[M] bool: whether beam search with ``beam`` must drop some candidate on some step."""
    possible = (logp > float("-inf")).double()  # [M, V, V]
    live = torch.zeros(logp.shape[:2], dtype=torch.float64)
    live[:, BOS] = 1.0  # live[m, u]: how many live prefixes end in u
    prunes = torch.zeros(len(logp), dtype=torch.bool)
    for _ in range(max_len):
        nxt = torch.einsum("mu,muv->mv", live, possible)
        prunes |= nxt.sum(1) > beam  # candidates (<eos> ones included) that do not all fit
        live = nxt.index_fill(1, torch.tensor([EOS]), 0.0)
    return prunes


def _assert_valid(hyps, table, max_len, alpha):
    """Each hypothesis is a distinct output whose score is its own.

    The order of outputs with equal scores is not checked: with a Markov table, outputs that use
    the same transitions in another order tie (up to rounding), and are common.
    """
    assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
    for h in hyps:
        assert h.tokens[-1] == EOS or len(h.tokens) == max_len
        assert EOS not in h.tokens[:-1]
        lp = float(table[[BOS, *h.tokens[:-1]], h.tokens].double().sum())
        assert h.log_prob == pytest.approx(lp, abs=1e-4)
        assert h.score == pytest.approx(lp / length_penalty(len(h.tokens), alpha), abs=1e-4)


@pytest.mark.parametrize(
    "beam, alpha, n_best, n_out",
    [(2, 0.0, 1, 4), (3, 0.0, 2, 5), (2, 0.6, 1, 6), (4, 0.6, 4, 4), (3, 1.2, 1, 5)],
)
def test_stopping_early_loses_nothing_on_random_markov_tables(beam, alpha, n_best, n_out):
    # A sentence used to stop once K hypotheses had finished, while a live one could still beat
    # them (K=2, α=0: worse than greedy in 73 of 12,000 random tables). Now the result equals that
    # of the same search run to max_len, n-best lists included.
    logp = _random_tables(1500, n_out, seed=beam * 10 + int(10 * alpha))
    _, _, hyps = _decode_all(logp, beam, 6, alpha, n_best)
    expected = _beam_without_early_stop(logp, beam, 6, alpha, n_best)
    torch.testing.assert_close(_padded_scores(hyps, n_best), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.2])
@pytest.mark.parametrize("beam, n_best", [(3, 1), (5, 2), (8, 3)])
def test_beam_equals_exhaustive_search_where_nothing_is_pruned(beam, n_best, alpha):
    # On tables whose search space fits in the beam, beam search is exhaustive: its n-best list
    # is the true one, and its best is never worse than greedy's.
    logp = _random_tables(1500, 4, seed=beam + int(10 * alpha), sparsity=0.7)
    fits = ~_prunes(logp, beam, 5)
    assert int(fits.sum()) >= 300  # 40-75% of the tables, depending on the beam
    logp = logp[fits]
    model, src, hyps = _decode_all(logp, beam, 5, alpha, n_best)
    best = _exhaustive(logp, 5, alpha, n_best)
    torch.testing.assert_close(_padded_scores(hyps, n_best), best, atol=1e-4, rtol=0)
    for table, row in zip(logp, hyps):
        _assert_valid(row, table, 5, alpha)
    greedy = greedy_search(model, src, torch.ones(len(src), dtype=torch.long), 5, BOS, EOS, alpha)
    assert all(h[0].score >= g.score - 1e-5 for h, g in zip(hyps, greedy))


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_batched_beam_equals_reference_loop_on_random_markov_tables(sparsity):
    logp = _random_tables(160, 4, seed=7, sparsity=sparsity)
    same = 0
    for i, (beam, alpha, n_best) in enumerate([(2, 0.0, 2), (3, 0.6, 1), (4, 1.2, 3)]):
        part = logp[i::3]
        model, src, batched = _decode_all(part, beam, 6, alpha, n_best)
        for j, hyps in enumerate(batched):
            ref = beam_search_reference(model, src[j], beam, 6, BOS, EOS, alpha, n_best)
            assert [h.score for h in hyps] == pytest.approx([h.score for h in ref], abs=1e-5)
            _assert_valid(hyps, part[j], 6, alpha)
            # Outputs differ only where scores tie (see _assert_valid), which is rare.
            same += [h.tokens for h in hyps] == [r.tokens for r in ref]
    assert same >= 0.95 * len(logp)
