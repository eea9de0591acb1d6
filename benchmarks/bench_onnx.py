"""Inference throughput of a ViT exported to ONNX (onnxruntime) against PyTorch, same weights, one process.

Prints img/s of both and the ratio onnxruntime/PyTorch (median of per-round ratios; the two take
turns within each round, so load from other processes hits both alike).

    python benchmarks/bench_onnx.py                 # ViT-Ti/16 and ViT-S/16 at 224, batch 1 and 32
    python benchmarks/bench_onnx.py --quick         # smoke run: Ti/16, few rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from keymodels import create_model
from keymodels.onnx import INPUT_NAME, check_onnx, export_onnx, onnx_session


def seconds_per_call(fn: Callable[[], object], min_seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 2 and elapsed >= min_seconds:
            return elapsed / calls


def bench(
    name: str, batches: list[int], threads: int, rounds: int, min_seconds: float
) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # a non-zero head, so the check means something
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / f"{name}.onnx")
        diff = check_onnx(model, path, batch_sizes=(1, 3))
        session = onnx_session(path, threads=threads, spin=False)  # no spinning: fair to torch
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            feed = {INPUT_NAME: x.numpy()}

            def run_torch(x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    model(x)

            def run_ort(feed: dict = feed) -> None:
                session.run(None, feed)

            run_torch(), run_ort()  # warm-up
            t_torch, t_ort, ratios = [], [], []
            for r in range(rounds):
                order = [(run_torch, t_torch), (run_ort, t_ort)][:: 1 if r % 2 == 0 else -1]
                for fn, times in order:
                    times.append(seconds_per_call(fn, min_seconds))
                ratios.append(t_torch[-1] / t_ort[-1])
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "threads": threads,
                    "torch_img_s": batch / statistics.median(t_torch),
                    "ort_img_s": batch / statistics.median(t_ort),
                    "ratio_ort_over_torch": statistics.median(ratios),
                    "max_abs_diff": diff,
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit_tiny_patch16_224", "vit_small_patch16_224"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=1.0, help="timing per function per round")
    p.add_argument("--quick", action="store_true", help="Ti/16 only, 2 short rounds")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.models, args.rounds, args.min_seconds = args.models[:1], 2, 0.2
    torch.set_num_threads(args.threads)
    rows = []
    for name in tqdm(args.models, desc="models", disable=args.json):
        rows += bench(name, args.batches, args.threads, args.rounds, args.min_seconds)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, 224×224, random weights")
    print(
        f"{'model':<24} {'batch':>5} {'PyTorch img/s':>14} {'ORT img/s':>10} {'ORT/PyTorch':>12} {'max|Δ|':>9}"
    )
    for r in rows:
        print(
            f"{r['model']:<24} {r['batch']:>5} {r['torch_img_s']:>14.1f} {r['ort_img_s']:>10.1f} "
            f"{r['ratio_ort_over_torch']:>11.2f}× {r['max_abs_diff']:>9.1e}"
        )


if __name__ == "__main__":
    main()
