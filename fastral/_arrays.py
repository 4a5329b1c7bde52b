"""Array interop: numpy, torch and any `__dlpack__` object in, the same kind out, without copies.

Every op converts its array arguments to torch tensors with :func:`as_tensor` (zero-copy: numpy through
``torch.from_numpy``, CuPy and other producers through DLPack), computes on tensors, and converts its outputs
back with :func:`to_kind`. The kind of the *first* array argument decides the kind of every output.
"""

from __future__ import annotations

import contextlib
import warnings
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


# numpy dtypes torch can view (float128, unsigned 16-64 bit and others would fail inside torch.from_numpy).
NUMPY_DTYPES = tuple(
    np.dtype(t)
    for t in (
        "bool",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    )
)


def as_tensor(x: Any, name: str, op: str) -> torch.Tensor:
    """``x`` as a dense torch tensor sharing its memory. Raises TypeError naming ``op`` and ``name`` otherwise."""
    if isinstance(x, torch.Tensor):
        return _dense(x.detach(), name, op)
    if isinstance(x, np.ma.MaskedArray):  # its mask would silently be dropped
        raise TypeError(
            f"{op}: argument '{name}' is a numpy masked array; pass its data and its mask as "
            "'ignore_mask' (True = ignore) where the op takes one"
        )
    if isinstance(x, np.ndarray):
        if x.dtype.fields is not None or x.dtype.byteorder == ">" or not x.dtype.isnative:
            kind = "a plain (not structured)" if x.dtype.fields is not None else "a native-byte-order"
            raise TypeError(f"{op}: argument '{name}' must be {kind} array, got dtype {x.dtype.str}")
        if x.dtype not in NUMPY_DTYPES:
            raise TypeError(
                f"{op}: argument '{name}' must be a numeric array of a dtype torch reads "
                f"({', '.join(d.name for d in NUMPY_DTYPES)}), got numpy dtype {x.dtype}"
            )
        if any(s < 0 for s in x.strides):
            x = np.ascontiguousarray(x)  # torch cannot view negative strides (e.g. arr[::-1])
        if not x.flags.writeable:  # the ops only read their inputs: torch's "not writable" warning does not apply
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(x)
        return torch.from_numpy(x)
    if hasattr(x, "__dlpack__"):
        try:
            t = torch.from_dlpack(x)
        except Exception as exc:  # the producer's own error says what it cannot export
            raise TypeError(f"{op}: argument '{name}' could not be read through DLPack: {exc}") from exc
        return _dense(t, name, op)
    raise TypeError(
        f"{op}: argument '{name}' must be a numpy array, a torch tensor or an object with __dlpack__, "
        f"got {type(x).__module__}.{type(x).__qualname__}"
    )


def _dense(t: torch.Tensor, name: str, op: str) -> torch.Tensor:
    """A strided tensor with data, its negative / conjugate bits resolved (read as stored, they would be wrong)."""
    if t.layout != torch.strided:
        raise TypeError(f"{op}: argument '{name}' must be a dense (strided) tensor, got layout {t.layout}")
    if t.device.type == "meta":
        raise TypeError(f"{op}: argument '{name}' is on the meta device, which holds no data")
    return t.resolve_neg().resolve_conj()


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
