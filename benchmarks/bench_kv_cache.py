"""Transformer decoding with the key/value cache against recomputing the prefix, in one process.

Greedy and beam-5 search on a batch of source sentences (lengths 5-25) with the Multi30k-sized
Transformer (random weights): ``decode_step`` with the cache (each step projects one token per
layer), against a wrapper whose every step runs the decoder over the whole prefix again, as a
Transformer without a cache must. Both run the same search code; the script checks that their
hypotheses are identical and prints wall-clock and process CPU seconds, the speed-up, and the
load average at start and end.

    python benchmarks/bench_kv_cache.py              # batch 32, max 40 output tokens
    python benchmarks/bench_kv_cache.py --quick      # batch 4, tiny model
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from keymodels import create_model
from keymodels.seq2seq.search import beam_search, greedy_search

# an end id no step can produce: every hypothesis runs to max_len, so the work is known
BOS, EOS, VOCAB = 2, -1, 8000


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


class Recompute:
    """The model decoded without a cache: every step runs the decoder over the whole prefix."""

    def __init__(self, model) -> None:
        self.model = model

    def encode(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        return self.model.encode(src, src_lengths)  # the encoder still runs once

    def init_state(self, memory: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"prefix": memory["mask"].new_zeros(memory["mask"].shape[0], 0, dtype=torch.long)}

    def decode_step(self, prev: Tensor, state: dict[str, Tensor], memory: dict[str, Tensor]):
        prefix = torch.cat([state["prefix"], prev[:, None]], 1)
        logits, _ = self.model._decode_all(prefix, memory, False)
        return F.log_softmax(logits[:, -1].float(), -1), {"prefix": prefix}, None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = "transformer_tiny" if args.quick else "transformer_multi30k"
    vocab = 24 if args.quick else VOCAB
    model = create_model(name, src_vocab_size=vocab, tgt_vocab_size=vocab).eval()
    batch, max_len = (4, 12) if args.quick else (32, 40)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, 26 if not args.quick else 12, (batch,), generator=g)
    src = torch.zeros(batch, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        src[i, :n] = torch.randint(4, vocab, (n,), generator=g)
    print(f"{name}, batch {batch}, {max_len} output tokens, {args.threads} thread(s)")
    print(f"load average at start: {load()}")
    for label, search in (
        ("greedy", lambda m: greedy_search(m, src, lengths, max_len, BOS, EOS)),
        ("beam 5", lambda m: [h[0] for h in beam_search(m, src, lengths, 5, max_len, BOS, EOS)]),
    ):
        with torch.no_grad():
            fast, fast_wall, fast_cpu = timed(lambda search=search: search(model))
            slow, slow_wall, slow_cpu = timed(lambda search=search: search(Recompute(model)))
        same = sum(a.tokens == b.tokens for a, b in zip(fast, slow))
        print(
            f"{label}: {same}/{batch} identical; cache {fast_wall:.2f} s wall ({fast_cpu:.2f} s CPU),"
            f" recompute {slow_wall:.2f} s ({slow_cpu:.2f} s): {slow_wall / fast_wall:.1f}× "
            f"faster with the cache ({slow_cpu / fast_cpu:.1f}× CPU)"
        )
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
