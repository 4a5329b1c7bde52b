"""Fuzz the public entry points: any input gives a result or a ValueError/TypeError, never a crash."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastral

# A warning is an allowed outcome: a drawn input can look like probabilities passed as logits.
pytestmark = pytest.mark.filterwarnings("ignore:.*look like probabilities:UserWarning")
BACKENDS = ["auto", "torch"]
settings.register_profile("fastral", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fastral")

small = st.integers(min_value=0, max_value=9)
values = st.sampled_from([0.0, 1.0, -1.0, 80.0, -80.0, float("nan"), float("inf"), 1e-30, 1e30])
dtypes = st.sampled_from([np.float32, np.float16, np.float64, np.int32, np.uint8, np.bool_])


def array(draw, shape):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(dtypes)
    x = (rng.normal(size=shape) * draw(st.sampled_from([1.0, 100.0]))).astype(dtype)
    if x.size and np.issubdtype(dtype, np.floating) and draw(st.booleans()):
        with np.errstate(over="ignore"):  # 1e30 overflows float16 to inf: one more bad value
            x.flat[draw(st.integers(0, x.size - 1))] = draw(values)
    return x


@st.composite
def region_stats_args(draw):
    shape = tuple(draw(st.lists(small, min_size=draw(st.integers(2, 5)), max_size=5)))
    kwargs = {
        "scores": array(draw, shape),
        "region": draw(st.one_of(small, st.tuples(small, small), st.just((1.5, 2)))),
        "pool": draw(st.one_of(small, st.tuples(small, small))),
        "from_logits": draw(st.booleans()),
        "backend": draw(st.sampled_from(BACKENDS)),
    }
    if len(shape) == 4 and draw(st.booleans()):
        kwargs["ignore_mask"] = np.random.default_rng(0).random((shape[0], *shape[2:])) < 0.5
    return kwargs


@given(region_stats_args())
def test_region_stats_never_crashes(kwargs):
    try:
        out = fastral.region_stats(**kwargs)
    except (ValueError, TypeError):
        return
    assert np.isfinite(out.entropy_pool).all() and np.isfinite(out.entropy_mean).all()
    assert (out.counts >= 0).all()


@st.composite
def kl_args(draw):
    c = draw(small)
    p_shape = (*[draw(small) for _ in range(draw(st.integers(1, 3)))], c)
    q_shape = (draw(small), draw(st.sampled_from([c, c + 1])))
    return {
        "p": np.abs(array(draw, p_shape)) if draw(st.booleans()) else array(draw, p_shape),
        "q": np.abs(array(draw, q_shape)),
        "bins": draw(st.one_of(st.integers(-1, 40), st.just(3.0))),
        "range": draw(st.one_of(st.none(), st.tuples(st.floats(-5, 5), st.floats(-5, 50)))),
        "exclude_self": draw(st.booleans()),
        "backend": draw(st.sampled_from(BACKENDS)),
    }


@given(kl_args())
def test_kl_histogram_never_crashes(kwargs):
    try:
        out = fastral.kl_histogram(**kwargs)
    except (ValueError, TypeError):
        return
    assert np.isfinite(out).all() and (out >= 0).all() and (out.sum(-1) <= 1 + 1e-5).all()


@st.composite
def bald_args(draw):
    shape = tuple(draw(st.lists(small, min_size=draw(st.integers(3, 6)), max_size=6)))
    return {
        "scores": array(draw, shape),
        "region": draw(st.one_of(st.none(), small, st.tuples(small, small))),
        "from_logits": draw(st.booleans()),
        "backend": draw(st.sampled_from(BACKENDS)),
    }


@given(bald_args())
def test_bald_never_crashes(kwargs):
    try:
        out = fastral.bald(**kwargs)
    except (ValueError, TypeError):
        return
    assert np.isfinite(out.bald).all() and np.isfinite(out.entropy).all()
    if kwargs["scores"].size and kwargs["scores"].shape[0] >= 1:
        acc = fastral.BaldAccumulator(from_logits=kwargs["from_logits"], backend=kwargs["backend"])
        for sample in kwargs["scores"]:
            acc.update(sample)
        torch.testing.assert_close(torch.as_tensor(acc.compute().bald), torch.as_tensor(out.bald), atol=1e-4, rtol=0)
