"""GTA5 loader on a generated fixture (images/ + palette labels/ + optional split.mat)."""

import numpy as np
import pytest
from PIL import Image

from fastral.data import GTA5, IGNORE_INDEX, DataLayoutError, ImageFileError, load_dataset
from fastral.data.fixtures import write_gta5, write_png

SMALL = (26, 48)

# Expected class maps, written out independently of the loader: Cityscapes label id -> class.
TO_CITYSCAPES = {
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
TO_CAMVID = {7: 3, 8: 4, 11: 1, 13: 7, 17: 2, 19: 6, 20: 6, 21: 5, 23: 0, 24: 9, 26: 8, 27: 8, 28: 8, 32: 8, 33: 10}


def gta(root, split="all", **kw):
    return GTA5(root, split, size=SMALL, region=(13, 16), **kw)


@pytest.mark.parametrize(("classes", "table", "n"), [("cityscapes", TO_CITYSCAPES, 19), ("camvid", TO_CAMVID, 11)])
def test_class_maps(tmp_path, classes, table, n):
    root = write_gta5(tmp_path, size=SMALL)
    ds = gta(root, classes=classes)
    assert ds.num_classes == n and len(ds) == 4
    assert [ds.relpath(i) for i in range(4)] == [f"images/0000{k}.png" for k in (1, 2, 3, 5)]
    for i in range(len(ds)):
        with Image.open(ds.label_path(i)) as im:
            assert im.mode == "P"
            raw = np.asarray(im)
        expected = np.vectorize(lambda v: table.get(int(v), IGNORE_INDEX))(raw)
        np.testing.assert_array_equal(ds.label(i).numpy(), expected)


def test_split_mat_and_known_mismatched_ids(tmp_path):
    root = write_gta5(
        tmp_path, ids=(1, 2, 3, 15188), size=SMALL, split_mat={"trainIds": [3, 1, 15188], "valIds": [2], "testIds": [4]}
    )
    assert [gta(root, "train").relpath(i) for i in range(2)] == ["images/00001.png", "images/00003.png"]
    assert len(gta(root, "val")) == 1
    assert len(gta(root, "all")) == 3  # 15188 (a known image/label size mismatch) is skipped
    assert len(gta(root, "all", skip_known_mismatched=False)) == 4


def test_errors(tmp_path):
    with pytest.raises(DataLayoutError, match=r"images/NNNNN\.png"):
        load_dataset("gta5", tmp_path)
    root = write_gta5(tmp_path, size=SMALL)
    with pytest.raises(DataLayoutError, match=r"split\.mat"):
        gta(root, "train")
    with pytest.raises(ValueError, match="classes"):
        gta(root, classes="mapillary")
    write_png(root / "labels" / "00002.png", np.zeros((20, 48)))
    with pytest.raises(ImageFileError, match=r"00002\.png' is 48x20"):
        gta(root).label(1)
