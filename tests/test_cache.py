"""The HDF5 feature cache: hits and misses, interrupted writes, corruption, schema changes, concurrent use."""

import multiprocessing as mp
import shutil

import h5py
import pytest
import torch

from fastral.al.cache import (
    FIELDS,
    SCHEMA_VERSION,
    CacheSpaceError,
    FeatureCache,
    FeatureCacheError,
    _checksum,
    weights_hash,
)
from fastral.al.features import RegionFeatures

R, D, C1 = 4, 7, 3


def fake_features(images):
    """Deterministic features per image, so any process can recompute and compare them."""
    rows = [torch.arange(R * (D + C1 + 1), dtype=torch.float32).reshape(R, -1) + 1000 * i for i in images]
    x = torch.cat(rows)
    return RegionFeatures(x[:, :D], x[:, D : D + C1], x[:, -1])


class Counter:
    def __init__(self):
        self.calls = []

    def __call__(self, images):
        self.calls.append(list(images))
        return fake_features(images)


def assert_features_equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_computes_each_image_once_per_weights(tmp_path):
    cache = FeatureCache(tmp_path / "f.h5", "toy/train", num_images=10, regions=R)
    compute = Counter()
    out = cache.features("w1", [3, 1, 7], compute)
    assert_features_equal(out, fake_features([3, 1, 7]))
    out = cache.features("w1", [7, 2, 3], compute)
    assert_features_equal(out, fake_features([7, 2, 3]))
    assert compute.calls == [[3, 1, 7], [2]]
    cache.features("w2", [3], compute)  # other weights: computed again
    assert compute.calls[-1] == [3]
    reopened = FeatureCache(tmp_path / "f.h5", "toy/train", num_images=10, regions=R)
    assert sorted(reopened.lookup("w1", range(10))) == [1, 2, 3, 7]


def test_half_written_rows_read_as_missing(tmp_path):
    cache = FeatureCache(tmp_path / "f.h5", "toy/train", num_images=5, regions=R)
    cache.store("w", [0, 1], fake_features([0, 1]))
    with h5py.File(tmp_path / "f.h5", "a") as f:  # a run killed after the rows, before the checksum
        f["toy/train/w/checksum"][1] = 0
        f["toy/train/w/base"][1] = 0.0
    assert sorted(cache.lookup("w", [0, 1])) == [0]


def test_corrupted_rows_fail_the_checksum(tmp_path):
    cache = FeatureCache(tmp_path / "f.h5", "toy/train", num_images=5, regions=R)
    cache.store("w", [2], fake_features([2]))
    with h5py.File(tmp_path / "f.h5", "a") as f:
        f["toy/train/w/class_counts"][2, 0, 0] += 1.0
    with pytest.warns(UserWarning, match="image 2 failed its checksum"):
        assert cache.lookup("w", [2]) == {}
    compute = Counter()
    with pytest.warns(UserWarning, match="image 2 failed its checksum"):
        assert_features_equal(cache.features("w", [2], compute), fake_features([2]))
    assert compute.calls == [[2]]
    assert sorted(cache.lookup("w", [2])) == [2]  # rewritten


def test_truncated_file_is_rebuilt_with_a_warning(tmp_path):
    path = tmp_path / "f.h5"
    FeatureCache(path, "toy", num_images=5, regions=R).store("w", [0, 1, 2, 3, 4], fake_features(range(5)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="unreadable .* rebuilt"):
        cache = FeatureCache(path, "toy", num_images=5, regions=R)
    assert cache.lookup("w", [0]) == {}
    assert (tmp_path / "f.h5.stale").exists()


@pytest.mark.parametrize("kind", ["directory", "text file", "other program's hdf5"])
def test_a_path_that_is_not_a_fastral_cache_is_refused_and_left_alone(tmp_path, kind):
    path = tmp_path / "f.h5"
    if kind == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
        message = "is a directory, not a feature cache file"
    elif kind == "text file":
        path.write_text("my notes")
        message = "is not an HDF5 file, so not a fastral feature cache: refusing to overwrite it"
    else:
        with h5py.File(path, "w") as f:
            f["data"] = [1, 2, 3]
        message = "is an HDF5 file without fastral's schema attribute, not a feature cache: refusing"
    before = sorted(p.name for p in tmp_path.rglob("*")), path.is_file() and path.read_bytes()
    with pytest.raises(FeatureCacheError, match=message):
        FeatureCache(path, "toy", num_images=5, regions=R)
    assert (sorted(p.name for p in tmp_path.rglob("*")), path.is_file() and path.read_bytes()) == before


def test_a_full_file_system_is_a_clear_error_and_the_cache_is_kept(tmp_path, monkeypatch):
    """h5py crashes (SIGSEGV in its flush) on a full disk: the cache checks the free space first."""
    path = tmp_path / "f.h5"
    cache = FeatureCache(path, "toy", num_images=5, regions=R)
    cache.store("w", [0], fake_features([0]))
    before = path.read_bytes()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1 << 20))
    with pytest.raises(CacheSpaceError, match=r"no space left for the feature cache .* MiB are free"):
        cache.features("w", [1, 2], lambda missing: fake_features(missing))
    assert path.read_bytes() == before and not (tmp_path / "f.h5.stale").exists()  # nothing written, nothing moved
    monkeypatch.undo()
    assert sorted(cache.lookup("w", [0, 1])) == [0]


