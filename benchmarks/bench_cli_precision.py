"""Wall time of ``keymodels predict`` and ``keymodels eval`` with ``--precision fp32`` and ``auto``.

Each command runs as a user would run it, in a fresh process; ``auto`` runs twice: first with an
empty keymodels cache (cold: it times fp32 and bf16, and compiles if the work repays it), then
with the cache the first run left (warm: the choice and compiled graphs are reused).

    python benchmarks/bench_cli_precision.py runs/fmnist --data-dir ../shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from keymodels.data import load_dataset

KEYMODELS = [sys.executable, "-m", "keymodels"]


def run(args: list[str], cache: str) -> tuple[float, str]:
    env = {
        **os.environ,
        "KEYMODELS_CACHE_DIR": cache,
        "TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor",
    }
    start = time.perf_counter()
    proc = subprocess.run(KEYMODELS + args, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr[-2000:]}")
    chosen = next((line for line in proc.stderr.splitlines() if line.startswith("precision ")), "")
    return seconds, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a ViT run folder trained on Fashion-MNIST (or MNIST)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        test = load_dataset("fashion-mnist", args.data_dir).test
        paths = []
        for i in range(args.images):
            path = Path(tmp) / f"test{i:03d}.png"
            Image.fromarray(test.images[i, 0].numpy(), "L").save(path)
            paths.append(str(path))
        jobs = {
            f"predict {args.images} images": ["predict", args.run, *paths],
            "eval 10,000 test images": ["eval", args.run, "--data-dir", args.data_dir],
        }
        print(f"# {os.cpu_count()} cores, {args.threads} threads, "
              f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
        print(f"{'command':<26} {'fp32 s':>7} {'auto cold s':>11} {'auto warm s':>11}  auto chose")
        for name, cmd in jobs.items():
            cmd = [*cmd, "--threads", str(args.threads)]
            cache = str(Path(tmp) / f"cache-{len(name)}")
            fp32, _ = run([*cmd, "--precision", "fp32"], cache)
            cold, chosen = run([*cmd, "--precision", "auto"], cache)
            warm, _ = run([*cmd, "--precision", "auto"], cache)
            print(f"{name:<26} {fp32:>7.1f} {cold:>11.1f} {warm:>11.1f}  {chosen}", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
