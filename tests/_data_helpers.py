"""Helpers shared by the data, model and training tests."""

from __future__ import annotations

import json
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


def torchvision_state_dict(depth: int, seed: int = 0) -> dict:
    """A random state dict with the names and shapes of torchvision's resnet<depth>, as torchvision 0.28 lists
    them (tests/data/torchvision_resnet_state_dict_shapes.json), its classification head included."""
    listing = REPO / "tests" / "data" / "torchvision_resnet_state_dict_shapes.json"
    shapes = json.loads(listing.read_text())["models"][f"resnet{depth}"]
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randint(0, 5, s, generator=g)
        if k.endswith("num_batches_tracked")
        else torch.rand(s, generator=g) + 0.5
        for k, s in shapes.items()
    }
