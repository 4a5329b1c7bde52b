"""MC-dropout BALD (mutual information) per pixel and per region, stacked or streaming over MC samples."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from .._arrays import array_kind, as_tensor, stream_context, to_kind
from .._validate import check_float, check_mask, check_ndim, check_same_device, describe, pair
from ._common import empty, raise_for_flags, region_means, warn_if_probabilities
from ._dispatch import Launcher, launcher
from ._reference import reference_bald

__all__ = ["BaldAccumulator", "BaldResult", "bald", "reference_bald"]

OP = "bald"


class BaldResult(NamedTuple):
    """Outputs of :func:`bald` and :meth:`BaldAccumulator.compute`."""

    bald: Any  #: ``[B, H, W]`` float32, ``H[mean_t p_t] - mean_t H[p_t]`` per pixel
    entropy: Any  #: ``[B, H, W]`` float32, predictive entropy ``H[mean_t p_t]`` per pixel
    region_bald: Any  #: ``[R]`` float32 mean BALD per region, or None when no region was given
    region_entropy: Any  #: ``[R]`` float32 mean predictive entropy per region, or None


def _result(bald_map, entropy, region, ignore_mask, kind) -> BaldResult:
    region_bald = region_entropy = None
    if region is not None:
        region_bald = region_means(bald_map, region, ignore_mask)
        region_entropy = region_means(entropy, region, ignore_mask)
    return BaldResult(*(to_kind(t, kind) for t in (bald_map, entropy, region_bald, region_entropy)))


def _check_region(region, ignore_mask, x: torch.Tensor, B: int, H: int, W: int):
    """Validated ``(region, mask)`` for the per-region means (both optional)."""
    if region is None:
        if ignore_mask is not None:
            raise ValueError(f"{OP}: argument 'ignore_mask' only applies to region means; pass 'region' too")
        return None, None
    rh, rw = pair(OP, "region", region)
    if rh > H or rw > W:
        raise ValueError(f"{OP}: argument 'region' {(rh, rw)} is larger than the {H}x{W} image ({describe(x)})")
    mask = None if ignore_mask is None else check_mask(OP, "ignore_mask", ignore_mask, x, (B, H, W))
    return (rh, rw), mask


# The layouts of a stack of T samples: sample_dim 0 (or -5) is fastral's [T, B, C, H, W], sample_dim -1 (or 4)
# baal's [B, C, H, W, T].
_LAYOUTS = {0: "[T, B, C, H, W]", 4: "[B, C, H, W, T]"}


def _sample_axis(sample_dim: Any) -> int:
    """The non-negative axis of the MC samples in a 5-D stack: 0 or 4."""
    if not isinstance(sample_dim, bool) and isinstance(sample_dim, (int, np.integer)) and -5 <= sample_dim < 5:
        axis = int(sample_dim) % 5
        if axis in _LAYOUTS:
            return axis
    raise ValueError(
        f"{OP}: argument 'sample_dim' must be 0 (scores [T, B, C, H, W], fastral's layout) or -1 (scores "
        f"[B, C, H, W, T], baal's layout), got {sample_dim!r}"
    )


def _stack(scores: Any, sample_dim: Any) -> tuple[str, torch.Tensor]:
    """``(kind, stack)``: validated scores of T samples as a ``[T, B, C, H, W]`` view (no copy) of the input."""
    axis = _sample_axis(sample_dim)
    kind = array_kind(scores)
    x = as_tensor(scores, "scores", OP)
    check_ndim(OP, "scores", x, _LAYOUTS[axis])
    check_float(OP, "scores", x)
    stack = x.movedim(axis, 0)
    if stack.shape[0] < 1 or stack.shape[2] < 1:
        raise ValueError(f"{OP}: argument 'scores' needs at least one sample and one class, got {describe(x)}")
    return kind, stack


def _kernel_stack(impl: Launcher, stack: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(x, sample_last)``: a ``[T, B, C, H, W]`` view as ``impl`` reads it, ``[T, B, C, H, W]`` or
    (``sample_last``) baal's ``[B, C, H, W, T]``; for the kernels contiguous, with no copy for either layout in a
    kernel dtype. The CUDA kernels read fastral's layout only, so baal's is copied for them."""
    last = stack.movedim(0, -1)
    if impl.name != "cuda" and last.is_contiguous() and not stack.is_contiguous():
        return impl.input(last), True
    return impl.input(stack), False


