"""CamVid in the SegNet layout: ``<root>/<split>/*.png`` frames and ``<root>/<split>annot/*.png`` class ids."""

from __future__ import annotations

from pathlib import Path

from .base import IGNORE_INDEX, PairedFileDataset, check_split, make_lut, pair_files, png_files, require_dir
from .presets import CAMVID

VOID = 11  #: CamVid's void label; mapped to IGNORE_INDEX
# Ids 0-10 are the classes; 11 (void) and 255 (already ignore) become IGNORE_INDEX; anything else is an error.
LUT = make_lut({**{c: c for c in range(VOID)}, VOID: IGNORE_INDEX, IGNORE_INDEX: IGNORE_INDEX})


def camvid_items(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a split, sorted by file name; labels share the image's file name."""
    check_split(CAMVID, split)
    images = require_dir(CAMVID, root, split)
    labels = require_dir(CAMVID, root, split + "annot")
    return pair_files(CAMVID, png_files(images), lambda image: labels / image.name)


class CamVid(PairedFileDataset):
    """One CamVid split (train / val / test), 480x360, 11 classes. Cached in memory by default."""

    def __init__(self, root: str | Path, split: str = "train", **kw):
        super().__init__(CAMVID, split, camvid_items(root, split), LUT, root=root, **kw)
