"""Region bookkeeping: region ids <-> image boxes, and the store of regions the oracle has labelled.

Every index here is a **data-set index** into one split's data-set object (``ds.image(i)``): ``image`` is a
data-set image index and ``region_id`` a data-set region id, numbered exactly as :func:`fastral.region_grid`
documents (row-major within an image, images one after another: ``r = (image * ny + iy) * nx + ix``), so the
featurizer ops' region outputs on a batch of the whole split line up with these ids. An AL pool (e.g. D_V) is a
list of data-set image indices; positions *within* a pool are never used as ids here, which rules out the
pool-index/data-set-index mix-ups behind wrong labels in other toolkits.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch

from ..ops import region_grid
from .base import IGNORE_INDEX

STATE_FORMAT = "fastral-labelled-regions/1"


class Region(NamedTuple):
    """A region's box in its image: rows ``y .. y+h-1``, columns ``x .. x+w-1`` of data-set image ``image``."""

    image: int
    y: int
    x: int
    h: int
    w: int


class TrainItem(NamedTuple):
    """One training example: a data-set image index, its label with unlabelled pixels = 255 (None: the data
    set's full label, read when the batch is made, for supervised training without holding every label in
    memory), and optionally the box ``(y, x, h, w)`` of the labelled region a random crop must contain (None:
    any labelled pixel)."""

    image: int
    label: torch.Tensor | None = None
    box: tuple[int, int, int, int] | None = None


