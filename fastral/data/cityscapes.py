"""Cityscapes in the official layout, raw label ids mapped to the 19 train ids by one table lookup."""

from __future__ import annotations

from pathlib import Path

from .base import IGNORE_INDEX, PairedFileDataset, check_split, make_lut, pair_files, require_dir
from .presets import CITYSCAPES

# Raw Cityscapes label id -> train id, as in cityscapesScripts' labels.py. Ids 0-33 not listed (unlabeled, ego
# vehicle, ..., parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer) are ignored.
LABEL_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
NUM_LABEL_IDS = 34  # raw ids 0-33 are valid; anything else in a labelIds file is an error
LUT = make_lut({**dict.fromkeys(range(NUM_LABEL_IDS), IGNORE_INDEX), IGNORE_INDEX: IGNORE_INDEX, **LABEL_TO_TRAIN_ID})

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def cityscapes_items(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a split, sorted by city and then file name."""
    check_split(CITYSCAPES, split)
    images = require_dir(CITYSCAPES, root, "leftImg8bit", split)
    labels = require_dir(CITYSCAPES, root, "gtFine", split)

    def label_of(image: Path) -> Path:
        return labels / image.parent.name / (image.name[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX)

    return pair_files(CITYSCAPES, sorted(images.glob(f"*/*{IMAGE_SUFFIX}")), label_of)


class Cityscapes(PairedFileDataset):
    """One Cityscapes split (train / val / test), 2048x1024, 19 classes. Read lazily by default."""

    def __init__(self, root: str | Path, split: str = "train", **kw):
        super().__init__(CITYSCAPES, split, cityscapes_items(root, split), LUT, root=root, **kw)
