"""A team's own images: a folder of PNG/JPEG files of any sizes, and the partial labels ``fastral.labels`` writes.

* :func:`image_files` lists a folder recursively (sorted relative paths, so every command sees the same order);
  :func:`read_image` decodes one file. ``fastral.select`` streams a folder through them one image at a time.
* :class:`PartialLabelFolder` is the training set of such a folder: the images listed in a labels folder's
  ``labelled.json`` with their label PNGs (class ids, 255 = unlabelled), one :class:`TrainItem` per labelled region
  so that ``fastral.train`` fine-tunes on exactly those regions.

Paths inside JSON files are relative to the images folder (``image``) or to the labels folder (``label``), with
'/' separators, so a selection or a labels folder stays valid when both folders move.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .base import IGNORE_INDEX, ImageFileError, _open, normalize
from .regions import TrainItem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  #: compared case-insensitively
LABELLED_FORMAT = "fastral-labelled/1"
LABELLED_FILE = "labelled.json"


class FolderError(ValueError):
    """A folder or a JSON file of the labelling loop is missing or malformed; the message names it."""


def image_files(root: str | Path) -> list[str]:
    """Every PNG/JPEG file under ``root`` (recursive), as sorted '/'-separated paths relative to ``root``.

    Hidden files and folders (a leading '.') are skipped: they are editor or tool state, not images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"images folder '{root}' does not exist or is not a folder")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in rel.parts) and path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as uint8 RGB ``[H, W, 3]``; :class:`ImageFileError` naming the file if unreadable."""
    with _open(Path(path), "image") as im:
        return np.array(im.convert("RGB"))


def label_path(image: str) -> str:
    """Where the label of image ``image`` (relative path) lives in a labels or masks folder: same name, .png."""
    return PurePosixPath(image).with_suffix(".png").as_posix()


def box_tuple(box: dict) -> tuple[int, int, int, int]:
    """A JSON box ``{"x", "y", "width", "height"}`` as ``(y, x, h, w)``, the order of :class:`TrainItem`."""
    return int(box["y"]), int(box["x"]), int(box["height"]), int(box["width"])


def read_json(path: str | Path, what: str, fmt: str | None = None) -> dict:
    """A JSON object from ``path``; :class:`FolderError` naming ``what`` and the file if it is missing or is not
    that kind of file (``fmt``: the expected ``format`` field)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise FolderError(f"{what} '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FolderError(f"cannot read {what} '{path}': {exc}") from None
    if fmt is not None and (not isinstance(obj, dict) or obj.get("format") != fmt):
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise FolderError(f"{what} '{path}' is not a {fmt} file (format {found!r})")
    return obj


class PartialLabelFolder:
    """Images of a folder with the partial labels of a labels folder (``fastral.labels import`` output).

    ``image(i)`` / ``label(i)`` serve image ``i`` of ``labelled.json``'s ``images`` list (float32 ``[3, H, W]``
    ImageNet-normalised; int64 ``[H, W]`` with 255 outside the labelled regions), read from disk on every call
    so memory does not grow with the folder. Images may have different sizes: train on crops.
    """

    def __init__(self, images_root: str | Path, labels_root: str | Path):
        self.root, self.labels_root = Path(images_root), Path(labels_root)
        if not self.root.is_dir():
            raise FolderError(f"images folder '{self.root}' does not exist or is not a folder")
        state = read_json(self.labels_root / LABELLED_FILE, "labels file", LABELLED_FORMAT)
        self.name, self.split = "folder", str(self.labels_root)
        self.class_names = tuple(state["class_names"])
        self.num_classes = len(self.class_names)
        self.entries = state["images"]
        if not self.entries:
            raise FolderError(f"labels file '{self.labels_root / LABELLED_FILE}' lists no labelled image")
        index = {e["image"]: i for i, e in enumerate(self.entries)}
        self.regions = [(index[r["image"]], box_tuple(r["box"])) for r in state["regions"]]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"PartialLabelFolder(images={len(self)}, regions={len(self.regions)}, classes={self.num_classes}, "
            f"root={str(self.root)!r}, labels={str(self.labels_root)!r})"
        )

    def path(self, i: int) -> str:
        return str(self.root / self.entries[i]["image"])

    def image(self, i: int) -> torch.Tensor:
        return normalize(read_image(self.path(i)))

    def label(self, i: int) -> torch.Tensor:
        entry = self.entries[i]
        path = self.labels_root / entry["label"]
        with _open(path, "label") as im:
            if (im.width, im.height) != (entry["width"], entry["height"]):
                raise ImageFileError(
                    f"label file '{path}' is {im.width}x{im.height}, expected {entry['width']}x{entry['height']}"
                )
            ids = np.array(im)
        bad = np.unique(ids[(ids >= self.num_classes) & (ids != IGNORE_INDEX)])
        if bad.size:
            raise ImageFileError(f"label file '{path}' holds class ids {bad.tolist()[:10]} >= {self.num_classes}")
        return torch.from_numpy(ids.astype(np.int64))

    def training_items(self) -> list[TrainItem]:
        """One item per labelled region: its crop contains the region; labels are read per batch."""
        return [TrainItem(i, None, box) for i, box in self.regions]