def _as_int(value: Any, what: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {value!r}") from None


class RegionGrid:
    """The grid of ``(h, w)`` regions over ``num_images`` images of ``height x width`` (remainders dropped).

    Region ids are data-set region ids: ``region_id = (image * ny + iy) * nx + ix`` with ``image`` a data-set
    image index (see the module docstring).
    """

    def __init__(self, num_images: int, height: int, width: int, region: tuple[int, int]):
        self.num_images, self.height, self.width = int(num_images), int(height), int(width)
        self.region = (int(region[0]), int(region[1]))
        self.ny, self.nx = region_grid(self.height, self.width, self.region)
        if self.ny < 1 or self.nx < 1:
            raise ValueError(f"region {self.region} (h, w) does not fit in {height}x{width} (h x w) images")
        self.per_image = self.ny * self.nx

    def __len__(self) -> int:
        return self.num_images * self.per_image

    def __repr__(self) -> str:
        return (
            f"RegionGrid(images={self.num_images}, image={self.height}x{self.width}, region={self.region}, "
            f"grid={self.ny}x{self.nx})"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, RegionGrid) and self.key() == other.key()

    def key(self) -> dict:
        """What identifies the grid (stored with saved states and checked on load)."""
        return {"num_images": self.num_images, "height": self.height, "width": self.width, "region": list(self.region)}

    def check_image(self, image) -> int:
        """``image`` checked to be a data-set image index of this grid."""
        i = _as_int(image, "image index")
        if not 0 <= i < self.num_images:
            raise IndexError(f"data-set image index {i} out of range [0, {self.num_images})")
        return i

    def check_ids(self, region_ids) -> np.ndarray:
        """``region_ids`` as an int64 array, checked to be data-set region ids of this grid."""
        ids = np.asarray(region_ids if not isinstance(region_ids, torch.Tensor) else region_ids.cpu().numpy())
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"region ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64).reshape(-1)
        bad = ids[(ids < 0) | (ids >= len(self))]
        if bad.size:
            raise IndexError(f"data-set region ids {bad[:5].tolist()} out of range [0, {len(self)}) for {self!r}")
        return ids

    def region_id(self, image: int, iy: int, ix: int) -> int:
        """The data-set region id of grid cell ``(iy, ix)`` of data-set image ``image``."""
        image = self.check_image(image)
        if not (0 <= iy < self.ny and 0 <= ix < self.nx):
            raise IndexError(f"grid cell ({iy}, {ix}) out of range ({self.ny}, {self.nx})")
        return (image * self.ny + iy) * self.nx + ix

    def cells(self, region_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image, iy, ix)`` int64 arrays of data-set region ids."""
        ids = self.check_ids(region_ids)
        image, cell = np.divmod(ids, self.per_image)
        iy, ix = np.divmod(cell, self.nx)
        return image, iy, ix

    def locate(self, region_id) -> Region:
        """The :class:`Region` (data-set image index and box) of one data-set region id."""
        image, iy, ix = (int(a[0]) for a in self.cells([_as_int(region_id, "region id")]))
        rh, rw = self.region
        return Region(image, iy * rh, ix * rw, rh, rw)

    def boxes(self, region_ids) -> np.ndarray:
        """``[n, 5]`` int64 rows ``(image, y, x, h, w)`` of data-set region ids, vectorised :meth:`locate`."""
        image, iy, ix = self.cells(region_ids)
        rh, rw = self.region
        return np.stack([image, iy * rh, ix * rw, np.full_like(image, rh), np.full_like(image, rw)], 1)

    def image_of(self, region_ids) -> np.ndarray:
        """Data-set image index of each data-set region id."""
        return self.check_ids(region_ids) // self.per_image

    def ids_of_images(self, images: Iterable[int]) -> np.ndarray:
        """Every data-set region id of the given data-set images, image by image in grid order."""
        images = np.asarray([self.check_image(i) for i in images], np.int64)
        return (images[:, None] * self.per_image + np.arange(self.per_image)).reshape(-1)

    def mask(self, image: int, region_ids) -> torch.Tensor:
        """Bool ``[height, width]`` mask of the pixels of ``region_ids``, which must all lie in ``image``."""
        image = self.check_image(image)
        owner, iy, ix = self.cells(region_ids)
        if (owner != image).any():
            raise ValueError(
                f"region ids {np.asarray(region_ids)[owner != image][:5].tolist()} are not in image {image}"
            )
        cells = torch.zeros(self.ny, self.nx, dtype=torch.bool)
        cells[torch.from_numpy(iy), torch.from_numpy(ix)] = True
        rh, rw = self.region
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        mask[: self.ny * rh, : self.nx * rw] = cells.repeat_interleave(rh, 0).repeat_interleave(rw, 1)
        return mask

    def class_counts(self, label: torch.Tensor | np.ndarray, region_ids, num_classes: int) -> np.ndarray:
        """Ground-truth pixels per class of each region of one image's ``label``: int64 ``[n, num_classes + 1]``;
        the last column counts void (ignore) pixels, as RALIS's labelled-set class distributions need."""
        lab = label.numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        boxes = self.boxes(region_ids)
        out = np.zeros((len(boxes), num_classes + 1), np.int64)
        for k, (_, y, x, h, w) in enumerate(boxes):
            counts = np.bincount(lab[y : y + h, x : x + w].ravel(), minlength=256)
            out[k, :num_classes] = counts[:num_classes]
            out[k, num_classes] = counts[num_classes:].sum()  # void, whatever its raw value
        return out


class LabeledRegions:
    """The regions of one data set the oracle has labelled, in labelling order.

    All ids are data-set region ids of ``dataset.regions`` (see the module docstring). The oracle reveals only
    these regions: :meth:`training_label` sets every other pixel to 255.

    Args:
        dataset: the split whose regions are labelled (anything with ``label(i)``, ``num_classes``,
            ``regions``, ``name`` and ``split``, e.g. a :class:`~fastral.data.SegmentationDataset`).
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.grid: RegionGrid = dataset.regions
        self.num_classes = dataset.num_classes
        self._order: list[int] = []  # data-set region ids, labelling order
        self._by_image: dict[int, list[int]] = {}  # data-set image index -> its labelled region ids
        self._counts: dict[int, np.ndarray] = {}  # region id -> [num_classes + 1] ground-truth pixel counts

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, region_id) -> bool:
        return _as_int(region_id, "region id") in self._counts

    def __iter__(self):
        return iter(self._order)

    def __repr__(self) -> str:
        return f"LabeledRegions({len(self)} regions in {len(self._by_image)} images of {self.dataset!r})"

    @property
    def region_ids(self) -> list[int]:
        """Labelled data-set region ids in labelling order."""
        return list(self._order)

    def add(self, region_ids) -> list[int]:
        """Label data-set region ids (the oracle reveals them). Returns them as ints.

        Raises if an id is out of range, repeated, or already labelled: spending budget twice on one region is a
        bug in the caller's candidate bookkeeping, so it is never silently skipped.
        """
        ids = self.grid.check_ids(region_ids)
        unique, seen = np.unique(ids, return_counts=True)
        if (seen > 1).any():
            raise ValueError(f"data-set region ids {unique[seen > 1][:5].tolist()} repeated in one call to add()")
        again = [int(r) for r in ids if int(r) in self._counts]
        if again:
            raise ValueError(f"data-set region ids {again[:5]} are already labelled")
        images = self.grid.image_of(ids)
        counts = {}  # computed for every image before anything is stored, so a failed read changes nothing
        for image in np.unique(images):
            in_image = ids[images == image]
            per_region = self.grid.class_counts(self.dataset.label(int(image)), in_image, self.num_classes)
            counts.update(zip(in_image.tolist(), per_region, strict=True))
        for r, image in zip(ids.tolist(), images.tolist(), strict=True):
            self._counts[r] = counts[r]
            self._by_image.setdefault(image, []).append(r)
        self._order.extend(ids.tolist())
        return ids.tolist()

    def images(self) -> list[int]:
        """Sorted data-set image indices with at least one labelled region."""
        return sorted(self._by_image)

    def regions_of_image(self, image: int) -> list[int]:
        """Labelled data-set region ids of data-set image ``image`` (sorted)."""
        return sorted(self._by_image.get(self.grid.check_image(image), []))

    def unlabelled_ids(self, images: Iterable[int]) -> np.ndarray:
        """Data-set region ids of the given data-set images that are not labelled yet (a pool's candidates)."""
        ids = self.grid.ids_of_images(images)
        return ids[~np.isin(ids, np.fromiter(self._counts, np.int64, len(self._counts)))]

    def mask(self, image: int) -> torch.Tensor:
        """Bool ``[H, W]``: True on the labelled pixels of data-set image ``image``."""
        return self.grid.mask(image, self.regions_of_image(image))

    def training_label(self, image: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """The label of data-set image ``image`` as the oracle reveals it: unlabelled pixels are 255."""
        label = self.dataset.label(image).to(dtype)
        label[~self.mask(image)] = IGNORE_INDEX
        return label

    def training_items(self, region_ids=None) -> list[TrainItem]:
        """Training examples with uint8 labels (to keep many in memory).

        ``region_ids=None``: one item per labelled image, crops around any of its labelled pixels (the final
        training on everything labelled). Otherwise one item per given labelled region (e.g. the ones just
        added), whose crop must contain that region; each item's label reveals all labelled regions of its
        image, as the official code does.
        """
        if region_ids is None:
            return [TrainItem(i, self.training_label(i, torch.uint8)) for i in self.images()]
        ids = self.grid.check_ids(region_ids)
        missing = [int(r) for r in ids if int(r) not in self._counts]
        if missing:
            raise ValueError(f"data-set region ids {missing[:5]} are not labelled")
        labels = {int(i): self.training_label(int(i), torch.uint8) for i in np.unique(self.grid.image_of(ids))}
        return [TrainItem(b[0], labels[b[0]], tuple(b[1:])) for b in self.grid.boxes(ids).tolist()]

    def region_class_counts(self, region_ids=None) -> np.ndarray:
        """Ground-truth pixel counts ``[n, num_classes + 1]`` (last column: void) of labelled regions, in
        labelling order (or the order of ``region_ids``)."""
        ids = self._order if region_ids is None else self.grid.check_ids(region_ids).tolist()
        if not ids:
            return np.zeros((0, self.num_classes + 1), np.int64)
        try:
            return np.stack([self._counts[r] for r in ids])
        except KeyError as exc:
            raise ValueError(f"data-set region id {exc.args[0]} is not labelled") from None

    def class_histogram(self) -> np.ndarray:
        """Labelled pixels per class, int64 ``[num_classes]`` (void excluded)."""
        return self.region_class_counts().sum(0)[: self.num_classes]

    def state_dict(self) -> dict:
        """JSON-serialisable state: the grid and the labelled region ids in labelling order."""
        return {
            "format": STATE_FORMAT,
            "dataset": self.dataset.name,
            "split": self.dataset.split,
            "grid": self.grid.key(),
            "region_ids": list(self._order),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the labelled set with a saved one; raises if it was saved for another grid or data set."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a labelled-region state: format {state.get('format')!r}, expected {STATE_FORMAT!r}")
        where = (state.get("dataset"), state.get("split"))
        if where != (self.dataset.name, self.dataset.split) or state.get("grid") != self.grid.key():
            raise ValueError(
                f"labelled-region state is for {where[0]}/{where[1]} with grid {state.get('grid')}, but this "
                f"store is for {self.dataset.name}/{self.dataset.split} with grid {self.grid.key()}"
            )
        self._order, self._by_image, self._counts = [], {}, {}
        self.add(state["region_ids"])
