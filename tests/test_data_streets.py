"""The built-in streets data set: deterministic, CamVid's classes, realistic imbalance, rare and small objects."""

import numpy as np
import pytest
import torch

from fastral.data import IGNORE_INDEX, Streets, load_dataset
from fastral.data.streets import (
    BICYCLIST,
    BUILDING,
    CAR,
    FENCE,
    PAVEMENT,
    PEDESTRIAN,
    POLE,
    ROAD,
    SIGN,
    SKY,
    TREE,
    generate_scene,
)

RARE = (POLE, SIGN, FENCE, PEDESTRIAN, BICYCLIST)
MINORITY = (*RARE, CAR)
FREQUENT = (SKY, BUILDING, ROAD, PAVEMENT, TREE)


@pytest.fixture(scope="module")
def sample():
    """40 train images' labels and their pixel fractions per class."""
    labels = np.stack([generate_scene(0, "train", i)[1] for i in range(40)])
    counts = np.bincount(labels.ravel(), minlength=256)
    return labels, counts[:11] / counts.sum()


def test_deterministic_per_seed_split_and_index():
    a = Streets("train", seed=3, num_images=4, progress=False)
    b = Streets("train", seed=3, num_images=6, cache=False)
    for i in range(4):
        assert torch.equal(a.image(i), b.image(i)) and torch.equal(a.label(i), b.label(i))
    other_seed = Streets("train", seed=4, num_images=1, progress=False)
    val = Streets("val", seed=3, num_images=1, progress=False)
    assert not torch.equal(a.image(0), other_seed.image(0)) and not torch.equal(a.image(0), val.image(0))
    assert a.path(2) == "streets/seed3/train/00002" and a.relpath(2) == a.path(2)


def test_defaults_and_interface():
    ds = load_dataset("streets", split="val", num_images=2, progress=False)
    assert (ds.height, ds.width, ds.num_classes, ds.region) == (128, 160, 11, (32, 32))
    assert ds.regions.per_image == 20 and ds.class_names[SKY] == "sky" and ds.class_names[BICYCLIST] == "bicyclist"
    assert ds.image(1).dtype == torch.float32 and ds.label(1).dtype == torch.int64
    assert {len(Streets(s, num_images=None, cache=False)) for s in ("train", "val", "test")} == {360, 60, 100}
    with pytest.raises(ValueError, match="no data root"):
        load_dataset("streets", root="/data")
    with pytest.raises(ValueError, match="split"):
        Streets("trainval")


def test_other_sizes():
    ds = Streets("test", num_images=1, size=(96, 128), progress=False)
    assert ds.image(0).shape == (3, 96, 128) and ds.regions.per_image == 12


def test_labels_and_imbalance(sample):
    labels, freq = sample
    assert set(np.unique(labels).tolist()) <= set(range(11)) | {IGNORE_INDEX}
    assert (freq > 0).all()  # every class occurs
    assert freq[ROAD] > 0.25 and freq[SKY] > 0.08
    for c in RARE:  # CamVid: about 0.4-2.3 % each
        assert 0 < freq[c] < 0.03, (c, freq[c])
    assert freq[[PEDESTRIAN, BICYCLIST]].sum() < 0.025 and freq[CAR] < 0.08
    assert freq[list(MINORITY)].sum() < 0.15
    assert freq[list(FREQUENT)].min() > max(0.05, freq[list(MINORITY)].max())  # every frequent class beats any rare


def test_rare_classes_sit_in_few_regions(sample):
    """Where you label matters: a random region rarely holds a pedestrian or a bicyclist."""
    labels, _ = sample
    tiles = labels.reshape(len(labels), 4, 32, 5, 32).transpose(0, 1, 3, 2, 4).reshape(-1, 32 * 32)
    for c in (PEDESTRIAN, BICYCLIST):
        share = (tiles == c).any(1).mean()
        assert 0 < share < 0.2, (c, share)
        holding = tiles[(tiles == c).any(1)]
        assert (holding == c).mean() < 0.2  # and is small even there: the rest of such a region is other classes
