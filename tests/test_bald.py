"""bald and BaldAccumulator: every backend against the float64 reference and scipy's xlogy; streaming = stacked."""

import numpy as np
import pytest
import scipy.special
import torch

from fastral import BaldAccumulator, bald, reference_bald
from fastral.ops._common import region_means
from fastral.testing import (
    DEVICE,
    DTYPES,
    TOLERANCE,
    assert_close,
    backend_params,
    ignore_mask,
    logits,
    non_contiguous,
    probabilities,
)

CASES = [  # (T, B, C, H, W)
    (20, 1, 19, 33, 47),
    (5, 2, 11, 36, 48),
    (1, 1, 1, 5, 7),  # one sample, one class: BALD 0
    (3, 2, 2, 10, 10),
]


def samples(shape, rng, from_logits, dtype=torch.float32):
    return logits(shape, rng, dtype, class_dim=2) if from_logits else probabilities(shape, rng, dtype, class_dim=2)


def check_against_reference(out, x, from_logits, name="bald"):
    ref_bald, ref_entropy = reference_bald(x.double(), from_logits)
    assert_close(out.bald, ref_bald, "bald", f"{name}.bald")
    assert_close(out.entropy, ref_entropy, "entropy", f"{name}.entropy")


def streamed(x, from_logits, backend, region=None, mask=None):
    acc = BaldAccumulator(from_logits=from_logits, backend=backend)
    for sample in x:
        acc.update(sample)
    assert acc.samples == x.shape[0]
    return acc.compute(region=region, ignore_mask=mask)


@pytest.mark.sanitizer
@pytest.mark.parametrize("backend", backend_params("bald"))
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_stacked_and_streaming_match_reference(backend, case, from_logits, rng):
    x = samples(case, rng, from_logits).to(DEVICE)
    stacked = bald(x, from_logits=from_logits, backend=backend)
    check_against_reference(stacked, x.cpu(), from_logits, "stacked")
    stream = streamed(x, from_logits, backend)
    check_against_reference(stream, x.cpu(), from_logits, "streaming")
    assert_close(stream.bald, torch.as_tensor(stacked.bald).cpu().double(), "bald", "streaming vs stacked")


@pytest.mark.parametrize("backend", backend_params("bald"))
def test_matches_scipy_xlogy_formula(backend, rng):
    """BALD = H[mean p] - mean H[p] written independently with numpy and scipy.special.xlogy (as baal does)."""
    p = probabilities((8, 2, 6, 9, 11), rng, class_dim=2)
    out = bald(p.to(DEVICE), from_logits=False, backend=backend)
    probs = p.double().numpy()
    probs = probs / probs.sum(2, keepdims=True)
    mean = probs.mean(0)
    entropy = -scipy.special.xlogy(mean, mean).sum(1)
    expected = entropy + scipy.special.xlogy(probs, probs).sum(2).mean(0)
    np.testing.assert_allclose(torch.as_tensor(out.bald).cpu().numpy(), expected, **TOLERANCE["bald"])
    np.testing.assert_allclose(torch.as_tensor(out.entropy).cpu().numpy(), entropy, **TOLERANCE["entropy"])


@pytest.mark.parametrize("backend", backend_params("bald"))
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_half_precision_inputs(backend, dtype, rng):
    x = samples((4, 1, 19, 20, 30), rng, True, dtype).to(DEVICE)
    check_against_reference(bald(x, backend=backend), x.cpu(), True)
    check_against_reference(streamed(x, True, backend), x.cpu(), True, "streaming")


@pytest.mark.parametrize("backend", backend_params("bald"))
def test_confident_and_one_hot_samples(backend, rng):
    """+-80 logits and one-hot probabilities: no NaN, BALD ~ 0 where every sample agrees."""
    x = logits((6, 1, 19, 16, 24), rng, confident=True, class_dim=2)
    x = x[:1].expand_as(x).contiguous()  # all samples agree
    out = bald(x.to(DEVICE), backend=backend)
    check_against_reference(out, x, True)
    assert torch.as_tensor(out.bald).abs().max() < 1e-5
    labels = torch.randint(0, 5, (3, 2, 8, 8), generator=rng)
    one_hot = torch.nn.functional.one_hot(labels, 5).permute(0, 1, 4, 2, 3).float()
    out = bald(one_hot.to(DEVICE), from_logits=False, backend=backend)
    check_against_reference(out, one_hot, False)


