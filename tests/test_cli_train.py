"""``keymodels train | eval | predict`` end to end on the embedded digits, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from keymodels.cli import main
from keymodels.data import load_dataset

# One training run (the module fixture) serves every test here: keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group("cli_train")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "digits"
    code = main([
        "train", "--recipe", "digits", "--out", str(out), "--epochs", "2", "--batch-size", "32",
        "--lr", "0.01", "--warmup-epochs", "0.3", "--crop-padding", "0", "--no-progress", "--json",
        "--precision", "fp32",  # timed "auto" may pick apart from eval's on a loaded machine
    ])  # fmt: skip
    assert code == 0
    return out


def test_train_prints_results(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The fixture printed one JSON object as its last line.
    results = json.loads((run_dir / "results.json").read_text())
    assert results["recipe"] == "digits" and results["epochs"] == 2
    assert 0.1 < results["test_acc"] <= 1.0
    assert (run_dir / "train_curves.png").stat().st_size > 1000


def test_eval_json_and_text(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(run_dir), "--json", "--precision", "fp32"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 360 and sum(map(sum, res["confusion"])) == 360
    diag = sum(res["confusion"][i][i] for i in range(10))
    assert res["accuracy"] == pytest.approx(diag / 360)
    assert set(res["per_class_acc"]) == {str(i) for i in range(10)}
    # The same numbers the training run recorded for its best checkpoint, on each split.
    results = json.loads((run_dir / "results.json").read_text())
    assert res["split"] == "test" and res["accuracy"] == pytest.approx(results["test_acc"])
    assert res["test_acc"] == res["accuracy"] and "val_acc" not in res
    assert main(["eval", str(run_dir), "--split", "val", "--json", "--precision", "fp32"]) == 0
    val = json.loads(capsys.readouterr().out)
    assert val["split"] == "val" and val["n"] == results["split_sizes"]["val"] == 142
    assert val["accuracy"] == pytest.approx(results["val_acc"]) == val["val_acc"]
    assert "test_acc" not in val
    # load_run's info names each score by its split (the best checkpoint's).
    from keymodels.runs import load_run

    info = load_run(run_dir)[1]
    assert info["epoch"] == results["best_epoch"]
    assert info["val_acc"] == pytest.approx(results["val_acc"])
    assert info["test_acc"] == results["test_acc"]
    assert main(["eval", str(run_dir / "last.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out


def test_predict_any_image(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test = load_dataset("digits").test
    grey = tmp_path / "digit.png"
    Image.fromarray(test.images[0, 0].numpy(), "L").resize((40, 40)).save(grey)
    rgba = tmp_path / "digit_rgba.png"
    Image.open(grey).convert("RGBA").save(rgba)
    assert main(["predict", str(run_dir), str(grey), str(rgba), "--top-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert [len(r["top"]) for r in rows] == [3, 3]
    probs = [t["prob"] for t in rows[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    assert rows[0]["top"] == rows[1]["top"]  # opaque RGBA == the grey image


def test_predict_on_error_fails_by_default_and_skip_leaves_bad_files_out(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = tmp_path / "digit.png"
    Image.fromarray(load_dataset("digits").test.images[0, 0].numpy(), "L").save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    images = [str(bad), str(good), str(tmp_path / "missing.png")]
    assert main(["predict", str(run_dir), *images, "--on-error", "fail"]) == 2
    assert "broken.png: cannot decode image" in capsys.readouterr().err
    assert main(["predict", str(run_dir), *images, "--on-error", "skip", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert [row["image"] for row in rows] == [str(good)]
    skipped = [
        r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()
    ]
    assert len(skipped) == 2 and "broken.png" in skipped[0] and "missing.png" in skipped[1]
    # Every file unreadable: one error naming the first, not an empty answer.
    assert main(["predict", str(run_dir), str(bad), "--on-error", "skip"]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 image file(s) could be read; the first: " in err and "broken.png" in err


def test_cli_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--recipe", "cifar", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'cifar'" in err and "cifar10" in err and "digits" in err
    assert main(["train", "--recipe", "digits", "--model", "vit_huge", "--out", str(tmp_path)]) == 2
    assert "unknown image-classification model 'vit_huge'" in capsys.readouterr().err
    assert main(["train", "--recipe", "fashion-mnist", "--out", str(tmp_path / "y")]) == 2
    assert "needs --data-dir" in capsys.readouterr().err
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["predict", str(run_dir), str(bad)]) == 2
    assert "broken.png: cannot decode" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no run folder or checkpoint file" in capsys.readouterr().err
    assert main(["train", "--recipe", "digits", "--tta", "--out", str(tmp_path / "z")]) == 2
    assert "does not train on mirrored images" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()  # nothing written


def test_eval_tta_averages_with_mirrors_when_asked(
    run_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from keymodels.runs import MirrorTTA, evaluate, load_run

    # The digits recipe has no tta: eval follows it unless --tta asks.
    assert main(["eval", str(run_dir), "--json", "--precision", "fp32"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run_dir), "--tta", "--json", "--precision", "fp32"]) == 0
    tta = json.loads(capsys.readouterr().out)
    assert plain["tta"] is False and tta["tta"] is True
    # Allowed (the user asked), with a warning: this digits run never saw a mirrored image.
    assert "was trained without mirrored images (augment.hflip off)" in caplog.text
    model, info = load_run(run_dir)
    test = load_dataset("digits").test
    x = (test.images.float() / 255 - info["mean"][0]) / info["std"][0]
    expected = evaluate(MirrorTTA(model), [(x, test.labels, 0)], 10)
    assert tta["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert tta["loss"] != pytest.approx(plain["loss"], rel=1e-3)
    assert main(["eval", str(run_dir), "--tta", "--precision", "fp32"]) == 0
    assert "each averaged with its mirror" in capsys.readouterr().out


def test_demo_part_trains_predicts_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import keymodels.cli.train as cli_train

    real = cli_train.get_recipe
    # The demo's own recipe, cut to a few steps: the part's plumbing is what is tested here.
    monkeypatch.setattr(cli_train, "get_recipe", lambda name: real(name, epochs=1, batch_size=128))
    cli_train.vit_training_part(tmp_path)
    out = capsys.readouterr().out
    run = tmp_path / "vit-digits"
    assert "test accuracy" in out and str(run.resolve()) in out
    assert out.count("_label") == 5 and len(list((run / "samples").glob("*.png"))) == 5
    for name in ("best.safetensors", "train_curves.png", "confusion_matrix.png"):
        assert (run / name).is_file()


def test_save_pretrained_folders_work_with_every_command(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "pretrained"
    assert (
        main(["convert", str(run_dir), str(folder), "--from", "keymodels", "--to", "keymodels"])
        == 0
    )
    image = tmp_path / "digit.png"
    Image.fromarray(load_dataset("digits").test.images[0, 0].numpy(), "L").save(image)
    capsys.readouterr()
    FP32 = ["--compile", "off", "--threads", "1"]  # one thread count: the same float sums
    outputs = []
    for model in (run_dir, folder, folder / "model.safetensors"):
        assert (
            main(["predict", str(model), str(image), "--json", "--precision", "fp32", *FP32]) == 0
        )
        outputs.append(json.loads(capsys.readouterr().out)["predictions"][0]["top"])
    # The weights are bit-identical, but a folder's are used in place where safetensors loaded
    # them (load_state_dict(assign=True)), at whatever alignment the file's header leaves (head
    # .weight: 8 bytes), while a run's are copied into the model's own 64-byte-aligned ones; the
    # CPU matmul kernels sum in another order for unaligned data: probabilities can differ in
    # the last bits (~5e-8), never more.
    for other in outputs[1:]:
        assert [t["class"] for t in other] == [t["class"] for t in outputs[0]]
        assert [t["prob"] for t in other] == pytest.approx(
            [t["prob"] for t in outputs[0]], rel=0, abs=1e-6
        )
    assert main(["explain", str(folder), str(image), "--out", str(tmp_path / "e.png")]) == 0
    assert (tmp_path / "e.png").is_file()
    capsys.readouterr()
    accuracies = []
    for model, extra in ((run_dir, []), (folder, ["--dataset", "digits"])):
        assert main(["eval", str(model), "--json", "--precision", "fp32", *FP32, *extra]) == 0
        accuracies.append(json.loads(capsys.readouterr().out)["accuracy"])
    assert accuracies[0] == accuracies[1]


def test_default_threads_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from keymodels.cli.train import default_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (3.7, 3.0, 3.0))
    assert default_threads() == 1  # a busy 2-core machine: one thread, not two fighting
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    assert default_threads() == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 32)
    assert default_threads() == 4


def test_top_k_has_one_default_shown_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("predict", "explain"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "(default: 3)" in " ".join(capsys.readouterr().out.split())


def test_every_augmentation_field_has_a_flag() -> None:
    import dataclasses

    from keymodels.cli import build_parser
    from keymodels.cli.train import AUGMENT_FLAGS, recipe_from_args
    from keymodels.data.transforms import Augment

    assert set(AUGMENT_FLAGS) == {f.name for f in dataclasses.fields(Augment)}
    args = build_parser().parse_args(
        ["train", "--recipe", "imagefolder", "--out", "x", "--random-resized-crop", "0"]
    )
    augment = recipe_from_args(args).augment
    assert augment.random_resized_crop == 0.0  # the recipe's 0.35 turned off...
    assert augment.hflip and augment.auto_augment == "trivial"  # ...and nothing else changed


def test_resume_needs_no_flag_repeated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    first = ["train", "--recipe", "digits", "--out", str(out), "--epochs", "1",
             "--batch-size", "64", "--lr", "0.005", "--crop-padding", "0", "--no-progress",
             "--precision", "fp32"]  # fmt: skip
    assert main(first) == 0
    # The run's own recipe (lr 0.005, batch 64, no crop) holds: only --epochs changes.
    again = ["train", "--recipe", "digits", "--out", str(out), "--resume", "--epochs", "2",
             "--no-progress", "--precision", "fp32"]  # fmt: skip
    assert main(again) == 0, capsys.readouterr().err
    recipe = json.loads((out / "recipe.json").read_text())["recipe"]
    assert (recipe["lr"], recipe["batch_size"], recipe["epochs"]) == (0.005, 64, 2)
    # A flag that changes the stored recipe is still refused.
    assert main([*again[:-3], "--epochs", "3", "--lr", "0.5", "--no-progress"]) == 2
    assert "lr" in capsys.readouterr().err
    # A run saved before recipes had `tta` evaluated without mirrors: --tta is a change too.
    from keymodels.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(out / "last.safetensors")
    del ckpt.meta["recipe"]["tta"]
    save_checkpoint(out / "last.safetensors", ckpt)
    assert main([*again[:-3], "--epochs", "3", "--hflip", "--tta", "--no-progress"]) == 2
    assert "tta: the run has False, given True" in capsys.readouterr().err
