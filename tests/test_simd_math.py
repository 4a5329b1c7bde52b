"""The hand-written vectorised exp and log of the CPU kernels (csrc/cpu/simd_math.h), measured in ulp against
float64 over the whole range the kernels call them on, on every instruction set this CPU runs. The header documents
max errors of ~1.2 ulp (exp) and ~0.9 ulp (log); measured: exp 1.17 (generic, no FMA) / 0.91 (avx2), log 0.83."""

import numpy as np
import pytest

import fastral
from fastral.testing import DEVICE

pytestmark = pytest.mark.skipif(
    DEVICE.type != "cpu" or not fastral.available_backends()["cpp"], reason="needs the cpp backend on the CPU"
)

EXP_MAX_ULP = 1.2
LOG_MAX_ULP = 0.9
FLT_MIN = np.finfo(np.float32).tiny  # 1.18e-38: the smallest normal float32
EXP_NORMAL_FLOOR = np.float32(-87.33)  # just above ln(FLT_MIN) = -87.336: below it e^x is subnormal


def _isas():
    from fastral import _C

    return [getattr(_C, name) for name in _C.isas]


def _run(isa, name: str, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    getattr(isa, name)(x.ctypes.data, out.ctypes.data, x.size)
    return out


def _floats_between(lo: float, hi: float, count: int) -> np.ndarray:
    """About ``count`` float32 values evenly spaced in bit pattern from lo to hi (same sign), both ends included:
    every binade of the range equally represented."""
    a, b = sorted(int(v) for v in np.array([lo, hi], dtype=np.float32).view(np.uint32))
    bits = np.unique(np.append(np.arange(a, b, max(1, (b - a) // count), dtype=np.int64), b))
    return bits.astype(np.uint32).view(np.float32)


def _ulp_error(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|approx - exact| in units of the float32 spacing at the exact value."""
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(approx.astype(np.float64) - exact) / ulp


@pytest.mark.parametrize("isa", _isas(), ids=lambda m: m.__name__.rpartition(".")[2])
def test_exp_error_over_the_kernels_range(isa):
    """The kernels take e^(z - max z) and e^(score - max), arguments <= 0: the normal results, every binade."""
    x = np.concatenate([_floats_between(EXP_NORMAL_FLOOR, -0.0, 1_000_000), np.float32([-1e-30, 0.0])])
    error = _ulp_error(_run(isa, "_simd_exp", x), np.exp(x.astype(np.float64)))
    worst = int(error.argmax())
    assert error[worst] <= EXP_MAX_ULP, f"exp({x[worst]!r}): {error[worst]:.3f} ulp"
    # Below -87.7 the result is exactly 0 (so padded classes and -inf logits weigh nothing); NaN propagates.
    tail = np.float32([-87.7, -88.0, -100.0, -1e30, -np.inf])
    assert (_run(isa, "_simd_exp", tail) == 0).all()
    assert np.isnan(_run(isa, "_simd_exp", np.float32([np.nan]))).all()


@pytest.mark.parametrize("isa", _isas(), ids=lambda m: m.__name__.rpartition(".")[2])
def test_log_error_over_the_kernels_range(isa):
    """The kernels take the log of sums of weights or probabilities: any normal positive float32, every binade,
    and densely around 1, where log is near 0 and an absolute error is a large relative one."""
    x = np.concatenate(
        [_floats_between(FLT_MIN, np.finfo(np.float32).max, 1_000_000), _floats_between(0.5, 2.0, 1_000_000)]
    )
    error = _ulp_error(_run(isa, "_simd_log", x), np.log(x.astype(np.float64)))
    worst = int(error.argmax())
    assert error[worst] <= LOG_MAX_ULP, f"log({x[worst]!r}): {error[worst]:.3f} ulp"
    assert _run(isa, "_simd_log", np.float32([1.0]))[0] == 0.0
    # log(0) is finite near -88, so that 0 * log 0 = 0 in the entropy sums.
    at_zero = _run(isa, "_simd_log", np.float32([0.0]))[0]
    assert np.isfinite(at_zero) and -90 < at_zero < -87
