"""``keymodels models``: the registered configs with parameter count and GFLOPs per image."""

from __future__ import annotations

import argparse
import difflib
import json

import torch

from ..errors import InvalidInputError
from ..layers import to_2tuple
from ..registry import create_model, get_config, list_models


def model_summary(name: str) -> dict:
    """Name, parameter count and GFLOPs (2 × multiply-accumulates) of a registered model."""
    with torch.device("meta"):  # no memory and no init time, even for ViT-H
        params = sum(p.numel() for p in create_model(name).parameters())
    config = get_config(name)
    macs = config.macs() if hasattr(config, "macs") else None
    row = {"name": name, "params": params, "gflops": None if macs is None else 2 * macs / 1e9}
    if hasattr(config, "img_size"):
        h, w = to_2tuple(config.img_size)
        row["input"] = f"{config.in_chans}×{h}×{w}"
    return row


def run(args: argparse.Namespace) -> int:
    rows = [model_summary(n) for n in list_models(args.pattern)]
    if not rows:
        close = difflib.get_close_matches(args.pattern.strip("*?"), list_models(), n=3, cutoff=0.4)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise InvalidInputError(
            f"no registered model matches {args.pattern!r}{hint} (`keymodels models` lists all)"
        )
    if args.json:
        print(json.dumps({"models": rows}))
        return 0
    print(f"{'name':<26} {'params':>10} {'GFLOPs':>8}  input")
    for r in rows:
        gflops = "" if r["gflops"] is None else f"{r['gflops']:.3f}"
        line = f"{r['name']:<26} {r['params'] / 1e6:>9.2f}M {gflops:>8}  {r.get('input', '')}"
        print(line.rstrip())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered model configs", description=__doc__)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vit_*16*'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
