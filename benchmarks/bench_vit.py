"""Inference speed and memory of keymodels' ViT against timm's, same weights, in one process.

Prints a table of img/s (median over interleaved rounds) with the ratio keymodels/timm (median of
per-round ratios, from wall-clock and from process CPU time, which waiting for a busy core does not
inflate), the peak extra memory of one forward pass (each in a fresh process), and the cost of the
explicit attention path (forward_attention, which also returns the weights) over the fused one.

    python benchmarks/bench_vit.py            # ViT-Ti/16 and ViT-S/16, batch 1 and 32, 2 threads
    python benchmarks/bench_vit.py --base     # also ViT-B/16
    python benchmarks/bench_vit.py --quick    # smoke run: Ti/16 only, few rounds
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import timm
import torch

from keymodels import create_model


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's model with random weights (head included) and keymodels' with the same weights."""
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ours = create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def time_calls(fn: Callable[[], object], min_seconds: float) -> tuple[float, float]:
    """Wall-clock and CPU seconds per call of ``fn``, over at least ``min_seconds`` of wall time.

    CPU time (all threads of this process) resists other processes' load better than wall time:
    time spent waiting for a core is not counted.
    """
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls, (time.process_time() - cpu_start) / calls


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, min_seconds: float) -> dict:
    """Median seconds per call of each function, and the median of its per-round time / the first's.

    The functions take turns within each round (in alternating order), so a burst of load from
    other processes hits all of them alike; the per-round ratios cancel most of it.
    """
    names = list(fns)
    for fn in fns.values():  # warm-up: allocator, kernels, caches
        fn()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            w, c = time_calls(fns[n], min_seconds)
            wall[n].append(w)
            cpu[n].append(c)
    base = names[0]
    return {
        n: {
            "seconds": statistics.median(wall[n]),
            "time_vs_first": statistics.median(t / b for t, b in zip(wall[n], wall[base])),
            "cpu_vs_first": statistics.median(t / b for t, b in zip(cpu[n], cpu[base])),
        }
        for n in names
    }


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1])


def memory_probe(lib: str, name: str, batch: int) -> None:
    """In a fresh process: peak resident memory added by the first forward pass, in MiB (as JSON).

    Linux only: the high-water mark of resident memory is reset just before the pass (writing 5
    to /proc/self/clear_refs), so building the model does not hide the activations' peak.
    """
    torch.set_num_threads(2)
    model = (timm.create_model(name) if lib == "timm" else create_model(name)).eval()
    x = torch.randn(batch, 3, 224, 224)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS:")
    with torch.inference_mode():
        model(x)
    print(json.dumps({"peak_mib": (_status_kib("VmHWM:") - before) / 1024}))


def peak_memory(lib: str, name: str, batch: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", lib, name, str(batch)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="store_true", help="also ViT-B/16")
    parser.add_argument("--quick", action="store_true", help="smoke run: Ti/16 only, few rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per model and batch")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least wall time per timing")
    parser.add_argument(
        "--memory-probe", nargs=3, metavar=("LIB", "NAME", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_probe:
        lib, name, batch = args.memory_probe
        memory_probe(lib, name, int(batch))
        return

    torch.set_num_threads(args.threads)
    names = ["vit_tiny_patch16_224"]
    if not args.quick:
        names.append("vit_small_patch16_224")
    if args.base:
        names.append("vit_base_patch16_224")
    batches = (1, 8) if args.quick else args.batches
    rounds = 3 if args.quick else args.rounds
    min_seconds = 0.2 if args.quick else args.min_seconds

    load = os.getloadavg()[0]
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, fp32, "
        f"torch {torch.__version__}, timm {timm.__version__}, load average {load:.1f} at start"
    )
    print(
        f"{'model':<22} {'batch':>5} {'keymodels img/s':>16} {'timm img/s':>11} {'ratio':>6} "
        f"{'ratio cpu':>9} {'mem km MiB':>10} {'mem timm MiB':>12} {'explicit/fused':>14}"
    )
    for name in names:
        ours, ref = build_pair(name)
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            with torch.inference_mode():
                torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)
                result = interleaved(
                    {
                        "keymodels": lambda m=ours, x=x: m(x),
                        "timm": lambda m=ref, x=x: m(x),
                        "explicit": lambda m=ours, x=x: m.forward_attention(x),
                    },
                    rounds,
                    min_seconds,
                )
            km, tm = result["keymodels"], result["timm"]
            ex = result["explicit"]
            ratio = tm["time_vs_first"]  # timm time / keymodels time = keymodels img/s / timm img/s
            ratio_cpu = tm["cpu_vs_first"]
            overhead = ex["cpu_vs_first"]  # explicit path CPU time / fused path CPU time
            mem_km = peak_memory("keymodels", name, batch)
            mem_tm = peak_memory("timm", name, batch)
            print(
                f"{name:<22} {batch:>5} {batch / km['seconds']:>16.1f} {batch / tm['seconds']:>11.1f} "
                f"{ratio:>6.3f} {ratio_cpu:>9.3f} {mem_km:>10.0f} {mem_tm:>12.0f} {overhead:>14.2f}",
                flush=True,
            )
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
