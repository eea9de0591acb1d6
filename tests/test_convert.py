"""keymodels.convert: equal logits against timm, transformers, torchvision and Google's .npz layout.

Every source is built with random weights by the reference library itself (or, for .npz, written
array by array here), converted, and compared; round trips must give bit-identical tensors.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
import transformers
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import _load_weights, checkpoint_filter_fn

from keymodels import convert, create_model
from keymodels.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from keymodels.cli import main
from keymodels.convert import ConversionError, from_keymodels, load, save, to_keymodels
from keymodels.pretrained import write_dir

ATOL = 1e-4
SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (the reference inits leave heads and biases at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def images(batch: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_same_logits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert a.abs().max() > 0.1, "logits near zero prove nothing"
    assert (a - b).abs().max().item() <= ATOL


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def small_keymodels(**kw) -> torch.nn.Module:
    return randomize(create_model("vit_nano_patch4_32", **{**SMALL, "num_classes": 5, **kw}))


# -- timm -------------------------------------------------------------------------------------

TIMM_VARIANTS = {
    "token": dict(),
    "avg_fc_norm": dict(global_pool="avg"),
    "no_class_token": dict(class_token=False, global_pool="avg"),
    "layerscale_no_qkv_bias": dict(init_values=1e-5, qkv_bias=False),
    "headless": dict(num_classes=0),
}


def small_timm(**kw) -> torch.nn.Module:
    args = dict(SMALL, mlp_ratio=2.0, num_classes=5) | kw
    return randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, **args))


@pytest.mark.parametrize("variant", TIMM_VARIANTS)
def test_timm_both_ways_equal_logits_and_identical_round_trip(variant: str) -> None:
    kw = TIMM_VARIANTS[variant]
    ref = small_timm(**kw)
    x = images()
    model, report = to_keymodels(ref.state_dict(), "timm", num_heads=4)
    assert_same_logits(model(x), ref(x))
    c = model.config
    assert (c.embed_dim, c.depth, c.patch_size, c.img_size, c.mlp_ratio) == (64, 2, 8, 32, 2.0)
    assert c.global_pool == kw.get("global_pool", "token") and c.num_classes == ref.num_classes
    assert report.mapped == len(ref.state_dict())

    back = from_keymodels(model, "timm")
    assert_identical(back, ref.state_dict())
    target = small_timm(**kw)
    target.load_state_dict(back)
    assert_same_logits(target(x), model(x))


def test_timm_layout_pre_logits_round_trip() -> None:
    # timm 1.x dropped the JAX representation layer; its older layout (pre_logits.fc) is kept.
    model = small_keymodels(pre_logits_size=48)
    state = from_keymodels(model, "timm")
    assert state["pre_logits.fc.weight"].shape == (48, 64)
    again, _ = to_keymodels(state, "timm", num_heads=4)
    assert again.config.pre_logits_size == 48
    assert_identical(from_keymodels(again, "timm"), state)
    assert_same_logits(again(images()), model(images()))


def test_timm_real_size_vit_tiny() -> None:
    ref = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False))
    model, _ = to_keymodels(ref.state_dict(), "timm", model="vit_tiny_patch16_224")
    x = images(1, 224)
    assert_same_logits(model(x), ref(x))


def test_timm_img_size_resamples_pos_embed_as_timm() -> None:
    ref = small_timm()
    model, report = to_keymodels(ref.state_dict(), "timm", num_heads=4, img_size=48)
    assert model.config.img_size == (48, 48) and "resampled" in " ".join(report.notes)
    target = small_timm(img_size=48)
    target.load_state_dict(checkpoint_filter_fn(ref.state_dict(), target))  # timm's own resampling
    x = images(size=48)
    assert_same_logits(model(x), target(x))


def test_timm_head_count_needed_and_checked() -> None:
    state = small_timm().state_dict()
    with pytest.raises(ConversionError, match="num_heads"):
        to_keymodels(state, "timm")
    with pytest.raises(ConversionError, match="embed_dim 384 but the weights have 64"):
        to_keymodels(state, "timm", model="vit_small_patch16_224")
    with pytest.raises(ConversionError, match="embed_dim 768 but the weights have 64"):
        to_keymodels(state, "timm", model="vit_base_patch16_384.augreg_in21k")  # a timm name
    with pytest.raises(ConversionError, match="not divisible"):
        to_keymodels(state, "timm", num_heads=5)


def test_other_architecture_names_the_mismatched_keys() -> None:
    resnet = timm.create_model("resnet18", pretrained=False).state_dict()
    with pytest.raises(ConversionError, match=r"patch_embed\.proj\.weight"):
        to_keymodels(resnet, "timm", num_heads=4)
    state = small_timm().state_dict()
    state["reg_token"] = torch.zeros(1, 4, 64)
    state["blocks.1.mlp.fc2.weight"] = torch.zeros(64, 96)
    with pytest.raises(
        ConversionError, match=r"blocks\.1\.mlp\.fc2\.weight: checkpoint \(64, 96\)"
    ) as e:
        to_keymodels(state, "timm", num_heads=4)
    assert "reg_token" in str(e.value)


# -- Hugging Face -----------------------------------------------------------------------------


def hf_config(**kw) -> transformers.ViTConfig:
    args = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=32,
        patch_size=8,
        num_labels=5,
        id2label={i: f"class{i}" for i in range(5)},
    )
    return transformers.ViTConfig(**(args | kw))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_hf_classifier_both_ways(tmp_path: Path, qkv_bias: bool) -> None:
    ref = randomize(transformers.ViTForImageClassification(hf_config(qkv_bias=qkv_bias)))
    ref.save_pretrained(tmp_path / "src")
    x = images()
    model, report = load(tmp_path / "src", "hf")
    assert model.config.norm_eps == 1e-12 and model.config.qkv_bias == qkv_bias  # carried over
    assert report.class_names == [f"class{i}" for i in range(5)]
    assert_same_logits(model(x), ref(x).logits)

    convert.convert(tmp_path / "src", tmp_path / "dst", "hf", "hf")
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path / "dst").eval()
    assert_same_logits(again(x).logits, model(x))
    assert again.config.id2label[3] == "class3" and again.config.layer_norm_eps == 1e-12
    # The round trip rewrites the Hub layout tensor for tensor, with transformers' own key names.
    assert_identical(
        load_file(tmp_path / "dst" / "model.safetensors"),
        load_file(tmp_path / "src" / "model.safetensors"),
    )


def test_hf_vit_model_pooler_is_pre_logits(tmp_path: Path) -> None:
    ref = randomize(transformers.ViTModel(hf_config(pooler_output_size=48)))
    ref.save_pretrained(tmp_path / "src")
    x = images()
    model, _ = load(tmp_path / "src", "hf")
    assert model.config.pre_logits_size == 48 and model.config.num_classes == 0
    assert_same_logits(model(x), ref(x).pooler_output)

    save(model, tmp_path / "dst", "hf")
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["architectures"] == [
        "ViTModel"
    ]
    again = transformers.ViTModel.from_pretrained(tmp_path / "dst").eval()
    assert_same_logits(again(x).pooler_output, model(x))
    assert_identical(
        load_file(tmp_path / "dst" / "model.safetensors"),
        load_file(tmp_path / "src" / "model.safetensors"),
    )


def test_keymodels_to_hf_writes_the_hub_layout(tmp_path: Path) -> None:
    model = small_keymodels()
    save(model, tmp_path / "dst", "hf")
    x = images()
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "dst").eval()
    assert_same_logits(hf(x).logits, model(x))
    # The same names transformers itself writes (the transformers 4 module names), so 4 loads it.
    hf.save_pretrained(tmp_path / "by_transformers")
    written = load_file(tmp_path / "dst" / "model.safetensors")
    assert sorted(written) == sorted(load_file(tmp_path / "by_transformers" / "model.safetensors"))
    assert "vit.encoder.layer.1.attention.attention.query.weight" in written


def test_training_run_to_hf_keeps_class_names_and_normalisation(tmp_path: Path) -> None:
    model = small_keymodels()
    names = ["cat", "dog", "fox", "owl", "yak"]
    meta = {
        "config": model.config.to_dict(),
        "class_names": names,
        "mean": [0.4] * 3,
        "std": [0.2] * 3,
    }
    save_checkpoint(
        tmp_path / "run" / "best.safetensors", Checkpoint(model=model.state_dict(), meta=meta)
    )
    report = convert.convert(tmp_path / "run", tmp_path / "hf", "keymodels", "hf")
    assert report.source == "keymodels run"
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert_same_logits(hf(images()).logits, model(images()))
    assert hf.config.id2label[4] == "yak"
    processor = transformers.ViTImageProcessor.from_pretrained(tmp_path / "hf")
    assert list(processor.image_mean) == [0.4] * 3
    assert (processor.size["height"], processor.size["width"]) == (32, 32)
    # ... and back: the names and normalisation reach a keymodels directory.
    convert.convert(tmp_path / "hf", tmp_path / "km", "hf", "keymodels")
    saved = json.loads((tmp_path / "km" / "config.json").read_text())
    assert saved["class_names"] == names and saved["preprocessing"]["std"] == [0.2] * 3


def test_hf_real_size_vit_tiny(tmp_path: Path) -> None:
    config = hf_config(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        image_size=224,
        patch_size=16,
    )
    ref = randomize(transformers.ViTForImageClassification(config))
    ref.save_pretrained(tmp_path / "src")
    model, _ = load(tmp_path / "src", "hf")
    x = images(1, 224)
    assert_same_logits(model(x), ref(x).logits)


def test_hf_rejects_what_it_cannot_express(tmp_path: Path) -> None:
    for kw in (dict(global_pool="avg"), dict(class_token=False, global_pool="avg")):
        with pytest.raises(ConversionError, match="class token"):
            save(small_keymodels(**kw), tmp_path / "dst", "hf")
    assert not (tmp_path / "dst").exists()


def test_hf_inconsistent_config(tmp_path: Path) -> None:
    ref = transformers.ViTForImageClassification(hf_config())
    ref.save_pretrained(tmp_path / "src")
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps(config | {"num_attention_heads": 5}))
    with pytest.raises(
        ConversionError, match="hidden_size 64 is not divisible by num_attention_heads 5"
    ):
        load(tmp_path / "src", "hf")
    (tmp_path / "src" / "config.json").write_text(json.dumps(config))
    state = load_file(tmp_path / "src" / "model.safetensors")
    state["vit.embeddings.distillation_token"] = torch.zeros(1, 1, 64)  # DeiT's, not a plain ViT
    save_file(state, tmp_path / "src" / "model.safetensors")
    with pytest.raises(ConversionError, match="distillation_token"):
        load(tmp_path / "src", "hf")


# -- torchvision ------------------------------------------------------------------------------


def small_torchvision(**kw) -> torch.nn.Module:
    args = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    return randomize(
        torchvision.models.vision_transformer.VisionTransformer(**(args | {"num_classes": 5} | kw))
    )


@pytest.mark.parametrize("representation_size", [None, 48])
def test_torchvision_both_ways(representation_size: int | None) -> None:
    ref = small_torchvision(representation_size=representation_size)
    x = images()
    model, _ = to_keymodels(ref.state_dict(), "torchvision", num_heads=4)
    assert model.config.pre_logits_size == representation_size
    assert_same_logits(model(x), ref(x))
    back = from_keymodels(model, "torchvision")
    assert_identical(back, ref.state_dict())
    target = small_torchvision(representation_size=representation_size)
    target.load_state_dict(back)
    assert_same_logits(target(x), model(x))


def test_torchvision_vit_b_16_end_to_end(tmp_path: Path) -> None:
    ref = randomize(torchvision.models.vit_b_16())
    torch.save(ref.state_dict(), tmp_path / "vit_b_16.pth")
    model, _ = load(tmp_path / "vit_b_16.pth", "torchvision", model="vit_b_16")
    x = images(1, 224)
    assert_same_logits(model(x), ref(x))


@pytest.mark.parametrize("name", ["vit_b_32", "vit_l_16", "vit_h_14"])
def test_torchvision_larger_names_one_block(name: str) -> None:
    # The full L/H models are slow to build; one block of each at the real width checks the names.
    arch = convert._common.TORCHVISION_MODELS[name]
    P, D = arch["patch_size"], arch["embed_dim"]
    ref = small_torchvision(
        image_size=2 * P,
        patch_size=P,
        num_layers=1,
        num_heads=arch["num_heads"],
        hidden_dim=D,
        mlp_dim=4 * D,
    )
    model, _ = to_keymodels(ref.state_dict(), "torchvision", model=name)
    x = images(1, 2 * P)
    assert_same_logits(model(x), ref(x))


def test_torchvision_old_mlp_names_and_missing_heads() -> None:
    state = small_torchvision().state_dict()
    old = {
        k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
        for k, v in state.items()
    }
    model, _ = to_keymodels(old, "torchvision", num_heads=4)
    assert torch.equal(
        model.blocks[1].mlp.fc2.weight, state["encoder.layers.encoder_layer_1.mlp.3.weight"]
    )
    base_width = small_torchvision(hidden_dim=768, num_heads=12, num_layers=1).state_dict()
    with pytest.raises(ConversionError, match="num_heads=12"):
        to_keymodels(base_width, "torchvision")


def test_torchvision_rejects_avg_pool(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="class token"):
        save(small_keymodels(global_pool="avg"), tmp_path / "tv.pth", "torchvision")
    assert not list(tmp_path.iterdir())


# -- Google JAX .npz --------------------------------------------------------------------------


def google_npz(
    path: Path, class_token: bool = True, pre_logits: int | None = None, seed: int = 0
) -> dict:
    """A checkpoint in the layout of google-research/vision_transformer, written array by array."""
    rng = np.random.default_rng(seed)
    P, C, D, H, hidden, K, grid = 8, 3, 64, 4, 128, 5, 16

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w = {
        "embedding/kernel": r(P, P, C, D),
        "embedding/bias": r(D),
        "Transformer/posembed_input/pos_embedding": r(1, grid + class_token, D),
        "Transformer/encoder_norm/scale": r(D),
        "Transformer/encoder_norm/bias": r(D),
        "head/kernel": r(pre_logits or D, K),
        "head/bias": r(K),
    }
    if class_token:
        w["cls"] = r(1, 1, D)
    if pre_logits:
        w["pre_logits/kernel"], w["pre_logits/bias"] = r(D, pre_logits), r(pre_logits)
    for i in range(2):
        p = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{p}{ln}/scale"], w[f"{p}{ln}/bias"] = r(D), r(D)
        a = f"{p}MultiHeadDotProductAttention_1/"
        for n in ("query", "key", "value"):
            w[f"{a}{n}/kernel"], w[f"{a}{n}/bias"] = r(D, H, D // H), r(H, D // H)
        w[f"{a}out/kernel"], w[f"{a}out/bias"] = r(H, D // H, D), r(D)
        w[f"{p}MlpBlock_3/Dense_0/kernel"], w[f"{p}MlpBlock_3/Dense_0/bias"] = (
            r(D, hidden),
            r(hidden),
        )
        w[f"{p}MlpBlock_3/Dense_1/kernel"], w[f"{p}MlpBlock_3/Dense_1/bias"] = r(hidden, D), r(D)
    np.savez(path, **w)
    return w


def timm_from_npz(path: Path, class_token: bool) -> torch.nn.Module:
    """timm's own .npz loader: an independent reading of the same file."""
    pool = dict() if class_token else dict(class_token=False, global_pool="avg", fc_norm=False)
    model = small_timm(**pool)
    _load_weights(model, str(path))
    return model.eval()


