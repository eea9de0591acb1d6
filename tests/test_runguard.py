"""keymodels.runguard: graceful stop on signals, the NaN policy, crash points, stale temp files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

import keymodels.runguard as runguard
import keymodels.train as train_module
from keymodels.checkpoint import load_checkpoint
from keymodels.data import get_recipe
from keymodels.errors import InvalidInputError
from keymodels.runguard import (
    GracefulStop,
    NonFiniteGuard,
    NonFiniteLossError,
    TrainingInterrupted,
    crash_point,
    remove_stale_temp_files,
)
from keymodels.seq2seq.train import TrainConfig
from keymodels.seq2seq.train import train as train_seq2seq
from keymodels.train import train


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_graceful_stop_turns_a_signal_into_a_flag_and_restores_handlers(sig):
    before = signal.getsignal(sig)
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), sig)
        assert stop.requested and stop.signum == sig
        err = stop.interrupted(Path("run/last.safetensors"), "step 7")
    assert signal.getsignal(sig) is before
    assert isinstance(err, TrainingInterrupted) and err.signum == sig
    assert str(err) == (
        f"{signal.Signals(sig).name} received: training stopped after step 7; its state is saved "
        "in run/last.safetensors. Run the same command with --resume (resume=True) to continue "
        "exactly from there"
    )


def test_second_sigint_stops_at_once():
    with GracefulStop() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        os.kill(os.getpid(), signal.SIGINT)


def test_nonfinite_guard_policies():
    with pytest.raises(InvalidInputError, match=r"on_nonfinite must be one of \('stop', 'skip'\)"):
        NonFiniteGuard("ignore")
    stop = NonFiniteGuard("stop")
    assert not stop.should_skip(1.0, "step 1") and not stop.should_skip(float("nan"), "step 2")
    skip = NonFiniteGuard("skip", max_consecutive=2)
    assert skip.should_skip(float("nan"), "a") and skip.should_skip(float("inf"), "b")
    assert not skip.should_skip(float("nan"), "c")  # a third in a row: the weights went bad
    assert not skip.should_skip(0.5, "d") and skip.consecutive == 0
    assert skip.should_skip(float("-inf"), "e") and skip.skipped == 3


def test_crash_point_fires_at_the_nth_call_and_cuts_the_file(tmp_path, monkeypatch):
    kills = []
    monkeypatch.setattr(runguard, "_CRASH_COUNTS", {})
    monkeypatch.setattr(runguard.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.delenv(runguard.CRASH_ENV, raising=False)
    crash_point("train_step")
    assert kills == []
    monkeypatch.setenv(runguard.CRASH_ENV, "checkpoint_write:2")
    f = tmp_path / ".last.safetensors.x.tmp"
    f.write_bytes(b"0123456789")
    crash_point("train_step")
    crash_point("checkpoint_write", writing=f)
    assert kills == [] and f.read_bytes() == b"0123456789"
    crash_point("checkpoint_write", writing=f)
    assert kills == [(os.getpid(), signal.SIGKILL)] and f.read_bytes() == b"01234"
    monkeypatch.setenv(runguard.CRASH_ENV, "train_step:1:SIGTERM")
    crash_point("train_step")
    assert kills[-1] == (os.getpid(), signal.SIGTERM)


def test_remove_stale_temp_files(tmp_path):
    (tmp_path / ".last.safetensors.abc.tmp").write_bytes(b"half")
    (tmp_path / "last.safetensors").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_bytes(b"the user's, not ours")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".last.safetensors.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors", "notes.tmp"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


def _nan_from_call(module, name, first_bad, last_bad, monkeypatch):
    """Make ``module.name`` (a loss function) return NaN for calls first_bad..last_bad."""
    real, calls = getattr(module, name), []

    def loss(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if first_bad <= len(calls) <= last_bad else value

    monkeypatch.setattr(module, name, loss)


def test_vit_skip_policy_skips_nan_steps_and_counts_them(tmp_path, monkeypatch):
    recipe = get_recipe("digits", epochs=2, batch_size=128)  # 1295 // 128 = 10 steps an epoch
    _nan_from_call(train_module, "compute_loss", 3, 5, monkeypatch)
    result = train(recipe, tmp_path, on_nonfinite="skip", progress=False)
    assert [row["nonfinite_steps"] for row in result.history] == [3, 0]
    assert result.results["steps"] == 20 - 3
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())
    assert "nonfinite_steps" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_seq2seq_nan_stops_or_skips(tmp_path, monkeypatch):
    import keymodels.seq2seq.train as s2s

    tc = dict(
        task="copy", epochs=2, train_size=200, val_size=20, synthetic_max_len=5, num_symbols=5
    )
    # 4 batches an epoch, then 1 validation batch: call 7 is batch 2 of epoch 2. fp32: "auto"
    # would time steps through the same loss function on a CPU with bf16 units.
    _nan_from_call(s2s, "sequence_loss", 7, 7, monkeypatch)
    with pytest.raises(
        NonFiniteLossError,
        match=r"loss became nan at batch 2 of epoch 2; training stopped, the last good "
        r"checkpoint .*last\.safetensors \(epoch 1\) is kept",
    ):
        train_seq2seq(
            "seq2seq_tiny_attn", TrainConfig(**tc), tmp_path / "stop", progress=False,
            precision="fp32",
        )  # fmt: skip
    assert load_checkpoint(tmp_path / "stop" / "last.safetensors").state["epoch"] == 1

    _nan_from_call(s2s, "sequence_loss", 2, 2, monkeypatch)
    tc["on_nonfinite"] = "skip"
    summary = train_seq2seq(
        "seq2seq_tiny_attn", TrainConfig(**tc, batch_size=64), tmp_path / "skip", progress=False,
        precision="fp32",
    )  # fmt: skip
    assert [row["nonfinite_steps"] for row in summary["history"]] == [1, 0]
