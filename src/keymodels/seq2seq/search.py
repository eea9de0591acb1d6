"""Decoding for any model with ``encode``/``init_state``/``decode_step``: greedy and beam search.

``beam_search`` runs the whole batch × beam as one tensor; ``beam_search_reference`` is the same
algorithm written plainly, one sentence and one hypothesis at a time, to check it against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .model import State, reorder


class Decodable(Protocol):
    def encode(self, src: Tensor, src_lengths: Tensor) -> State: ...
    def init_state(self, memory: State) -> State: ...
    def decode_step(
        self, prev: Tensor, state: State, memory: State
    ) -> tuple[Tensor, State, Tensor | None]: ...


@dataclass
class Hypothesis:
    """One output sentence: ``tokens`` (ids, ending with <eos> unless cut at max_len), the summed
    log-probability, the length-normalized ``score`` search ranks by, and α per step [T, S]."""

    tokens: list[int]
    log_prob: float
    score: float
    attention: Tensor | None = None


def output_limit(model: Decodable, src_lengths: Tensor) -> int:
    """How long an output may grow: twice the longest source plus 10 tokens, within the model's
    positions (a Transformer's ``max_len``; an RNN has no such table)."""
    limit = int(src_lengths.max()) * 2 + 10
    positions = getattr(model, "max_positions", None)
    return limit if positions is None else min(limit, positions)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6)^α; hypotheses are ranked by log p(Y) / lp(Y)."""
    return ((5.0 + length) / 6.0) ** alpha


def _check(beam_size: int, n_best: int, max_len: int) -> None:
    if beam_size < 1 or max_len < 1:
        raise InvalidInputError(f"beam_size and max_len must be >= 1; got {beam_size}, {max_len}")
    if not 1 <= n_best <= beam_size:
        raise InvalidInputError(f"n_best must be in [1, beam_size={beam_size}]; got {n_best}")


def _cut(attn: Tensor | None, row: int, length: int, src_len: int) -> Tensor | None:
    return None if attn is None else attn[row, :length, :src_len].clone()


@torch.no_grad()
def greedy_search(
    model: Decodable,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int,
    bos_id: int,
    eos_id: int,
    alpha: float = 0.0,
) -> list[Hypothesis]:
    """The most probable next token at every step, for a batch ``src`` [B, S] at once."""
    _check(1, 1, max_len)
    memory = model.encode(src, src_lengths)
    state = model.init_state(memory)
    B = src.shape[0]
    prev = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
    tokens, log_probs, weights = [], [], []
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logp, state, w = model.decode_step(prev, state, memory)
        best, prev = logp.max(-1)
        tokens.append(prev)
        log_probs.append(best)
        if w is not None:
            weights.append(w)
        done |= prev == eos_id
        if bool(done.all()):
            break
    toks = torch.stack(tokens, 1).tolist()
    lps = torch.stack(log_probs, 1)
    attn = torch.stack(weights, 1) if weights else None
    out = []
    for b in range(B):
        n = toks[b].index(eos_id) + 1 if eos_id in toks[b] else len(toks[b])
        lp = float(lps[b, :n].sum())
        out.append(
            Hypothesis(
                toks[b][:n],
                lp,
                lp / length_penalty(n, alpha),
                _cut(attn, b, n, int(src_lengths[b])),
            )
        )
    return out


class _NBest:
    """The ``n`` best finished hypotheses of one sentence so far, best first.

    Sorting is stable, so equal scores keep the order in which hypotheses finished: the batched
    search and the reference loop finish them in the same order and so agree on ties.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.hyps: list[Hypothesis] = []

    def add(self, hyp: Hypothesis) -> None:
        self.hyps.append(hyp)
        self.hyps.sort(key=lambda h: -h.score)
        del self.hyps[self.n :]

    def settled(self, bound: float) -> bool:
        """Whether no live hypothesis, whose final score is at most ``bound``, can enter the list.

        True once the list is full and ``bound`` does not beat its worst entry (a tie would rank
        after it), or when nothing is live (``bound`` = -inf).
        """
        if bound == float("-inf"):
            return True
        return len(self.hyps) == self.n and bound <= self.hyps[-1].score


