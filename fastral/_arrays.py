"""Array interop: numpy, torch and any `__dlpack__` object in, the same kind out, without copies.

Every op converts its array arguments to torch tensors with :func:`as_tensor` (zero-copy: numpy through
``torch.from_numpy``, CuPy and other producers through DLPack), computes on tensors, and converts its outputs
back with :func:`to_kind`. The kind of the *first* array argument decides the kind of every output.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

# Kinds an output can be returned as.
NUMPY, TORCH, CUPY = "numpy", "torch", "cupy"


def array_kind(x: Any) -> str:
    """The kind of array ``x`` is, which decides what an op returns.

    numpy arrays give numpy; torch tensors give torch; CuPy arrays give CuPy; any other object that speaks
    DLPack (JAX, ...) gives torch tensors, the one library fastral can always build arrays of.
    """
    if isinstance(x, torch.Tensor):
        return TORCH
    if isinstance(x, np.ndarray):
        return NUMPY
    if type(x).__module__.split(".")[0] == "cupy":
        return CUPY
    return TORCH


def as_tensor(x: Any, name: str, op: str) -> torch.Tensor:
    """``x`` as a torch tensor sharing its memory. Raises TypeError naming ``op`` and ``name`` otherwise."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype.byteorder == ">" or not x.dtype.isnative:
            raise TypeError(f"{op}: argument '{name}' must be a native-byte-order array, got dtype {x.dtype.str}")
        if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.number):
            if any(s < 0 for s in x.strides):
                x = np.ascontiguousarray(x)  # torch cannot view negative strides (e.g. arr[::-1])
            return torch.from_numpy(x)
        raise TypeError(f"{op}: argument '{name}' must be a numeric array, got numpy dtype {x.dtype}")
    if hasattr(x, "__dlpack__"):
        try:
            return torch.from_dlpack(x)
        except Exception as exc:  # the producer's own error says what it cannot export
            raise TypeError(f"{op}: argument '{name}' could not be read through DLPack: {exc}") from exc
    raise TypeError(
        f"{op}: argument '{name}' must be a numpy array, a torch tensor or an object with __dlpack__, "
        f"got {type(x).__module__}.{type(x).__qualname__}"
    )


def to_kind(t: torch.Tensor | None, kind: str) -> Any:
    """Convert an output tensor back to the caller's kind of array (no copy)."""
    if t is None or kind == TORCH:
        return t
    if kind == NUMPY:
        return t.numpy()
    if kind == CUPY:
        import cupy

        return cupy.from_dlpack(t)
    raise AssertionError(f"unknown array kind {kind!r}")


def stream_context(kind: str, device: torch.device):
    """Context in which GPU kernels launch on the caller's current stream.

    torch's current stream is the default. For CuPy inputs CuPy's current stream is made torch's current stream
    for the call (``torch.cuda.ExternalStream``), so kernels, outputs and the caller's later CuPy work stay
    ordered without a host synchronisation.
    """
    if device.type != "cuda" or kind != CUPY:
        return contextlib.nullcontext()
    import cupy

    stream = torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr, device=device)
    return torch.cuda.stream(stream)