@pytest.mark.parametrize("backend", backend_params("bald"))
def test_region_means_with_ignore_mask(backend, rng):
    x = samples((5, 2, 7, 30, 40), rng, True).to(DEVICE)
    mask = ignore_mask((2, 30, 40), rng).to(DEVICE)
    out = bald(x, region=(15, 20), ignore_mask=mask, backend=backend)
    ref_bald, ref_entropy = reference_bald(x.cpu().double())
    assert tuple(out.region_bald.shape) == (8,)
    assert_close(out.region_bald, region_means(ref_bald, (15, 20), mask.cpu()), "bald", "region_bald")
    assert_close(out.region_entropy, region_means(ref_entropy, (15, 20), mask.cpu()), "entropy", "region_entropy")
    stream = streamed(x, True, backend, (15, 20), mask)
    assert_close(stream.region_bald, torch.as_tensor(out.region_bald).cpu().double(), "bald", "streaming regions")


@pytest.mark.parametrize("backend", backend_params("bald"))
def test_non_contiguous_inputs(backend, rng):
    x = non_contiguous(samples((4, 1, 5, 12, 14), rng, True).to(DEVICE))
    check_against_reference(bald(x, backend=backend), x.cpu(), True)
    check_against_reference(streamed(x, True, backend), x.cpu(), True, "streaming")


@pytest.mark.parametrize("backend", backend_params("bald"))
def test_empty_batch(backend):
    out = bald(torch.zeros(3, 0, 4, 8, 8, device=DEVICE), region=(4, 4), backend=backend)
    assert tuple(out.bald.shape) == (0, 8, 8) and tuple(out.region_bald.shape) == (0,)
    acc = BaldAccumulator(backend=backend)
    acc.update(torch.zeros(0, 4, 8, 8, device=DEVICE))
    assert tuple(acc.compute().entropy.shape) == (0, 8, 8)


@pytest.mark.parametrize("backend", backend_params("bald"))
def test_bad_values_raise(backend):
    x = torch.randn(2, 1, 3, 4, 4)
    x[1, 0, 2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="'scores' contains NaN"):
        bald(x.to(DEVICE), backend=backend)
    p = torch.rand(2, 1, 3, 4, 4)
    p[0, 0, 1, 2, 2] = -1e-3
    with pytest.raises(ValueError, match="must be >= 0"):
        bald(p.to(DEVICE), from_logits=False, backend=backend)
    acc = BaldAccumulator(from_logits=False, backend=backend)
    with pytest.raises(ValueError, match="must be >= 0"):
        acc.update(p[0].to(DEVICE))
    assert acc.samples == 0  # a rejected first sample leaves nothing behind
    acc.update(p[1].to(DEVICE))
    with pytest.raises(ValueError, match="must have shape"):
        acc.update(torch.rand(1, 3, 4, 5, device=DEVICE))
    zero = torch.rand(1, 3, 4, 4)
    zero[0, :, 0, 0] = 0
    with pytest.raises(ValueError, match="all zero or sum outside"):
        acc.update(zero.to(DEVICE))
    # The sums may already hold the rejected sample: the accumulator refuses to go on until reset.
    for call in (lambda: acc.update(p[1].to(DEVICE)), acc.compute):
        with pytest.raises(ValueError, match=r"update 2 was rejected .* call reset\(\)"):
            call()
    acc.reset()
    acc.update(p[1].to(DEVICE))
    assert acc.samples == 1


