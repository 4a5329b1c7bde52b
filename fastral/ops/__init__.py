"""fastral's featurizer ops: one public function per op, with its pure-PyTorch ``reference_<op>`` beside it."""

from ._common import region_grid
from .bald import BaldAccumulator, BaldResult, bald, reference_bald
from .kl_histogram import kl_histogram, reference_kl_histogram
from .region_stats import RegionStats, pixel_entropy, reference_region_stats, region_stats

__all__ = [
    "BaldAccumulator",
    "BaldResult",
    "RegionStats",
    "bald",
    "kl_histogram",
    "pixel_entropy",
    "reference_bald",
    "reference_kl_histogram",
    "reference_region_stats",
    "region_grid",
    "region_stats",
]
