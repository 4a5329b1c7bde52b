"""The compiled CPU module itself: every instruction set it was built for, thread-count determinism, its own
argument checks, and the FASTRAL_CPU_ISA switch. The parity suites test the ISA picked at import; this file runs
the same comparisons against the float64 references on every ISA the CPU runs (fastral._C.<isa>)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastral
from fastral import backends, reference_bald, reference_region_stats
from fastral.testing import (
    DEVICE,
    KL_DELTA,
    TOLERANCE,
    assert_close,
    assert_equal,
    check_kl_histogram_against_scipy,
    ignore_mask,
    logits,
    probabilities,
)

pytestmark = pytest.mark.skipif(
    DEVICE.type != "cpu" or not fastral.available_backends()["cpp"], reason="needs the cpp backend on the CPU"
)


def _module():
    from fastral import _C

    return _C


ISAS = ["generic", "avx2"]


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Runs the public ops on one instruction set's kernels."""
    _C = _module()
    if request.param not in _C.isas:
        pytest.skip(f"{request.param} kernels not built or not supported by this CPU (runnable: {_C.isas})")
    monkeypatch.setattr(backends, "cpp_module", lambda: getattr(_C, request.param))
    return request.param


@pytest.fixture
def threads():
    """Restores torch's thread count (the kernels use as many OpenMP threads as torch does)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_module_reports_its_isa():
    _C = _module()
    assert "generic" in _C.isas
    assert _C.isa() in _C.isas
    if os.environ.get("FASTRAL_CPU_ISA", "auto") == "auto":
        assert _C.isa() == _C.isas[-1]  # the best runnable one


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_region_stats_on_every_isa(isa, dtype, from_logits, rng):
    shape = (2, 19, 45, 83)  # odd width: partial chunks at every row end
    x = logits(shape, rng, dtype) if from_logits else probabilities(shape, rng, dtype)
    mask = ignore_mask((2, 45, 83), rng)
    for m in (None, mask):
        out = fastral.region_stats(x, (22, 40), (4, 3), from_logits, m, backend="cpp")
        ref = reference_region_stats(x.double(), (22, 40), (4, 3), from_logits, m)
        assert_equal(out.counts, ref.counts, f"{isa} counts")
        assert_close(out.entropy_pool, ref.entropy_pool, "entropy", f"{isa} entropy_pool")
        assert_close(out.entropy_mean, ref.entropy_mean, "entropy", f"{isa} entropy_mean")


def test_confident_logits_and_one_class_on_every_isa(isa, rng):
    x = logits((1, 19, 16, 24), rng, confident=True)
    out = fastral.region_stats(x, (8, 8), (2, 2), backend="cpp")
    ref = reference_region_stats(x.double(), (8, 8), (2, 2))
    assert_equal(out.counts, ref.counts, "counts")
    assert float(out.entropy_pool.abs().max()) < 1e-6
    one = fastral.region_stats(logits((1, 1, 9, 9), rng), (3, 3), (1, 1), backend="cpp")
    assert float(one.entropy_mean.abs().max()) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_bald_on_every_isa(isa, dtype, from_logits, rng):
    shape = (5, 2, 19, 13, 29)
    x = logits(shape, rng, dtype, class_dim=2) if from_logits else probabilities(shape, rng, dtype, class_dim=2)
    ref_bald, ref_entropy = reference_bald(x.double(), from_logits)
    out = fastral.bald(x, from_logits=from_logits, backend="cpp")
    assert_close(out.bald, ref_bald, "bald", f"{isa} bald")
    assert_close(out.entropy, ref_entropy, "entropy", f"{isa} entropy")
    acc = fastral.BaldAccumulator(from_logits, backend="cpp")
    for t in range(shape[0]):
        acc.update(x[t])
    streamed = acc.compute()
    assert_close(streamed.bald, ref_bald, "bald", f"{isa} streamed bald")
    assert_close(streamed.entropy, ref_entropy, "entropy", f"{isa} streamed entropy")


@pytest.mark.parametrize(("value_range", "exclude_self"), [(None, False), (None, True), ((0.0, 3.0), False)])
def test_kl_histogram_on_every_isa(isa, value_range, exclude_self, rng):
    # Sizes that leave partial 6-row and 16-column tiles and a partial row panel.
    p = torch.rand(101, 19, generator=rng) ** 3
    q = p.clone() if exclude_self else torch.rand(203, 19, generator=rng) ** 3
    out = fastral.kl_histogram(p, q, 24, value_range, exclude_self, backend="cpp")
    # Float32 rounding may move a value across a bin edge, or (fixed range) across lo or hi: only those differ.
    check_kl_histogram_against_scipy(out, p, q, 24, value_range, exclude_self, KL_DELTA["float32"])


@pytest.mark.parametrize("bins", [32, 7])
def test_kl_rows_of_equal_values_go_to_the_middle_bin(isa, bins, rng):
    """One KL value per row: the widened range puts it on the middle edge, which float32 edges straddle."""
    p = torch.rand(200, 5, generator=rng) ** 3
    out = torch.as_tensor(fastral.kl_histogram(p, torch.rand(1, 5, generator=rng), bins, backend="cpp"))
    expected = torch.zeros(200, bins)
    expected[:, bins // 2] = 1.0
    assert torch.equal(out, expected)


def test_isas_agree(rng):
    """Integer outputs of every ISA are identical; float outputs agree to float32 rounding."""
    _C = _module()
    x = logits((1, 19, 37, 70), rng)
    results = []
    for name in _C.isas:
        mod = getattr(_C, name)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(backends, "cpp_module", lambda mod=mod: mod)
            results.append(fastral.region_stats(x, (12, 35), (3, 5), backend="cpp"))
    for other in results[1:]:
        assert torch.equal(results[0].counts, other.counts)
        torch.testing.assert_close(results[0].entropy_pool, other.entropy_pool, **TOLERANCE["rerun"])


def test_outputs_do_not_depend_on_thread_count(threads, rng):
    """Every output element belongs to one thread and is computed in a fixed order: bit-identical results."""
    x = logits((2, 19, 70, 96), rng)
    mask = ignore_mask((2, 70, 96), rng)
    stacked = logits((4, 1, 19, 33, 50), rng, class_dim=2)
    p, q = torch.rand(150, 20, generator=rng), torch.rand(150, 20, generator=rng)
    runs = []
    for n in (1, 2, 3, 5):
        threads(n)
        rs = fastral.region_stats(x, (35, 32), (4, 4), ignore_mask=mask, backend="cpp")
        bd = fastral.bald(stacked, backend="cpp")
        acc = fastral.BaldAccumulator(backend="cpp")
        for t in range(4):
            acc.update(stacked[t])
        st = acc.compute()
        kl = fastral.kl_histogram(p, q, 16, exclude_self=True, backend="cpp")
        runs.append([rs.counts, rs.entropy_pool, rs.entropy_mean, bd.bald, bd.entropy, st.bald, st.entropy, kl])
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_env_var_picks_the_isa():
    done = _run_python("import fastral._C as C; print(C.isa())", FASTRAL_CPU_ISA="generic")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "generic"
    bad = _run_python("import fastral._C", FASTRAL_CPU_ISA="avx9000")
    assert bad.returncode != 0
    assert "FASTRAL_CPU_ISA=avx9000" in bad.stderr


def _buffers():
    x = torch.zeros(1, 3, 8, 8)
    counts = torch.zeros(4, 3, dtype=torch.int32)
    pool = torch.zeros(4, 3, 2, 2)
    mean = torch.zeros(4)
    return x, counts, pool, mean


def _region_stats_args(**change):
    x, counts, pool, mean = _buffers()
    args = dict(x=x.data_ptr(), dtype=0, B=1, C=3, H=8, W=8, mask=0, rh=4, rw=4, ph=2, pw=2, from_logits=True)
    args.update(counts=counts.data_ptr(), pool=pool.data_ptr(), mean=mean.data_ptr(), nthreads=1)
    args.update(change)
    nthreads = args.pop("nthreads")
    return (x, counts, pool, mean), (tuple(args.values()), nthreads)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": 7}, "unknown dtype code 7"),
        ({"B": -1}, "non-negative"),
        ({"C": 0}, "C, H and W must be >= 1"),
        ({"rh": 9}, "region must fit"),
        ({"B": 0, "x": 0, "counts": 0, "pool": 0, "mean": 0}, None),  # an empty batch: a no-op
        ({"ph": 5}, "pool must be"),
        ({"pw": 0}, "pool must be"),
        ({"x": 0}, "'x' is a null pointer"),
        ({"counts": 0}, "'counts' is a null pointer"),
        ({"nthreads": 0}, "nthreads must be >= 1"),
        ({"H": 2**40, "W": 2**40}, "overflows int64"),
    ],
)
def test_region_stats_rejects_bad_raw_calls(change, message):
    keep, args = _region_stats_args(**change)
    if message is None:
        assert _module().region_stats(*args) == 0
        return
    with pytest.raises(ValueError, match=message):
        _module().region_stats(*args)
    del keep


def test_other_kernels_reject_bad_raw_calls():
    _C = _module()
    p, out = torch.rand(4, 3), torch.zeros(4, 8)
    kl = [p.data_ptr(), 4, p.data_ptr(), 4, 3, 8, True, 0.0, 0.0, False, 1e-7, out.data_ptr()]
    _C.kl_histogram(tuple(kl), 1)
    for index, value, message in [
        (5, 0, "bins must be >= 1"),
        (6, False, "range must be finite"),
        (10, -1.0, "eps must be positive"),
        (4, 0, "C must be >= 1"),
        (2, 0, "'q' is a null pointer"),
    ]:
        bad = list(kl)
        bad[index] = value
        with pytest.raises(ValueError, match=message):
            _C.kl_histogram(tuple(bad), 1)
    bad = list(kl)
    bad[3], bad[9] = 3, True  # exclude_self with M != N
    with pytest.raises(ValueError, match="exclude_self needs M == N"):
        _C.kl_histogram(tuple(bad), 1)

    x = torch.zeros(2, 1, 3, 4, 4)
    b, e = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="T and C must be >= 1"):
        _C.bald_stacked((x.data_ptr(), 0, 0, 1, 3, 4, 4, False, True, b.data_ptr(), e.data_ptr()), 1)
    with pytest.raises(ValueError, match="unknown dtype code"):
        _C.bald_update((x.data_ptr(), 3, 1, 1, 3, 4, 4, False, True, True, x.data_ptr(), b.data_ptr()), 1)
    with pytest.raises(ValueError, match="'sum_h' is a null pointer"):
        _C.bald_finalize((x.data_ptr(), 0, 2, 1, 3, 4, 4, b.data_ptr(), e.data_ptr()), 1)


def test_empty_calls_write_nothing():
    """Zero-size problems return without touching (or needing) their buffers."""
    _C = _module()
    assert _C.region_stats((0, 0, 0, 3, 8, 8, 0, 4, 4, 2, 2, True, 0, 0, 0), 1) == 0
    assert _C.bald_stacked((0, 0, 2, 1, 3, 0, 5, True, True, 0, 0), 1) == 0
    _C.kl_histogram((0, 0, 0, 0, 3, 8, True, 0.0, 0.0, False, 1e-7, 0), 1)


def test_kl_histogram_with_nothing_to_compare_is_zero():
    _C = _module()
    p, out = torch.rand(1, 3), torch.full((1, 4), np.nan)
    _C.kl_histogram((p.data_ptr(), 1, p.data_ptr(), 1, 3, 4, True, 0.0, 0.0, True, 1e-7, out.data_ptr()), 1)
    assert torch.equal(out, torch.zeros(1, 4))


def test_wrong_number_of_arguments_is_a_value_error():
    with pytest.raises(ValueError, match="expected 15 arguments, got 2"):
        _module().region_stats((0, 0), 1)
