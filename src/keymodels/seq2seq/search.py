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
    A sentence is done once it has K finished hypotheses; at ``max_len`` the live ones are
    finished as they are. Returns, per sentence, the ``n_best`` hypotheses by score
    log p / lp(α), best first.

    Args:
        src: [B, S] ids; src_lengths: [B].
        alpha: length penalty exponent (0: raw log-probability).
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
    attn: Tensor | None = None
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    base = (torch.arange(B, device=dev) * K)[:, None]
    src_len = src_lengths.tolist()

    def finish(row: int, b: int, toks: Tensor, lp: float, w: Tensor | None) -> None:
        n = toks.shape[0]
        step_attn = None
        if w is not None:
            step_attn = torch.cat([attn[row], w[row][None]]) if attn is not None else w[row][None]
            step_attn = step_attn[:, : src_len[b]].clone()
        finished[b].append(Hypothesis(toks.tolist(), lp, lp / length_penalty(n, alpha), step_attn))

    for _ in range(max_len):
        logp, state, w = model.decode_step(prev, state, memory)
        V = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(B, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)
        rows = base + top_idx // V  # [B, 2K] row in the B*K tensors each candidate extends
        tok = top_idx % V
        is_eos = tok == eos_id
        for b, j in (is_eos[:, :K] & (top_scores[:, :K] > float("-inf"))).nonzero().tolist():
            if not done[b]:
                row = int(rows[b, j])
                toks = torch.cat([tokens[row], tok[b, j].view(1)])
                finish(row, b, toks, float(top_scores[b, j]), w)
        alive_scores, sel = top_scores.masked_fill(is_eos, float("-inf")).topk(K, dim=1)
        flat = rows.gather(1, sel).view(-1)
        prev = tok.gather(1, sel).view(-1)
        tokens = torch.cat([tokens[flat], prev[:, None]], 1)
        if w is not None:
            attn = (
                torch.cat([attn[flat], w[flat][:, None]], 1)
                if attn is not None
                else w[flat][:, None]
            )
        state = reorder(state, flat)
        scores = alive_scores
        for b in range(B):
            done[b] = done[b] or len(finished[b]) >= K
        if all(done):
            break
    else:
        for b in range(B):
            if done[b]:
                continue
            for k in range(K):
                if scores[b, k] > float("-inf"):
                    row = b * K + k
                    finished[b].append(
                        Hypothesis(
                            tokens[row].tolist(),
                            float(scores[b, k]),
                            float(scores[b, k]) / length_penalty(tokens.shape[1], alpha),
                            None if attn is None else attn[row, :, : src_len[b]].clone(),
                        )
                    )
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]


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
    """The algorithm of :func:`beam_search` for one sentence ``src`` [S], one hypothesis at a time."""
    _check(beam_size, n_best, max_len)
    K = beam_size
    memory = model.encode(src[None], torch.tensor([src.shape[0]]))
    # live hypotheses: (tokens, log_prob tensor, state, attention rows)
    alive = [([], torch.zeros(()), model.init_state(memory), [])]
    finished: list[Hypothesis] = []

    def stack(rows: list[Tensor]) -> Tensor | None:
        return torch.stack(rows) if rows else None

    for _ in range(max_len):
        totals, steps = [], []
        for toks, lp, state, _ in alive:
            prev = torch.tensor([toks[-1] if toks else bos_id])
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
                lp = float(lp)
                finished.append(
                    Hypothesis(toks, lp, lp / length_penalty(len(toks), alpha), stack(rows))
                )
        alive = [(toks, lp, st, rows) for lp, toks, st, rows in top if toks[-1] != eos_id][:K]
        if len(finished) >= K or not alive:
            break
    else:
        for toks, lp, _, rows in alive:
            lp = float(lp)
            finished.append(
                Hypothesis(toks, lp, lp / length_penalty(len(toks), alpha), stack(rows))
            )
    return sorted(finished, key=lambda h: -h.score)[:n_best]