# Triton's CPU interpreter reduces with numpy, which warns on the float32 overflows these cases are about.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("backend", backend_params("bald"))
def test_float32_limits(backend, rng):
    """As for region_stats: overflowing logit spreads are exact, out-of-range sums and float64 beyond float32's
    range are refused by every backend, stacked and streaming."""
    x = logits((3, 1, 5, 6, 6), rng, class_dim=2)
    x[:, 0, 0, :3] = 3e38
    x[1:, 0, 1, :2] = -3e38
    check_against_reference(bald(x.to(DEVICE), backend=backend), x, True, "overflowing spread")
    check_against_reference(streamed(x.to(DEVICE), True, backend), x, True, "streamed overflowing spread")
    for value in (1e-40, 2e38):  # one pixel whose four probabilities sum to a subnormal / beyond FLT_MAX
        p = probabilities((2, 1, 4, 5, 5), rng, class_dim=2)
        p[1, 0, :, 2, 2] = value
        with pytest.raises(ValueError, match="all zero or sum outside float32's normal range"):
            bald(p.to(DEVICE), from_logits=False, backend=backend)
        with pytest.raises(ValueError, match="all zero or sum outside float32's normal range"):
            BaldAccumulator(from_logits=False, backend=backend).update(p[1].to(DEVICE))
    wide = logits((2, 1, 4, 5, 5), rng, torch.float64, class_dim=2)
    wide[0, 0, 1, 2, 2] = -1e39
    with pytest.raises(ValueError, match="float64 values beyond float32's range"):
        bald(wide.to(DEVICE), backend=backend)


# baal's layout [B, C, H, W, T]: T below, at and above a multiple of the 8-sample register transpose, and image
# widths that leave partial chunks of pixels.
SAMPLE_LAST_CASES = [(20, 2, 19, 9, 13), (8, 1, 5, 4, 7), (3, 1, 2, 5, 3), (17, 1, 11, 16, 16), (1, 2, 4, 3, 9)]


