"""keymodels.train: learning, exact resume, failures that keep the last good checkpoint."""

from __future__ import annotations

import errno
import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import keymodels.checkpoint as checkpoint_module
import keymodels.runtime as runtime
import keymodels.seq2seq.train as seq2seq_train_module
import keymodels.train as train_module
from keymodels.checkpoint import CheckpointMismatchError, load_checkpoint
from keymodels.data import get_recipe, load_dataset, preprocess_images
from keymodels.errors import InvalidInputError
from keymodels.metrics import read_metrics
from keymodels.registry import create_model
from keymodels.run import TrainingError, lr_factor
from keymodels.runs import evaluate, load_run, load_vit, predict
from keymodels.train import NonFiniteLossError, param_groups, train

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_recipe(**overrides):
    kw = dict(
        epochs=2, batch_size=128, lr=1e-2, warmup_epochs=0.3, model_overrides=TINY,
        augment={"crop_padding": 0, "mixup": 0.0},
    )  # fmt: skip
    # the digits data with a tiny plain ViT (TINY), whatever model the digits recipe trains
    return get_recipe("digits", **{"model": "vit_digits_patch2_8", **kw, **overrides})


def test_param_groups_no_decay_on_norms_biases_embeddings() -> None:
    model = create_model("vit_nano_patch4_28")
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no = {names[id(p)] for p in no_decay["params"]}
    yes = {names[id(p)] for p in decay["params"]}
    assert {"pos_embed", "cls_token", "norm.weight", "blocks.0.norm1.bias", "head.bias"} <= no
    assert {"blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "head.weight"} <= yes
    assert "patch_embed.proj.weight" in yes and not yes & no
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(yes) + len(no) == len(list(model.parameters()))


def test_lr_schedule_warmup_then_cosine() -> None:
    # 4 warmup steps reach the peak linearly, then half a cosine down to min_ratio at the end.
    assert [lr_factor(s, 4, 14, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 14, 0.1) == pytest.approx(1.0)
    assert lr_factor(9, 4, 14, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway
    assert lr_factor(14, 4, 14, 0.1) == pytest.approx(0.1)
    assert lr_factor(3, 0, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))


def test_evaluate_confusion_matrix() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # predicts class 0 for the first two images of a batch, class 2 for the rest
            logits = torch.zeros(len(x), 3)
            logits[:2, 0] = 1
            logits[2:, 2] = 1
            return logits

    batches = [(torch.zeros(4, 1), torch.tensor([0, 1, 2, 2]), 0)]
    res = evaluate(Fixed(), batches, 3)
    assert res["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 0, 2]]
    assert res["acc"] == 0.75 and res["per_class_acc"] == [1.0, 0.0, 1.0] and res["n"] == 4


def test_evaluate_tta_averages_the_logits_of_each_image_and_its_mirror() -> None:
    # A linear classifier on 1×3 images, logits = x @ W, worked by hand: x = [3, 1, 0] gives
    # [3, 2] (class 0, wrong); its mirror [0, 1, 3] gives [0, 5]; the mean [1.5, 3.5] is class 1.
    linear = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]))
    model = torch.nn.Sequential(torch.nn.Flatten(), linear)
    batches = [(torch.tensor([[[[3.0, 1.0, 0.0]]]]), torch.tensor([1]), 0)]
    assert evaluate(model, batches, 2)["acc"] == 0.0
    res = evaluate(model, batches, 2, tta=True)
    assert res["acc"] == 1.0 and res["confusion"] == [[0, 0], [0, 1]]
    expected = torch.nn.functional.cross_entropy(torch.tensor([[1.5, 3.5]]), torch.tensor([1]))
    assert res["loss"] == pytest.approx(expected.item())
    # The model's mode is the one it had (the wrapper must not turn an eval model to training).
    for mode in (False, True):
        model.train(mode)
        evaluate(model, batches, 2, tta=True)
        assert model.training is mode and linear.training is mode


def test_tta_needs_a_recipe_that_trains_on_mirrored_images() -> None:
    assert get_recipe("fashion-mnist", tta=True).tta
    with pytest.raises(InvalidInputError, match=r"tta averages each image with its mirror.*hflip"):
        get_recipe("digits", tta=True)  # a mirrored 3 is not a 3


