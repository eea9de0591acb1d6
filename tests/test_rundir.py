"""Never lose a trained run: refused retraining, one training per folder, one ``--force`` rule.

Each test drives what a user does (mostly the CLI) and checks that what was there is untouched.
``keymodels.rundir`` is imported inside the tests that need it, so that on code without it the
others fail on the behaviour they check (a replaced run, a silent overwrite), not on an import.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from keymodels import create_model
from keymodels.checkpoint import load_checkpoint
from keymodels.cli import main
from keymodels.data import get_recipe
from keymodels.hub import save_pretrained
from keymodels.seq2seq.train import TrainConfig
from keymodels.seq2seq.train import train as train_seq2seq
from keymodels.train import train as train_vit

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}
COPY = dict(task="copy", batch_size=32, val_size=32, min_len=1, synthetic_max_len=4, num_symbols=6)
S2S_ARGS = ["--task", "copy", "--model", "seq2seq_tiny_attn", "--epochs", "1", "--no-progress"]
S2S_ARGS += ["--train-size", "64", "--min-length", "1", "--max-length", "4", "--symbols", "6"]
VIT_ARGS = ["--recipe", "digits", "--epochs", "1", "--max-steps", "2", "--no-progress"]


def vit_recipe():
    return get_recipe("digits", epochs=1, batch_size=128, model_overrides=TINY_VIT)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vit") / "run"
    train_vit(vit_recipe(), out, progress=False, max_steps=2)
    return out


@pytest.fixture(scope="module")
def s2s_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("s2s") / "run"
    train_seq2seq("seq2seq_tiny_attn", TrainConfig(epochs=1, train_size=64, **COPY), out)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect the one-line error exit (2), return the line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}, expected a refusal; stderr: {err}"
    assert err.count("\n") == 1, err
    return err


# -- a trained run is never replaced by accident ----------------------------------------------


def test_vit_train_into_a_trained_run_is_refused_and_leaves_it_untouched(
    vit_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(vit_run)
    err = error_of(["train", *VIT_ARGS, "--out", str(vit_run)], capsys)
    assert "already holds a trained ViT classifier run" in err and "epoch 1" in err
    # Each score named by its split: validation from the checkpoint, test from results.json.
    assert "validation accuracy" in err and "test accuracy" in err
    assert "--resume" in err and "--force" in err and "another --out" in err
    assert snapshot(vit_run) == before  # byte for byte: checkpoints, metrics.csv, plots


def test_seq2seq_train_into_a_trained_run_is_refused_and_leaves_it_untouched(
    s2s_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keymodels.rundir import RunFolderError

    before = snapshot(s2s_run)
    err = error_of(["seq2seq", "train", *S2S_ARGS, "--out", str(s2s_run)], capsys)
    assert "already holds a trained seq2seq run" in err and "--resume" in err and "--force" in err
    with pytest.raises(RunFolderError, match=r"resume=True.*force=True"):
        train_seq2seq("seq2seq_tiny_attn", TrainConfig(epochs=1, train_size=64, **COPY), s2s_run)
    assert snapshot(s2s_run) == before


def test_force_starts_over_and_keeps_the_users_other_files(vit_run: Path, tmp_path: Path) -> None:
    run = copy_run(vit_run, tmp_path / "run")
    (run / "tensorboard" / "old-events").write_text("the old run's")
    (run / "notes.txt").write_text("mine")
    old = load_checkpoint(run / "last.safetensors").model
    train_vit(vit_recipe(), run, progress=False, max_steps=1, force=True)
    new = load_checkpoint(run / "last.safetensors")
    assert new.state["step"] == 1 and any(not torch.equal(old[k], new.model[k]) for k in old)
    assert not (run / "tensorboard" / "old-events").exists()  # no mixed logs
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_still_continues_and_resume_with_force_is_refused(
    s2s_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(s2s_run, tmp_path / "run")
    args = ["seq2seq", "train", *S2S_ARGS, "--out", str(run)]
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert load_checkpoint(run / "last.safetensors").state["epoch"] == 2
    err = error_of([*args, "--resume", "--force"], capsys)
    assert "pass one of them" in err


# -- another kind of run, or a file --------------------------------------------------------------


def test_vit_into_a_seq2seq_run_and_back_are_refused_naming_what_is_there(
    vit_run: Path, s2s_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(vit_run), snapshot(s2s_run)
    err = error_of(["train", *VIT_ARGS, "--out", str(s2s_run), "--force"], capsys)
    assert "holds a seq2seq run (`keymodels seq2seq train`), not a ViT classifier run" in err
    err = error_of(["seq2seq", "train", *S2S_ARGS, "--out", str(vit_run), "--resume"], capsys)
    assert "holds a ViT classifier run (`keymodels train`), not a seq2seq run" in err
    assert (snapshot(vit_run), snapshot(s2s_run)) == before


def test_seq2seq_train_into_a_saved_model_folder_keeps_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_pretrained(create_model("vit_nano_patch4_32", depth=1), tmp_path / "model")
    before = snapshot(tmp_path / "model")
    err = error_of(["seq2seq", "train", *S2S_ARGS, "--out", str(tmp_path / "model")], capsys)
    assert "holds a saved model or another config.json" in err
    assert snapshot(tmp_path / "model") == before


def test_out_that_is_a_file_gets_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "results.txt"
    file.write_text("mine")
    for argv in (["train", *VIT_ARGS], ["seq2seq", "train", *S2S_ARGS]):
        err = error_of([*argv, "--out", str(file)], capsys)
        assert "is a file, not a folder" in err and "Errno" not in err
    assert file.read_text() == "mine"


# -- one training per folder ---------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from keymodels.rundir import claim_run_folder

    with claim_run_folder(sys.argv[1], "seq2seq"):
        print("holding", flush=True)
        sys.stdin.read()  # until the test closes stdin (or kills us)
    """
)