@pytest.mark.parametrize("class_token", [True, False])
def test_jax_npz_against_timm_loader_and_round_trip(tmp_path: Path, class_token: bool) -> None:
    arrays = google_npz(tmp_path / "vit.npz", class_token=class_token)
    x = images()
    model, _ = load(tmp_path / "vit.npz", "jax")
    assert model.config.num_heads == 4 and model.config.global_pool == (
        "token" if class_token else "avg"
    )
    assert_same_logits(model(x), timm_from_npz(tmp_path / "vit.npz", class_token)(x))

    save(model, tmp_path / "back.npz", "jax")
    with np.load(tmp_path / "back.npz") as back:
        assert sorted(back.files) == sorted(arrays)
        for k, v in arrays.items():
            assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


def test_jax_pre_logits_by_hand(tmp_path: Path) -> None:
    w = google_npz(tmp_path / "vit.npz", pre_logits=48)
    model, _ = load(tmp_path / "vit.npz", "jax")
    x = images()
    tokens = model.forward_features(x)[:, 0].detach().numpy()  # the class token after encoder_norm
    pre = np.tanh(tokens @ w["pre_logits/kernel"] + w["pre_logits/bias"])
    expected = torch.from_numpy(pre @ w["head/kernel"] + w["head/bias"])
    assert_same_logits(model(x), expected)


