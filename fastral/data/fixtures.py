"""Tiny data sets written in the official folder layouts, for tests and smoke runs (no real data needed).

Labels are blocky random class maps (so regions hold several classes) with some void; images are a noisy colour
per class, so a network can learn them. Every writer is deterministic for its ``seed`` and returns the root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .cityscapes import IMAGE_SUFFIX, LABEL_SUFFIX, LABEL_TO_TRAIN_ID


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def blocky_labels(rng: np.random.Generator, size: tuple[int, int], values: np.ndarray, block: int = 8) -> np.ndarray:
    """A ``size`` map of ``values`` drawn per ``block x block`` cell."""
    h, w = size
    cells = rng.choice(values, size=(-(-h // block), -(-w // block)))
    return np.repeat(np.repeat(cells, block, 0), block, 1)[:h, :w].astype(np.uint8)


def image_for(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """An RGB image whose colour is a function of the label value, plus noise."""
    palette = np.random.default_rng(1234).integers(0, 256, (256, 3))
    noisy = palette[label] + rng.normal(0, 10, (*label.shape, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_camvid(root: str | Path, splits: dict[str, int] | None = None, size=(360, 480), seed: int = 0) -> Path:
    """CamVid SegNet layout: ``<split>/`` + ``<split>annot/``, ids 0-10 and void 11."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, n in (splits or {"train": 3, "val": 2}).items():
        for i in range(n):
            name = f"0001TP_{(n - i) * 30:06d}.png"  # written in reverse name order: loaders must sort
            label = blocky_labels(rng, size, np.arange(12), block=max(size[0] // 12, 1))
            write_png(root / f"{split}annot" / name, label)
            write_png(root / split / name, image_for(rng, label))
    return root


def write_cityscapes(
    root: str | Path, split: str = "train", cities: dict[str, int] | None = None, size=(64, 128), seed: int = 0
) -> Path:
    """Cityscapes layout: ``leftImg8bit/<split>/<city>/`` + ``gtFine/<split>/<city>/``, raw label ids 0-33."""
    root, rng = Path(root), np.random.default_rng(seed)
    for city, n in (cities or {"bremen": 1, "aachen": 2}).items():
        for i in reversed(range(n)):
            stem = f"{city}_{i:06d}_000019"
            label = blocky_labels(rng, size, np.arange(34), block=max(size[0] // 8, 1))
            write_png(root / "gtFine" / split / city / (stem + LABEL_SUFFIX), label)
            write_png(root / "leftImg8bit" / split / city / (stem + IMAGE_SUFFIX), image_for(rng, label))
    return root


def write_gta5(root: str | Path, ids=(3, 1, 2, 5), size=(52, 96), seed: int = 0, split_mat: dict | None = None) -> Path:
    """GTA5 layout: ``images/NNNNN.png`` + palette ``labels/NNNNN.png`` (Cityscapes ids); optional ``split.mat``
    from ``{"trainIds": [...], "valIds": [...], "testIds": [...]}`` (needs scipy)."""
    root, rng = Path(root), np.random.default_rng(seed)
    ids_with_train_id = np.array([*sorted(LABEL_TO_TRAIN_ID), 0, 1, 34])
    for frame in ids:
        label = blocky_labels(rng, size, ids_with_train_id, block=max(size[0] // 6, 1))
        path = root / "labels" / f"{frame:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        im = Image.frombytes("P", (size[1], size[0]), label.tobytes())  # GTA5 ships palette PNGs: index = id
        im.putpalette(np.random.default_rng(7).integers(0, 256, 768).astype(np.uint8).tobytes())
        im.save(path)
        write_png(root / "images" / f"{frame:05d}.png", image_for(rng, label))
    if split_mat is not None:
        from scipy.io import savemat

        savemat(root / "split.mat", {k: np.asarray(v, np.int64).reshape(-1, 1) for k, v in split_mat.items()})
    return root
