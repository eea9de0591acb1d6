"""Batched beam search against two loops over the sentences, in one process.

Beam 5 on a batch of 64 source sentences (lengths 5-25) with the Multi30k-sized attention model
(random weights, sharpened so beams diverge). Two baselines, because they measure two things:

* ``beam_search`` called once per sentence (a batch of 1, its K hypotheses still batched): the
  fair baseline, which isolates the gain of batching the sentences;
* ``beam_search_reference``, one sentence and one hypothesis at a time: that gain times the
  gain of batching the K hypotheses of a sentence.

Prints how often each loop's best hypothesis equals the batched one, wall-clock and process CPU
time (which a busy, shared core does not inflate) with the speed-ups, and the load average at
start and end (other processes on the machine slow the wall-clock figures).

    python benchmarks/bench_beam.py            # batch 64, beam 5
    python benchmarks/bench_beam.py --quick    # batch 8, small model
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from keymodels import create_model
from keymodels.seq2seq.search import Hypothesis, beam_search, beam_search_reference

BOS, EOS = 2, 3
SRC_VOCAB, TGT_VOCAB = 8000, 6000


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall-clock seconds and its process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def random_batch(batch: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Source ids [B, S] of lengths 5-25 (padded with 0) and the lengths [B]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 26, (batch,), generator=g)
    src = torch.zeros(batch, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        src[i, :n] = torch.randint(4, SRC_VOCAB, (n,), generator=g)
    return src, lengths


def per_sentence(model, src: Tensor, lengths: Tensor, beam: int, **kw) -> list[Hypothesis]:
    """The batched search on one sentence at a time (a batch of 1, without padding)."""
    return [
        beam_search(model, src[i : i + 1, :n], lengths[i : i + 1], beam, **kw)[0][0]
        for i, n in enumerate(lengths.tolist())
    ]


def reference(model, src: Tensor, lengths: Tensor, beam: int, **kw) -> list[Hypothesis]:
    """The reference loop: one sentence and one hypothesis at a time."""
    return [
        beam_search_reference(model, src[i, :n], beam, **kw)[0]
        for i, n in enumerate(lengths.tolist())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--model", default="seq2seq_gru_attn_multi30k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.model = 8, "seq2seq_gru_attn_small"
    print(f"load average at start: {load()}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB).eval()
    with torch.no_grad():
        model.decoder.out.weight.mul_(4.0)
    src, lengths = random_batch(args.batch)
    kw = dict(max_len=args.max_len, bos_id=BOS, eos_id=EOS, alpha=args.alpha)
    # Warm up (allocator, kernels' first calls) so that no timing below pays for it.
    beam_search(model, src[:2], lengths[:2], args.beam, **kw)
    beam_search_reference(model, src[0, : int(lengths[0])], args.beam, **kw)

    batched, wall_b, cpu_b = timed(
        lambda: [h[0] for h in beam_search(model, src, lengths, args.beam, **kw)]
    )
    single, wall_s, cpu_s = timed(lambda: per_sentence(model, src, lengths, args.beam, **kw))
    ref, wall_r, cpu_r = timed(lambda: reference(model, src, lengths, args.beam, **kw))

    def same(hyps: list[Hypothesis]) -> int:
        return sum(b.tokens == h.tokens for b, h in zip(batched, hyps))

    mean_len = sum(len(h.tokens) for h in batched) / len(batched)
    print(
        f"model {args.model}, batch {args.batch}, beam {args.beam}, alpha {args.alpha}, "
        f"max_len {args.max_len}, {args.threads} thread(s); mean output length {mean_len:.1f}"
    )
    print(f"{'':<36} {'wall s':>8} {'cpu s':>8} {'same best':>10}")
    print(f"{'batched beam_search (B sentences)':<36} {wall_b:>8.2f} {cpu_b:>8.2f}")
    rows = [
        ("beam_search per sentence (B=1)", wall_s, cpu_s, single),
        ("reference (1 sentence, 1 hyp)", wall_r, cpu_r, ref),
    ]
    for name, wall, cpu, hyps in rows:
        print(f"{name:<36} {wall:>8.2f} {cpu:>8.2f} {same(hyps):>5}/{args.batch}")
    for name, wall, cpu, _ in rows:
        print(f"speed-up of batching vs {name}: {wall / wall_b:.1f}x wall, {cpu / cpu_b:.1f}x cpu")
    print(f"load average at end:   {load()}")


if __name__ == "__main__":
    main()
