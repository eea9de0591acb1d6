"""Tests of keymodels.metrics: metrics.csv rows, resume, new columns, TensorBoard and the PNG."""

from __future__ import annotations

import math

from keymodels.metrics import MetricsLogger, plot_curves, read_metrics


def test_log_rows_and_tensorboard(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log(1, train_loss=2.0, val_acc=0.5)
    logger.log(2, train_loss=1.5, val_acc=0.6)
    logger.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert rows == [
        {"epoch": 1.0, "train_loss": 2.0, "val_acc": 0.5},
        {"epoch": 2.0, "train_loss": 1.5, "val_acc": 0.6},
    ]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # earlier rows are rewritten as they were written: the epoch "1", not "1.0"
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["1,2.0,0.5", "2,1.5,0.6"]
    assert read_metrics(tmp_path / "none.csv") == []


def test_resume_rewrites_later_epochs_and_new_columns(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for epoch in (1, 2, 3):
        logger.log(epoch, loss=10.0 - epoch)
    # a run resumed from the checkpoint of epoch 1 logs epoch 2 again, with a new column
    resumed = MetricsLogger(tmp_path, tensorboard=False)
    resumed.log(2, loss=5.0, lr=0.1)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    assert rows[0]["loss"] == 9.0 and rows[0]["lr"] == ""
    assert rows[1] == {"epoch": 2.0, "loss": 5.0, "lr": 0.1}
    assert not (tmp_path / "tensorboard").exists()
    resumed.log(3, loss=float("nan"), note="diverged")
    last = read_metrics(tmp_path / "metrics.csv")[-1]
    assert math.isnan(last["loss"]) and last["note"] == "diverged"


def test_plot_curves_writes_a_png(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for epoch in range(1, 5):
        logger.log(epoch, train_loss=1 / epoch, val_loss=1.2 / epoch, val_acc=0.2 * epoch)
    png = plot_curves(
        tmp_path / "metrics.csv",
        tmp_path / "curves.png",
        [["train_loss", "val_loss"], ["val_acc"]],
        title="toy",
    )
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
