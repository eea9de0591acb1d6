"""Batched beam search against the one-hypothesis-at-a-time reference loop, in one process.

Beam 5 on a batch of 64 source sentences (lengths 5-25) with the Multi30k-sized attention model
(random weights, sharpened so beams diverge). Prints the per-sentence agreement of the two and the
speed ratio from wall-clock and from process CPU time (which a busy, shared core does not inflate).

    python benchmarks/bench_beam.py            # batch 64, beam 5
    python benchmarks/bench_beam.py --quick    # batch 8, small model
"""

from __future__ import annotations

import argparse
import time

import torch

from keymodels import create_model
from keymodels.seq2seq.search import beam_search, beam_search_reference

BOS, EOS = 2, 3


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=30)
    parser.add_argument("--model", default="seq2seq_gru_attn_multi30k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.model = 8, "seq2seq_gru_attn_small"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, src_vocab_size=8000, tgt_vocab_size=6000).eval()
    with torch.no_grad():
        model.decoder.out.weight.mul_(4.0)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, 26, (args.batch,), generator=g)
    src = torch.zeros(args.batch, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        src[i, :n] = torch.randint(4, 8000, (n,), generator=g)
    kw = dict(max_len=args.max_len, bos_id=BOS, eos_id=EOS, alpha=0.6)

    batched, wall_b, cpu_b = timed(lambda: beam_search(model, src, lengths, args.beam, **kw))
    ref, wall_r, cpu_r = timed(
        lambda: [
            beam_search_reference(model, src[i, :n], args.beam, **kw)
            for i, n in enumerate(lengths.tolist())
        ]
    )
    same = sum(b[0].tokens == r[0].tokens for b, r in zip(batched, ref))
    mean_len = sum(len(b[0].tokens) for b in batched) / len(batched)
    print(f"model {args.model}, batch {args.batch}, beam {args.beam}, {args.threads} thread(s)")
    print(f"identical best hypotheses: {same}/{args.batch} (mean output length {mean_len:.1f})")
    print(f"{'':<22} {'wall s':>8} {'cpu s':>8}")
    print(f"{'batched beam_search':<22} {wall_b:>8.2f} {cpu_b:>8.2f}")
    print(f"{'reference loop':<22} {wall_r:>8.2f} {cpu_r:>8.2f}")
    print(f"speed-up batched/loop: {wall_r / wall_b:.1f}x wall, {cpu_r / cpu_b:.1f}x cpu")


if __name__ == "__main__":
    main()
