"""Helpers shared by the data, model and training tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """``<shared>/data/<name>``, where ``<shared>`` is ``$FASTRAL_SHARED_DATA`` or ``../shared`` beside the repo
    root; skips the test (it does not fail) when that folder is missing."""
    base = Path(os.environ.get("FASTRAL_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = base / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} (set FASTRAL_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture
def single_thread():
    """Run a test on one torch thread. The tests' networks are tiny, where a second thread only adds
    synchronisation, and on a shared 2-core machine a busy core makes 2-thread runs up to 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
