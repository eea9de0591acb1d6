"""Tests of ``keymodels explain``: PNG grids, the three methods, clear errors, the demo part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from keymodels.checkpoint import Checkpoint, save_checkpoint
from keymodels.cli import main
from keymodels.cli.explain import demo_part
from keymodels.vit import VisionTransformer, ViTConfig

CLASSES = [str(i) for i in range(10)]


def write_run(folder: Path, num_classes: int = 10) -> Path:
    """A run folder as training leaves it: best.safetensors with config, classes, mean and std."""
    config = ViTConfig(
        img_size=8, patch_size=2, in_chans=1, num_classes=num_classes, embed_dim=16, depth=2,
        num_heads=2, mlp_ratio=2.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = VisionTransformer(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    meta = {
        "config": config.to_dict(),
        "class_names": CLASSES[:num_classes],
        "mean": [0.3],
        "std": [0.4],
        "img_size": [8, 8],
    }
    save_checkpoint(folder / "best.safetensors", Checkpoint(model=model.state_dict(), meta=meta))
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    digit = root / "digit.png"
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(digit)
    photo = root / "photo.jpg"  # colour and another size: converted and resized as in training
    Image.fromarray(rng.integers(0, 256, (20, 12, 3), dtype=np.uint8)).save(photo)
    broken = root / "broken.png"
    broken.write_text("not an image")
    return {
        "run": write_run(root / "run"),
        "headless": write_run(root / "headless", num_classes=0),
        "digit": digit,
        "photo": photo,
        "broken": broken,
    }


def explain(*args: object) -> int:
    return main(["explain", *map(str, args)])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("keymodels explain: error:"), err
    return err


def test_rollout_grid_of_several_images(files, tmp_path, capsys):
    out = tmp_path / "new" / "grid.png"
    assert explain(files["run"], files["digit"], files["photo"], "--out", out) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout and f"{files['digit']}: " in stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 2 * im.height  # 2 images × (image, overlay)


@pytest.mark.parametrize(
    "options",
    [
        ["--method", "grad-rollout", "--class", "3"],
        ["--method", "grad-rollout"],
        ["--method", "heads", "--layer", "0", "--head", "1"],
        ["--method", "rollout", "--head-fusion", "max", "--discard", "0.9"],
    ],
)
def test_methods(files, tmp_path, options):
    out = tmp_path / "out.png"
    assert explain(files["run"] / "best.safetensors", files["digit"], "--out", out, *options) == 0
    assert out.stat().st_size > 0


def test_existing_output_needs_force(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    assert explain(files["run"], files["digit"], "--out", out) == 2
    assert "--force" in one_line_error(capsys)
    assert out.read_bytes() == b"keep me"
    assert explain(files["run"], files["digit"], "--out", out, "--force") == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{broken}"], "broken.png: cannot decode image"),
        (["{missing}"], "missing.png does not exist"),
        (["{digit}", "--method", "heads", "--layer", "2"], "layer 2 is out of range"),
        (["{digit}", "--method", "heads", "--head", "-3"], "head -3 is out of range"),
        (["{digit}", "--method", "grad-rollout", "--class", "cat"], "'cat' is neither a class"),
        (["{digit}", "--method", "grad-rollout", "--class", "10"], "--class 10 is out of range"),
        (["{digit}", "--discard", "1.5"], "discard must be a fraction"),
    ],
)
def test_bad_input_is_one_clear_line(files, tmp_path, capsys, args, message):
    names = {k: str(v) for k, v in files.items()} | {"missing": str(tmp_path / "missing.png")}
    out = tmp_path / "out.png"
    assert explain(files["run"], *[a.format(**names) for a in args], "--out", out) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_grad_rollout_on_a_model_without_a_head(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert explain(files["headless"], files["digit"], "--method", "grad-rollout", "--out", out) == 2
    assert "needs a classifier head" in one_line_error(capsys)
    assert explain(files["headless"], files["digit"], "--out", out) == 0  # rollout needs none


def test_unknown_method_and_missing_model(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    with pytest.raises(SystemExit) as exit_info:
        explain(files["run"], files["digit"], "--method", "saliency", "--out", out)
    assert exit_info.value.code == 2
    assert "invalid choice: 'saliency'" in capsys.readouterr().err
    assert explain(tmp_path / "nothing", files["digit"], "--out", out) == 2
    assert "nothing" in one_line_error(capsys)


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_a_cnn_run_is_refused_in_one_clear_line(tmp_path, capsys, precision):
    """A ResNet has no attention to explain: exit 2 with a clear message, before anything
    touches the model ("auto" would time its missing forward_attention), and nothing written."""
    from keymodels import create_model

    model = create_model("resnet10_28")
    c = model.config
    meta = {
        "model_name": "resnet10_28", "config": c.to_dict(), "class_names": CLASSES,
        "mean": [0.5], "std": [0.25], "img_size": [28, 28], "in_chans": 1, "epoch": 1,
        "val_acc": 0.5, "val_loss": 1.0, "eval_split": "val",
    }  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "best.safetensors", Checkpoint(model=model.state_dict(), meta=meta))
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    out = tmp_path / "explained" / "out.png"
    assert explain(run, image, "--precision", precision, "--out", out) == 2
    err = one_line_error(capsys)
    what = "holds a ResNet, not a Vision Transformer: attention explanation needs a ViT"
    assert f"{run} {what}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png", "run"]
    assert [p.name for p in run.iterdir()] == ["best.safetensors"]


def test_demo_part(tmp_path, capsys):
    demo_part(tmp_path)
    assert "skipped: no trained digits ViT" in capsys.readouterr().out
    write_run(tmp_path / "vit-digits")
    demo_part(tmp_path)
    stdout = capsys.readouterr().out
    pngs = sorted((tmp_path / "explain").glob("*rollout.png"))
    assert len(pngs) == 1 and str(pngs[0]) in stdout
    demo_part(tmp_path)  # a second demo run replaces its own picture
