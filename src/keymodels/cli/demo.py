"""``keymodels demo``: the main job on embedded data, so a fresh machine shows what keymodels does.

Each part writes into its own folder under ``--out`` and prints what it found.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from .explain import demo_part as explain_part
from .seq2seq import seq2seq_demo_part
from .train import vit_training_part

PARTS = [vit_training_part, explain_part, seq2seq_demo_part]
SERVED = ["vit-digits", "seq2seq/attention"]  # the runs the parts leave, for `keymodels serve`


def serve_command(out: Path) -> str:
    """The command that serves the demo's runs in the browser (the venv's keymodels if run from it)."""
    exe = Path(sys.executable).parent / "keymodels"
    program = os.path.relpath(exe) if exe.is_file() else "keymodels"
    return shlex.join([program, "serve", *(str(out / run) for run in SERVED)])


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    for part in PARTS:
        part(out)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; outputs in {out.resolve()}")
    print(
        f"see the attention in your browser: {serve_command(out)}  (then open http://127.0.0.1:7860)"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on embedded data", description=__doc__)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
