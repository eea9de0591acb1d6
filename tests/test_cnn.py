"""keymodels.cnn: the ResNet distillation teacher; torchvision parity, saving and loading runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from keymodels import InvalidInputError, ResNet, ResNetConfig, create_model, from_pretrained
from keymodels.checkpoint import (
    Checkpoint,
    CheckpointMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from keymodels.convert import ConversionError
from keymodels.hub import load_for_inference, load_pretrained
from keymodels.registry import get_config, list_models
from keymodels.runs import evaluate, load, load_run, load_vit, predict

RESNETS = list_models("resnet*")


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics, so that equal outputs mean equal weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


def batch(config: ResNetConfig, n: int = 2, seed: int = 1) -> torch.Tensor:
    h, w = config.img_size if isinstance(config.img_size, tuple) else (config.img_size,) * 2
    return torch.randn(n, config.in_chans, h, w, generator=torch.Generator().manual_seed(seed))


def test_registered_resnets() -> None:
    assert RESNETS == ["resnet10_28", "resnet10_32", "resnet18_224", "resnet18_28", "resnet18_32"]
    small = {n: get_config(n) for n in RESNETS if not n.endswith("_224")}
    for name, c in small.items():
        assert c.stem == "cifar" and c.num_classes == 10, name
        assert c.img_size == int(name[-2:]) and c.in_chans == (1 if c.img_size == 28 else 3)
        assert c.layers == ((2,) * 4 if name.startswith("resnet18") else (1,) * 4)
    assert get_config("resnet18_224") == ResNetConfig()  # torchvision's resnet18


@pytest.mark.parametrize("name", RESNETS)
def test_shapes_and_gradients_at_the_registered_size(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).train()
    c = model.config
    x = batch(c)
    logits = model(x)
    assert logits.shape == (2, c.num_classes) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad
    stride = 8 if c.stem == "cifar" else 32
    features = model.forward_features(x)
    assert features.shape == (2, 512, -(-x.shape[2] // stride), -(-x.shape[3] // stride))
    assert model.forward_head(features, pre_logits=True).shape == (2, 512)


def _counted_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d and Linear in one forward pass of one image."""
    total = 0

    def count(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()  # in_channels / groups × kh × kw
            total += out[0].numel() * k
        else:
            total += module.in_features * module.out_features

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(x[:1])
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("name", RESNETS)
def test_macs_count_every_conv_and_the_head(name: str) -> None:
    model = create_model(name)
    assert model.config.macs() == _counted_macs(model, batch(model.config, 1))


def test_macs_at_odd_sizes_and_of_torchvision_resnet18() -> None:
    assert get_config("resnet18_224").macs() == pytest.approx(1.814e9, rel=1e-3)  # torchvision
    for size, stem in ((27, "imagenet"), (33, "imagenet"), (9, "cifar"), (31, "cifar")):
        model = ResNet(ResNetConfig(img_size=size, stem=stem, layers=(1, 2, 1, 1), num_classes=3))
        assert model.config.macs() == _counted_macs(model, batch(model.config, 1)), (size, stem)


def test_torchvision_resnet18_weights_load_both_ways_with_equal_logits() -> None:
    ref = randomized(torchvision.models.resnet18())
    ours = create_model("resnet18_224").eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() <= 1e-4
        back = torchvision.models.resnet18().eval()
        back.load_state_dict(randomized(ours, seed=3).state_dict())
        assert (back(x) - ours(x)).abs().max() <= 1e-4


def test_small_stem_keeps_torchvision_names() -> None:
    model = create_model("resnet10_28")
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.weight.shape == (64, 1, 3, 3) and model.conv1.stride == (1, 1)
    tv = torchvision.models.resnet18()
    assert set(create_model("resnet18_28").state_dict()) == set(tv.state_dict())
    grey = ResNet(ResNetConfig(in_chans=1))  # the imagenet stem on grey images
    assert grey.conv1.weight.shape == (64, 1, 7, 7) and isinstance(grey.maxpool, nn.MaxPool2d)


def test_no_head_and_reset_classifier() -> None:
    model = create_model("resnet10_32", num_classes=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    model.reset_classifier(5)
    assert model.config.num_classes == 5 and not model.fc.weight.any()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_config_dict_round_trip_through_json() -> None:
    c = ResNetConfig(img_size=(28, 32), in_chans=1, num_classes=7, layers=(1, 2, 3, 1))
    d = json.loads(json.dumps(c.to_dict()))
    assert d["img_size"] == [28, 32] and d["layers"] == [1, 2, 3, 1]
    assert ResNetConfig.from_dict(d) == c


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"layers": (1, 1, 1)}, r"layers must be 4 positive block counts.*got \(1, 1, 1\)"),
        ({"layers": (2, 0, 2, 2)}, r"layers must be 4 positive block counts"),
        ({"stem": "conv"}, r"stem must be one of \('cifar', 'imagenet'\).*got 'conv'"),
        ({"in_chans": 0}, r"in_chans must be a positive integer; got 0"),
        ({"num_classes": -1}, r"num_classes must be an integer >= 0 \(0: no head\); got -1"),
        ({"img_size": 0}, r"img_size must be a positive integer or \[H, W\]; got 0"),
    ],
)
def test_bad_configs_say_what_is_wrong(fields: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ResNetConfig(**fields)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown ResNet config field\(s\) \['layer'\].*"):
        ResNetConfig.from_dict({"layer": [1, 1, 1, 1]})
    with pytest.raises(InvalidInputError, match=r"\['drop_path_rate'\]"):
        create_model("resnet10_28", drop_path_rate=0.1)  # a ViT option


def test_save_pretrained_round_trip_is_bit_identical(tmp_path: Path) -> None:
    model = randomized(create_model("resnet10_28"))
    names = [f"class {i}" for i in range(10)]
    model.save_pretrained(tmp_path / "m", class_names=names, preprocessing={"mean": [0.3]})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "keymodels_resnet" and config["config"]["layers"] == [1] * 4
    assert config["preprocessing"]["input_size"] == [1, 28, 28]
    loaded, info = load_pretrained(tmp_path / "m")
    assert isinstance(loaded, ResNet) and not loaded.training
    assert loaded.config.to_dict() == model.config.to_dict() and info.class_names == names
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = batch(model.config, 3)
    assert torch.equal(loaded(x), model(x))
    # half-precision files load in float32; a new head when asked
    model.half().save_pretrained(tmp_path / "h")
    new = from_pretrained(tmp_path / "h", num_classes=3, img_size=32)
    assert {p.dtype for p in new.parameters()} == {torch.float32}
    assert new.config.num_classes == 3 and new.config.to_dict()["img_size"] == [32, 32]
    assert not new.fc.weight.any() and new(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_pretrained_folder_of_another_shape_is_named(tmp_path: Path) -> None:
    create_model("resnet10_28").save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["config"]["layers"] = [2, 2, 2, 2]
    path.write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"missing keys \['layer1\.1\.bn1\.bias'.*Does "):
        from_pretrained(tmp_path / "m")
    config["config"]["stem"] = "tiny"
    path.write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match="stem must be one of"):
        from_pretrained(tmp_path / "m")


