"""Data sets, region bookkeeping and RALIS splits.

    ds = load_dataset("streets", split="train")             # built in, no download
    ds = load_dataset("camvid", root="path/to/camvid", split="val", scale=0.5)
    ds.image(i)   # float32 [3, H, W], ImageNet-normalised      ds.label(i)  # int64 [H, W], 255 = ignore
    grid = ds.regions                                        # data-set region id <-> (image, y, x, h, w)
    labelled = LabeledRegions(ds); labelled.add([...])      # the oracle; training_label(i) masks the rest

Every image index is an index into one split's data set, every region id a data-set region id of that split
(see :mod:`fastral.data.regions`).
"""

from __future__ import annotations

from .base import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataLayoutError,
    ImageFileError,
    SegmentationDataset,
    denormalize,
    normalize,
)
from .camvid import CamVid
from .cityscapes import Cityscapes
from .gta5 import GTA5
from .presets import PRESETS, ALSplitRecipe, DatasetPreset, get_preset
from .regions import LabeledRegions, Region, RegionGrid, TrainItem
from .splits import ALSplits, SplitSet, build_splits, class_histograms
from .streets import Streets

DATASETS = {"streets": Streets, "camvid": CamVid, "cityscapes": Cityscapes, "gta5": GTA5}


def load_dataset(name: str, root=None, split: str = "train", **kwargs) -> SegmentationDataset:
    """One split of data set ``name`` ("streets", "camvid", "cityscapes" or "gta5").

    ``root`` is the data folder of the real data sets (an error shows the expected layout and where to get the
    data when it is missing or wrong); ``streets`` is generated and takes no root. Keyword arguments go to the
    data set's class: ``scale`` (resize factor), ``cache`` (decode everything up front), ``region``,
    ``progress``; ``seed``/``num_images``/``size`` for streets, ``classes`` for gta5.
    """
    preset = get_preset(name)
    if name == "streets":
        if root is not None:
            raise ValueError(f"streets is generated and takes no data root, got root={str(root)!r}")
        return Streets(split, **kwargs)
    if split not in preset.splits:
        raise ValueError(f"{name}: argument 'split' must be one of {preset.splits}, got {split!r}")
    return DATASETS[name](root, split, **kwargs)


__all__ = [
    "DATASETS",
    "GTA5",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "ALSplitRecipe",
    "ALSplits",
    "CamVid",
    "Cityscapes",
    "DataLayoutError",
    "DatasetPreset",
    "ImageFileError",
    "LabeledRegions",
    "Region",
    "RegionGrid",
    "SegmentationDataset",
    "SplitSet",
    "Streets",
    "TrainItem",
    "build_splits",
    "class_histograms",
    "denormalize",
    "get_preset",
    "load_dataset",
    "normalize",
]
