"""CamVid loader on generated fixtures in the SegNet layout, and on the real copy when it is present."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import shared_data
from PIL import Image

from fastral.data import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CamVid,
    DataLayoutError,
    ImageFileError,
    load_dataset,
)
from fastral.data.fixtures import write_camvid, write_png

SMALL = (36, 48)  # fixture size; the loader is told to expect it


@pytest.fixture
def root(tmp_path):
    return write_camvid(tmp_path / "camvid", {"train": 4, "val": 2}, size=SMALL)


def small(root, split="train", **kw):
    return CamVid(root, split, size=SMALL, region=(9, 8), progress=False, **kw)


def test_loads_sorted_with_void_mapped_to_ignore(root):
    ds = small(root)
    assert len(ds) == 4 and ds.num_classes == 11 and (ds.height, ds.width) == SMALL
    names = [ds.relpath(i) for i in range(len(ds))]
    assert names == sorted(names) and all(n.startswith("train/") for n in names)
    for i in range(len(ds)):
        raw = np.asarray(Image.open(ds.label_path(i)))
        expected = np.where(raw == 11, IGNORE_INDEX, raw)
        label = ds.label(i)
        assert label.dtype == torch.int64 and label.shape == SMALL
        np.testing.assert_array_equal(label.numpy(), expected)
    assert (ds.label(0) == IGNORE_INDEX).any()


def test_image_is_imagenet_normalised_chw(root):
    ds = small(root)
    rgb = np.asarray(Image.open(ds.path(1)).convert("RGB"), np.float32) / 255
    expected = (rgb - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    image = ds.image(1)
    assert image.dtype == torch.float32 and image.shape == (3, *SMALL)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_cached_and_lazy_agree(root):
    cached, lazy = small(root, cache=True), small(root, cache=False)
    for i in range(len(cached)):
        assert torch.equal(cached.image(i), lazy.image(i)) and torch.equal(cached.label(i), lazy.label(i))


def test_scale_resizes_images_and_nearest_labels(root):
    ds = CamVid(root, "train", size=SMALL, scale=0.5, region=(4, 4), progress=False)
    assert (ds.height, ds.width) == (18, 24) and ds.image(0).shape == (3, 18, 24)
    assert set(ds.label(0).unique().tolist()) <= set(small(root).label(0).unique().tolist())


def test_default_region_scales_with_the_image(tmp_path):
    root = write_camvid(tmp_path, {"val": 1})  # full size 480x360
    assert CamVid(root, "val", progress=False).regions.per_image == 24
    half = CamVid(root, "val", scale=0.5, progress=False)
    assert half.region == (45, 40) and half.regions.per_image == 24
    with pytest.raises(ValueError, match="region"):
        CamVid(root, "val", scale=0.26, progress=False)  # regions of 23 x 21 px: a 4 x 5 grid on 94 x 125 px


def test_index_checks(root):
    ds = small(root)
    with pytest.raises(IndexError, match="out of range"):
        ds.image(4)
    with pytest.raises(IndexError):
        ds.label(-1)
    with pytest.raises(TypeError):
        ds.image(1.0)


def test_missing_folder_shows_layout_and_source(tmp_path, root):
    with pytest.raises(DataLayoutError, match="trainannot") as info:
        load_dataset("camvid", tmp_path / "nowhere")
    assert "SegNet" in str(info.value) and "does not exist" in str(info.value)
    (root / "valannot").rename(root / "valannot_moved")
    with pytest.raises(DataLayoutError, match="valannot"):
        small(root, "val")
    with pytest.raises(DataLayoutError, match="no data root"):
        load_dataset("camvid", None)
    with pytest.raises(ValueError, match="split"):
        load_dataset("camvid", root, "validation")


def test_image_without_label_is_named(root):
    (root / "trainannot" / "0001TP_000030.png").unlink()
    with pytest.raises(ImageFileError, match=r"0001TP_000030\.png"):
        small(root)


def test_mis_sized_image_is_named(root):
    write_png(root / "train" / "0001TP_000060.png", np.zeros((30, 48, 3)))
    with pytest.raises(ImageFileError, match=r"0001TP_000060.png' is 48x30 \(width x height\), expected 48x36"):
        small(root)
    lazy = small(root, cache=False)  # lazily read: the error comes at the access
    lazy.image(0)
    with pytest.raises(ImageFileError, match=r"0001TP_000060\.png"):
        lazy.image(1)


def test_unreadable_and_bad_labels_are_named(root):
    (root / "train" / "0001TP_000090.png").write_bytes(b"not a png")
    with pytest.raises(ImageFileError, match=r"cannot read image file .*0001TP_000090\.png"):
        small(root, cache=False).image(2)
    write_png(root / "trainannot" / "0001TP_000030.png", np.full(SMALL, 40))
    with pytest.raises(ImageFileError, match=r"unexpected raw label values \[40\]"):
        small(root, cache=False).label(0)
    write_png(root / "trainannot" / "0001TP_000030.png", np.zeros((*SMALL, 3)))
    with pytest.raises(ImageFileError, match="colour-coded"):
        small(root, cache=False).label(0)


def test_real_camvid_val():
    root = shared_data("camvid")
    ds = load_dataset("camvid", root, "val", cache=False)  # lazily: read only what the test looks at
    assert len(ds) == 101 and (ds.height, ds.width) == (360, 480) and ds.regions.per_image == 24
    names = [ds.relpath(i) for i in range(len(ds))]
    assert names == sorted(names)
    values = set(np.unique(np.concatenate([ds.label(i).numpy().ravel() for i in range(0, 101, 10)])).tolist())
    assert values <= set(range(11)) | {IGNORE_INDEX} and len(values) >= 10
    assert ds.image(0).shape == (3, 360, 480)


@pytest.mark.parametrize("cache", [True, False])
def test_content_hash_follows_the_pixels_not_the_file_names(root, cache):
    """Feature caches are keyed by it: an image replaced in place (same name) must change it."""
    before = small(root, cache=cache).content_hash()
    assert small(root, cache=not cache).content_hash() == before  # decoded in memory or read per image: the same
    path = Path(small(root).path(2))
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] ^= 0xFF
    write_png(path, pixels)
    assert small(root, cache=cache).content_hash() != before


def test_upper_case_png_files_count_and_non_utf8_names_are_named(root):
    """``X.PNG`` is a PNG (not silently skipped); a file name that is not UTF-8 gives an error that names it."""
    for folder in ("train", "trainannot"):
        path = root / folder / "0001TP_000030.png"
        path.rename(path.with_name("0001TP_000030.PNG"))
    assert len(small(root)) == 4 and small(root).relpath(0).endswith(".PNG")
    bad, label = os.fsdecode(b"0001TP_\xff.png"), np.asarray(Image.open(small(root).label_path(0)))
    for folder in ("train", "trainannot"):
        write_png(root / folder / bad, label)
    with pytest.raises(ImageFileError, match=r"the file name .*0001TP_\\udcff\.png. is not valid UTF-8; rename it"):
        small(root)
