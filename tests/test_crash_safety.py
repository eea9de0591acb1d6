"""Real training runs killed at the worst moments, then resumed: nothing is lost.

Each run is a ``keymodels`` subprocess. It is killed with SIGKILL in the middle of an epoch or
in the middle of a checkpoint write, or stopped with SIGINT/SIGTERM; then ``--resume`` must
finish with exactly the weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from keymodels.checkpoint import load_checkpoint

# Runs compared with each other pin the precision: "auto" measures, and may choose differently.
VIT = ["train", "--recipe", "digits", "--epochs", "3", "--batch-size", "128", "--deterministic",
       "--precision", "fp32"]  # fmt: skip
SEQ2SEQ = ["seq2seq", "train", "--task", "copy", "--model", "seq2seq_tiny_attn", "--epochs", "3",
           "--precision", "fp32"]  # fmt: skip
SEQ2SEQ += ["--train-size", "640", "--min-length", "2", "--max-length", "6", "--symbols", "6"]
# digits: 10 steps an epoch at batch 128 (1,295 training images after the validation hold-out,
# the last partial batch dropped); copy: 10 steps an epoch at batch 64.
JOBS = {"vit": (VIT, 10), "seq2seq": (SEQ2SEQ, 10)}


def keymodels(args: list[str], out: Path, crash_at: str | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KEYMODELS_CRASH_AT", None)
    if crash_at:
        env["KEYMODELS_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "keymodels", *args, "--out", str(out), "--threads", "1"]
    return subprocess.Popen(
        [*cmd, "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **popen,
    )  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.safetensors").model


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"


def assert_no_half_written_files(run: Path) -> None:
    assert sorted(p.name for p in run.glob(".*.tmp")) == []
    for f in run.glob("*.safetensors"):
        load_checkpoint(f)  # every checkpoint left in the folder is whole


@pytest.fixture(scope="module", params=sorted(JOBS))
def job(request, tmp_path_factory):
    """The job's arguments, steps per epoch, and the run folder of its uninterrupted run."""
    args, steps = JOBS[request.param]
    reference = tmp_path_factory.mktemp(request.param) / "reference"
    code, err = finish(keymodels(args, reference))
    assert code == 0, err
    return args, steps, reference


@pytest.mark.parametrize(
    "crash_at, exit_code",
    [
        ("train_step:{mid}", -signal.SIGKILL),  # SIGKILL in the middle of epoch 2
        ("checkpoint_write:3", -signal.SIGKILL),  # SIGKILL halfway through epoch 2's last
        ("train_step:{mid}:SIGINT", 128 + signal.SIGINT),  # Ctrl-C: finish the step, checkpoint
        ("train_step:{mid}:SIGTERM", 128 + signal.SIGTERM),
    ],
    ids=["kill-mid-epoch", "kill-mid-checkpoint", "sigint", "sigterm"],
)
def test_interrupted_run_resumes_to_identical_weights(job, tmp_path, crash_at, exit_code):
    args, steps, reference = job
    run = tmp_path / "run"
    code, err = finish(keymodels(args, run, crash_at.format(mid=steps + steps // 2)))
    assert code == exit_code, err

    # What the interrupted run left: the latest complete checkpoint loads.
    ckpt = load_checkpoint(run / "last.safetensors")
    if "SIG" in crash_at:
        # Graceful: the epoch so far is saved, and the user is told how to go on.
        assert ckpt.state["epoch"] == 1 and ckpt.state["partial"]["batches"] == steps // 2
        assert "received: training stopped after" in err and "with --resume" in err
        assert err.count("\n") <= 3, err  # a message, not a traceback
    else:
        assert ckpt.state["epoch"] == 1 and "partial" not in ckpt.state
    if crash_at.startswith("checkpoint_write"):
        [half] = run.glob(".last.safetensors.*.tmp")  # the write that was cut off
        assert 0 < half.stat().st_size < (run / "last.safetensors").stat().st_size

    code, err = finish(keymodels([*args, "--resume"], run))
    assert code == 0, err
    assert_no_half_written_files(run)
    assert load_checkpoint(run / "last.safetensors").state["epoch"] == 3
    assert_same_weights(run, reference)


def test_sigterm_from_outside_at_any_moment(job, tmp_path):
    """A real signal from another process, whenever it lands: resume still ends identical."""
    args, _, reference = job
    run = tmp_path / "run"
    proc = keymodels(args, run)
    deadline = time.monotonic() + 120
    while not (run / "last.safetensors").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    if code == 0:
        pytest.skip("the run finished before the signal arrived")  # not a failure of keymodels
    assert code == 128 + signal.SIGTERM, err
    code, err = finish(keymodels([*args, "--resume"], run))
    assert code == 0, err
    assert_no_half_written_files(run)
    assert_same_weights(run, reference)


def test_killed_before_any_checkpoint_then_stopped_then_resumed(job, tmp_path):
    """Killed while writing its first checkpoint (nothing to resume: the user starts again),
    then stopped by Ctrl-C in the last epoch, then resumed: still the uninterrupted weights."""
    args, steps, reference = job
    run = tmp_path / "run"
    code, _ = finish(keymodels(args, run, "checkpoint_write:1"))
    assert code == -signal.SIGKILL and not (run / "last.safetensors").exists()
    code, err = finish(keymodels([*args, "--resume"], run))
    assert code == 2 and "nothing to resume" in err, err
    code, err = finish(keymodels(args, run, f"train_step:{2 * steps + 2}:SIGINT"))
    assert code == 128 + signal.SIGINT, err
    assert load_checkpoint(run / "last.safetensors").state["partial"]["batches"] == 2
    code, err = finish(keymodels([*args, "--resume"], run))
    assert code == 0, err
    assert_no_half_written_files(run)
    assert_same_weights(run, reference)
