"""Argument checks shared by every op. Each error names the op, the argument, what was expected and what came."""

from __future__ import annotations

import operator
from typing import Any

import torch

# Largest seed a command accepts: the random streams take 32 bits of a seed (fastral.al.run_state.derive_seed), so a
# larger one would silently repeat a smaller one's experiment.
MAX_SEED = 2**32 - 1

# Input dtypes every backend reads directly. float64 is accepted too, but fast backends read a float32 copy.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {str(t.dtype).replace('torch.', '')}, device {t.device}"


def check_ndim(op: str, name: str, t: torch.Tensor, layout: str) -> None:
    """``layout`` is the expected axes, e.g. "[B, C, H, W]"; its comma count gives the rank."""
    ndim = layout.count(",") + 1
    if t.ndim != ndim:
        raise ValueError(f"{op}: argument '{name}' must have {ndim} dimensions {layout}, got {describe(t)}")


def check_float(op: str, name: str, t: torch.Tensor, what: str = "scores") -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: argument '{name}' must be float32, float16, bfloat16 or float64 {what}, got {describe(t)}"
        )


def check_same_device(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(
            f"{op}: argument '{name}' must be on the same device as '{ref_name}' ({ref.device}), got {describe(t)}"
        )


def check_finite(op: str, name: str, t: torch.Tensor) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{op}: argument '{name}' contains NaN or infinite values ({describe(t)})")


def check_nonnegative(op: str, name: str, t: torch.Tensor) -> None:
    if t.numel() and bool((t < 0).any()):
        raise ValueError(
            f"{op}: argument '{name}' holds probabilities and must be >= 0, got a minimum of "
            f"{float(t.min()):.6g} ({describe(t)})"
        )


def check_mask(op: str, name: str, mask: Any, scores: torch.Tensor, expected: tuple[int, ...]) -> torch.Tensor:
    """A boolean ``[B, H, W]`` mask (True = ignore this pixel) on the scores' device. A uint8 mask (as image
    libraries write masks) is accepted too, nonzero = ignore, and returned as a boolean copy."""
    from ._arrays import as_tensor

    m = as_tensor(mask, name, op)
    if m.dtype == torch.uint8:
        m = m != 0
    elif m.dtype != torch.bool:
        raise TypeError(
            f"{op}: argument '{name}' must be a boolean mask (True = ignore) or a uint8 one (nonzero = ignore), got "
            f"{describe(m)}"
        )
    if tuple(m.shape) != expected:
        raise ValueError(f"{op}: argument '{name}' must have shape {expected} to match the scores, got {describe(m)}")
    check_same_device(op, name, m, "scores", scores)
    return m


def _index(value: Any) -> int:
    """``value`` as an int if it is an integer (numpy integers too), else TypeError. bools are not counts."""
    if isinstance(value, bool):
        raise TypeError
    return operator.index(value)


def pair(op: str, name: str, value: Any) -> tuple[int, int]:
    """An (h, w) pair of positive ints from an int or a 2-sequence of ints."""
    try:
        h, w = (_index(value),) * 2 if not isinstance(value, (tuple, list)) else map(_index, value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument '{name}' must be an int or a pair (h, w) of ints, got {value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{op}: argument '{name}' must be positive, got {value!r}")
    return h, w


def positive_int(op: str, name: str, value: Any) -> int:
    try:
        v = _index(value)
    except TypeError:
        raise TypeError(f"{op}: argument '{name}' must be an int, got {value!r}") from None
    if v < 1:
        raise ValueError(f"{op}: argument '{name}' must be >= 1, got {v}")
    return v
