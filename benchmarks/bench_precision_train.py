"""Training steps in fp32 against bf16 autocast, in one process, and what ``precision="auto"`` picks.

Each model takes full training steps (forward, loss, backward, clip, Adam) on real batches, the
two precisions taking turns within each round; the table gives steps/s of each (the usual
contiguous layout), the ratio, and the choice of ``keymodels.runtime.choose_training_precision``
for the same model and batch (with the channels-last layout it times for conv tokenizers).

    python benchmarks/bench_precision_train.py                  # Multi30k attention RNN, ViT recipes
    python benchmarks/bench_precision_train.py --quick          # fewer steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from keymodels.registry import create_model
from keymodels.runtime import autocast, choose_training_precision
from keymodels.seq2seq.data import TranslationDataset, collate, load_multi30k
from keymodels.seq2seq.train import sequence_loss
from keymodels.seq2seq.vocab import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KEYMODELS_SHARED", ROOT.parent / "shared"))


def multi30k_job(batch_size: int) -> tuple[torch.nn.Module, Callable[[int], torch.Tensor]]:
    """The README's Multi30k model (bi-GRU 256, Luong general attention) on real batches."""
    pairs = load_multi30k(SHARED / "data" / "multi30k", "train", "de", "en")[:8192]
    src_vocab = Vocabulary.build((s for s, _ in pairs), 2)
    tgt_vocab = Vocabulary.build((t for _, t in pairs), 2)
    data = TranslationDataset(pairs, src_vocab, tgt_vocab, 50, "truncate")
    model = create_model(
        "seq2seq_gru_luong_multi30k", src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab),
        emb_dim=256, hidden_dim=256, dropout=0.3,
    )  # fmt: skip
    batches = [
        collate([data[j] for j in range(i, i + batch_size)])
        for i in range(0, len(data) - batch_size + 1, batch_size)
    ]

    def loss(i: int) -> torch.Tensor:
        b = batches[i % len(batches)]
        logits, _ = model(b["src"], b["src_lengths"], b["tgt"][:, :-1])
        return sequence_loss(logits.float(), b["tgt"][:, 1:], 0.1)

    return model, loss


def vit_job(name: str, batch_size: int, **overrides) -> tuple[torch.nn.Module, Callable]:
    model = create_model(name, **overrides)
    c = model.config
    images = torch.randn(batch_size, c.in_chans, *model.patch_embed.img_size)
    labels = torch.randint(c.num_classes, (batch_size,))
    return model, lambda i: F.cross_entropy(model(images).float(), labels)


def steps_per_second(model, loss_fn, precision: str, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for i in range(steps):
        with autocast(precision):
            loss = loss_fn(i)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="run only the jobs whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, steps = (1, 3) if args.quick else (args.rounds, args.steps)
    jobs = {
        "Multi30k bi-GRU+Luong, batch 128": lambda: multi30k_job(128),
        "cct_4_3x2_28 (fashion-mnist recipe), batch 128": lambda: vit_job("cct_4_3x2_28", 128),
        "cct_2_3x1_8 (digits recipe), batch 64": lambda: vit_job("cct_2_3x1_8", 64),
        "vit_fmnist_patch4_28 (plain ViT), batch 128": lambda: vit_job("vit_fmnist_patch4_28", 128),
        "vit_digits_patch2_8 (plain ViT), batch 128": lambda: vit_job("vit_digits_patch2_8", 128),
        "vit_small_patch16_224, 10 classes, batch 32": lambda: vit_job(
            "vit_small_patch16_224", 32, num_classes=10
        ),
    }
    jobs = {k: v for k, v in jobs.items() if not args.only or args.only in k}
    print(f"# {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(f"{'job':<50} {'fp32 steps/s':>12} {'bf16 steps/s':>12} {'bf16/fp32':>9} {'auto':>5}")
    for job, build in jobs.items():
        torch.manual_seed(0)
        model, loss_fn = build()
        model.train()
        steps_per_second(model, loss_fn, "fp32", 1)  # warm-up of both paths
        steps_per_second(model, loss_fn, "bf16", 1)
        rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for r in range(rounds):
            for p in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
                rates[p].append(steps_per_second(model, loss_fn, p, steps))
        ratio = statistics.median(b / f for b, f in zip(rates["bf16"], rates["fp32"]))
        choice = choose_training_precision("auto", model, lambda f=loss_fn: f(0))
        print(
            f"{job:<50} {statistics.median(rates['fp32']):>12.2f} "
            f"{statistics.median(rates['bf16']):>12.2f} {ratio:>9.2f} {choice.precision:>5}"
            f"{' + channels_last' if choice.channels_last else ''}",
            flush=True,
        )
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
