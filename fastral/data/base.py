"""The data-set object every loader returns, and the file reading they share.

Conventions, the same for every data set:
  * sizes are ``(H, W)``; images come out as float32 ``[3, H, W]`` normalised with the ImageNet mean/std,
    labels as int64 ``[H, W]`` train ids with :data:`IGNORE_INDEX` (255) for void/unlabelled pixels;
  * an image index is an index into *this data set* (one split), in sorted file order, never filesystem order.
"""

from __future__ import annotations

import hashlib
import operator
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .presets import DatasetPreset

IGNORE_INDEX = 255  #: label of void / unlabelled pixels in every data set's labels
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


class DataLayoutError(FileNotFoundError):
    """A data root or folder is missing or empty; the message shows the expected layout and where to get the data."""


class ImageFileError(ValueError):
    """An image or label file cannot be read, has the wrong size or holds unexpected values; names the file."""


def layout_error(preset: DatasetPreset, problem: str) -> DataLayoutError:
    return DataLayoutError(
        f"{preset.name}: {problem}\nExpected layout:\n{textwrap.indent(preset.layout, '  ')}\n{preset.how_to_get}"
    )


def require_dir(preset: DatasetPreset, root: str | Path | None, *parts: str) -> Path:
    """``root/parts...`` as a Path; :class:`DataLayoutError` if the root or that folder does not exist."""
    if root is None:
        raise layout_error(preset, "no data root given (pass root=... / --data-root).")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(preset, f"data root '{root}' does not exist or is not a folder.")
    folder = root.joinpath(*parts)
    if not folder.is_dir():
        raise layout_error(preset, f"folder '{folder}' not found under data root '{root}'.")
    return folder


def check_split(preset: DatasetPreset, split: str) -> None:
    if split not in preset.splits:
        raise ValueError(f"{preset.name}: argument 'split' must be one of {preset.splits}, got {split!r}")


def png_files(folder: Path) -> list[Path]:
    """The PNG files directly in ``folder``, sorted by name; ``.PNG`` and other spellings of the suffix count."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())


def pair_files(preset: DatasetPreset, images, label_of) -> list[tuple[Path, Path]]:
    """``(image, label_of(image))`` for each image path, in the given order; raises if a label file is missing
    or a file name is not valid UTF-8 (split files and results store names as text)."""
    items = []
    for image in images:
        try:
            image.as_posix().encode("utf-8")
        except UnicodeEncodeError:
            raise ImageFileError(f"{preset.name}: the file name {str(image)!r} is not valid UTF-8; rename it") from None
        label = label_of(image)
        if not label.is_file():
            raise ImageFileError(f"{preset.name}: image '{image}' has no label file '{label}'")
        items.append((image, label))
    return items


def _open(path: Path, what: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # missing, truncated or not an image
        raise ImageFileError(f"cannot read {what} file '{path}': {exc}") from exc
    return im


def _check_size(im: Image.Image, path: Path, what: str, size: tuple[int, int]) -> None:
    if (im.height, im.width) != tuple(size):
        raise ImageFileError(
            f"{what} file '{path}' is {im.width}x{im.height} (width x height), expected {size[1]}x{size[0]}"
        )


def read_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The image at ``path`` as uint8 ``[H, W, 3]``; :class:`ImageFileError` if unreadable or not ``size``."""
    with _open(path, "image") as im:
        _check_size(im, path, "image", size)
        return np.array(im.convert("RGB"))


def read_ids(path: Path, size: tuple[int, int], lut: np.ndarray) -> np.ndarray:
    """A single-channel class-id PNG mapped through ``lut`` (int16 ``[256]``, -1 = not a valid raw id) to uint8.

    One table lookup for the whole image. :class:`ImageFileError` if the file is unreadable, not ``size``, not
    single-channel (colour-coded labels are not class ids), or holds a raw id the table marks invalid.
    """
    with _open(path, "label") as im:
        _check_size(im, path, "label", size)
        if im.mode not in ("L", "P"):
            raise ImageFileError(
                f"label file '{path}' has PIL mode {im.mode!r}; expected 8-bit class ids (mode 'L' or 'P'), "
                "not a colour-coded label image"
            )
        raw = np.asarray(im)
    mapped = lut[raw]
    if mapped.min() < 0:
        bad = np.unique(raw[mapped < 0])
        raise ImageFileError(f"label file '{path}' holds unexpected raw label values {bad.tolist()[:10]}")
    return mapped.astype(np.uint8)


