"""Launchers of the ``cpp`` backend: :mod:`fastral._C` over the raw addresses of CPU tensors.

Same entry points and arguments as every launcher module (see :mod:`fastral.ops._torch`); inputs arrive contiguous,
in a kernel dtype (:func:`fastral.ops._common.kernel_input`). The arguments the two compiled modules share are laid
out once, in :mod:`fastral.ops._compiled`; the CPU module adds its OpenMP thread count.
"""

from __future__ import annotations

from .. import backends
from . import _compiled
from ._common import num_threads


def region_stats(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean) -> int:
    args = _compiled.region_stats(x, mask, region, pool, from_logits, counts, entropy_pool, entropy_mean)
    return backends.cpp_module().region_stats(args, num_threads())


def kl_histogram(p, q, bins, range, exclude_self, eps, out) -> None:
    backends.cpp_module().kl_histogram(_compiled.kl_histogram(p, q, bins, range, exclude_self, eps, out), num_threads())


def bald_stacked(x, sample_last, from_logits, bald, entropy) -> int:
    args = _compiled.bald_stacked(x, sample_last, from_logits, bald, entropy)
    return backends.cpp_module().bald_stacked(args, num_threads())


def bald_update(x, sample_last, from_logits, first, sum_p, sum_h) -> int:
    args = _compiled.bald_update(x, sample_last, from_logits, first, sum_p, sum_h)
    return backends.cpp_module().bald_update(args, num_threads())


def bald_finalize(sum_p, sum_h, T, bald, entropy) -> None:
    backends.cpp_module().bald_finalize(_compiled.bald_finalize(sum_p, sum_h, T, bald, entropy), num_threads())
