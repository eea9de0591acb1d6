"""``keymodels demo``: the main job on embedded data, so a fresh machine shows what keymodels does.

Each part writes into its own folder under ``--out`` and prints what it found.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..registry import create_model


def vit_part(out: Path) -> None:
    """A Vision Transformer for 8×8 digits: summary and one forward pass with attention weights."""
    model = create_model("vit_nano_patch2_8").eval()
    params = sum(p.numel() for p in model.parameters())
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        logits, attentions = model.forward_attention(images)
    print(f"[vit] vit_nano_patch2_8: {params / 1e6:.2f}M parameters, {len(model.blocks)} blocks")
    print(f"[vit] logits {tuple(logits.shape)}, attention per block {tuple(attentions[0].shape)}")


PARTS = [vit_part]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    for part in PARTS:
        part(out)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; outputs in {out.resolve()}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on embedded data", description=__doc__)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
