"""An HDF5 cache of per-region features, keyed by data set, image and a hash of the segmentation weights.

Work that does not change — the initial network's features of a whole pool, the state set's features under
weights seen before — is computed once and shared by every policy and seed that meets the same weights.

File layout (one HDF5 file, any number of data sets and weights)::

    /                                   attrs: schema (SCHEMA_VERSION)
    /<namespace>/<weights hash>/        one group per data set (+ region spec) and weights
        base          [images, R, D]    float32, chunked per image, gzip-compressed
        class_counts  [images, R, C+1]  float32 raw predicted pixel counts (schema 2; schema 1 stored fractions
                                        as ``class_dist``)
        entropy_mean  [images, R]       float32
        checksum      [images]          uint32 CRC-32 of the image's rows, 0 = not written

Safety:
  * writers take an exclusive lock (``<file>.lock``, fcntl) and readers a shared one, so any number of processes
    read concurrently and never see a write in progress;
  * an image's checksum is written after its rows and checked on every read, so rows left half-written by a
    killed run read as missing (recomputed), never as wrong features;
  * a cache file that cannot be opened (truncated) or has another schema version is moved aside and rebuilt, with
    a warning; so is one that opens but fails while reading or writing features (a damaged chunk or index);
  * a path that is not a fastral cache (a folder, a non-HDF5 file, another program's HDF5 file) is refused, never
    moved or overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from .features import RegionFeatures

SCHEMA_VERSION = 2  # 2: class_counts (raw counts, the official KL inputs) replaced class_dist (fractions)
FIELDS = ("base", "class_counts", "entropy_mean")  # RegionFeatures._fields
DAMAGE = (OSError, KeyError, RuntimeError, TypeError, ValueError)  # what h5py raises on a damaged file


SPACE_MARGIN = 4 << 20  # bytes kept free beyond the rows: HDF5's metadata, chunk index and flush
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class FeatureCacheError(ValueError):
    """The cache path holds something that is not a fastral feature cache."""


class CacheSpaceError(OSError):
    """Too little free space for a cache write (errno ENOSPC); nothing was written."""


def _refuse_foreign(path: Path) -> None:
    """Raise :class:`FeatureCacheError` if ``path`` holds something other than a fastral cache (checked before
    the cache's lock file is made, so a refused path gets nothing new beside it)."""
    if path.is_dir():
        raise FeatureCacheError(f"'{path}' is a directory, not a feature cache file")
    if not path.exists():
        return
    with open(path, "rb") as f:  # h5py writes the signature at offset 0 (no user block)
        if f.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise FeatureCacheError(
                f"'{path}' is not an HDF5 file, so not a fastral feature cache: refusing to "
                "overwrite it; give a new file name"
            )
    try:
        with h5py.File(path, "r", locking=False) as f:
            ours = "schema" in f.attrs
    except OSError:  # an HDF5 signature h5py cannot open: a cache truncated by a kill (moved aside later)
        return
    if not ours:
        raise FeatureCacheError(
            f"'{path}' is an HDF5 file without fastral's schema attribute, not a feature cache: "
            "refusing to overwrite it; give a new file name"
        )


def weights_hash(model: torch.nn.Module) -> str:
    """A short SHA-256 of a model's parameters and buffers (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: 0-dim buffers (BatchNorm)
    return digest.hexdigest()[:20]


def _checksum(rows: Sequence[np.ndarray]) -> int:
    crc = 0
    for r in rows:
        crc = zlib.crc32(np.ascontiguousarray(r).tobytes(), crc)
    return crc or 1  # 0 marks "not written"


class FeatureCache:
    """Per-image region features of one data set (``namespace``) under any number of weights.

    Args:
        path: the HDF5 file (created if missing).
        namespace: names the data set and everything the features depend on besides the weights (split,
            image list, region and pool sizes): e.g. ``"camvid/train/90x80/8x8/<hash of file names>"``.
        num_images: images in the data set; ``regions``: regions per image.
    """

    def __init__(self, path: str | os.PathLike, namespace: str, num_images: int, regions: int):
        self.path = Path(path)
        self.namespace, self.num_images, self.regions = namespace.strip("/"), num_images, regions
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._validate_file()
        self.hits = self.misses = 0

    @contextlib.contextmanager
    def _locked(self, exclusive: bool):
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _validate_file(self) -> None:
        """Create the file, or move an unreadable / other-schema cache aside and start afresh (with a warning).
        A path that is not a fastral cache (a folder, a file that is not HDF5, an HDF5 file without fastral's
        schema attribute) is never moved or overwritten: :class:`FeatureCacheError`."""
        _refuse_foreign(self.path)
        with self._locked(exclusive=True):
            problem = None
            if self.path.exists():
                try:
                    with h5py.File(self.path, "r", locking=False) as f:
                        schema = f.attrs.get("schema")
                        if schema != SCHEMA_VERSION:
                            problem = f"schema version {schema!r}, expected {SCHEMA_VERSION}"
                except OSError as exc:  # an HDF5 signature that h5py cannot open: our file, truncated by a kill
                    problem = f"unreadable ({exc})"
            if problem is not None:
                self._move_aside(problem)
            if not self.path.exists():
                with h5py.File(self.path, "w", locking=False) as f:
                    f.attrs["schema"] = SCHEMA_VERSION

    def _move_aside(self, problem: str) -> None:
        aside = self.path.with_name(self.path.name + ".stale")
        os.replace(self.path, aside)
        warnings.warn(f"feature cache {self.path} is {problem}: moved to {aside.name} and rebuilt", stacklevel=4)

    def _rebuild(self, problem: str) -> None:
        """Move a file that opened but fails inside (a damaged chunk or index) aside and start afresh."""
        with self._locked(exclusive=True):
            if self.path.exists():
                self._move_aside(problem)
        self._validate_file()

    def lookup(self, weights: str, images: Sequence[int]) -> dict[int, RegionFeatures]:
        """Cached features of those ``images`` (data-set image indices) that were completely written."""
        found: dict[int, RegionFeatures] = {}
        with self._locked(exclusive=False), h5py.File(self.path, "r", locking=False) as f:
            group = f.get(f"{self.namespace}/{weights}")
            if group is not None and "checksum" in group:  # no checksum yet: a first write was interrupted
                sums = group["checksum"][:]
                for image in images:
                    if not sums[image]:
                        continue
                    rows = [group[name][image] for name in FIELDS]
                    if _checksum(rows) != sums[image]:
                        warnings.warn(
                            f"feature cache {self.path}: image {image} failed its checksum, recomputing", stacklevel=2
                        )
                        continue
                    found[image] = RegionFeatures(*(torch.from_numpy(r) for r in rows))
        self.hits += len(found)
        self.misses += len(images) - len(found)
        return found

    def store(self, weights: str, images: Sequence[int], features: RegionFeatures) -> None:
        """Store the features of ``images`` (their regions concatenated in image order, as computed).

        Raises :class:`CacheSpaceError` before writing anything when the file system has less free space than
        the rows could take uncompressed (h5py crashes the process, SIGSEGV in its flush, on a full disk)."""
        rows = {name: getattr(features, name).detach().cpu().float().numpy() for name in FIELDS}
        need = sum(r.nbytes for r in rows.values()) + SPACE_MARGIN
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise CacheSpaceError(
                errno.ENOSPC,
                f"no space left for the feature cache {self.path}: {len(images)} images need up to "
                f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free",
            )
        with self._locked(exclusive=True), h5py.File(self.path, "a", locking=False) as f:
            group = f.require_group(f"{self.namespace}/{weights}")
            for name, data in rows.items():
                if name not in group:
                    shape = (self.num_images, self.regions, *data.shape[1:])
                    group.create_dataset(
                        name, shape, np.float32, chunks=(1, *shape[1:]), compression="gzip", compression_opts=4
                    )
            if "checksum" not in group:
                group.create_dataset("checksum", (self.num_images,), np.uint32, fillvalue=0)
            for k, image in enumerate(images):
                per_image = [rows[name][k * self.regions : (k + 1) * self.regions] for name in FIELDS]
                for name, r in zip(FIELDS, per_image, strict=True):
                    group[name][image] = r
                f.flush()  # rows reach the file before the checksum that vouches for them
                group["checksum"][image] = _checksum(per_image)
            f.flush()

    def features(
        self, weights: str, images: Sequence[int], compute: Callable[[list[int]], RegionFeatures]
    ) -> RegionFeatures:
        """Features of ``images`` in order: cached ones read, the others computed with ``compute(missing)``
        (which returns their regions concatenated in the given order) and stored."""
        images = [int(i) for i in images]
        try:
            found = self.lookup(weights, images)
        except DAMAGE as exc:
            self._rebuild(f"damaged ({type(exc).__name__}: {exc})")
            found = {}
        missing = [i for i in images if i not in found]
        if missing:
            fresh = RegionFeatures(*(t.detach().cpu().float() for t in compute(missing)))
            try:
                self.store(weights, missing, fresh)
            except CacheSpaceError:
                raise  # a full disk is not a damaged file: keep the cache, say so
            except DAMAGE as exc:
                self._rebuild(f"damaged ({type(exc).__name__}: {exc})")
                self.store(weights, missing, fresh)
            for k, image in enumerate(missing):
                found[image] = RegionFeatures(*(t[k * self.regions : (k + 1) * self.regions] for t in fresh))
        return RegionFeatures(*(torch.cat([getattr(found[i], name) for i in images]) for name in FIELDS))
