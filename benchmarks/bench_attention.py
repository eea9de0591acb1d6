"""Multi-head attention on the CPU: PyTorch's fused kernel against the explicit path, fp32 and bf16.

Times forward + backward of ``keymodels.attention.MultiHeadAttention`` on the shapes of the
registered models (token counts 49-197), the two paths taking turns in each round, and says
which path the module takes by itself when training (``EXPLICIT_CPU_MAX_PAIRS``).

    python benchmarks/bench_attention.py                 # all shapes, 2 threads
    python benchmarks/bench_attention.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import keymodels.attention as attention
from keymodels.attention import MultiHeadAttention

# (what, batch, tokens, dim, heads)
SHAPES = [
    ("CCT-4/3x2 Fashion-MNIST", 128, 49, 128, 2),
    ("ViT Fashion-MNIST, patch 4", 128, 50, 96, 4),
    ("ViT digits, patch 2", 128, 17, 64, 4),
    ("Transformer Multi30k, 30 tokens", 64, 30, 256, 4),
    ("ViT-S/16 224", 16, 197, 384, 6),
]


def step_seconds(mha: MultiHeadAttention, x: torch.Tensor, dtype: torch.dtype, path: str) -> float:
    """Seconds of one forward + backward on ``path`` ("fused" or "explicit")."""
    saved, attention.EXPLICIT_CPU_MAX_PAIRS = attention.EXPLICIT_CPU_MAX_PAIRS, -1  # fused unless
    try:  # the weights are asked for, which is the explicit path
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = mha(x, need_weights=path == "explicit")[0]
        out.float().square().mean().backward()
        return time.perf_counter() - start
    finally:
        attention.EXPLICIT_CPU_MAX_PAIRS = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="rounds; the median is reported")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    print(f"{args.threads} threads, load average {load:.2f} at the start; ms per forward+backward")
    print("| shape | dtype | fused ms | explicit ms | fused / explicit | module takes |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for what, batch, tokens, dim, heads in SHAPES:
        mha = MultiHeadAttention(dim, heads)
        x = torch.randn(batch, tokens, dim, requires_grad=True)
        for dtype in (torch.float32, torch.bfloat16):
            times: dict[str, list[float]] = {"fused": [], "explicit": []}
            for _ in range(2):  # warm-up
                for path in times:
                    step_seconds(mha, x, dtype, path)
            for _ in range(args.repeats):
                for path in times:
                    times[path].append(step_seconds(mha, x, dtype, path))
            fused, explicit = (statistics.median(t) for t in times.values())
            q = torch.empty(1, 1, tokens, 1, dtype=dtype, requires_grad=True)  # training
            takes = "explicit" if attention._explicit_is_faster(q, tokens) else "fused"
            name = "fp32" if dtype == torch.float32 else "bf16"
            print(f"| {what} | {name} | {fused * 1e3:.1f} | {explicit * 1e3:.1f} | "
                  f"{fused / explicit:.2f} | {takes} |")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