def live_bound(log_prob: float, length: int, max_len: int, alpha: float) -> float:
    """The best final score a live hypothesis of ``length`` tokens and ``log_prob`` can reach.

    It ends with some n in (length, max_len] tokens and a log-probability L' <= ``log_prob``
    (every step adds a log-probability <= 0), so its score is L' / lp(n) <= log_prob / lp(n).
    lp is monotone in n, so that is largest at n = length + 1 or n = max_len: with α = 0 the
    bound is ``log_prob`` itself, with α > 0 (and log_prob < 0) it is log_prob / lp(max_len).
    """
    first = length_penalty(min(length + 1, max_len), alpha)
    return max(log_prob / first, log_prob / length_penalty(max_len, alpha))


def _rows(sentences: Tensor, K: int) -> Tensor:
    """The K rows of each of ``sentences`` [n] in a [B*K] tensor: [n*K]."""
    return (sentences[:, None] * K + torch.arange(K, device=sentences.device)).view(-1)


@torch.no_grad()
def beam_search(
    model: Decodable,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int,
    max_len: int,
    bos_id: int,
    eos_id: int,
    alpha: float = 0.0,
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """Beam search over a batch, all B × K hypotheses in one tensor.

    At each step every live hypothesis is extended by every token; of the 2K best candidates per
    sentence, those ending in <eos> among the first K are finished, and the K best others live on.
    Hypotheses are ranked by score = log p(Y) / lp(|Y|) (see :func:`length_penalty`).

    Stopping: a sentence is done once no live hypothesis can still enter its ``n_best`` best
    finished ones, i.e. it has ``n_best`` finished hypotheses and the best score any live one can
    reach (:func:`live_bound`: its log-probability, divided by lp(max_len) when α > 0) is no
    better than the worst of those n_best. With n_best = 1 that is "no live hypothesis can beat
    the best finished one". So stopping early loses nothing: the result is that of the same
    search run to ``max_len``. (Stopping once K hypotheses had finished could miss a better live
    one.) With α > 0 the bound is loose, so search often runs longer than with α = 0. At
    ``max_len`` the live hypotheses are finished as they are (without <eos>). Settled sentences
    leave the batch, so the others' steps do not compute them.

    Pruning can still lose the best output, greedy's included: greedy's <eos> candidate ranked
    below K, or its prefix outranked by K others, is dropped like any other.

    Args:
        model: a :class:`Decodable` whose ``decode_step`` returns normalized log-probabilities
            (every step must add a log-probability <= 0 for the stopping rule to be exact).
        src: [B, S] ids; src_lengths: [B].
        beam_size: K, the number of live hypotheses per sentence.
        max_len: the longest output, in tokens (<eos> included).
        alpha: length penalty exponent (0: raw log-probability).
        n_best: how many hypotheses to return per sentence, in [1, K].

    Returns:
        Per sentence, up to ``n_best`` hypotheses, best first, with attention [T, S_b] when the
        model attends (fewer only when fewer than n_best outputs have a finite log-probability).
    """
    _check(beam_size, n_best, max_len)
    B, K = src.shape[0], beam_size
    dev = src.device
    memory = model.encode(src, src_lengths)
    memory = reorder(memory, torch.arange(B, device=dev).repeat_interleave(K))
    state = model.init_state(memory)
    prev = torch.full((B * K,), bos_id, dtype=torch.long, device=dev)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live hypothesis to start: the others would only duplicate it
    tokens = torch.empty((B * K, 0), dtype=torch.long, device=dev)
    attn: Tensor | None = None  # [n*K, t, S] attention of the live hypotheses
    finished = [_NBest(n_best) for _ in range(B)]
    active = list(range(B))  # the sentences still searched, in the order of the tensors' rows
    base = (torch.arange(B, device=dev) * K)[:, None]
    src_len = src_lengths.tolist()

    def finish(b: int, toks: list[int], lp: float, hyp_attn: Tensor | None) -> None:
        if hyp_attn is not None:
            hyp_attn = hyp_attn[:, : src_len[b]].clone()
        finished[b].add(Hypothesis(toks, lp, lp / length_penalty(len(toks), alpha), hyp_attn))

    for step in range(1, max_len + 1):
        logp, state, w = model.decode_step(prev, state, memory)
        n, V = len(active), logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(n, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)
        rows = base[:n] + top_idx // V  # [n, 2K] row in the n*K tensors each candidate extends
        tok = top_idx % V
        is_eos = tok == eos_id
        ended = (is_eos[:, :K] & (top_scores[:, :K] > float("-inf"))).nonzero().tolist()
        for i, j in ended:
            row = int(rows[i, j])
            step_attn = None
            if w is not None:
                step_attn = w[row][None] if attn is None else torch.cat([attn[row], w[row][None]])
            finish(active[i], [*tokens[row].tolist(), eos_id], float(top_scores[i, j]), step_attn)
        scores, sel = top_scores.masked_fill(is_eos, float("-inf")).topk(K, dim=1)
        flat = rows.gather(1, sel).view(-1)
        prev = tok.gather(1, sel).view(-1)
        tokens = torch.cat([tokens[flat], prev[:, None]], 1)
        if w is not None:
            w = w[flat][:, None]
            attn = w if attn is None else torch.cat([attn[flat], w], 1)
        state = reorder(state, flat)
        if step == max_len:
            break
        best = scores[:, 0].tolist()  # topk sorts: column 0 is each sentence's best live one
        keep = [
            i
            for i, b in enumerate(active)
            if not finished[b].settled(live_bound(best[i], step, max_len, alpha))
        ]
        if len(keep) < n:
            # Drop the settled sentences' rows, so that later steps only compute live ones.
            active = [active[i] for i in keep]
            if not active:
                break
            kept = torch.tensor(keep, device=dev)
            rows_kept = _rows(kept, K)
            scores, prev, tokens = scores[kept], prev[rows_kept], tokens[rows_kept]
            attn = None if attn is None else attn[rows_kept]
            state, memory = reorder(state, rows_kept), reorder(memory, rows_kept)
    # Sentences still active reached max_len: their live hypotheses end there, without <eos>.
    for i, b in enumerate(active):
        for k in range(K):
            lp = float(scores[i, k])
            if lp > float("-inf"):
                row = i * K + k
                finish(b, tokens[row].tolist(), lp, None if attn is None else attn[row])
    return [f.hyps for f in finished]


@torch.no_grad()
def beam_search_reference(
    model: Decodable,
    src: Tensor,
    beam_size: int,
    max_len: int,
    bos_id: int,
    eos_id: int,
    alpha: float = 0.0,
    n_best: int = 1,
) -> list[Hypothesis]:
    """The algorithm of :func:`beam_search` for one sentence ``src`` [S], one hypothesis at a time.

    Same candidates, same stopping rule (no live hypothesis can enter the n_best finished ones).
    """
    _check(beam_size, n_best, max_len)
    K, dev = beam_size, src.device
    memory = model.encode(src[None], torch.tensor([src.shape[0]], device=dev))
    # live hypotheses: (tokens, log_prob tensor, state, attention rows), best first
    alive = [([], torch.zeros((), device=dev), model.init_state(memory), [])]
    finished = _NBest(n_best)

    def finish(toks: list[int], lp: Tensor, rows: list[Tensor]) -> None:
        lp_ = float(lp)
        attention = torch.stack(rows) if rows else None
        finished.add(Hypothesis(toks, lp_, lp_ / length_penalty(len(toks), alpha), attention))

    for step in range(1, max_len + 1):
        totals, steps = [], []
        for toks, lp, state, _ in alive:
            prev = torch.tensor([toks[-1] if toks else bos_id], device=dev)
            logp, new_state, w = model.decode_step(prev, state, memory)
            totals.append(lp + logp[0])
            steps.append((new_state, w))
        V = totals[0].shape[0]
        top_scores, top_idx = torch.cat(totals).topk(min(2 * K, V * len(alive)))
        top = []
        for score, idx in zip(top_scores, top_idx.tolist()):
            if float(score) == float("-inf"):
                continue
            k, v = divmod(idx, V)
            toks, _, _, rows = alive[k]
            new_state, w = steps[k]
            top.append((score, [*toks, v], new_state, [*rows, w[0]] if w is not None else rows))
        for lp, toks, _, rows in top[:K]:
            if toks[-1] == eos_id:
                finish(toks, lp, rows)
        alive = [(toks, lp, st, rows) for lp, toks, st, rows in top if toks[-1] != eos_id][:K]
        if step == max_len:
            break
        best = float(alive[0][1]) if alive else float("-inf")
        if finished.settled(live_bound(best, step, max_len, alpha)):
            alive = []
            break
    for toks, lp, _, rows in alive:  # reached max_len: they end there, without <eos>
        finish(toks, lp, rows)
    return finished.hyps
