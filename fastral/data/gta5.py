"""GTA5 ("Playing for Data"): ``<root>/images/NNNNN.png`` frames and ``<root>/labels/NNNNN.png`` label ids.

GTA5 labels use the Cityscapes label ids, so ``classes="cityscapes"`` reuses the Cityscapes table (19 classes) and
``classes="camvid"`` maps them to CamVid's 11 classes, for pretraining as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (
    IGNORE_INDEX,
    PairedFileDataset,
    check_split,
    layout_error,
    make_lut,
    pair_files,
    png_files,
    require_dir,
)
from .cityscapes import LABEL_TO_TRAIN_ID
from .presets import CAMVID_CLASSES, CITYSCAPES_CLASSES
from .presets import GTA5 as PRESET

# Cityscapes label id -> CamVid class. The same table as the official code's gtav.py (camvid=True), so a model
# pretrained here is comparable with the paper's; its choices are kept although some are debatable: wall, terrain,
# rider, caravan, trailer and train are ignored and motorcycle counts as car.
LABEL_TO_CAMVID = {
    7: 3,
    8: 4,
    11: 1,
    13: 7,
    17: 2,
    19: 6,
    20: 6,
    21: 5,
    23: 0,
    24: 9,
    26: 8,
    27: 8,
    28: 8,
    32: 8,
    33: 10,
}

# Ids whose image and label sizes differ in the public release; skipped (as the official loader does) instead
# of failing at the first epoch. Any other size mismatch raises ImageFileError naming the file.
KNOWN_MISMATCHED_IDS = frozenset([15188, 17705, *range(20801, 20861)])

# GTA5 labels may hold ids without a train id (e.g. 34); they are ignored rather than rejected.
CLASS_MAPS = {
    "cityscapes": (CITYSCAPES_CLASSES, make_lut(LABEL_TO_TRAIN_ID, default=IGNORE_INDEX)),
    "camvid": (CAMVID_CLASSES, make_lut(LABEL_TO_CAMVID, default=IGNORE_INDEX)),
}


def _split_ids(root: Path, split: str) -> set[int]:
    mat = root / "split.mat"
    if not mat.is_file():
        raise layout_error(PRESET, f"split {split!r} needs '{mat}' (or use split='all').")
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # scipy is optional: only this file format needs it
        raise ImportError("gta5: reading split.mat needs scipy (pip install scipy)") from exc
    return {int(i) for i in np.asarray(loadmat(mat)[split + "Ids"]).ravel()}


def gta5_items(root: str | Path, split: str, skip_known_mismatched: bool = True) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a split sorted by file name; ``split='all'`` is every image that has a label."""
    check_split(PRESET, split)
    images = require_dir(PRESET, root, "images")
    labels = require_dir(PRESET, root, "labels")
    wanted = None if split == "all" else _split_ids(Path(root), split)

    def keep(image: Path) -> bool:
        frame = int(image.stem) if image.stem.isdigit() else None
        skipped = skip_known_mismatched and frame in KNOWN_MISMATCHED_IDS
        return not skipped and (wanted is None or frame in wanted)

    images = [image for image in png_files(images) if keep(image)]
    return pair_files(PRESET, images, lambda image: labels / image.name)


class GTA5(PairedFileDataset):
    """GTA5 frames with labels mapped to ``classes`` = "cityscapes" (19) or "camvid" (11). Read lazily."""

    def __init__(self, root: str | Path, split: str = "all", classes: str = "cityscapes", **kw):
        if classes not in CLASS_MAPS:
            raise ValueError(f"gta5: argument 'classes' must be one of {sorted(CLASS_MAPS)}, got {classes!r}")
        names, lut = CLASS_MAPS[classes]
        self.classes = classes
        items = gta5_items(root, split, kw.pop("skip_known_mismatched", True))
        super().__init__(PRESET, split, items, lut, root=root, class_names=names, **kw)