def bald(
    scores: Any,
    region: int | tuple[int, int] | None = None,
    from_logits: bool = True,
    ignore_mask: Any = None,
    backend: str = "auto",
    sample_dim: int = 0,
) -> BaldResult:
    """MC-dropout BALD from T stacked samples: ``H[mean_t p_t] - mean_t H[p_t]`` per pixel, plus region means.

    Args:
        scores: logits (``from_logits=True``) or probabilities (each pixel normalised to sum 1) of T MC-dropout
            samples, ``[T, B, C, H, W]`` (``sample_dim=0``) or baal's ``[B, C, H, W, T]`` (``sample_dim=-1``);
            float32/float16/bfloat16 (float64 read as a float32 copy). Both layouts are read in place.
            When the T samples do not fit in memory, use :class:`BaldAccumulator`.
        region: optional ``(rh, rw)``: also return per-region means in :func:`fastral.region_grid` order.
        from_logits: see above.
        ignore_mask: optional ``[B, H, W]`` bool (True = ignore), excluded from the region means only.
        backend: ``"auto"``, ``"torch"``, ``"cpp"``, ``"triton"`` or ``"cuda"``.
        sample_dim: the axis of the MC samples, 0 or -1 (see ``scores``). A 5-D stack does not say which layout it
            is in (``[20, 4, 19, 64, 64]`` could be either), so nothing guesses: pass ``sample_dim=-1`` for baal's
            ``predict_on_dataset`` output (:mod:`fastral.integrations.baal` always does).

    Returns:
        :class:`BaldResult`. Natural logs, float32 accumulation, no epsilon (``0 log 0 = 0``); float rounding
        can leave BALD a few ulp below zero for pixels where all samples agree.

    Example:
        >>> import torch, fastral
        >>> samples = torch.randn(20, 1, 19, 64, 64)  # T = 20 MC-dropout logits
        >>> out = fastral.bald(samples, region=(32, 32))
        >>> out.bald.shape, out.region_bald.shape
        (torch.Size([1, 64, 64]), torch.Size([4]))
        >>> baal_layout = samples.permute(1, 2, 3, 4, 0)  # [N, C, H, W, T], as baal's predict_on_dataset gives
        >>> bool((fastral.bald(baal_layout, sample_dim=-1).bald == out.bald).all())
        True
    """
    kind, x = _stack(scores, sample_dim)
    B, H, W = x.shape[1], x.shape[3], x.shape[4]
    region, mask = _check_region(region, ignore_mask, x, B, H, W)
    if torch.compiler.is_compiling():  # one node of the caller's graph: see _op below
        bald_map, entropy = _op(scores, bool(from_logits), backend, _sample_axis(sample_dim))
    else:
        bald_map, entropy = _bald_maps(kind, x, from_logits, backend)
    return _result(bald_map, entropy, region, mask, kind)


