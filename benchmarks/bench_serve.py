"""Load test of ``keymodels serve`` on localhost: concurrent clients against one client, in one process.

The server (uvicorn in a thread) serves the given runs; for each, the script sends ``--requests``
requests from ``--clients`` concurrent clients (each its own keep-alive connection), then a
quarter as many from a single client as the reference. An image run gets its first sample as an
upload to ``/predict`` (top-k, rollout and every layer's/head's map); a translation run its first
example sentence to ``/translate`` (beam 5, 3-best, alignment). It prints errors (must be 0),
latency p50/p95/max, requests per second, the batch sizes the model saw, and the load average.

    python benchmarks/bench_serve.py                       # the demo's runs (make demo first)
    python benchmarks/bench_serve.py RUN [RUN ...] --requests 200 --clients 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from keymodels.serve.app import create_app, running

DEMO_RUNS = ["runs/demo/vit-digits", "runs/demo/seq2seq/attention"]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def request_for(service: Any) -> dict[str, Any]:
    """The keyword arguments of one typical request to ``service``'s run."""
    name = service.name
    if service.kind == "image":
        sample = sorted(service.samples)[0] if service.samples else None
        if sample is None:
            raise SystemExit(f"{name}: no samples/ to upload; train with keymodels train first")
        data = service.samples[sample].read_bytes()
        return {
            "method": "POST",
            "url": f"/api/runs/{name}/predict",
            "files": {"image": (sample, data, "image/png")},
        }
    text = service.examples[0] if service.examples else "1 2 3 4"
    return {
        "method": "POST",
        "url": f"/api/runs/{name}/translate",
        "json": {"text": text, "beam": 5, "n_best": 3},
    }


def blast(url: str, request: dict[str, Any], total: int, clients: int) -> dict[str, Any]:
    """``total`` requests from ``clients`` threads, each on its own connection."""
    per_client = [total // clients + (i < total % clients) for i in range(clients)]

    def client(n: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(base_url=url, timeout=120) as http:
            for _ in range(n):
                start = time.perf_counter()
                status = http.request(**request).status_code
                out.append((time.perf_counter() - start, status))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, per_client) for r in rs]
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    return {
        "requests": len(results),
        "errors": sum(status != 200 for _, status in results),
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[max(0, int(0.95 * len(latencies)) - 1)],
        "max_ms": 1000 * latencies[-1],
        "per_s": len(results) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=DEMO_RUNS)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    missing = [r for r in args.runs if not Path(r).exists()]
    if missing:
        raise SystemExit(
            f"no run at {', '.join(missing)}; run `make demo` first or pass run folders"
        )
    app = create_app(args.runs, precision=args.precision)
    print(f"load at start: {load()}")
    with running(app) as url:
        for name, service in app.state.services.items():
            request = request_for(service)
            blast(url, request, 5, 1)  # warm-up: first-call costs out of the figures
            single = blast(url, request, max(1, args.requests // 4), 1)
            before = len(service.batcher.batch_sizes)
            loaded = blast(url, request, args.requests, args.clients)
            sizes = list(service.batcher.batch_sizes)[before:]
            print(
                f"{name} ({service.kind}, {service.precision}) {request['url'].rsplit('/', 1)[1]}: "
                f"{args.clients} clients × {loaded['requests']} requests, "
                f"{loaded['errors']} errors; p50 {loaded['p50_ms']:.1f} ms, "
                f"p95 {loaded['p95_ms']:.1f} ms, max {loaded['max_ms']:.1f} ms, "
                f"{loaded['per_s']:.1f} req/s "
                f"(1 client: p50 {single['p50_ms']:.1f} ms, {single['per_s']:.1f} req/s; "
                f"{loaded['per_s'] / single['per_s']:.2f}×); "
                f"model batches: mean {statistics.mean(sizes):.1f}, max {max(sizes)}"
            )
            if loaded["errors"] or single["errors"]:
                raise SystemExit(f"{name}: {loaded['errors'] + single['errors']} requests failed")
    print(f"load at end: {load()}")


if __name__ == "__main__":
    main()
