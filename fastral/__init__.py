"""fastral: fast region featurizers and a RALIS active-learning loop for semantic segmentation.

Featurizers (numpy, torch or any DLPack array in, the same kind out):
  :func:`region_stats`   per-region argmax class counts + min/mean/max entropy pooling, one pass
  :func:`kl_histogram`   histograms of KL(p_i || q_j) over j without the M x N matrix
  :func:`bald`, :class:`BaldAccumulator`   MC-dropout BALD, stacked or streaming
Each has a pure-PyTorch ``reference_<op>``; ``backend=`` picks the implementation (see :mod:`fastral.backends`).
"""

from .backends import BackendStatus, BackendUnavailableError, available_backends
from .ops import (
    BaldAccumulator,
    BaldResult,
    RegionStats,
    bald,
    kl_histogram,
    pixel_entropy,
    reference_bald,
    reference_kl_histogram,
    reference_region_stats,
    region_grid,
    region_stats,
)

__version__ = "0.1.0"

__all__ = [
    "BackendStatus",
    "BackendUnavailableError",
    "BaldAccumulator",
    "BaldResult",
    "RegionStats",
    "available_backends",
    "bald",
    "kl_histogram",
    "pixel_entropy",
    "reference_bald",
    "reference_kl_histogram",
    "reference_region_stats",
    "region_grid",
    "region_stats",
]