def test_keymodels_to_jax_read_by_timm(tmp_path: Path) -> None:
    model = small_keymodels(mlp_ratio=2.0)
    save(model, tmp_path / "out.npz", "jax")
    assert_same_logits(timm_from_npz(tmp_path / "out.npz", True)(images()), model(images()))


def test_jax_training_prefix_and_truncated_file(tmp_path: Path) -> None:
    arrays = google_npz(tmp_path / "vit.npz")
    np.savez(tmp_path / "opt.npz", **{f"opt/target/{k}": v for k, v in arrays.items()})
    a, _ = load(tmp_path / "vit.npz", "jax")
    b, _ = load(tmp_path / "opt.npz", "jax")
    assert_identical(a.state_dict(), b.state_dict())
    np.savez(
        tmp_path / "map.npz", **arrays, **{"MAPHead_0/probe": np.zeros((1, 1, 64), np.float32)}
    )
    with pytest.raises(ConversionError, match="MAPHead_0/probe"):
        load(tmp_path / "map.npz", "jax")
    data = (tmp_path / "vit.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated"):
        load(tmp_path / "cut.npz", "jax")


# -- files, atomic writes, the command line ----------------------------------------------------


def test_truncated_and_foreign_weight_files(tmp_path: Path) -> None:
    save_file(small_timm().state_dict(), tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.safetensors").write_text("not weights")
    for name in ("cut.safetensors", "text.safetensors"):
        with pytest.raises(ConversionError, match="not a readable safetensors file"):
            load(tmp_path / name, "timm", num_heads=4)
    torch.save({"model": small_timm()}, tmp_path / "pickled.pth")  # a whole module: code, refused
    with pytest.raises(CheckpointError, match="never unpickles"):
        load(tmp_path / "pickled.pth", "timm", num_heads=4)


def test_write_dir_leaves_nothing_half_written(tmp_path: Path) -> None:
    def fail(path: Path) -> None:
        path.write_text("partial")
        raise OSError("disk full")

    files = {"a.json": lambda p: p.write_text("{}"), "b.bin": fail}
    with pytest.raises(OSError, match="disk full"):
        write_dir(tmp_path / "new", files)
    assert not list(tmp_path.iterdir())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "a.json").write_text("old")
    with pytest.raises(OSError):
        write_dir(tmp_path / "old", files)
    assert (tmp_path / "old" / "a.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_converter_outputs_get_the_usual_permissions(tmp_path: Path, umask: int) -> None:
    # Files are written under private temporary names and renamed; the rename must not carry
    # mkstemp's 0o600 (or mkdtemp's 0o700) over to what the user sees.
    model = small_keymodels()
    old = os.umask(umask)
    try:
        for name in ("m.safetensors", "m.pth", "m.npz"):
            save(model, tmp_path / name, "jax" if name.endswith(".npz") else "timm")
        for fmt in ("hf", "keymodels"):
            save(model, tmp_path / fmt, fmt)
            save(model, tmp_path / fmt, fmt)  # into an existing directory, file by file
    finally:
        os.umask(old)
    written = sorted(tmp_path.rglob("*"))
    assert len(written) == 3 + 2 + 4  # three files, two directories of two files each
    for path in written:
        mode = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.relative_to(tmp_path)


def test_cli_convert_chain(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref = small_torchvision()
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    steps = [
        ("tv.pth", "timm.safetensors", "torchvision", "timm", ["--num-heads", "4"]),
        ("timm.safetensors", "hf", "timm", "hf", ["--num-heads", "4"]),
        ("hf", "km", "hf", "keymodels", []),
        ("km", "g.npz", "keymodels", "jax", []),
        ("g.npz", "tv2.pth", "jax", "torchvision", []),
    ]
    for src, dst, a, b, extra in steps:
        argv = ["convert", str(tmp_path / src), str(tmp_path / dst), "--from", a, "--to", b, *extra]
        assert main(argv) == 0
        assert "tensors mapped" in capsys.readouterr().out
    assert_identical(torch.load(tmp_path / "tv2.pth", weights_only=True), ref.state_dict())


def test_cli_convert_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save(small_torchvision().state_dict(), tmp_path / "tv.pth")
    argv = [
        "convert",
        str(tmp_path / "tv.pth"),
        str(tmp_path / "x.pth"),
        "--from",
        "torchvision",
        "--to",
        "timm",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err
    assert not (tmp_path / "x.pth").exists()


# -- small-data variants (conv stem, CCT, SPT + LSA, DeiT distillation) -------------------------


def test_timm_distilled_both_ways() -> None:
    args = dict(SMALL, mlp_ratio=2.0, num_classes=5)
    ref = randomize(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **args))
    x = images()
    model, _ = to_keymodels(ref.state_dict(), "timm", num_heads=4)
    assert model.config.distilled and model.num_prefix_tokens == 2
    assert model.config.global_pool == "token"
    assert_same_logits(model(x), ref(x))
    back = from_keymodels(model, "timm")
    assert_identical(back, ref.state_dict())
    target = randomize(
        timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **args), seed=3
    )
    target.load_state_dict(back)
    assert_same_logits(target(x), model(x))


SMALL_DATA = {
    "convolutional stem": dict(stem="conv"),
    "CCT convolutional tokenizer": dict(
        stem="cct", class_token=False, global_pool="seq", patch_size=4
    ),
    "shifted patch tokenization": dict(stem="spt"),
    "locality self-attention": dict(lsa=True),
}


@pytest.mark.parametrize("feature", SMALL_DATA)
def test_converters_name_the_feature_they_lack(feature: str, tmp_path: Path) -> None:
    model = small_keymodels(**SMALL_DATA[feature])
    for fmt, target in [
        ("timm", "timm's VisionTransformer"),
        ("torchvision", "torchvision's VisionTransformer"),
        ("jax", "the Google"),
        ("hf", "transformers' ViT"),
    ]:
        with pytest.raises(
            ConversionError, match=rf"{target}.* has no .*{feature}.*save_pretrained"
        ):
            dst = tmp_path / ("out.npz" if fmt == "jax" else f"out_{fmt}")
            save(model, dst if fmt in ("hf", "jax") else tmp_path / "out.safetensors", fmt)
    # Its keymodels weights alone cannot give the config: a clear error, not a wrong model.
    with pytest.raises(ConversionError, match="from_pretrained"):
        to_keymodels(from_keymodels(model, "keymodels") | {}, "timm", num_heads=4)
    # The keymodels directory keeps everything.
    save(model, tmp_path / "km", "keymodels")
    loaded, _ = load(tmp_path / "km", "keymodels")
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_distilled_is_rejected_where_there_is_no_distillation_token(tmp_path: Path) -> None:
    model = small_keymodels(distilled=True)
    with pytest.raises(ConversionError, match="transformers' ViT has no distillation token"):
        from_keymodels(model, "hf")