def test_other_schema_version_is_rebuilt_with_a_warning(tmp_path):
    path = tmp_path / "f.h5"
    FeatureCache(path, "toy", num_images=5, regions=R).store("w", [0], fake_features([0]))
    with h5py.File(path, "a") as f:
        f.attrs["schema"] = SCHEMA_VERSION + 1
    with pytest.warns(UserWarning, match="schema version"):
        cache = FeatureCache(path, "toy", num_images=5, regions=R)
    assert cache.lookup("w", [0]) == {}


def test_schema_1_files_holding_class_fractions_are_never_read(tmp_path):
    """Schema 1 stored the predicted class *fractions* as ``class_dist``; schema 2 stores the raw counts the KL
    histograms need as ``class_counts``. An old file is moved aside, not read as counts."""
    assert SCHEMA_VERSION == 2 and FIELDS == RegionFeatures._fields == ("base", "class_counts", "entropy_mean")
    path = tmp_path / "f.h5"
    old = fake_features([0])
    with h5py.File(path, "w") as f:  # the schema-1 layout, complete and with a valid checksum
        f.attrs["schema"] = 1
        group = f.create_group("toy/w")
        rows = [old.base.numpy(), old.class_counts.numpy() / 100, old.entropy_mean.numpy()]
        for name, r in zip(("base", "class_dist", "entropy_mean"), rows, strict=True):
            group.create_dataset(name, data=r[None].repeat(5, 0))
        group.create_dataset("checksum", data=[_checksum(rows)] * 5, dtype="uint32")
    with pytest.warns(UserWarning, match=r"schema version \S*1\)?, expected 2"):
        cache = FeatureCache(path, "toy", num_images=5, regions=R)
    assert cache.lookup("w", range(5)) == {}
    compute = Counter()
    assert_features_equal(cache.features("w", [0], compute), fake_features([0]))
    assert compute.calls == [[0]]
    with h5py.File(tmp_path / "f.h5.stale", "r") as f:
        assert f.attrs["schema"] == 1 and "class_dist" in f["toy/w"]


def _worker(path, worker, rounds, queue):
    cache = FeatureCache(path, "toy", num_images=40, regions=R)
    seen = 0
    for r in range(rounds):
        images = [(worker * 7 + r * 3 + k) % 40 for k in range(5)]
        out = cache.features("shared", images, fake_features)
        expected = fake_features(images)
        seen += all(torch.equal(a, b) for a, b in zip(out, expected, strict=True))
    queue.put(seen)


def test_concurrent_processes_read_and_write_safely(tmp_path):
    path = tmp_path / "f.h5"
    FeatureCache(path, "toy", num_images=40, regions=R)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, w, 6, queue)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert sorted(queue.get() for _ in procs) == [6, 6, 6, 6]


def test_weights_hash_follows_the_weights():
    bn = torch.nn.BatchNorm1d(3)  # has a 0-dim buffer (num_batches_tracked)
    h = weights_hash(bn)
    bn.num_batches_tracked += 1
    assert weights_hash(bn) != h
    net = torch.nn.Linear(3, 2)
    h = weights_hash(net)
    assert h == weights_hash(net) and len(h) == 20
    with torch.no_grad():
        net.bias[0] += 1e-6
    assert weights_hash(net) != h


def test_damaged_chunk_inside_a_readable_file_is_rebuilt(tmp_path):
    """A file that opens but whose compressed rows cannot be decoded: rebuilt with a warning, never wrong rows."""
    path = tmp_path / "f.h5"
    cache = FeatureCache(path, "toy", num_images=5, regions=R)
    cache.store("w", [0, 1], fake_features([0, 1]))
    with h5py.File(path, "r") as f:
        info = f["toy/w/base"].id.get_chunk_info(1)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    compute = Counter()
    with pytest.warns(UserWarning, match="damaged .* rebuilt"):
        out = cache.features("w", [0, 1], compute)
    assert_features_equal(out, fake_features([0, 1]))
    assert compute.calls == [[0, 1]]  # everything recomputed: the old file was set aside
    assert (tmp_path / "f.h5.stale").exists()
