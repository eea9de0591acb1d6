"""Small-data ViTs side by side: each idea of the issue trained with the same command, one table.

Every experiment is one ``keymodels train`` call (so the table measures what a user runs); they
run ``--parallel`` at a time and each writes its run folder under ``--out``. The table gives
parameters, training img/s, the best validation accuracy (which picks the checkpoint) and the test
accuracy of that checkpoint, and the wall time of each run (teachers listed on their own line).

    .venv/bin/python benchmarks/small_data.py --set ablation --data-dir ../shared/data/fashion-mnist
    .venv/bin/python benchmarks/small_data.py --set speed     # CPU img/s of every candidate

img/s and wall times only mean something for the device and load they were measured under: the
script prints both, and the load average, at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mirror_only(model: str, epochs: int) -> list[str]:
    """The ablation rows' arguments: ``model`` for ``epochs`` with the mirror-only augmentation
    they were measured with (the recipe has added random erasing since)."""
    return ["--model", model, "--random-erasing", "0", "--epochs", str(epochs)]


# name -> (recipe, extra CLI arguments); a "teacher:" argument names the experiment whose run
# folder is the teacher, which then runs first.
SETS: dict[str, dict[str, tuple[str, list[str]]]] = {
    # Epochs fitted to 15 minutes on 2 CPU cores from each model's measured speed (--set speed:
    # 1,190-1,370 img/s in bf16 for the ViTs, 460 for the ResNet teacher).
    "ablation": {
        "vit": ("fashion-mnist", mirror_only("vit_fmnist_patch4_28", 18)),
        "conv-stem": ("fashion-mnist", mirror_only("vit_fmnist_convstem_patch4_28", 18)),
        "cct": ("fashion-mnist", mirror_only("cct_4_3x2_28", 18)),
        "cct-bn-tokenizer": ("fashion-mnist", ["--model", "cct_3_3x3bn_28"]),  # 21 epochs
        "cct-bn-tokenizer-4conv": ("fashion-mnist", []),  # the recipe: cct_3_3x4bn_28, 21 epochs
        "spt-lsa": ("fashion-mnist", mirror_only("vit_fmnist_spt_lsa_patch4_28", 19)),
        "teacher": ("fashion-mnist-teacher", []),
        # The teacher's time counts against the student's 15 minutes (1 epoch, ~2.3 min), and its
        # forward pass at every step halves the student's speed: 9 epochs.
        "distilled": (
            "fashion-mnist",
            [*mirror_only("deit_fmnist_distilled_patch4_28", 9), "teacher:teacher"],
        ),
    },
    "subset": {
        "vit-5000": ("fashion-mnist-5000", ["--model", "vit_fmnist_patch4_28"]),
        "cct-5000": ("fashion-mnist-5000", []),
    },
    "long": {"long": ("fashion-mnist-long", [])},
    "digits": {f"digits-seed{s}": ("digits", ["--seed", str(s)]) for s in (0, 1, 2)},
}
# CPU speed of each candidate: a few steps through the real engine (data pipeline included).
SPEED_MODELS = [
    "vit_fmnist_patch4_28",
    "vit_fmnist_convstem_patch4_28",
    "cct_4_3x2_28",
    "cct_3_3x3bn_28",
    "cct_3_3x4bn_28",
    "cct_7_3x2_28",
    "vit_fmnist_spt_lsa_patch4_28",
    "deit_fmnist_distilled_patch4_28",
    "resnet10_28",
]


def keymodels_cmd() -> list[str]:
    return [sys.executable, "-m", "keymodels"]


def run_one(name: str, recipe: str, extra: list[str], args: argparse.Namespace, out: Path) -> dict:
    """One ``keymodels train`` call; its results.json with the wall time and the run folder."""
    run_dir = out / name
    cmd = [*keymodels_cmd(), "train", "--recipe", recipe, "--out", str(run_dir), "--force"]
    for arg in extra:
        if arg.startswith("teacher:"):
            cmd += ["--teacher", str(out / arg.split(":", 1)[1])]
        else:
            cmd.append(arg)
    if args.data_dir and recipe != "digits":
        cmd += ["--data-dir", args.data_dir]
    cmd += ["--device", args.device, "--workers", str(args.workers), "--no-progress", "--json"]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += args.extra
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        return {"name": name, "error": proc.stderr.strip().splitlines()[-1:], "wall_s": wall}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"name": name, "recipe": recipe, "args": " ".join(extra), "wall_s": wall, **res}


def speed(args: argparse.Namespace, out: Path) -> list[dict]:
    rows = []
    for model in SPEED_MODELS:
        extra = ["--model", model, "--max-steps", str(args.steps), "--epochs", "1"]
        res = run_one(f"speed-{model}", "fashion-mnist", extra, args, out)
        metrics = out / f"speed-{model}" / "metrics.csv"
        if metrics.exists():
            import csv

            with metrics.open() as f:
                res["img_per_s"] = float(list(csv.DictReader(f))[-1]["img_per_s"])
        rows.append(res)
        print(model, res.get("img_per_s"), res.get("error", ""), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=[*SETS, "speed"], nargs="+", default=["ablation"])
    p.add_argument("--data-dir", default=os.environ.get("KEYMODELS_FMNIST"))
    p.add_argument("--out", default="runs/small_data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=40, help="steps per model for --set speed")
    p.add_argument("--only", nargs="*", help="run only these experiments of the set")
    p.add_argument("extra", nargs="*", help="more arguments for every keymodels train call")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}, device {args.device}", flush=True)
    rows: list[dict] = []
    for set_name in args.set:
        if set_name == "speed":
            rows += speed(args, out)
            continue
        exps = {k: v for k, v in SETS[set_name].items() if not args.only or k in args.only}
        # Teachers first (students name them), then everything else in parallel.
        firsts = {v[1][-1].split(":")[1] for v in exps.values() if v[1] and ":" in v[1][-1]}

        def one(name: str, exps: dict = exps) -> dict:
            return run_one(name, *exps[name], args, out)

        with ThreadPoolExecutor(args.parallel) as pool:
            rows += list(pool.map(one, sorted(firsts)))
            rows += list(pool.map(one, [k for k in exps if k not in firsts]))
    print(f"load average at end: {os.getloadavg()}", flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("| run | model | params | precision | img/s | epochs | val acc | test acc | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | error: {r['error']} |", flush=True)
            continue
        val, test, ips = r.get("val_acc"), r.get("test_acc"), r.get("train_img_per_s")
        print(
            f"| {r['name']} | {r['model']} | {r['params'] / 1e6:.2f} M | {r['precision']} | "
            f"{'' if ips is None else f'{ips:.0f}'} | {r['epochs']} | "
            f"{'' if val is None else f'{100 * val:.2f}'} | "
            f"{'' if test is None else f'{100 * test:.2f}'} | {r['wall_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
