"""Cost of explaining a batch (attention rollout and its variants) against one plain forward pass.

Both run in one process and take turns within each round, so load from other processes hits both
alike; the figure is the median of the per-round ratios explain / forward (target: rollout ≤ 1.5).
Ratios of this process's CPU time are printed too: with ``--threads 1`` they hardly depend on what
else the machine runs.

    python benchmarks/bench_explain.py                              # ViT-S/16 at 224, batch 32
    python benchmarks/bench_explain.py --model vit_tiny_patch16_224 --rounds 3
    python benchmarks/bench_explain.py --device cuda                # on a GPU, if there is one
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from keymodels import create_model
from keymodels.explain import explain

VARIANTS = {
    "rollout": dict(method="rollout"),
    "rollout max, discard 0.9": dict(method="rollout", head_fusion="max", discard=0.9),
    "grad-rollout": dict(method="grad-rollout"),
}


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = create_model(args.model).eval().to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # a non-zero head, so grad-rollout has gradients
    x = torch.randn(args.batch, model.config.in_chans, *model.patch_embed.img_size, device=device)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    runs = {name: (lambda kw=kw: explain(model, x, **kw)) for name, kw in VARIANTS.items()}
    runs = {name: runs[name] for name in args.variants}
    forward()  # warm-up: allocator, kernels
    for run in runs.values():
        run()

    load_before = os.getloadavg()[0]
    wall: dict[str, list[float]] = {"forward": [], **{name: [] for name in runs}}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    for _ in range(args.rounds):
        for name, run in [("forward", forward), *runs.items()]:
            w, c = timed(run, device)
            wall[name].append(w)
            cpu[name].append(c)
    load_after = os.getloadavg()[0]

    def ratio(times: dict[str, list[float]], name: str) -> float:
        return round(statistics.median(t / f for t, f in zip(times[name], times["forward"])), 3)

    result = {
        "model": args.model,
        "batch": args.batch,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
        "forward_s": round(statistics.median(wall["forward"]), 4),
        "explain": {
            name: {
                "seconds": round(statistics.median(wall[name]), 4),
                "ratio": ratio(wall, name),
                "cpu_ratio": ratio(cpu, name),
            }
            for name in runs
        },
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.model}, batch {args.batch}, {result['device']}, {result['threads']} threads, "
        f"{args.rounds} rounds, load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(f"{'':<26} {'seconds':>8} {'× forward':>10} {'× (CPU time)':>13}")
    print(f"{'plain forward (fused)':<26} {result['forward_s']:>8.3f} {1.0:>10.2f} {1.0:>13.2f}")
    for name, r in result["explain"].items():
        print(f"{name:<26} {r['seconds']:>8.3f} {r['ratio']:>10.2f} {r['cpu_ratio']:>13.2f}")


if __name__ == "__main__":
    main()