def _bald_maps(kind: str, x: torch.Tensor, from_logits: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The BALD and entropy maps ``[B, H, W]`` of a checked ``[T, B, C, H, W]`` view."""
    impl = launcher(OP, backend, x.device)
    bald_map, entropy = _empty_maps(x.shape[1], x.shape[3], x.shape[4], x.device)
    if from_logits:
        warn_if_probabilities(OP, x, 2)
    if bald_map.numel():
        with stream_context(kind, x.device):
            flags = impl.module.bald_stacked(*_kernel_stack(impl, x), bool(from_logits), bald_map, entropy)
        raise_for_flags(OP, "scores", flags, x)
    return bald_map, entropy


def _empty_maps(B: int, H: int, W: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs ``bald`` and ``entropy``, ``[B, H, W]`` float32."""
    return empty((B, H, W), torch.float32, device), empty((B, H, W), torch.float32, device)


# torch.compile: the maps come from one opaque custom op, fastral::bald, so a compiled caller keeps a single graph
# (fullgraph=True works); the region means are plain torch ops the compiler sees. The op runs the eager code with
# every check; its fake (meta) implementation gives the map shapes after the argument checks.
@torch.library.custom_op("fastral::bald", mutates_args=())
def _op(scores: torch.Tensor, from_logits: bool, backend: str, sample_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _bald_maps(*_stack(scores, sample_dim), from_logits, backend)


@_op.register_fake
def _(scores, from_logits, backend, sample_dim):
    x = _stack(scores, sample_dim)[1]
    return _empty_maps(x.shape[1], x.shape[3], x.shape[4], x.device)  # under torch.compile's fake mode: fake tensors


class BaldAccumulator:
    """Streaming BALD: feed MC-dropout samples one at a time; memory does not grow with their number.

    Keeps a running ``sum_t p_t`` (``[B, C, H, W]`` float32) and ``sum_t H[p_t]`` (``[B, H, W]``); each
    :meth:`update` reads one sample once. :meth:`compute` gives the same :class:`BaldResult` as :func:`bald` on
    the stacked samples (to float32 rounding).

    Example:
        >>> import torch, fastral
        >>> acc = fastral.BaldAccumulator()
        >>> for _ in range(20):
        ...     acc.update(torch.randn(1, 19, 64, 64))  # one MC-dropout forward's logits
        >>> acc.compute(region=(32, 32)).region_bald.shape
        torch.Size([4])
    """

    def __init__(self, from_logits: bool = True, backend: str = "auto"):
        self.from_logits = bool(from_logits)
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen."""
        self.samples = 0  #: MC samples added
        self.updates = 0  #: accepted update() calls
        self._sum_p: torch.Tensor | None = None
        self._sum_h: torch.Tensor | None = None
        self._kind: str | None = None
        self._invalid = ""

    def _check_valid(self) -> None:
        if self._invalid:
            raise ValueError(f"{OP}: BaldAccumulator is unusable ({self._invalid}); call reset() and start again")

    def update(self, scores: Any, sample_dim: int | None = None) -> None:
        """Add MC samples: one ``[B, C, H, W]`` sample of logits or probabilities (``sample_dim=None``), or a
        stack of T of them, ``[T, B, C, H, W]`` (``sample_dim=0``) or baal's ``[B, C, H, W, T]``
        (``sample_dim=-1``), read in place. Same ``[B, C, H, W]``, dtype kind and device every time.

        A sample with NaN/inf (or, for probabilities, negative pixels or pixels whose sum is 0 or outside
        float32's normal range) raises ValueError; after a rejected update other than the first the accumulator
        must be :meth:`reset`.
        """
        self._check_valid()
        if sample_dim is None:
            kind = array_kind(scores)
            x = as_tensor(scores, "scores", OP)
            check_ndim(OP, "scores", x, "[B, C, H, W]")
            check_float(OP, "scores", x)
            if x.shape[1] < 1:
                raise ValueError(f"{OP}: argument 'scores' needs at least one class, got {describe(x)}")
            given, x = x, x.unsqueeze(0)
        else:
            kind, x = _stack(scores, sample_dim)
            given = x.movedim(0, _sample_axis(sample_dim))
        sample_shape = tuple(x.shape[1:])
        first = self._sum_p is None
        if first:
            self._kind = kind
            self._sum_p = empty(sample_shape, torch.float32, x.device)
            self._sum_h = empty((sample_shape[0], *sample_shape[2:]), torch.float32, x.device)
        elif sample_shape != tuple(self._sum_p.shape):
            raise ValueError(
                f"{OP}: every sample fed to BaldAccumulator.update must have shape {tuple(self._sum_p.shape)} "
                f"like the first one, got {sample_shape} (scores {describe(given)})"
            )
        else:
            check_same_device(OP, "scores", given, "the first sample", self._sum_p)
        impl = launcher(OP, self.backend, x.device)
        if self.from_logits:
            warn_if_probabilities(OP, x, 2)
        flags = 0
        if x.numel():
            with stream_context(kind, x.device):
                stack, sample_last = _kernel_stack(impl, x)
                flags = impl.module.bald_update(stack, sample_last, self.from_logits, first, self._sum_p, self._sum_h)
        if flags:
            # The kernels read each sample once, so a bad value is found after the sums were updated: a rejected
            # first update leaves the accumulator empty, a later one leaves it unusable until reset().
            if first:
                self.reset()
            else:
                self._invalid = f"update {self.updates + 1} was rejected after its samples were added to the sums"
            raise_for_flags(OP, "scores", flags, given)
        self.samples += x.shape[0]
        self.updates += 1

    def mean_probabilities(self) -> Any:
        """``[B, C, H, W]`` float32 mean of the samples' probabilities (softmax of the logits, or the normalised
        probabilities), in the kind of array fed to :meth:`update`: the MC-mean prediction, e.g. for
        ``fastral.region_stats(acc.mean_probabilities(), region, from_logits=False)``."""
        self._check_valid()
        if self._sum_p is None:
            raise ValueError(f"{OP}: BaldAccumulator.mean_probabilities needs at least one sample; call update()")
        return to_kind(self._sum_p / self.samples, self._kind)

    def compute(self, region: int | tuple[int, int] | None = None, ignore_mask: Any = None) -> BaldResult:
        """BALD of the samples so far (at least one), with optional per-region means as in :func:`bald`."""
        self._check_valid()
        if self._sum_p is None:
            raise ValueError(f"{OP}: BaldAccumulator.compute needs at least one sample; call update() first")
        sum_p, sum_h = self._sum_p, self._sum_h
        B, _, H, W = sum_p.shape
        region, mask = _check_region(region, ignore_mask, sum_p, B, H, W)
        impl = launcher(OP, self.backend, sum_p.device)
        bald_map, entropy = _empty_maps(B, H, W, sum_p.device)
        if bald_map.numel():
            with stream_context(self._kind, sum_p.device):
                impl.module.bald_finalize(sum_p, sum_h, self.samples, bald_map, entropy)
        return _result(bald_map, entropy, region, mask, self._kind)
