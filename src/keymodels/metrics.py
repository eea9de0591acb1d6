"""Per-epoch metrics of a run, to ``metrics.csv`` and TensorBoard, and a PNG of the curves.

Appending keeps a resumed run's history in the same file.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plotting import pyplot, save_figure


class MetricsLogger:
    """Writes one row per call to ``out/metrics.csv`` and scalars to TensorBoard (if installed)."""

    def __init__(self, out: str | Path, tensorboard: bool = True) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out / "metrics.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                pass
            else:
                self.writer = SummaryWriter(str(self.out / "tensorboard"))

    def log(self, step: int, **values: Any) -> None:
        row = {"epoch": step, **values}
        rows = read_metrics(self.csv_path)
        rows = [
            r for r in rows if int(float(r["epoch"])) < step
        ]  # a resumed run rewrites later epochs
        rows.append(row)
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.csv_path)
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.csv`` (numbers as ints or floats), [] if there is none yet."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: _number(v) for k, v in r.items()} for r in rows]


def _number(v: str) -> Any:
    # ints stay ints, so rewriting the file keeps "2" rather than turning it into "2.0"
    for kind in (int, float):
        try:
            return kind(v)
        except (TypeError, ValueError):
            pass
    return v


def plot_curves(
    metrics_csv: str | Path, out_png: str | Path, panels: Sequence[Sequence[str]], title: str = ""
) -> Path:
    """A PNG with one panel per group of columns (e.g. ``[["train_loss", "val_loss"], ["val_acc"]]``)."""
    plt = pyplot()
    rows = read_metrics(metrics_csv)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, columns in zip(axes[0], panels):
        for col in columns:
            pts = [(r["epoch"], r[col]) for r in rows if isinstance(r.get(col), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=col)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)
