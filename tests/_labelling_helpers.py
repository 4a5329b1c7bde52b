"""Helpers of the labelling-loop tests (fastral.select, fastral.labels, the Label Studio round trip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from _data_helpers import shared_data
from PIL import Image

from fastral import select, train
from fastral._atomic import torch_save
from fastral.al.query_network import QueryNetwork
from fastral.models import build_model, save_checkpoint

CAMVID_IMAGES = ("0001TP_006690.png", "0001TP_006720.png", "0001TP_006750.png", "0001TP_006780.png")


def camvid_folder(root: Path, half_size: bool = True) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder of a user's own images made from real CamVid frames: two PNGs at the top, one in a sub-folder,
    one saved as JPEG in another (half size by default, to keep the tests fast). Returns the folder and the
    ground-truth class ids of each image (relative path -> uint8 [H, W], 255 = void), resized the same way."""
    camvid = shared_data("camvid")
    images, truth = root / "images", {}
    names = ("a.png", "b.png", "street/c.png", "more/d.jpg")
    for src, rel in zip(CAMVID_IMAGES, names, strict=True):
        rgb, ids = Image.open(camvid / "train" / src).convert("RGB"), Image.open(camvid / "trainannot" / src)
        if half_size:
            rgb, ids = rgb.resize((240, 180), Image.BILINEAR), ids.resize((240, 180), Image.NEAREST)
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        rgb.save(images / rel, quality=95) if rel.endswith(".jpg") else rgb.save(images / rel)
        ids = np.array(ids)
        truth[rel] = np.where(ids < 11, ids, 255).astype(np.uint8)  # CamVid's 11 = void
    return images, truth


def tiny_checkpoint(path: Path, num_classes: int = 11, seed: int = 0) -> Path:
    """A small, randomly initialised compact FPN saved as a fastral segmentation checkpoint."""
    torch.manual_seed(seed)
    model = build_model(num_classes, "compact", width=8, fpn_channels=16, head_channels=8)
    save_checkpoint(path, model)
    return path


def tiny_policy(path: Path, num_classes: int = 11, seed: int = 1) -> QueryNetwork:
    """A random query network saved as a fastral.run policy file for 4x4 entropy pooling and 8 KL bins, a state of
    30 regions and scoring groups of 4 x 10 = 40 regions; returns the network."""
    state_dim = num_classes + 1 + 3 * 4 * 4
    torch.manual_seed(seed)
    net = QueryNetwork(state_dim, state_regions=30, action_dim=state_dim + 2 * 8, gate_dim=2 * 8).eval()
    config = {"entropy_pool": [4, 4], "kl_bins": 8, "regions_per_step": 4, "pool_size": 10}
    state = {"format": "fastral-ralis-policy/1", "config": config, "seed": 0, "policy": "ralis"}
    torch_save({**state, "state_dict": net.state_dict()}, path)
    return net


def run_select(images: Path, checkpoint: Path, out: Path, *extra: str) -> dict:
    """``python -m fastral.select`` in-process on one thread; returns selected_regions.json."""
    argv = [
        "--images",
        str(images),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]
    return select.main(argv)


def expected_label(truth: np.ndarray, boxes) -> np.ndarray:
    """The label file an import should write: the ground truth inside the selected ``boxes``, 255 elsewhere."""
    out = np.full_like(truth, 255)
    for b in boxes:
        y, x, h, w = b["y"], b["x"], b["height"], b["width"]
        out[y : y + h, x : x + w] = truth[y : y + h, x : x + w]
    return out


def fine_tune(images: Path, labels: Path, checkpoint: Path, out: Path, batch_size: int) -> dict:
    """``python -m fastral.train --images --labels`` in-process: one epoch on one thread; returns its summary."""
    argv = [
        "--images",
        str(images),
        "--labels",
        str(labels),
        "--init-checkpoint",
        str(checkpoint),
        "--epochs",
        "1",
        "--batch-size",
        str(batch_size),
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    return train.main(argv)