def hold_lock(out: Path) -> subprocess.Popen:
    """Another process that claims ``out`` (as a training does) and holds it until told."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line == "holding\n", proc.stderr.read()
    return proc


def test_a_second_training_into_a_locked_folder_is_refused_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keymodels.rundir import RunFolderBusyError, claim_run_folder

    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        err = error_of(["seq2seq", "train", *S2S_ARGS, "--out", str(out)], capsys)
        assert f"process {holder.pid} on " in err and "Wait for it to finish" in err
        err = error_of(["train", *VIT_ARGS, "--out", str(out)], capsys)
        assert f"process {holder.pid} on " in err
        with (
            pytest.raises(RunFolderBusyError, match=f"process {holder.pid} "),
            claim_run_folder(out, "seq2seq"),
        ):
            pass
        assert not (out / "last.safetensors").exists()
    finally:
        holder.communicate("")  # lets go of the lock and exits
    assert holder.returncode == 0
    with claim_run_folder(out, "seq2seq"):  # free again once the holder has finished
        pass
    assert not (out / ".lock").exists()


def test_the_lock_of_a_killed_process_is_not_stale(tmp_path: Path) -> None:
    from keymodels.rundir import claim_run_folder, lock_holder

    out = tmp_path / "run"
    holder = hold_lock(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_holder(out)["pid"] == holder.pid  # the file is left behind, but not the lock
    with claim_run_folder(out, "seq2seq"):
        assert lock_holder(out)["pid"] == os.getpid()


# -- the --force rule of every command that writes a file -----------------------------------------


def test_export_onnx_needs_force_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_pretrained(create_model("vit_nano_patch4_32", depth=1), tmp_path / "m")
    dst = tmp_path / "vit.onnx"
    dst.write_bytes(b"the user's own file")
    argv = ["export-onnx", str(tmp_path / "m"), str(dst), "--no-check"]
    err = error_of(argv, capsys)
    assert "vit.onnx exists; pass --force to overwrite it" in err
    assert dst.read_bytes() == b"the user's own file"
    assert main([*argv, "--force"]) == 0
    assert dst.read_bytes()[:8] != b"the user"


def test_convert_needs_force_to_overwrite_a_file_or_a_folders_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_pretrained(create_model("vit_nano_patch4_32", depth=1), tmp_path / "m")
    src = ["convert", str(tmp_path / "m")]
    fmt = ["--from", "keymodels", "--to"]

    file = tmp_path / "w.safetensors"
    file.write_bytes(b"mine")
    err = error_of([*src, str(file), *fmt, "timm"], capsys)
    assert "w.safetensors exists; pass --force" in err and file.read_bytes() == b"mine"
    assert main([*src, str(file), *fmt, "timm", "--force"]) == 0

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text('{"the": "user\'s own"}')
    err = error_of([*src, str(folder), *fmt, "hf"], capsys)
    assert "folder already holds config.json; pass --force" in err
    assert (folder / "config.json").read_text() == '{"the": "user\'s own"}'
    assert main([*src, str(folder), *fmt, "hf", "--force"]) == 0
    assert (folder / "model.safetensors").is_file()

    fresh = tmp_path / "fresh"  # a folder with other files in it is fine
    fresh.mkdir()
    (fresh / "README.md").write_text("notes")
    assert main([*src, str(fresh), *fmt, "keymodels"]) == 0


def test_translate_show_attention_needs_force_to_overwrite(
    s2s_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "attn.png"
    png.write_bytes(b"mine")
    argv = ["translate", str(s2s_run), "1 2 3", "--show-attention", str(png)]
    err = error_of(argv, capsys)
    assert "attn.png exists; pass --force" in err and png.read_bytes() == b"mine"
    assert main([*argv, "--force"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_demo_vit_part_runs_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import keymodels.cli.train as cli_train

    # `make demo` twice: the demo starts its own run over (the recipe cut to a few steps).
    real = cli_train.get_recipe
    monkeypatch.setattr(
        cli_train, "get_recipe", lambda name: real(name, epochs=1, model_overrides=TINY_VIT)
    )
    cli_train.vit_training_part(tmp_path)
    cli_train.vit_training_part(tmp_path)
    assert capsys.readouterr().out.count("test accuracy") == 2
