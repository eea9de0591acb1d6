"""keymodels.run: the run lifecycle both engines share, without a model or data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from keymodels.checkpoint import (
    Checkpoint,
    CheckpointMismatchError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from keymodels.metrics import read_metrics
from keymodels.run import Run, TrainingError, lr_factor
from keymodels.rundir import RunFolderBusyError
from keymodels.runguard import NonFiniteLossError


def _checkpoint(run: Run, epoch: int, **extra) -> Checkpoint:
    meta = {"kind": "keymodels.seq2seq", "epoch": epoch}
    return Checkpoint(
        model={"w": torch.full((2,), float(epoch))}, state=run.state(epoch, **extra), meta=meta
    )


def test_saves_last_and_best_and_resumes_state(tmp_path: Path) -> None:
    with Run(tmp_path, "seq2seq") as run:
        assert run.resume() is None  # not resuming
        for epoch, score in enumerate([0.5, 0.4, 0.7], start=1):
            run.epoch = epoch
            best = run.improved(score)  # first: the checkpoint records the best score
            run.save(_checkpoint(run, epoch), best=best)
        run.log(1, {"epoch": 1, "loss": 2})
    assert load_checkpoint(tmp_path / "last.safetensors").state["epoch"] == 3
    assert load_checkpoint(tmp_path / "best.safetensors").state["best"] == 0.7
    assert read_metrics(tmp_path / "metrics.csv") == [{"epoch": 1, "loss": 2}]
    assert not (tmp_path / ".lock").exists()  # let go on exit

    torch.manual_seed(1)
    with Run(tmp_path, "seq2seq", resume=True) as run:
        ckpt = run.resume(lambda c: c.meta["kind"] == "keymodels.seq2seq")
        assert ckpt is not None and (run.epoch, run.best, run.partial) == (3, 0.7, None)
        torch.rand(3)  # what happened since the save is undone
        run.restore_rng()
        assert not run.improved(0.6) and run.best == 0.7


def test_rng_of_the_save_is_restored_exactly(tmp_path: Path) -> None:
    with Run(tmp_path, "seq2seq") as run:
        torch.manual_seed(3)
        run.save(_checkpoint(run, 1, partial={"batches": 2}))
        expected = torch.rand(4)
    with Run(tmp_path, "seq2seq", resume=True) as run:
        run.resume()
        assert run.partial == {"batches": 2}
        torch.manual_seed(99)
        run.restore_rng()
        assert torch.equal(torch.rand(4), expected)


def test_resume_errors_and_old_best_keys(tmp_path: Path) -> None:
    with (
        pytest.raises(TrainingError, match="nothing to resume"),
        Run(tmp_path / "new", "vit", resume=True) as run,
    ):
        run.resume()
    # a ViT checkpoint from before the Run object: "best_acc", -1.0 meaning no score yet
    for old, best in ((0.25, 0.25), (-1.0, None)):
        state = {"epoch": 1, "best_acc": old, "rng": {}}
        meta = {"class_names": ["a"], "epoch": 1}
        save_checkpoint(tmp_path / "old" / "last.safetensors", Checkpoint({}, state, meta))
        with Run(tmp_path / "old", "vit", resume=True) as run:
            run.resume()
            assert run.best == best
    with (
        pytest.raises(TrainingError, match="not a vit checkpoint"),
        Run(tmp_path / "old", "vit", resume=True) as run,
    ):
        run.resume(lambda c: False)


def test_the_folder_is_locked_while_the_run_lasts(tmp_path: Path) -> None:
    with Run(tmp_path, "vit"), pytest.raises(RunFolderBusyError), Run(tmp_path, "vit", force=True):
        pass
    with Run(tmp_path, "vit", force=True):  # free again
        pass


def test_stale_temp_files_are_swept_on_entry(tmp_path: Path) -> None:
    stale = tmp_path / ".last.safetensors.0123abcd.tmp"
    stale.write_bytes(b"half")
    with Run(tmp_path, "vit"):
        assert not stale.exists()


def test_time_budget_counts_credited_time() -> None:
    now = [100.0]
    run = Run("unused", "seq2seq", budget_minutes=1, clock=lambda: now[0])
    run.credit(40.0)  # a resumed run's earlier training
    now[0] += 15.0
    assert run.elapsed() == 55.0
    assert not run.over_budget(next_epoch_s=5.0) and run.over_budget(next_epoch_s=6.0)
    assert not Run("unused", "vit").over_budget(next_epoch_s=1e9)  # no budget


def test_nonfinite_error_names_what_is_kept(tmp_path: Path) -> None:
    with Run(tmp_path, "seq2seq") as run:
        error = run.nonfinite("loss became nan at batch 1", "Lower --lr")
        assert isinstance(error, NonFiniteLossError)
        assert str(error) == (
            "loss became nan at batch 1; training stopped, no checkpoint had been written yet. "
            "Lower --lr"
        )
        run.save(_checkpoint(run, 2))
        assert "last.safetensors (epoch 2) is kept. Lower --lr" in str(
            run.nonfinite("x", "Lower --lr")
        )


def test_failed_write_names_the_epoch_and_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keymodels.checkpoint as checkpoint_module

    with Run(tmp_path, "seq2seq") as run:
        run.save(_checkpoint(run, 1))

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(checkpoint_module, "save_file", full)
        with pytest.raises(TrainingError, match=r"epoch 2: could not write .*--resume"):
            run.save(_checkpoint(run, 2), where="epoch 2")
    assert load_checkpoint(tmp_path / "last.safetensors").state["epoch"] == 1


def test_only_the_main_process_writes(tmp_path: Path) -> None:
    with Run(tmp_path / "run", "vit", main=False) as run:  # another rank under torchrun
        run.save(_checkpoint(run, 1), best=True)
        run.log(1, {"loss": 1.0})
        run.write_json("results.json", {})
    assert not (tmp_path / "run").exists()


def test_check_compatible_names_every_kind_of_mismatch() -> None:
    model = torch.nn.Linear(3, 2)
    check_compatible(model, model.state_dict(), "same")
    weights = {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError) as e:
        check_compatible(model, weights, "x.safetensors", "Use the right model")
    assert str(e.value) == (
        "x.safetensors holds weights of another model: shape mismatch weight: checkpoint (2, 4) "
        "vs model (2, 3), missing keys ['bias'], unexpected keys ['extra']. Use the right model"
    )


def test_cosine_without_warmup_anneals_to_zero() -> None:
    assert lr_factor(0, 0, 10, 0.0) == 1.0 and lr_factor(10, 0, 10, 0.0) == 0.0
    assert lr_factor(5, 0, 10, 0.0) == pytest.approx(0.5)
    assert lr_factor(3, 0, 10, 0.0) == 0.5 * (1 + math.cos(math.pi * 0.3))  # bit for bit


def test_epoch_line_is_one_format_for_both_engines() -> None:
    from keymodels.run import epoch_line
    from keymodels.seq2seq.train import epoch_row_line

    assert epoch_line(
        3, 10, train_loss=1.2345, split="val", loss=1.111, metric="BLEU", score=30.12,
        lr=1e-3, seconds=12.34,
    ) == "epoch 3/10: train loss 1.2345, val loss 1.1110, val BLEU 30.12, lr 0.001, 12.3 s"  # fmt: skip
    assert epoch_line(
        1, 2, train_loss=0.5, split="test", loss=0.25, metric="acc", score=97.5, lr=2e-3,
        seconds=1.0, extra="560 img/s",
    ) == "epoch 1/2: train loss 0.5000, test loss 0.2500, test acc 97.50%, lr 0.002, 1.0 s, 560 img/s"  # fmt: skip
    row = {
        "epoch": 2,
        "train_loss": 0.5,
        "val_loss": 0.25,
        "val_acc": 90.0,
        "lr": 1e-3,
        "epoch_s": 2.0,
    }
    assert epoch_row_line(row, 4) == (
        "epoch 2/4: train loss 0.5000, val loss 0.2500, val acc 90.00%, lr 0.001, 2.0 s"
    )