@pytest.mark.parametrize("backend", backend_params("bald"))
@pytest.mark.parametrize("case", SAMPLE_LAST_CASES, ids=str)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_sample_last_layout_matches_reference(backend, case, from_logits, rng):
    """baal's [B, C, H, W, T] read in place (sample_dim=-1): stacked, and streamed as stacks of either layout."""
    x = samples(case, rng, from_logits)
    baal_layout = x.permute(1, 2, 3, 4, 0).contiguous().to(DEVICE)
    out = bald(baal_layout, region=(2, 3), from_logits=from_logits, backend=backend, sample_dim=-1)
    check_against_reference(out, x, from_logits, "sample_dim=-1")
    native = bald(x.to(DEVICE), region=(2, 3), from_logits=from_logits, backend=backend)
    assert_close(out.region_bald, torch.as_tensor(native.region_bald).cpu().double(), "bald", "layouts")
    acc = BaldAccumulator(from_logits=from_logits, backend=backend)
    T = case[0]
    half, rest = max(1, T // 2), max(1, (3 * T) // 4)
    acc.update(baal_layout[..., :half], sample_dim=-1)
    for t in range(half, rest):
        acc.update(baal_layout[..., t])  # a strided single sample
    if rest < T:
        acc.update(x[rest:].to(DEVICE), sample_dim=0)
    assert (acc.samples, acc.updates) == (T, 1 + (rest - half) + (rest < T))
    check_against_reference(acc.compute(), x, from_logits, "streamed stacks")
    mean_p = reference_probabilities(x.double(), from_logits).mean(0)
    assert_close(acc.mean_probabilities(), mean_p, "probability", "mean_probabilities")


def reference_probabilities(x, from_logits):
    return torch.softmax(x, 2) if from_logits else x / x.sum(2, keepdim=True)


@pytest.mark.parametrize("backend", backend_params("bald"))
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_sample_last_half_precision_and_strided(backend, dtype, rng):
    x = samples((9, 2, 6, 7, 10), rng, True, dtype)
    baal_layout = x.permute(1, 2, 3, 4, 0).contiguous().to(DEVICE)
    check_against_reference(bald(baal_layout, backend=backend, sample_dim=-1), x, True, "sample_dim=-1")
    # A [B, C, H, W, T] view of fastral-layout memory (and a fully strided one) gives the same answer.
    view = x.to(DEVICE).permute(1, 2, 3, 4, 0)
    check_against_reference(bald(view, backend=backend, sample_dim=4), x, True, "sample_dim=4 view")
    strided = non_contiguous(baal_layout)
    check_against_reference(bald(strided, backend=backend, sample_dim=-1), strided.movedim(-1, 0).cpu(), True)


def test_sample_dim_is_checked():
    for bad in (1, 2, -2, 5, 0.0, True, "last"):
        with pytest.raises(ValueError, match=r"'sample_dim' must be 0 .* or -1 .*, got"):
            bald(torch.rand(2, 1, 3, 4, 4), sample_dim=bad)
    with pytest.raises(ValueError, match=r"'scores' must have 5 dimensions \[B, C, H, W, T\]"):
        bald(torch.rand(1, 3, 4, 4), sample_dim=-1)
    acc = BaldAccumulator()
    acc.update(torch.rand(1, 3, 4, 4, 6), sample_dim=-1)
    with pytest.raises(ValueError, match=r"must have shape \(1, 3, 4, 4\) like the first one, got \(1, 3, 4, 6\)"):
        acc.update(torch.rand(1, 3, 4, 6, 2), sample_dim=-1)
    with pytest.raises(ValueError, match="mean_probabilities needs at least one sample"):
        BaldAccumulator().mean_probabilities()


def test_mean_probabilities_feed_region_stats(rng):
    """The documented use: region_stats of the MC-mean prediction, from the accumulator's sums."""
    from fastral import reference_region_stats, region_stats

    x = samples((4, 1, 5, 8, 8), rng, True)
    acc = BaldAccumulator()
    acc.update(x.numpy(), sample_dim=0)
    mean_p = acc.mean_probabilities()
    assert isinstance(mean_p, np.ndarray) and mean_p.shape == (1, 5, 8, 8)
    stats = region_stats(mean_p, 4, pool=2, from_logits=False)
    mean_ref = reference_probabilities(x.double(), True).mean(0)
    ref = reference_region_stats(mean_ref, (4, 4), pool=(2, 2), from_logits=False)
    assert np.array_equal(stats.counts, ref.counts.numpy())


BAD_ARGUMENTS = [
    ({"scores": torch.rand(1, 3, 4, 4)}, ValueError, r"'scores' must have 5 dimensions \[T, B, C, H, W\]"),
    ({"scores": torch.zeros(0, 1, 3, 4, 4)}, ValueError, "at least one sample"),
    ({"scores": torch.ones(2, 1, 3, 4, 4, dtype=torch.uint8)}, TypeError, "'scores' must be float32"),
    ({"region": (5, 4)}, ValueError, "'region' .* larger than the 4x4 image"),
    ({"ignore_mask": torch.zeros(1, 4, 4, dtype=torch.bool)}, ValueError, "only applies to region means"),
    ({"region": 2, "ignore_mask": torch.zeros(1, 4, 3, dtype=torch.bool)}, ValueError, "'ignore_mask' must have"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        bald(**{"scores": torch.rand(2, 1, 3, 4, 4), **kwargs})


def test_accumulator_needs_a_sample():
    with pytest.raises(ValueError, match="needs at least one sample"):
        BaldAccumulator().compute()


def test_numpy_in_numpy_out(rng):
    x = logits((3, 1, 4, 6, 6), rng, class_dim=2).numpy()
    out = bald(x, region=3)
    assert all(isinstance(t, np.ndarray) and t.dtype == np.float32 for t in out)
    acc = BaldAccumulator()
    for sample in x:
        acc.update(sample)
    stream = acc.compute(region=3)
    assert isinstance(stream.region_bald, np.ndarray)
    np.testing.assert_allclose(stream.region_bald, out.region_bald, **TOLERANCE["bald"])