def _write_run(folder: Path, model: ResNet, name: str) -> None:
    """A run folder as ``keymodels train`` writes it (train.py's checkpoint meta)."""
    c = model.config
    meta = {
        "model_name": name, "config": c.to_dict(), "class_names": [f"c{i}" for i in range(10)],
        "recipe": {"name": "test"}, "mean": [0.5] * c.in_chans, "std": [0.25] * c.in_chans,
        "img_size": list(c.to_dict()["img_size"]), "in_chans": c.in_chans, "weights": "model",
        "epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "eval_split": "val",
    }  # fmt: skip
    state = {"epoch": 1, "step": 3}
    save_checkpoint(folder / "best.safetensors", Checkpoint(model.state_dict(), state, meta))


def test_run_folder_loads_predicts_and_evaluates(tmp_path: Path) -> None:
    model = randomized(create_model("resnet10_28"))
    _write_run(tmp_path, model, "resnet10_28")
    loaded, info = load_run(tmp_path)
    assert isinstance(loaded, ResNet) and not loaded.training
    assert info["model_name"] == "resnet10_28" and info["img_size"] == [28, 28]
    assert info["config"] == model.config.to_dict() and info["in_chans"] == 1
    x = batch(model.config, 4)
    assert torch.equal(loaded(x), model(x))
    assert isinstance(load(tmp_path)[0], ResNet)
    assert isinstance(load_for_inference(tmp_path)[0], ResNet)

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((torch.rand(28, 28) * 255).byte().numpy(), "L").save(paths[-1])
    top = predict(tmp_path, paths, top_k=2, precision="fp32", compile="off")
    assert [len(p["top"]) for p in top] == [2, 2, 2]
    assert all(p["top"][0]["prob"] >= p["top"][1]["prob"] for p in top)

    labels = loaded(x).argmax(1)
    result = evaluate(loaded, [(x, labels, 0)], 10)
    assert result["acc"] == 1.0 and result["n"] == 4


