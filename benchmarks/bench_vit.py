"""Inference speed and memory of keymodels' ViT against timm's, same weights, in one process.

Prints a table of img/s (median over interleaved rounds) with the ratio keymodels/timm (median of
per-round ratios, from wall-clock and from process CPU time, which waiting for a busy core does not
inflate), the peak extra memory of one forward pass (each in a fresh process), and the cost of the
explicit attention path (forward_attention, which also returns the weights) over the fused one.

    python benchmarks/bench_vit.py            # ViT-Ti/16 and ViT-S/16, batch 1 and 32, 2 threads
    python benchmarks/bench_vit.py --base     # also ViT-B/16
    python benchmarks/bench_vit.py --quick    # smoke run: Ti/16 only, few rounds
    python benchmarks/bench_vit.py --paths    # the precision/compile paths against timm fp32

``--paths`` times, in one process and interleaved: timm fp32 (the reference), timm under bf16
autocast, keymodels fp32, keymodels bf16 autocast, keymodels compiled (inductor, freezing) with
bf16 autocast, keymodels with bf16 weights, and keymodels int8 (dynamic quantization of the Linear layers); it also measures
the fp32 and bf16 matmul peak of this machine in the same run, the % of that peak each path
reaches, and the compile time of a fresh process with a cold and with a warm compile cache.
"""

from __future__ import annotations

import argparse
import copy
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
from keymodels.runtime import autocast, compile_model


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


def matmul_peak(dtype: torch.dtype, n: int = 1024, min_seconds: float = 1.0) -> float:
    """GFLOP/s of an n×n by n×n matmul in ``dtype`` (median of 3 timings)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = [time_calls(lambda: a @ b, min_seconds / 3)[0] for _ in range(3)]
    return 2 * n**3 / statistics.median(times) / 1e9


def int8_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """Linear layers with int8 weights and dynamically quantized activations (fbgemm, VNNI)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )


def compile_probe(name: str, batch: int) -> None:
    """In a fresh process: seconds from building the model to the first compiled bf16 output."""
    torch.set_num_threads(2)
    model = create_model(name).eval()
    x = torch.randn(batch, 3, 224, 224)
    start = time.perf_counter()
    compiled = compile_model(model)
    with torch.inference_mode(), autocast("bf16"):
        compiled(x)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def compile_seconds(name: str, batch: int, cache: str) -> float:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    out = subprocess.run(
        [sys.executable, __file__, "--compile-probe", name, str(batch)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def paths_table(
    names: list[str], batches: tuple[int, ...], rounds: int, min_seconds: float
) -> None:
    """img/s of every path, its speed over timm fp32, and its share of this machine's peak."""
    import tempfile

    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"# matmul peak 1024×1024: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f}")
    print(
        f"{'model':<22} {'batch':>5} {'path':<26} {'img/s':>7} {'× timm fp32':>11} "
        f"{'× timm bf16':>11} {'% peak':>7}"
    )
    for name in names:
        ours, ref = build_pair(name)
        flops = 2 * ours.config.macs()
        quantized = int8_dynamic(ours)
        ours_bf16 = copy.deepcopy(ours).to(torch.bfloat16)  # no per-call weight casts
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224)
            x_bf16 = x.bfloat16()
            compiled = compile_model(ours)
            with torch.inference_mode():
                with autocast("bf16"):
                    compiled(x)  # compile outside the timings

                def bf16(fn, x=x):
                    with autocast("bf16"):
                        return fn(x)

                paths = {
                    "timm fp32": (lambda m=ref, x=x: m(x), "fp32"),
                    "timm bf16 autocast": (lambda m=ref: bf16(m), "bf16"),
                    "keymodels fp32": (lambda m=ours, x=x: m(x), "fp32"),
                    "keymodels bf16 autocast": (lambda m=ours: bf16(m), "bf16"),
                    "keymodels compiled+bf16": (lambda m=compiled: bf16(m), "bf16"),
                    "keymodels bf16 weights": (lambda m=ours_bf16, x=x_bf16: m(x), "bf16"),
                    "keymodels int8 dynamic": (lambda m=quantized, x=x: m(x), "bf16"),
                }
                result = interleaved({k: v[0] for k, v in paths.items()}, rounds, min_seconds)
            base_bf16 = result["timm bf16 autocast"]["time_vs_first"]
            for path, (_, dtype) in paths.items():
                r = result[path]
                speed = 1 / r["time_vs_first"]
                img_s = batch / r["seconds"]
                share = 100 * img_s * flops / 1e9 / peak[dtype]
                print(
                    f"{name:<22} {batch:>5} {path:<26} {img_s:>7.1f} {speed:>11.2f} "
                    f"{base_bf16 / r['time_vs_first']:>11.2f} {share:>6.0f}%",
                    flush=True,
                )
            del compiled
            torch._dynamo.reset()
    with tempfile.TemporaryDirectory() as cache:
        name = names[-1]
        cold = compile_seconds(name, 1, cache)
        warm = compile_seconds(name, 1, cache)
    print(f"# {name}, batch 1, first compiled output in a fresh process: cold cache {cold:.1f} s, "
          f"warm cache {warm:.1f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="store_true", help="also ViT-B/16")
    parser.add_argument("--quick", action="store_true", help="smoke run: Ti/16 only, few rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per model and batch")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least wall time per timing")
    parser.add_argument("--paths", action="store_true", help="precision and compile paths")
    parser.add_argument(
        "--memory-probe", nargs=3, metavar=("LIB", "NAME", "BATCH"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--compile-probe", nargs=2, metavar=("NAME", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_probe:
        lib, name, batch = args.memory_probe
        memory_probe(lib, name, int(batch))
        return
    if args.compile_probe:
        compile_probe(args.compile_probe[0], int(args.compile_probe[1]))
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
        f"# {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
        f"{'precision paths' if args.paths else 'fp32'}, torch {torch.__version__}, "
        f"timm {timm.__version__}, load average {load:.1f} at start"
    )
    if args.paths:
        paths_table(names, batches, rounds, min_seconds)
        print(f"# load average {os.getloadavg()[0]:.1f} at end")
        return
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
