"""Does the fast path change a trained model's answers? Top-1 agreement with fp32 on a test set.

For a run trained by ``keymodels train`` (e.g. the Fashion-MNIST recipe, 10,000 test images)
every inference path classifies the whole test split; each is compared with fp32 eager: accuracy,
top-1 agreement, the largest probability difference and wall time. Attention rollout maps of the
first images are compared too (Pearson correlation of bf16 against fp32 maps).

    python benchmarks/bench_fastpath_accuracy.py runs/fmnist --data-dir ../shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings

import torch

from keymodels.data import collate_skip, eval_transform, load_dataset
from keymodels.explain import explain
from keymodels.runs import load_vit as load_trained
from keymodels.runtime import autocast, compile_model


def test_batches(run: str, data_dir: str | None, batch_size: int):
    model, info = load_trained(run)
    recipe = info["recipe"]
    splits = load_dataset(
        recipe["dataset"], data_dir or info.get("data_dir"), seed=recipe.get("seed", 0),
        val_fraction=recipe.get("val_fraction", 0.1), in_chans=info["in_chans"],
    )  # fmt: skip
    resize = list(splits.test.images.shape[-2:]) != info["img_size"]
    splits.test.transform = eval_transform(info["img_size"], info["mean"], info["std"], resize)
    loader = torch.utils.data.DataLoader(
        splits.test, batch_size=batch_size, collate_fn=collate_skip
    )
    batches = [(x, y) for x, y, _ in loader]
    return model, batches


def classify(fn, batches) -> tuple[torch.Tensor, float]:
    """Probabilities for every image [N, K] and the wall seconds it took."""
    start = time.perf_counter()
    with torch.inference_mode():
        probs = torch.cat([fn(x).float().softmax(-1) for x, _ in batches])
    return probs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a ViT run folder")
    parser.add_argument("--data-dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rollout-images", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, batches = test_batches(args.run, args.data_dir, args.batch_size)
    labels = torch.cat([y for _, y in batches])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        int8 = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )
    compiled = compile_model(model)

    def bf16(fn):
        def run(x):
            with autocast("bf16"):
                return fn(x)

        return run

    paths = {
        "fp32 eager": model,
        "bf16 autocast": bf16(model),
        "compiled fp32": compiled,
        "compiled bf16": bf16(compiled),
        "int8 dynamic": int8,
    }
    print(f"# {args.run}: {len(labels)} test images, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(f"{'path':<16} {'accuracy':>9} {'top-1 agree':>11} {'max |Δp|':>9} {'wall s':>7}")
    ref = None
    for name, fn in paths.items():
        if name.startswith("compiled"):
            classify(fn, batches[:1])  # compile outside the timing
        probs, seconds = classify(fn, batches)
        ref = probs if ref is None else ref
        acc = (probs.argmax(1) == labels).float().mean().item()
        agree = (probs.argmax(1) == ref.argmax(1)).float().mean().item()
        diff = (probs - ref).abs().max().item()
        print(f"{name:<16} {acc:>9.2%} {agree:>11.2%} {diff:>9.4f} {seconds:>7.2f}", flush=True)

    images = torch.cat([x for x, _ in batches])[: args.rollout_images]
    maps32 = explain(model, images, "rollout").maps.flatten(1)
    maps16 = explain(model, images, "rollout", precision="bf16").maps.flatten(1)
    a = maps32 - maps32.mean(1, keepdim=True)
    b = maps16 - maps16.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    print(f"rollout maps bf16 vs fp32 ({len(images)} images): Pearson r mean "
          f"{corr.mean():.4f}, min {corr.min():.4f}")  # fmt: skip
    print(f"# load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