def test_tta_run_reports_evaluates_predicts_and_converts_with_mirrors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keymodels.cli import main
    from keymodels.convert import convert
    from keymodels.hub import load_for_inference

    out = tmp_path / "run"
    # The digits recipe's CCT (mirroring digits is wrong, but tells the two readings apart well).
    recipe = get_recipe("digits", epochs=3, tta=True, augment={"hflip": True, "mixup": 0.0})
    result = train(recipe, out, progress=False, precision="fp32")
    assert result.results["tta"] is True
    model, info = load_run(out)
    assert info["recipe"]["tta"] is True
    test = load_dataset("digits").test
    x = (test.images.float() / 255 - info["mean"][0]) / info["std"][0]  # the eval transform
    mirrored = evaluate(model, [(x, test.labels, 0)], 10, tta=True)
    plain = evaluate(model, [(x, test.labels, 0)], 10)
    assert mirrored["loss"] == pytest.approx(result.results["test_loss"], rel=1e-5)
    assert abs(mirrored["loss"] - plain["loss"]) > 0.01, (mirrored["loss"], plain["loss"])
    # The validation accuracy of each epoch is the mirrored one: the best epoch's is recorded.
    epochs = {r["epoch"]: r["val_acc"] for r in read_metrics(out / "metrics.csv")}
    assert epochs[result.results["best_epoch"]] == pytest.approx(result.results["val_acc"])
    # eval follows the recipe; --no-tta reads the same checkpoint without mirrors.
    assert main(["eval", str(out), "--json", "--precision", "fp32"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tta"] is True and res["loss"] == pytest.approx(mirrored["loss"], rel=1e-5)
    assert main(["eval", str(out), "--no-tta", "--json", "--precision", "fp32"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tta"] is False and res["loss"] == pytest.approx(plain["loss"], rel=1e-5)

    # predict follows the run's recipe: the probabilities of the mirror-averaged logits.
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(test.images[i, 0].numpy(), "L").save(paths[-1])
    with torch.no_grad():
        probs = ((model(x[:3]) + model(x[:3].flip(-1))) / 2).softmax(-1).max(-1).values
        single = model(x[:3]).softmax(-1).max(-1).values
    assert (probs - single).abs().max() > 1e-3  # a real difference to tell them apart

    def top(run: object, **kw: object) -> torch.Tensor:
        rows = predict(run, paths, top_k=1, precision="fp32", compile="off", **kw)
        return torch.tensor([r["top"][0]["prob"] for r in rows])

    torch.testing.assert_close(top((model, info)), probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(top((model, info), tta=False), single, atol=1e-5, rtol=0)
    # A keymodels folder converted from the run keeps it (its config.json's preprocessing).
    report = convert(out, tmp_path / "folder", "keymodels", "keymodels")
    assert report.preprocessing["tta"] is True
    folder = load_for_inference(tmp_path / "folder")
    assert folder[1]["recipe"] == {"tta": True}
    torch.testing.assert_close(top(folder), probs, atol=1e-5, rtol=0)


def test_tiny_run_learns_and_writes_everything(tmp_path: Path) -> None:
    recipe = tiny_recipe(epochs=2, batch_size=32)
    result = train(recipe, tmp_path, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.15, losses  # 2.28 -> 1.92 when measured
    assert result.results["test_acc"] > 0.25  # chance is 0.1; 0.41 when measured
    assert result.results["val_acc"] == result.best_val_acc > 0.25
    for name in ("last.safetensors", "best.safetensors", "metrics.csv", "train_curves.png",
                 "confusion_matrix.png", "results.json", "recipe.json"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    results = json.loads((tmp_path / "results.json").read_text())
    assert sum(map(sum, results["confusion"])) == 360

    model, info = load_vit(tmp_path)
    assert not model.training and info["class_names"] == [str(i) for i in range(10)]
    assert info["img_size"] == [8, 8] and info["in_chans"] == 1 and len(info["mean"]) == 1
    assert info["config"]["embed_dim"] == 32 and info["checkpoint"].endswith("best.safetensors")
    # The model loaded from disk predicts what the trained model predicts, from image files.
    test = load_dataset("digits").test
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(test.images[i, 0].numpy(), "L").save(paths[-1])
    x = preprocess_images(paths, info)
    trained = result.model.eval()
    best = load_checkpoint(tmp_path / "best.safetensors")
    trained.load_state_dict(best.model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x))
    same_file, _ = load_vit(tmp_path / "last.safetensors")
    assert same_file.config.embed_dim == 32


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {**ckpt.model, **{f"train.{k}": v for k, v in ckpt.state.get("train_model", {}).items()}}


@pytest.mark.parametrize("precision", ["fp32", "bf16", "channels_last"])
def test_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    # EMA and label smoothing on, augmentation on: everything that draws random numbers or
    # carries state across epochs must be restored for the weights to match bit for bit.
    recipe = tiny_recipe(epochs=3, ema=0.9, augment={"crop_padding": 1, "random_erasing": 0.5})
    layouts = []
    if precision == "channels_last":  # a conv tokenizer trained in NHWC, as `auto` may choose
        monkeypatch.setattr(runtime, "CHANNELS_LAST_MIN_SPEEDUP", 0.0)  # NHWC always wins
        monkeypatch.setattr(runtime, "BF16_MIN_SPEEDUP", math.inf)  # and fp32 always
        # two conv stages (patch 4): the second one's 64 input channels make the layout visible
        recipe = tiny_recipe(epochs=3, ema=0.9, model="cct_2_3x1_8", model_overrides={"patch_size": 4},
                             augment={"crop_padding": 1, "random_erasing": 0.5})  # fmt: skip
        precision = "auto"
        real_epoch = train_module.train_one_epoch

        def recording(model, *args, **kwargs):
            conv = model.patch_embed.proj[3].weight  # [D, 64, 3, 3]
            nhwc = kwargs["memory_format"] == torch.channels_last
            layouts.append(nhwc and conv.is_contiguous(memory_format=torch.channels_last))
            return real_epoch(model, *args, **kwargs)

        monkeypatch.setattr(train_module, "train_one_epoch", recording)
    kw = dict(progress=False, deterministic=True, precision=precision)
    train(recipe, tmp_path / "straight", **kw)

    real = train_module.train_one_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second epoch
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "resumed", **kw)
    assert load_checkpoint(tmp_path / "resumed" / "last.safetensors").state["epoch"] == 1
    monkeypatch.setattr(train_module, "train_one_epoch", real)
    # "auto" on resume keeps the run's recorded precision: still exact
    train(recipe, tmp_path / "resumed", resume=True, **{**kw, "precision": "auto"})

    a = _weights(tmp_path / "straight" / "last.safetensors")
    b = _weights(tmp_path / "resumed" / "last.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("train.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4  # header + 3 epochs, none repeated
    recorded = "fp32" if precision == "auto" else precision  # auto: fp32 forced above
    assert all(row.endswith(f",{recorded}") for row in rows[1:])  # recorded every epoch
    chosen = json.loads((tmp_path / "resumed" / "precision.json").read_text())
    assert chosen["precision"] == recorded
    assert chosen["channels_last"] is (recipe.model == "cct_2_3x1_8")
    if recipe.model == "cct_2_3x1_8":  # every epoch trained in NHWC: 3 straight, 1 + 2 resumed
        assert layouts == [True] * 6, layouts
    # And the history does not merely look alike: resuming from epoch 1 again changes nothing.
    initial = create_model(recipe.model, **recipe.model_overrides).state_dict()
    assert not torch.equal(a["train.pos_embed"], initial["pos_embed"])


def test_resume_from_another_model_names_mismatches(tmp_path: Path) -> None:
    train(tiny_recipe(epochs=1), tmp_path, progress=False, max_steps=2)
    other = tiny_recipe(epochs=2, model_overrides={**TINY, "embed_dim": 48})
    with pytest.raises(
        CheckpointMismatchError,
        match=r"another model: shape mismatch blocks\.0\.attn\.proj\.bias: checkpoint \(32,\) vs model \(48,\)",
    ):
        train(other, tmp_path, resume=True, progress=False)
    deeper = tiny_recipe(epochs=2, model_overrides={**TINY, "depth": 3})
    with pytest.raises(
        CheckpointMismatchError, match=r"missing keys \['blocks\.2\.attn\.proj\.bias'"
    ):
        train(deeper, tmp_path, resume=True, progress=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(tiny_recipe(), tmp_path / "new", resume=True, progress=False)


def test_resume_refuses_no_more_epochs_and_a_changed_recipe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(tiny_recipe(epochs=1), tmp_path, progress=False, max_steps=2)
    with pytest.raises(
        TrainingError,
        match=r"has already trained 1 epoch\(s\), so --epochs 1 \(epochs=1\) leaves nothing to "
        r"train; to train longer, resume with --epochs greater than 1",
    ):
        train(tiny_recipe(epochs=1), tmp_path, resume=True, progress=False)
    with pytest.raises(
        TrainingError, match=r"changed recipe \(lr: the run has 0\.01, given 0\.5\)"
    ):
        train(tiny_recipe(lr=0.5), tmp_path, resume=True, progress=False)
    erasing = tiny_recipe(augment={"crop_padding": 0, "random_erasing": 0.5})
    with pytest.raises(
        TrainingError, match=r"augment\.random_erasing: the run has 0\.0, given 0\.5"
    ):
        train(erasing, tmp_path, resume=True, progress=False)
    # Only the number of epochs may change; recipe.json records what the run uses.
    with caplog.at_level("INFO", logger="keymodels.train"):
        train(tiny_recipe(epochs=2), tmp_path, resume=True, progress=False, max_steps=3)
    recipe = json.loads((tmp_path / "recipe.json").read_text())["recipe"]
    assert recipe["lr"] == 0.01 and recipe["epochs"] == 2
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 2/2:")]
    assert len(lines) == 1 and re.fullmatch(
        r"epoch 2/2: train loss [\d.]+, val loss [\d.]+, val acc [\d.]+%, lr \S+, [\d.]+ s, "
        r"\d+ img/s",
        lines[0],
    ), lines


def test_hints_name_the_parameter_and_the_flag() -> None:
    for hint in (train_module.NONFINITE_HINT, seq2seq_train_module.NONFINITE_HINT):
        assert "--lr (" in hint and "--resume (resume=True)" in hint, hint
        assert "--on-nonfinite skip (" in hint, hint
    assert "--warmup-epochs (recipe.warmup_epochs)" in train_module.NONFINITE_HINT


def test_non_finite_loss_stops_and_keeps_last_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.compute_loss
    calls = []

    def exploding(logits, targets, label_smoothing):
        calls.append(1)
        loss = real(logits, targets, label_smoothing)
        return loss * float("nan") if len(calls) > 13 else loss  # epoch 2 (10 steps an epoch)

    monkeypatch.setattr(train_module, "compute_loss", exploding)
    with pytest.raises(
        NonFiniteLossError,
        match=r"loss became nan at step 4 of epoch 2/3.*last\.safetensors \(epoch 1\) is kept",
    ):
        train(tiny_recipe(epochs=3), tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "last.safetensors")
    assert ckpt.state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt.model.values())


def test_full_disk_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = checkpoint_module.save_file
    calls = []

    def disk_full_after_epoch_1(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) > 2:  # epoch 1 wrote last + best; epoch 2 finds the disk full
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full_after_epoch_1)
    with pytest.raises(
        TrainingError,
        match=r"epoch 2: could not write .*last\.safetensors: No space left on device.*intact.*--resume",
    ):
        train(tiny_recipe(), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "last.safetensors").state["epoch"] == 1
    assert sorted(p.name for p in tmp_path.glob(".*tmp")) == []  # no half-written file left


# -- honest model selection, your own data ------------------------------------------------------


def _toy_data(n: int, seed: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 8×8 grey images: class 1 bright on the left half, class 0 on the right;
    ``flip`` swaps which class is which (a split that disagrees with training)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.2
    left = labels.bool() ^ flip
    images[left, :, :, :4] += 0.8
    images[~left, :, :, 4:] += 0.8
    return images, labels


def test_best_checkpoint_is_chosen_on_val_and_test_evaluated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test split's labels are flipped: the better the model, the worse its test accuracy,
    # so a run that picked best.safetensors on test would pick another epoch than val does.
    train_x, train_y = _toy_data(64, 0)
    val, test = _toy_data(32, 1), _toy_data(24, 2, flip=True)
    evaluated = []
    real = train_module.evaluate

    def counting(model, loader, *args, **kwargs):
        evaluated.append(len(loader.dataset))
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", counting)
    recipe = tiny_recipe(epochs=4, batch_size=16, lr=3e-3, label_smoothing=0.0)
    result = train(recipe, tmp_path, data=((train_x, train_y), val, test), progress=False)
    # Four epochs on val (32 images each), then val and test (24) once with the best weights.
    assert evaluated == [32] * 5 + [24]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_acc" in header and "val_loss" in header
    assert not any(c.startswith("test") for c in header)
    accs = [h["val_acc"] for h in result.history]
    best_epoch = accs.index(max(accs)) + 1
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["best_epoch"] == best_epoch and r["val_acc"] == pytest.approx(max(accs))
    assert r["dataset"] == "custom" and r["class_names"] == ["0", "1"]
    assert result.best_val_acc == max(accs) and result.test_acc == r["test_acc"]
    meta = load_checkpoint(tmp_path / "best.safetensors").meta
    assert meta["eval_split"] == "val" and meta["val_acc"] == max(accs)
    assert meta["epoch"] == best_epoch and meta["recipe"]["dataset"] == "custom"


class _Pairs(torch.utils.data.Dataset):
    classes = ("left", "right")

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (self.images[i] * 255).round().to(torch.uint8), int(self.labels[i])


def test_custom_datasets_without_test_and_their_errors(tmp_path: Path) -> None:
    train_ds, val_ds = _Pairs(*_toy_data(64, 0)), _Pairs(*_toy_data(16, 1))
    recipe = tiny_recipe(epochs=1, batch_size=16)
    result = train(recipe, tmp_path / "ok", data=(train_ds, val_ds), progress=False)
    r = result.results
    assert r["class_names"] == ["left", "right"] and r["test_acc"] is None and "note" in r
    assert r["split_sizes"] == {"train": 64, "val": 16, "test": None}
    colour = (torch.rand(8, 3, 8, 8), torch.arange(8) % 2)
    with pytest.raises(train_module.DataError, match=r"val images are \[C, H, W\] = \[3, 8, 8\]"):
        train(recipe, tmp_path / "bad", data=(train_ds, colour), progress=False)
    with pytest.raises(train_module.DataError, match=r"\(train, val\) or \(train, val, test\)"):
        train(recipe, tmp_path / "bad", data=(train_ds,), progress=False)
    normalized = (torch.randn(8, 1, 8, 8), torch.arange(8) % 2)  # mean 0, std 1: not pixels
    with pytest.raises(train_module.DataError, match=r"floats in \[-.*\], expected \[0, 1\]"):
        train(recipe, tmp_path / "bad", data=(train_ds, normalized), progress=False)
    with pytest.raises(TrainingError, match=r"64 training images are fewer than one batch of 128"):
        train(tiny_recipe(epochs=1), tmp_path / "bad", data=(train_ds, val_ds), progress=False)
    assert not (tmp_path / "bad").exists()  # a data error writes nothing


def test_train_subset_and_split_errors_write_nothing(tmp_path: Path) -> None:
    result = train(tiny_recipe(epochs=1, batch_size=16, train_subset=40), tmp_path / "few",
                   max_steps=1, progress=False)  # fmt: skip
    assert result.results["split_sizes"]["train"] == 40
    with pytest.raises(train_module.DataError, match=r"train_subset=9 .*10 classes"):
        train(tiny_recipe(train_subset=9), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_resume_of_a_run_without_a_val_split_is_refused(tmp_path: Path) -> None:
    recipe = tiny_recipe(epochs=1, batch_size=64)
    train(recipe, tmp_path, max_steps=1, progress=False)
    ckpt = load_checkpoint(tmp_path / "last.safetensors")
    ckpt.meta["eval_split"] = "test"  # as runs before validation splits
    checkpoint_module.save_checkpoint(tmp_path / "last.safetensors", ckpt)
    with pytest.raises(TrainingError, match=r"before validation splits.*new --out"):
        train(tiny_recipe(epochs=2, batch_size=64), tmp_path, resume=True, progress=False)


def test_any_registered_classifier_trains_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []
    real = train_module.create_model

    def spy(name, **overrides):
        built.append((name, overrides))
        return real(name, **overrides)

    monkeypatch.setattr(train_module, "create_model", spy)
    recipe = get_recipe("digits", model="cct_2_3x1_8", epochs=1, batch_size=64)
    result = train(recipe, tmp_path, max_steps=1, progress=False)
    assert built == [("cct_2_3x1_8", {"img_size": (8, 8), "in_chans": 1, "num_classes": 10})]
    assert result.results["model"] == "cct_2_3x1_8" and result.epochs_done == 1
    with pytest.raises(InvalidInputError, match="unknown image-classification model 'cnn_x'"):
        get_recipe("digits", model="cnn_x")
