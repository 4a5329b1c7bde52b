"""Region grid (fastral's region order) and the labelled-region store (the oracle)."""

import json

import numpy as np
import pytest
import torch

import fastral
from fastral.data import IGNORE_INDEX, LabeledRegions, Region, RegionGrid, Streets


@pytest.fixture(scope="module")
def ds():
    return Streets("train", seed=0, num_images=3, progress=False)  # 128x160, regions 32x32: 4 x 5 per image


def test_preset_region_counts():
    assert len(RegionGrid(1, 360, 480, (90, 80))) == 24  # CamVid
    assert len(RegionGrid(1, 1024, 2048, (128, 128))) == 128  # Cityscapes
    assert len(RegionGrid(1, 128, 160, (32, 32))) == 20  # streets
    with pytest.raises(ValueError, match="does not fit"):
        RegionGrid(1, 20, 20, (32, 32))


def test_order_matches_the_featurizer_ops():
    """Region id r of the grid is row r of fastral.region_stats on the stacked images."""
    grid = RegionGrid(2, 7, 11, (3, 4))  # remainders dropped: 2 x 2 regions per image
    classes = torch.full((2, 7, 11), -1)
    for r in range(len(grid)):
        image, y, x, h, w = grid.locate(r)
        classes[image, y : y + h, x : x + w] = r
    scores = torch.nn.functional.one_hot(classes.clamp_min(0), len(grid)).permute(0, 3, 1, 2).float() * 10
    counts = fastral.region_stats(scores, region=(3, 4), pool=(1, 1), backend="torch").counts
    assert counts.argmax(1).tolist() == list(range(len(grid)))
    assert (counts.max(1).values == 12).all()
    assert fastral.region_grid(7, 11, (3, 4)) == (grid.ny, grid.nx)


def test_ids_boxes_round_trip():
    grid = RegionGrid(3, 360, 480, (90, 80))
    assert grid.locate(0) == Region(0, 0, 0, 90, 80)
    assert grid.locate(7) == Region(0, 90, 80, 90, 80)  # row-major: second row, second column
    assert grid.locate(24) == Region(1, 0, 0, 90, 80)
    ids = np.arange(len(grid))
    boxes = grid.boxes(ids)
    assert [tuple(b) for b in boxes[[5, 30, 71]]] == [tuple(grid.locate(i)) for i in (5, 30, 71)]
    image, iy, ix = grid.cells(ids)
    assert [grid.region_id(*c) for c in zip(image, iy, ix, strict=True)] == ids.tolist()
    assert grid.ids_of_images([2, 0]).tolist() == list(range(48, 72)) + list(range(24))
    assert grid.image_of([0, 23, 24, 71]).tolist() == [0, 0, 1, 2]
    with pytest.raises(IndexError, match=r"region ids \[72\] out of range"):
        grid.locate(72)
    with pytest.raises(IndexError):
        grid.ids_of_images([3])
    with pytest.raises(TypeError):
        grid.cells([1.5])


def test_mask():
    grid = RegionGrid(2, 7, 11, (3, 4))
    mask = grid.mask(1, [4, 7])
    expected = torch.zeros(7, 11, dtype=torch.bool)
    expected[0:3, 0:4] = expected[3:6, 4:8] = True
    assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match="not in image 0"):
        grid.mask(0, [4])


def test_labelled_store(ds):
    store = LabeledRegions(ds)
    assert store.add([21, 3, 39]) == [21, 3, 39]
    assert len(store) == 3 and 21 in store and 22 not in store
    assert store.images() == [0, 1] and store.regions_of_image(1) == [21, 39]
    label = store.training_label(1)
    truth = ds.label(1)
    revealed = store.mask(1)
    assert revealed.sum() == 2 * 32 * 32
    assert torch.equal(label[revealed], truth[revealed]) and (label[~revealed] == IGNORE_INDEX).all()
    assert (store.training_label(2) == IGNORE_INDEX).all()
    # Class histogram = ground truth under the revealed regions, independently counted.
    hist = np.zeros(11, np.int64)
    for i in (0, 1):
        lab = ds.label(i)[store.mask(i)]
        hist += np.bincount(lab[lab != IGNORE_INDEX].numpy(), minlength=11)
    assert store.class_histogram().tolist() == hist.tolist()
    counts = store.region_class_counts()
    assert counts.shape == (3, 12) and (counts.sum(1) == 32 * 32).all()
    assert counts[1].tolist() == store.region_class_counts([3])[0].tolist()
    assert 3 not in store.unlabelled_ids([0]).tolist() and len(store.unlabelled_ids([0, 1, 2])) == 57


def test_add_rejects_bad_ids_and_changes_nothing(ds):
    store = LabeledRegions(ds)
    store.add([5])
    for bad, error in (([5], "already labelled"), ([6, 6], "repeated"), ([7, 60], "out of range")):
        with pytest.raises((ValueError, IndexError), match=error):
            store.add(bad)
    assert store.region_ids == [5] and store.images() == [0]


def test_training_items(ds):
    store = LabeledRegions(ds)
    store.add([0, 25, 26])
    items = store.training_items([26, 0])
    assert [(it.image, it.box) for it in items] == [(1, (32, 32, 32, 32)), (0, (0, 0, 32, 32))]  # 26 = cell (1, 1)
    assert items[0].label.dtype == torch.uint8
    assert torch.equal(items[0].label.long(), store.training_label(1))  # both labelled regions of image 1
    assert [it.image for it in store.training_items()] == [0, 1] and store.training_items()[0].box is None
    with pytest.raises(ValueError, match="not labelled"):
        store.training_items([1])


def test_state_round_trip(ds):
    store = LabeledRegions(ds)
    store.add([40, 2, 17])
    state = json.loads(json.dumps(store.state_dict()))
    again = LabeledRegions(ds)
    again.load_state_dict(state)
    assert again.region_ids == [40, 2, 17]
    assert np.array_equal(again.region_class_counts(), store.region_class_counts())
    other = LabeledRegions(Streets("val", num_images=3, progress=False))
    with pytest.raises(ValueError, match="state is for streets/train"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="format"):
        again.load_state_dict({"format": "other"})
