"""Cityscapes loader on generated fixtures in the official layout, and on the real sample when it is present."""

import numpy as np
import pytest
from _data_helpers import shared_data
from PIL import Image

from fastral.data import IGNORE_INDEX, Cityscapes, DataLayoutError, ImageFileError, load_dataset
from fastral.data.fixtures import write_cityscapes, write_png

SMALL = (32, 64)

# cityscapesScripts labels.py, written out independently of the loader's table: (label id, train id).
OFFICIAL = [
    (0, 255),
    (1, 255),
    (2, 255),
    (3, 255),
    (4, 255),
    (5, 255),
    (6, 255),
    (7, 0),
    (8, 1),
    (9, 255),
    (10, 255),
    (11, 2),
    (12, 3),
    (13, 4),
    (14, 255),
    (15, 255),
    (16, 255),
    (17, 5),
    (18, 255),
    (19, 6),
    (20, 7),
    (21, 8),
    (22, 9),
    (23, 10),
    (24, 11),
    (25, 12),
    (26, 13),
    (27, 14),
    (28, 15),
    (29, 255),
    (30, 255),
    (31, 16),
    (32, 17),
    (33, 18),
]


@pytest.fixture
def root(tmp_path):
    return write_cityscapes(tmp_path / "cs", "train", {"bremen": 1, "aachen": 2}, size=SMALL)


def small(root, split="train", **kw):
    return Cityscapes(root, split, size=SMALL, region=(16, 16), **kw)


def test_sorted_by_city_then_name(root):
    ds = small(root)
    assert [ds.relpath(i) for i in range(len(ds))] == [
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png",
        "leftImg8bit/train/bremen/bremen_000000_000019_leftImg8bit.png",
    ]
    assert ds.num_classes == 19 and ds.class_names[0] == "road" and ds.class_names[-1] == "bicycle"


def test_label_ids_map_to_train_ids_by_the_official_table(root):
    ds = small(root)
    table = dict(OFFICIAL)
    for i in range(len(ds)):
        raw = np.asarray(Image.open(ds.label_path(i)))
        expected = np.vectorize(table.__getitem__)(raw)
        np.testing.assert_array_equal(ds.label(i).numpy(), expected)


def test_every_raw_id(tmp_path):
    ids = np.arange(34, dtype=np.uint8).repeat(2).reshape(2, 34)
    root = write_cityscapes(tmp_path, "val", {"lindau": 1}, size=(2, 34))
    write_png(root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png", ids)
    label = Cityscapes(root, "val", size=(2, 34), region=(1, 1)).label(0)
    np.testing.assert_array_equal(label.numpy(), np.vectorize(dict(OFFICIAL).__getitem__)(ids))
    write_png(root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png", np.full((2, 34), 34))
    with pytest.raises(
        ImageFileError, match=r"lindau_000000_000019_gtFine_labelIds.png' holds unexpected raw label values \[34\]"
    ):
        Cityscapes(root, "val", size=(2, 34), region=(1, 1)).label(0)


def test_lazy_by_default(root):
    ds = small(root)
    assert ds._images is None  # Cityscapes frames are large: read on access


def test_missing_folders(tmp_path, root):
    with pytest.raises(DataLayoutError, match=r"gtFine/<split>/<city>") as info:
        load_dataset("cityscapes", tmp_path / "missing")
    assert "cityscapes-dataset.com" in str(info.value)
    with pytest.raises(DataLayoutError, match="leftImg8bit/val"):
        small(root, "val")
    (root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(ImageFileError, match=r"aachen_000001_000019_leftImg8bit\.png' has no label file"):
        small(root)


def test_real_sample():
    root = shared_data("cityscapes_sample")
    ds = load_dataset("cityscapes", root, "train")
    assert len(ds) == 8 and (ds.height, ds.width) == (1024, 2048) and ds.regions.per_image == 128
    raw = np.asarray(Image.open(ds.label_path(0)))
    label = ds.label(0).numpy()
    for raw_id, train_id in OFFICIAL:
        assert (label[raw == raw_id] == train_id).all()
    assert set(np.unique(label).tolist()) <= set(range(19)) | {IGNORE_INDEX}
    half = load_dataset("cityscapes", root, "train", scale=0.25)
    assert half.image(7).shape == (3, 256, 512) and half.region == (32, 32) and half.regions.per_image == 128
