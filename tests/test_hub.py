"""keymodels.hub: save_pretrained / from_pretrained directories, Hub repo ids from the cache, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import timm
import torch
import transformers
from safetensors.torch import save_file

from keymodels import InvalidInputError, create_model, from_pretrained
from keymodels.convert import ConversionError
from keymodels.hub import HubError, load_pretrained, save_pretrained


def random_model(**kw) -> torch.nn.Module:
    model = create_model("vit_nano_patch2_8", **kw)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_round_trip_keeps_weights_config_class_names_and_preprocessing(tmp_path: Path) -> None:
    model = random_model(global_pool="avg", init_values=1e-5, norm_eps=1e-12)
    names = [f"digit {i}" for i in range(10)]
    model.save_pretrained(
        tmp_path / "m", class_names=names, preprocessing={"mean": [0.5], "std": [0.25]}
    )
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded, info = load_pretrained(tmp_path / "m")
    assert loaded.config.to_dict() == model.config.to_dict()
    assert info.class_names == names and info.preprocessing["std"] == [0.25]
    assert info.preprocessing["input_size"] == [1, 8, 8]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert torch.equal(loaded(images()), model(images()))


def test_head_is_reinitialised_only_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = random_model()
    save_pretrained(model, tmp_path / "m")
    with caplog.at_level(logging.WARNING, logger="keymodels.hub"):
        same = from_pretrained(tmp_path / "m", num_classes=10)
        assert not caplog.records
        assert torch.equal(same.head.weight, model.head.weight)
        new, info = load_pretrained(tmp_path / "m", num_classes=3)
    assert "head re-initialised" in caplog.text and info.head_reinitialized
    assert new.head.weight.shape == (3, 128) and not new.head.weight.any()
    assert torch.equal(new.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_from_pretrained_resamples_to_img_size(tmp_path: Path) -> None:
    save_pretrained(random_model(), tmp_path / "m")
    model = from_pretrained(tmp_path / "m", img_size=16)
    assert model.pos_embed.shape == (1, 1 + 64, 128)
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 10)


def test_from_pretrained_reads_transformers_and_timm_directories(tmp_path: Path) -> None:
    config = transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        image_size=16, patch_size=4, num_labels=3,
    )  # fmt: skip
    hf = transformers.ViTForImageClassification(config).eval()
    torch.nn.init.normal_(hf.classifier.weight)
    hf.save_pretrained(tmp_path / "hf")
    x = torch.randn(2, 3, 16, 16)
    assert (from_pretrained(tmp_path / "hf")(x) - hf(x).logits).abs().max() <= 1e-4

    ref = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, in_chans=3, num_classes=10
    )
    ref = ref.eval()
    (tmp_path / "timm").mkdir()
    save_file(ref.state_dict(), tmp_path / "timm" / "model.safetensors")
    (tmp_path / "timm" / "config.json").write_text(
        json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 10})
    )
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(from_pretrained(tmp_path / "timm")(x), ref(x))


def _cache_repo(cache: Path, repo: str, model: torch.nn.Module) -> None:
    """Lay out ``repo`` in a huggingface_hub cache as a download would."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    save_pretrained(model, root / "snapshots" / commit)


def test_repo_id_from_cache_offline_and_clear_error_when_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = random_model()
    _cache_repo(tmp_path, "someone/tiny-vit", model)
    loaded = from_pretrained("someone/tiny-vit", cache_dir=str(tmp_path))
    assert torch.equal(loaded(images()), model(images()))
    with pytest.raises(HubError, match=r"not in the local cache and HF_HUB_OFFLINE=1"):
        from_pretrained("someone/absent-vit", cache_dir=str(tmp_path))


def test_bad_directories(tmp_path: Path) -> None:
    save_pretrained(random_model(), tmp_path / "m")
    with pytest.raises(
        InvalidInputError, match="neither a save_pretrained directory nor a Hub repo id"
    ):
        from_pretrained(tmp_path / "missing" / "dir")

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["config"]["num_heads"] = 5
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match="embed_dim 128 is not divisible by num_heads 5"):
        from_pretrained(tmp_path / "m")

    config["config"]["num_heads"] = 4
    config["config"]["embed_dim"] = 64  # the weights are 128 wide
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConversionError, match=r"patch_embed\.proj\.weight: checkpoint \(128, 1, 2, 2\)"
    ):
        from_pretrained(tmp_path / "m")

    save_pretrained(random_model(), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ConversionError, match="truncated"):
        from_pretrained(tmp_path / "m")


def test_save_replaces_an_existing_directory_file_by_file(tmp_path: Path) -> None:
    save_pretrained(random_model(), tmp_path / "m")
    (tmp_path / "m" / "README.md").write_text("mine")
    newer = random_model(num_classes=4)
    save_pretrained(newer, tmp_path / "m")
    assert (tmp_path / "m" / "README.md").read_text() == "mine"
    assert from_pretrained(tmp_path / "m").num_classes == 4
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left behind
    with pytest.raises(InvalidInputError, match="3 class names"):
        save_pretrained(newer, tmp_path / "n", class_names=["a", "b", "c"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_in_float32(tmp_path: Path, dtype: torch.dtype) -> None:
    model = random_model()
    save_pretrained(model.to(dtype), tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    expected = model.float()(images())
    torch.testing.assert_close(loaded(images()), expected)  # a float32 batch just works


def test_load_for_inference_names_what_a_folder_lacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from keymodels.hub import load_for_inference

    save_pretrained(random_model(), tmp_path / "bare")
    with caplog.at_level(logging.WARNING):
        _, info = load_for_inference(tmp_path / "bare" / "model.safetensors")
    assert (
        info["missing"] == ["class names", "mean/std"] and "records no class names" in caplog.text
    )
    assert info["class_names"][:2] == ["0", "1"] and info["mean"] == [0.5]
    save_pretrained(
        random_model(),
        tmp_path / "full",
        [str(i) for i in range(10)],
        {"mean": [0.2], "std": [0.3]},
    )
    _, info = load_for_inference(tmp_path / "full")
    assert info["missing"] == [] and info["mean"] == [0.2] and info["std"] == [0.3]


def test_resnet_round_trips_through_a_folder_and_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keymodels import ResNet
    from keymodels.hub import load_for_inference

    model = create_model("resnet10_28").eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=torch.Generator().manual_seed(0)) + 0.1)
    x = torch.randn(2, 1, 28, 28)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cache_repo(tmp_path, "someone/tiny-resnet", model)
    loaded = from_pretrained("someone/tiny-resnet", cache_dir=str(tmp_path))
    assert isinstance(loaded, ResNet) and torch.equal(loaded(x), model(x))
    save_pretrained(model, tmp_path / "m", [str(i) for i in range(10)], {"mean": [0.2], "std": [1]})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "keymodels_resnet"
    again, info = load_for_inference(tmp_path / "m")
    assert torch.equal(again(x), model(x)) and info["img_size"] == [28, 28]
    assert info["missing"] == [] and info["in_chans"] == 1
