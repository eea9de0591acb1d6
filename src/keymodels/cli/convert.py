"""``keymodels convert`` (ViT weights between formats) and ``keymodels export-onnx``.

Both read the source with ``keymodels.convert.load`` and print what was mapped.
"""

from __future__ import annotations

import argparse
import json

from ..convert import FORMATS, convert, load
from ..onnx import OnnxError, check_onnx, export_onnx
from ..rundir import check_writable_output


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    if args.num_heads is not None:
        out["num_heads"] = args.num_heads
    if args.global_pool is not None:
        out["global_pool"] = args.global_pool
    return out


def run_convert(args: argparse.Namespace) -> int:
    report = convert(
        args.src,
        args.dst,
        args.from_format,
        args.to_format,
        model=args.model,
        img_size=args.img_size,
        force=args.force,
        **_overrides(args),
    )
    if args.json:
        print(json.dumps({**vars(report), "dst": args.dst}))
    else:
        print(report.summary())
        print(f"wrote {args.dst}")
    return 0


def run_export_onnx(args: argparse.Namespace) -> int:
    check_writable_output(args.dst, args.force, what="DST")  # before the model is loaded
    model, report = load(
        args.src, args.from_format, model=args.model, img_size=args.img_size, **_overrides(args)
    )
    export_onnx(
        model, args.dst, opset=args.opset, force=args.force,
        class_names=report.class_names, preprocessing=report.preprocessing,
    )  # fmt: skip
    result = {"dst": args.dst, "config": report.config}
    if not args.no_check:
        result["max_abs_diff"] = diff = check_onnx(model, args.dst, batch_sizes=(1, 3))
        if diff > args.atol:
            raise OnnxError(
                f"onnxruntime logits differ from PyTorch's by {diff:.2e} > --atol {args.atol:g}"
            )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"wrote {args.dst} (input 'images' [batch, C, H, W], output 'logits' [batch, classes]; "
            "class names, mean, std, input size in its metadata_props)"
        )
        if "max_abs_diff" in result:
            print(f"onnxruntime vs PyTorch at batch 1 and 3: max |Δlogits| = {diff:.2e}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="architecture name (e.g. vit_base_patch16_224, vit_b_16) for bare timm/torchvision "
        "state dicts, whose head count the shapes do not show",
    )
    p.add_argument("--num-heads", type=int, help="head count, instead of --model")
    p.add_argument("--img-size", type=int, help="resample position embeddings to this input size")
    p.add_argument(
        "--global-pool", choices=["token", "avg"], help="pooling, where the weights cannot show it"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--force", action="store_true", help="overwrite what DST would replace")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert ViT weights between keymodels, timm, Hugging Face, torchvision and JAX",
        description="Convert ViT weights. SRC: .safetensors/.pth (timm, torchvision), .npz (jax), "
        "a save_pretrained directory (hf, keymodels) or a 'keymodels train' run folder or "
        "checkpoint (keymodels). DST: a file (timm, torchvision: .safetensors or .pth; jax: .npz) "
        "or a directory (hf, keymodels). Prints what was mapped.",
    )
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--from", dest="from_format", required=True, choices=FORMATS)
    p.add_argument("--to", dest="to_format", required=True, choices=FORMATS)
    _common(p)
    p.set_defaults(func=run_convert)

    p = sub.add_parser(
        "export-onnx",
        help="export a ViT to ONNX (dynamic batch) and check it in onnxruntime",
        description="Export a ViT to ONNX with a dynamic batch axis (input 'images', output "
        "'logits'), then compare onnxruntime's logits with PyTorch's at batch 1 and 3.",
    )
    p.add_argument(
        "src", help="save_pretrained directory or train run (or weights in --from format)"
    )
    p.add_argument("dst", help="the .onnx file to write")
    p.add_argument("--from", dest="from_format", default="keymodels", choices=FORMATS)
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--atol", type=float, default=1e-4, help="allowed max |Δlogits| (1e-4)")
    _common(p)
    p.set_defaults(func=run_export_onnx)
