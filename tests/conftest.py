"""Shared fixtures: where ../shared/data is, and one torch thread per pytest-xdist worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: more threads per worker only oversubscribes the machine.
    torch.set_num_threads(1)


def shared_dir() -> Path:
    return Path(os.environ.get("KEYMODELS_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$KEYMODELS_SHARED/data``); tests that need it fail if it is missing."""
    path = shared_dir() / "data"
    assert path.is_dir(), f"../shared/data not found at {path}; set KEYMODELS_SHARED"
    return path