def normalize(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` normalised with the ImageNet mean/std."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255)
    return t.sub_(_MEAN).div_(_STD)


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize` for ``[..., 3, H, W]``: uint8 ``[..., H, W, 3]`` for display."""
    rgb = (image.detach().cpu() * _STD + _MEAN).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return rgb.movedim(-3, -1)


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return round(size[0] * scale), round(size[1] * scale)


class SegmentationDataset(torch.utils.data.Dataset):
    """One split of a segmentation data set: ``len(ds)`` images of one size, with labels.

    A ``torch.utils.data.Dataset``: ``ds[i]`` is ``(ds.image(i), ds.label(i))``, so a ``DataLoader``, a
    ``Subset`` or another library's data-set wrapper takes it as it is.

    Attributes: ``name``, ``split``, ``root``, ``num_classes``, ``class_names``, ``height``, ``width`` (after
    ``scale``), ``raw_size`` (on disk), ``region`` (the AL region ``(h, w)`` at this scale) and ``regions``
    (the :class:`~fastral.data.RegionGrid` of the whole split).

    Subclasses implement ``_read_raw(i)`` (uint8 RGB ``[h, w, 3]`` and train ids ``[h, w]`` at ``raw_size``)
    and ``path(i)``. With ``cache`` every image is decoded once, up front, and kept as uint8 (CamVid: ~190 MB);
    otherwise each access reads the files again.
    """

    def __init__(
        self,
        preset: DatasetPreset,
        split: str,
        num_images: int,
        *,
        root: str | Path | None = None,
        class_names: tuple[str, ...] | None = None,
        size: tuple[int, int] | None = None,
        region: tuple[int, int] | None = None,
        scale: float = 1.0,
        cache: bool | None = None,
        progress: bool = True,
    ):
        self.preset = preset
        self.name = preset.name
        self.split = split
        self.root = None if root is None else Path(root)
        self.class_names = tuple(class_names or preset.class_names)
        self.num_classes = len(self.class_names)
        self.raw_size = tuple(size or preset.size)
        if not scale > 0:
            raise ValueError(f"{self.name}: argument 'scale' must be > 0, got {scale!r}")
        self.scale = float(scale)
        self.height, self.width = _scaled(self.raw_size, self.scale)
        self.region = tuple(region) if region is not None else self._default_region()
        if not (0 < self.region[0] <= self.height and 0 < self.region[1] <= self.width):
            raise ValueError(
                f"{self.name}: region {self.region} (h, w) must fit in the {self.height}x{self.width} (h x w) images"
            )
        self._num_images = num_images
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        if preset.cache if cache is None else cache:
            self._fill_cache(progress)

    def _default_region(self) -> tuple[int, int]:
        """The preset region scaled like the images, rounded to whole pixels, as long as every image keeps the
        preset's number of regions (so region ids mean the same at every scale)."""
        region = _scaled(self.preset.region, self.scale)
        raw_grid = [n // r for n, r in zip(self.raw_size, self.preset.region, strict=True)]
        grid = [n // r if r else 0 for n, r in zip((self.height, self.width), region, strict=True)]
        if grid != raw_grid:
            raise ValueError(
                f"{self.name}: at scale {self.scale} the preset region {self.preset.region} (h, w) becomes {region}, "
                f"a {grid[0]}x{grid[1]} grid instead of {raw_grid[0]}x{raw_grid[1]}; choose another scale or pass "
                "region=(h, w) explicitly"
            )
        return region

    def _fill_cache(self, progress: bool) -> None:
        n, (h, w) = len(self), (self.height, self.width)
        images = np.empty((n, h, w, 3), np.uint8)
        labels = np.empty((n, h, w), np.uint8)
        for i in tqdm(range(n), desc=f"loading {self.name}/{self.split}", disable=not progress, leave=False):
            images[i], labels[i] = self._read(i)
        self._images, self._labels = images, labels

    # -- to implement ------------------------------------------------------------------------------------------
    def _read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def path(self, i: int) -> str:
        """Where image ``i`` comes from (a file path, or a pseudo-path for generated data)."""
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_images

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, images={len(self)}, size={self.height}x{self.width}, "
            f"classes={self.num_classes}, region={self.region}, root={str(self.root) if self.root else None!r})"
        )

    def relpath(self, i: int) -> str:
        """``path(i)`` relative to the data root, with '/' separators: stable across machines (split files)."""
        p = Path(self.path(i))
        return p.relative_to(self.root).as_posix() if self.root is not None else p.as_posix()

    def content_hash(self) -> str:
        """A SHA-256 of every image as the data set serves it (at this size), in index order: it changes when any
        image's content does, whatever its file name (feature caches are keyed by it). Here the decoded pixels;
        data sets read from files hash the files' bytes instead (decoding every frame would slow each start)."""
        digest = hashlib.sha256(f"{self.height}x{self.width}:{len(self)}".encode())
        if self._images is not None:  # already decoded in memory: hashing costs a memory pass
            digest.update(np.ascontiguousarray(self._images).data)
        else:
            for i in range(len(self)):
                digest.update(np.ascontiguousarray(self.image_uint8(i)).data)
        return digest.hexdigest()[:16]

    def index(self, i) -> int:
        """``i`` checked to be an image index of this data set."""
        try:
            j = operator.index(i)
        except TypeError:
            raise TypeError(f"{self.name}/{self.split}: image index must be an int, got {i!r}") from None
        if not 0 <= j < len(self):
            raise IndexError(f"{self.name}/{self.split}: image index {j} out of range [0, {len(self)})")
        return j

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rgb, ids = self._read_raw(i)
        if (self.height, self.width) != rgb.shape[:2]:
            wh = (self.width, self.height)
            rgb = np.array(Image.fromarray(rgb).resize(wh, Image.Resampling.BILINEAR))
            ids = np.array(Image.fromarray(ids).resize(wh, Image.Resampling.NEAREST))
        return rgb, ids

    def _get(self, i) -> tuple[np.ndarray, np.ndarray]:
        i = self.index(i)
        if self._images is not None:
            return self._images[i], self._labels[i]
        return self._read(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, label)`` of image ``i``: float32 ``[3, H, W]`` (ImageNet-normalised) and int64 ``[H, W]``
        (:data:`IGNORE_INDEX` for void); one read for both."""
        rgb, ids = self._get(i)
        return normalize(rgb), torch.from_numpy(ids.astype(np.int64))

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as float32 ``[3, H, W]``, normalised with the ImageNet mean/std."""
        return normalize(self._get(i)[0])

    def image_uint8(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``[H, W, 3]`` (for display)."""
        return self._get(i)[0]

    def label(self, i: int) -> torch.Tensor:
        """Label of image ``i`` as int64 ``[H, W]``: train ids, :data:`IGNORE_INDEX` for void."""
        return torch.from_numpy(self._get(i)[1].astype(np.int64))

    def images(self, indices) -> torch.Tensor:
        """``[B, 3, H, W]`` stack of :meth:`image`."""
        return torch.stack([self.image(i) for i in indices])

    def labels(self, indices) -> torch.Tensor:
        """``[B, H, W]`` stack of :meth:`label`."""
        return torch.stack([self.label(i) for i in indices])

    def class_counts(self, i: int) -> np.ndarray:
        """Pixels of each class in the label of image ``i``, int64 ``[num_classes]`` (void not counted)."""
        ids = self._get(i)[1].ravel()
        return np.bincount(ids, minlength=256)[: self.num_classes].astype(np.int64)

    @property
    def regions(self):
        """The region grid of this split (region ids are data-set region ids of this split)."""
        from .regions import RegionGrid

        return RegionGrid(len(self), self.height, self.width, self.region)


class PairedFileDataset(SegmentationDataset):
    """A data set of (image file, label file) pairs whose labels map to train ids through one lookup table."""

    def __init__(self, preset: DatasetPreset, split: str, items: list[tuple[Path, Path]], lut: np.ndarray, **kw):
        if not items:
            raise layout_error(preset, f"no images found for split {split!r} under '{kw.get('root')}'.")
        self._items = items
        self._lut = lut
        super().__init__(preset, split, len(items), **kw)

    def path(self, i: int) -> str:
        return str(self._items[self.index(i)][0])

    def content_hash(self) -> str:
        """A SHA-256 of the image files' bytes (decoding is deterministic given them and the size), in index
        order, whether or not the images are held in memory."""
        digest = hashlib.sha256(f"{self.height}x{self.width}:{len(self)}".encode())
        for image, _ in self._items:
            with open(image, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        return digest.hexdigest()[:16]

    def label_path(self, i: int) -> str:
        return str(self._items[self.index(i)][1])

    def _read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self._items[i]
        return read_rgb(image_path, self.raw_size), read_ids(label_path, self.raw_size, self._lut)


def make_lut(mapping: dict[int, int], default: int = -1) -> np.ndarray:
    """A 256-entry int16 raw-id -> train-id table; ids absent from ``mapping`` get ``default`` (-1 = invalid)."""
    lut = np.full(256, default, np.int16)
    for raw, train in mapping.items():
        lut[raw] = train
    return lut