def test_run_info_tells_validation_from_test_accuracy(tmp_path: Path) -> None:
    _write_run(tmp_path, create_model("resnet10_28"), "resnet10_28")  # epoch 1, val_acc 0.5
    info = load_run(tmp_path)[1]
    assert (info["val_acc"], info["test_acc"]) == (0.5, None)  # no test accuracy yet
    results = tmp_path / "results.json"
    # The test split is evaluated once, at the end, with the best weights (results.json).
    results.write_text(json.dumps({"best_epoch": 1, "epochs": 3, "test_acc": 0.25}))
    info = load_run(tmp_path)[1]
    assert (info["val_acc"], info["test_acc"]) == (0.5, 0.25)
    results.write_text(json.dumps({"best_epoch": 2, "epochs": 3, "test_acc": 0.25}))
    assert load_run(tmp_path)[1]["test_acc"] is None  # another epoch's weights were tested
    results.write_text(json.dumps({"best_epoch": None, "epochs": 1, "test_acc": 0.3}))
    assert load_run(tmp_path)[1]["test_acc"] == 0.3  # no best checkpoint: the last was tested
    # Runs from before the validation split (no eval_split): their "val_acc" was the test split's.
    results.unlink()
    ckpt = load_checkpoint(tmp_path / "best.safetensors")
    old = {k: v for k, v in ckpt.meta.items() if k != "eval_split"}
    save_checkpoint(tmp_path / "best.safetensors", Checkpoint(ckpt.model, ckpt.state, old))
    info = load_run(tmp_path)[1]
    assert (info["val_acc"], info["test_acc"]) == (None, 0.5)


def test_vit_only_uses_refuse_a_cnn_run_clearly(tmp_path: Path) -> None:
    _write_run(tmp_path, create_model("resnet10_28"), "resnet10_28")
    with pytest.raises(InvalidInputError, match="holds a ResNet, not a Vision Transformer"):
        load_vit(tmp_path)
    from keymodels.explain import explain

    model, _ = load_run(tmp_path)
    with pytest.raises(InvalidInputError, match="no attention to explain"):
        explain(model, torch.randn(1, 1, 28, 28))


def test_run_whose_weights_do_not_fit_its_config(tmp_path: Path) -> None:
    _write_run(tmp_path, create_model("resnet10_28"), "resnet18_28")  # name says ResNet-18 …
    ckpt = tmp_path / "best.safetensors"
    from keymodels.checkpoint import load_checkpoint

    c = load_checkpoint(ckpt)
    c.meta["config"]["layers"] = [2, 2, 2, 2]  # … and so does the config; the weights do not
    save_checkpoint(ckpt, c)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \['layer1\.1"):
        load_run(tmp_path)


def test_keymodels_train_trains_a_resnet_and_the_run_loads(tmp_path: Path) -> None:
    from keymodels.data import get_recipe
    from keymodels.train import train

    recipe = get_recipe(
        "digits", model="resnet10_28", model_overrides={}, img_size=8, epochs=1, batch_size=64,
        lr=1e-3, warmup_epochs=0.3, augment={"crop_padding": 0},
    )  # fmt: skip
    result = train(recipe, tmp_path, progress=False, precision="fp32")
    assert result.results["test_acc"] > 0.3  # chance is 0.1; 0.61 when measured
    model, info = load_run(tmp_path)
    assert isinstance(model, ResNet) and info["model_name"] == "resnet10_28"
    assert info["img_size"] == [8, 8] and info["config"]["stem"] == "cifar"


@pytest.mark.parametrize("fmt", ["timm", "hf", "torchvision", "jax"])
def test_vit_converters_refuse_a_resnet_by_name(fmt: str) -> None:
    from keymodels.convert import ConversionError, from_keymodels

    with pytest.raises(ConversionError, match=r"a ResNet is not a Vision Transformer"):
        from_keymodels(create_model("resnet10_28"), fmt)
