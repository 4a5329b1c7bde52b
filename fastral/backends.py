"""Which backends are built and usable here, and which one an op runs on.

Backends:
  ``torch``   the pure-PyTorch reference of each op (any device; the definition of correct).
  ``cpp``     the compiled CPU module ``fastral._C`` (OpenMP, vectorised), for CPU inputs.
  ``triton``  Triton kernels (``fastral.kernels``), for CUDA inputs; CPU inputs too under ``TRITON_INTERPRET=1``
              (Triton's interpreter, used by the test suite; slow).
  ``cuda``    the compiled CUDA module ``fastral._C_cuda``, for CUDA inputs.

``backend="auto"`` picks ``cpp`` for CPU inputs and, for CUDA inputs, the faster of ``triton`` and ``cuda`` per
op (:data:`GPU_PREFERENCE`), falling back to the other GPU backend and then to ``torch``. The choice is logged
once per op and device type on the ``fastral`` logger: at INFO, or at WARNING with the reasons when it falls back to
the (much slower) reference because the compiled backends failed to build or load. Asking for a backend by name
that cannot run raises :class:`BackendUnavailableError` saying why.

This module decides which backend runs and imports no op: :mod:`fastral.ops._dispatch` maps the name it resolves
to that backend's launchers (the Triton ones, ``fastral.kernels.<op>``, through :func:`triton_module`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from dataclasses import dataclass
from types import ModuleType

import torch

logger = logging.getLogger("fastral")

BACKENDS = ("torch", "cpp", "triton", "cuda")

# Per op, the GPU backend `auto` tries first. Provenance: see the table in bench/README.md ("GPU dispatch");
# until a GPU run measures both, the compiled CUDA module is preferred (no JIT compile on first call).
GPU_PREFERENCE = {"region_stats": "cuda", "kl_histogram": "cuda", "bald": "cuda"}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here; the message says why."""


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend runs here: true if it does; else false, with :attr:`reason` saying why not."""

    reason: str = ""  #: why the backend cannot run ("" when it can)

    @property
    def available(self) -> bool:
        return not self.reason

    def __bool__(self) -> bool:
        return self.available

    def __str__(self) -> str:
        return self.reason or "available"


@functools.cache
def _import(module: str) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(module), ""
    except Exception as exc:  # ImportError, or a broken build raising something else at load time
        return None, f"{type(exc).__name__}: {exc}"


def cpp_module() -> ModuleType:
    """The compiled CPU module, or BackendUnavailableError saying why it is missing."""
    mod, err = _import("fastral._C")
    if mod is None:
        raise BackendUnavailableError(
            "backend 'cpp' is unavailable: the compiled CPU module fastral._C could not be imported "
            f"({err}). Reinstall fastral from source with a C++17 compiler, cmake and OpenMP "
            "(`pip install .`; set FASTRAL_STRICT_BUILD=1 to see the build error)."
        )
    return mod


def cuda_module() -> ModuleType:
    """The compiled CUDA module, or BackendUnavailableError saying why it is missing."""
    mod, err = _import("fastral._C_cuda")
    if mod is None:
        raise BackendUnavailableError(
            "backend 'cuda' is unavailable: the CUDA module fastral._C_cuda could not be imported "
            f"({err}). It is built only where a CUDA toolkit (nvcc) is found at install time."
        )
    return mod


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_module(op: str) -> ModuleType:
    """The Triton kernels of ``op`` (``fastral.kernels.<op>``), or BackendUnavailableError saying why."""
    mod, err = _import(f"fastral.kernels.{op}")
    if mod is None:
        raise BackendUnavailableError(
            f"backend 'triton' is unavailable for {op}: {err}. Install the extra: `pip install fastral[triton]`."
        )
    return mod


def _check_runs_on(backend: str, op: str, device: torch.device) -> None:
    """Raise BackendUnavailableError unless ``backend`` can run ``op`` on ``device``."""
    if backend == "torch":
        return
    if backend == "cpp":
        if device.type != "cpu":
            raise BackendUnavailableError(f"backend 'cpp' runs on CPU inputs only, got an input on {device}")
        cpp_module()
    elif backend == "triton":
        if device.type == "cpu" and not triton_interpreted():
            raise BackendUnavailableError(
                "backend 'triton' needs CUDA inputs (or TRITON_INTERPRET=1 set before fastral is imported, "
                "to run its kernels in Triton's slow CPU interpreter)"
            )
        if device.type not in ("cpu", "cuda"):
            raise BackendUnavailableError(f"backend 'triton' does not support inputs on {device}")
        triton_module(op)
    elif backend == "cuda":
        if device.type != "cuda":
            raise BackendUnavailableError(f"backend 'cuda' runs on CUDA inputs only, got an input on {device}")
        cuda_module()
    else:
        raise ValueError(f"{op}: argument 'backend' must be 'auto' or one of {BACKENDS}, got {backend!r}")


@functools.cache
def _auto(op: str, device_type: str) -> str:
    if device_type == "cpu":
        candidates = ["cpp"]
    elif device_type == "cuda":
        first = GPU_PREFERENCE[op]
        candidates = [first, "triton" if first == "cuda" else "cuda"]
    else:
        candidates = []
    reasons = []
    for name in candidates:
        try:
            _check_runs_on(name, op, torch.device(device_type))
        except BackendUnavailableError as exc:
            reasons.append(str(exc))
            continue
        logger.info("fastral: %s on %s runs on backend %r", op, device_type, name)
        return name
    if reasons:  # a compiled backend was expected here: say loudly that the reference runs instead
        logger.warning(
            "fastral: %s on %s falls back to the PyTorch reference (tens of times slower): %s",
            op,
            device_type,
            "; ".join(reasons),
        )
    else:
        logger.info("fastral: %s on %s runs on the PyTorch reference (no compiled backend for it)", op, device_type)
    return "torch"


def resolve(op: str, backend: str, device: torch.device) -> str:
    """The backend that runs ``op`` for an input on ``device``, given the caller's ``backend`` argument."""
    if not isinstance(backend, str):
        raise TypeError(f"{op}: argument 'backend' must be a string, got {backend!r}")
    if backend == "auto":
        return _auto(op, device.type)
    _check_runs_on(backend, op, device)
    return backend


def available_backends(device: str | torch.device = "cpu", op: str | None = None) -> dict[str, BackendStatus]:
    """For each backend, whether it can run ``op`` (default: every op) on ``device`` here: a
    :class:`BackendStatus`, true when it can, else false with the reason why not.

    Example:
        >>> import fastral
        >>> bool(fastral.available_backends("cpu")["torch"])
        True
        >>> print(fastral.available_backends("cpu")["cuda"].reason)
        backend 'cuda' runs on CUDA inputs only, got an input on cpu
    """
    dev = torch.device(device)
    ops = list(GPU_PREFERENCE) if op is None else [op]
    out = {}
    for name in BACKENDS:
        try:
            for each in ops:
                _check_runs_on(name, each, dev)
            out[name] = BackendStatus()
        except BackendUnavailableError as exc:
            out[name] = BackendStatus(str(exc))
    return out
