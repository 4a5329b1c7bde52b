"""From an op's ``backend=`` argument to the launcher module that runs it: the one place that maps backend names
to launchers. :mod:`fastral.backends` decides which backend runs (and imports no op); every launcher module has
the same entry points (see :mod:`fastral.ops._torch`), so an op body calls whichever runs the same way."""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import torch

from .. import backends
from . import _cpp, _cuda, _torch
from ._common import DTYPE_CODES, kernel_input

_LAUNCHERS = {"torch": _torch, "cpp": _cpp, "cuda": _cuda}  # triton's are fastral.kernels.<op>, imported on use


class Launcher(NamedTuple):
    name: str  #: the backend that runs
    module: ModuleType  #: its launcher module

    def input(self, t: torch.Tensor, dtypes=tuple(DTYPE_CODES)) -> torch.Tensor:
        """``t`` as this backend reads it: unchanged for the references (any strides, float64 kept), else
        :func:`fastral.ops._common.kernel_input`."""
        return t if self.name == "torch" else kernel_input(t, dtypes)


def launcher(op: str, backend: str, device: torch.device) -> Launcher:
    """The launcher of ``op`` for an input on ``device``, given the caller's ``backend`` argument."""
    name = backends.resolve(op, backend, device)
    return Launcher(name, backends.triton_module(op) if name == "triton" else _LAUNCHERS[name])
