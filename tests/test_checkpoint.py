"""Tests of keymodels.checkpoint: exact resume, atomic writes, clear errors, and no code run on load."""

from __future__ import annotations

import errno
import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from keymodels import checkpoint as ckpt
from keymodels.checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_torch_file,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 2))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """Training steps that draw from every RNG (torch data and dropout, NumPy, Python)."""
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 4) + float(np.random.rand()) + random.random()
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_round_trip_of_nested_state(tmp_path):
    state = {
        "step": 7,
        "by_epoch": {1: 0.5, 2: torch.tensor([1.0, 2.0])},  # int keys
        "pair": (1, "a", torch.arange(3)),  # a tuple with a tensor in it
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "list": [None, True, 1.5, [torch.zeros(2, 2)]],
        "a.b": torch.ones(1),
        "a": {"b": torch.zeros(1)},  # the same flattened path as "a.b"
    }
    model = {"w": torch.randn(3, 3), "b": torch.randn(3)}
    path = save_checkpoint(tmp_path / "c.safetensors", Checkpoint(model, state, {"epoch": 3}))
    loaded = load_checkpoint(path)
    assert loaded.meta == {"epoch": 3}
    assert loaded.model.keys() == model.keys()
    assert all(torch.equal(loaded.model[k], model[k]) for k in model)
    s = loaded.state
    assert s["step"] == 7
    assert list(s["by_epoch"]) == [1, 2] and s["by_epoch"][1] == 0.5
    assert torch.equal(s["by_epoch"][2], torch.tensor([1.0, 2.0]))
    assert isinstance(s["pair"], tuple) and s["pair"][:2] == (1, "a")
    assert torch.equal(s["pair"][2], torch.arange(3))
    assert isinstance(s["array"], np.ndarray) and np.array_equal(s["array"], state["array"])
    assert s["list"][:3] == [None, True, 1.5] and torch.equal(s["list"][3][0], torch.zeros(2, 2))
    assert torch.equal(s["a.b"], torch.ones(1)) and torch.equal(s["a"]["b"], torch.zeros(1))


def test_tied_weights_and_unsupported_objects(tmp_path):
    w = torch.randn(4, 4)
    path = save_checkpoint(tmp_path / "tied.safetensors", Checkpoint({"a": w, "b": w}))
    loaded = load_checkpoint(path).model
    assert torch.equal(loaded["a"], w) and torch.equal(loaded["b"], w)
    with pytest.raises(CheckpointError, match=r"cannot store a object at 'state.x'"):
        save_checkpoint(tmp_path / "bad.safetensors", Checkpoint({}, {"x": object()}))


def test_resume_continues_exactly(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, optimizer, 3)
    path = tmp_path / "resume.safetensors"
    save_checkpoint(
        path,
        Checkpoint(
            model.state_dict(),
            {"optimizer": optimizer.state_dict(), "rng": rng_state()},
            {"step": 3},
        ),
    )
    expected = _train(model, optimizer, 3)
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(123)  # a fresh process would start from other RNG states
    np.random.seed(123)
    random.seed(123)
    restored = _model()
    restored_opt = torch.optim.AdamW(restored.parameters(), lr=1e-2, weight_decay=0.1)
    loaded = load_checkpoint(path)
    restored.load_state_dict(loaded.model)
    restored_opt.load_state_dict(loaded.state["optimizer"])
    set_rng_state(loaded.state["rng"])
    assert _train(restored, restored_opt, 3) == expected
    for k, v in restored.state_dict().items():
        assert torch.equal(v, expected_weights[k]), k


def test_failed_write_leaves_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, Checkpoint({"w": torch.ones(100)}, meta={"version": 1}))
    real_save = ckpt.save_file

    def disk_full(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(CheckpointError, match=r"No space left on device.*previous file.*intact"):
        save_checkpoint(path, Checkpoint({"w": torch.zeros(100)}, meta={"version": 2}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    loaded = load_checkpoint(path)
    assert loaded.meta == {"version": 1} and torch.equal(loaded.model["w"], torch.ones(100))


def test_atomic_write_other_errors_propagate_and_clean_up(tmp_path):
    target = tmp_path / "sub" / "file.txt"

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(target, fail)
    assert list(target.parent.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_text("done"))
    assert target.read_text() == "done"


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path, umask):
    # mkstemp's 0o600 would survive the rename and hide a run from other users and servers.
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        written = [
            atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x")),
            save_checkpoint(tmp_path / "c.safetensors", Checkpoint({"w": torch.ones(2)})),
        ]
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


@pytest.mark.parametrize("keep", [0.5, -1])
def test_truncated_file_is_a_clear_error(tmp_path, keep):
    path = save_checkpoint(tmp_path / "c.safetensors", Checkpoint({"w": torch.randn(64, 64)}))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file.*truncated"):
        load_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a keymodels checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "missing.safetensors")


class _Evil:
    """Unpickling this runs code: it writes a marker file."""

    marker = ""

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_load_torch_file_refuses_code_and_accepts_tensors(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = _Evil()
    evil.marker = str(marker)
    bad = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "payload": evil}, bad)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"refused to load .*not a plain tensor file"):
        load_torch_file(bad)
    assert not marker.exists()

    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(4), "nested": {"b": [torch.zeros(1)]}}, good)
    loaded = load_torch_file(good)
    assert torch.equal(loaded["w"], torch.arange(4))
    assert torch.equal(loaded["nested"]["b"][0], torch.zeros(1))


def test_resolve_checkpoint_prefers_best_then_last(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(
        CheckpointError, match=r"holds no best.safetensors.*keymodels seq2seq train"
    ):
        resolve_checkpoint(run, "keymodels seq2seq train")
    (run / "last.safetensors").write_bytes(b"x")
    assert resolve_checkpoint(run) == run / "last.safetensors"
    (run / "best.safetensors").write_bytes(b"x")
    assert resolve_checkpoint(run) == run / "best.safetensors"
    assert resolve_checkpoint(run / "last.safetensors") == run / "last.safetensors"
    with pytest.raises(CheckpointError, match="no run folder or checkpoint file"):
        resolve_checkpoint(tmp_path / "missing.safetensors")
