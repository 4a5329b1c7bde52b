"""fastral inside a baal 2.x active-learning loop: region heuristics and a region data set.

**Heuristics.** :class:`RegionBALD`, :class:`RegionPredictiveEntropy` and :class:`RegionMeanLogitEntropy` follow
baal's ``AbstractHeuristic`` contract (they subclass it): ``get_uncertainties(predictions)`` returns one score per
region, ``get_ranks`` the indices from the most to the least informative with the scores, and ``heuristic(predictions)``
the ranks alone, on baal's predictions ``[N, C, H, W, T]`` (``ModelWrapper.predict_on_dataset(..., iterations=T)``:
MC samples on the last axis), read in place by fastral's kernels (``fastral.bald(..., sample_dim=-1)``). The
scores are ``[N * R]``: images in order, each image's ``R`` regions in :func:`fastral.region_grid` order (row-major;
a remainder that does not fill a region is dropped), so score ``k`` is region ``k % R`` of image ``k // R``. A
region's pixel scores are reduced by ``reduction``: "mean" (baal's segmentation example), "max" or "sum".

**Two entropies.** On logits baal's ``Entropy`` averages the *logits* over the MC samples and then takes the
softmax: ``H[softmax(mean_t z_t)]`` (:class:`RegionMeanLogitEntropy`). fastral's entropy (the predictive entropy
of BALD and of RALIS) averages the *probabilities*: ``H[mean_t softmax(z_t)]`` (:class:`RegionPredictiveEntropy`).
They rank regions differently (on a large case the top regions overlapped 1 in 13); on probabilities baal's
``Entropy`` is the predictive entropy.

**Logits or probabilities.** ``from_logits=None`` decides as baal does (``baal.utils.array_utils.to_prob``):
probabilities if every value is in [0, 1] and every pixel sums to 1, logits otherwise. That check reads the whole
stack once more; pass ``from_logits=True`` or ``False`` to skip it.

**Data set.** :class:`RegionDataset` makes the regions of a fastral data set the items of a torch ``Dataset``
(item ``r`` is data-set region id ``r``: the region's image crop and label crop), and
:class:`RegionActiveLearningDataset` is baal's ``ActiveLearningDataset`` over it, kept in step with a
:class:`fastral.data.LabeledRegions`: whatever baal labels (``label``, ``label_randomly``, ``ActiveLearningLoop``)
the ``LabeledRegions`` labels too, and :meth:`RegionActiveLearningDataset.label_regions` labels by data-set
region id, what the heuristics rank when the network predicts on whole images.

Needs baal (``pip install "fastral-al[baal]"``).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

try:
    from baal.active.dataset import ActiveLearningDataset
    from baal.active.heuristics import AbstractHeuristic
    from baal.active.heuristics.heuristics import require_single_item
except ImportError as exc:  # an optional integration: say how to get it
    raise ImportError(
        f'fastral.integrations.baal needs baal 2.x ({exc}); install it with: pip install "fastral-al[baal]"'
    ) from exc

from .. import bald, pixel_entropy
from .._arrays import as_tensor
from .._validate import describe, pair
from ..data import LabeledRegions
from ..ops._common import region_view

REDUCTIONS = ("mean", "max", "sum")


def are_probabilities(x: torch.Tensor) -> bool:
    """baal's test (``to_prob``) on ``[N, C, ...]``: every value in [0, 1] and every pixel summing to 1 over axis 1."""
    low, high = torch.aminmax(x)
    if low < 0 or high > 1:
        return False
    sums = x.sum(1, dtype=torch.float64)
    return bool(torch.allclose(sums, torch.ones_like(sums)))  # numpy's allclose tolerances, as baal


class _RegionHeuristic(AbstractHeuristic):
    """A per-pixel score of baal's ``[N, C, H, W, T]`` predictions, reduced over each region (see the module)."""

    def __init__(
        self, region: int | tuple[int, int], reduction: str = "mean", from_logits: bool | None = None, backend="auto"
    ):
        # Higher scores are more informative (reverse=True ranks them first); baal's own reduction maps a
        # per-item score array to one number per item, here the regions already are the items, so it is "none".
        super().__init__(reverse=True, reduction="none")
        name = type(self).__name__
        self.region = pair(name, "region", region)
        if reduction not in REDUCTIONS:
            raise ValueError(f"{name}: argument 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")
        if from_logits not in (None, True, False):
            raise TypeError(f"{name}: argument 'from_logits' must be True, False or None (decide), got {from_logits!r}")
        self.region_reduction = reduction
        self.from_logits = from_logits
        self.backend = backend

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(region={self.region}, reduction={self.region_reduction!r}, "
            f"from_logits={self.from_logits}, backend={self.backend!r})"
        )

    def pixel_scores(self, predictions: torch.Tensor, from_logits: bool) -> torch.Tensor:
        """``[N, H, W]`` float32 scores of ``[N, C, H, W, T]`` predictions."""
        raise NotImplementedError

    @require_single_item
    def compute_score(self, predictions: Any, target_predictions=None) -> np.ndarray:
        """One score per region, ``[N * R]`` float32 (images in order, regions in region_grid order)."""
        name = type(self).__name__
        x = as_tensor(predictions, "predictions", name)
        if x.ndim != 5 or x.shape[1] < 2:
            raise ValueError(
                f"{name}: argument 'predictions' must be baal's [N, C, H, W, T] MC predictions of a segmentation "
                f"network with C >= 2 classes, got {describe(x)}"
            )
        rh, rw = self.region
        if rh > x.shape[2] or rw > x.shape[3]:
            raise ValueError(
                f"{name}: argument 'region' {self.region} (h, w) is larger than the {x.shape[2]}x{x.shape[3]} "
                f"predictions ({describe(x)})"
            )
        from_logits = not are_probabilities(x) if self.from_logits is None else self.from_logits
        tiles = region_view(torch.as_tensor(self.pixel_scores(x, from_logits)), self.region).flatten(1)
        reduced = {"mean": tiles.mean, "max": tiles.amax, "sum": tiles.sum}[self.region_reduction](1)
        return reduced.cpu().numpy()


class RegionBALD(_RegionHeuristic):
    """BALD (mutual information) per region: ``H[mean_t p_t] - mean_t H[p_t]`` per pixel, reduced over each
    ``region = (h, w)``; the same scores as baal's ``BALD`` followed by the region reduction, from fastral's
    kernels. ``backend`` is ``fastral.bald``'s."""

    def pixel_scores(self, predictions, from_logits):
        return bald(predictions, from_logits=from_logits, sample_dim=-1, backend=self.backend).bald


class RegionPredictiveEntropy(_RegionHeuristic):
    """Predictive entropy per region: ``H[mean_t softmax(z_t)]``, the entropy of the mean of the MC samples'
    *probabilities* (fastral's and RALIS's entropy; baal's ``Entropy`` when the predictions are probabilities).
    Not baal's ``Entropy`` on logits: see :class:`RegionMeanLogitEntropy`."""

    def pixel_scores(self, predictions, from_logits):
        return bald(predictions, from_logits=from_logits, sample_dim=-1, backend=self.backend).entropy


class RegionMeanLogitEntropy(_RegionHeuristic):
    """baal's ``Entropy`` on logits, per region: ``H[softmax(mean_t z_t)]``, the entropy of the softmax of the
    MC samples' mean *logits*. On probabilities baal's ``Entropy`` is :class:`RegionPredictiveEntropy`, so this
    heuristic refuses them."""

    def pixel_scores(self, predictions, from_logits):
        if not from_logits:
            raise ValueError(
                f"{type(self).__name__}: the predictions are probabilities (or from_logits=False), whose baal "
                "Entropy is H[mean_t p_t]: use RegionPredictiveEntropy"
            )
        return pixel_entropy(predictions.float().mean(-1), from_logits=True)


class RegionDataset(torch.utils.data.Dataset):
    """The regions of a fastral data set as the items of a torch ``Dataset`` (for baal's ``ActiveLearningDataset``).

    Item ``r`` is data-set region id ``r`` of ``dataset.regions`` (:func:`fastral.region_grid` order, images one
    after another): ``(image crop float32 [3, h, w], label crop int64 [h, w])``. It has no ``label`` method, so
    baal does not take it for an oracle that needs label values.

    Args:
        dataset: a fastral data set (``ds[i]`` gives ``(image, label)``, ``ds.regions`` its region grid).
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.grid = dataset.regions

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, region_id) -> tuple[torch.Tensor, torch.Tensor]:
        image, y, x, h, w = self.grid.locate(region_id)
        rgb, label = self.dataset[image]
        return rgb[:, y : y + h, x : x + w], label[y : y + h, x : x + w]

    def __deepcopy__(self, memo) -> RegionDataset:
        # baal deep-copies the data set for every pool it makes (to set pool_specifics on the copy); the fastral
        # data set is read-only, so the copy shares it instead of duplicating its decoded images.
        return RegionDataset(self.dataset)


class RegionActiveLearningDataset(ActiveLearningDataset):
    """baal's ``ActiveLearningDataset`` whose items are the regions of a fastral data set, kept in step with a
    :class:`~fastral.data.LabeledRegions`.

    Item ``r`` (of the labelled set, the pool or ``get_raw``) is data-set region id ``r`` of a
    :class:`RegionDataset`; ``labelled_map[r]`` is the AL step region ``r`` was labelled at. baal's ``label``
    takes *pool* indices (as ``ActiveLearningLoop`` passes them); :meth:`label_regions` takes data-set region ids.
    Either adds the regions to ``labeled_regions``, the oracle fastral trains from
    (``labeled_regions.training_items()``), checking them first, so the two never disagree.

    Args:
        dataset: a fastral data set.
        labeled: the ``LabeledRegions`` of ``dataset`` to keep in step (default: a new, empty one); its regions
            start labelled (AL step 1).
        **kwargs: baal's ``ActiveLearningDataset`` arguments (``random_state``, ``pool_specifics``, ...).
    """

    def __init__(self, dataset, labeled: LabeledRegions | None = None, **kwargs):
        labeled = LabeledRegions(dataset) if labeled is None else labeled
        if labeled.dataset is not dataset:
            raise ValueError(
                f"RegionActiveLearningDataset: argument 'labeled' must be the LabeledRegions of 'dataset' "
                f"({dataset!r}), got one of {labeled.dataset!r}"
            )
        if "labelled" in kwargs:
            raise ValueError("RegionActiveLearningDataset: the labelled regions come from 'labeled', not 'labelled'")
        labelled = np.zeros(len(labeled.grid), np.int64)
        labelled[labeled.region_ids] = 1
        super().__init__(RegionDataset(dataset), labelled=labelled, **kwargs)
        self.labeled_regions = labeled

    def label(self, index, value=None) -> None:
        """Label baal *pool* indices (positions in ``self.pool``), as baal's loop does."""
        if value is not None:
            raise ValueError(
                "RegionActiveLearningDataset.label: the labels come from the data set (its LabeledRegions is the "
                f"oracle); argument 'value' must be None, got {type(value).__name__}"
            )
        positions = [index] if isinstance(index, (int, np.integer)) else list(index)
        pool_size = self.n_unlabelled
        for p in positions:
            if not 0 <= operator.index(p) < pool_size:
                raise IndexError(f"RegionActiveLearningDataset.label: pool index {p} out of range [0, {pool_size})")
        self.labeled_regions.add(self._pool_to_oracle_index(positions))  # raises on repeats, changing nothing
        super().label(positions)

    def label_regions(self, region_ids) -> None:
        """Label data-set region ids (e.g. the top of a region heuristic's ranking of whole-image predictions)."""
        ids = self.labeled_regions.grid.check_ids(region_ids)
        already = ids[self.labelled[ids]]
        if already.size:
            raise ValueError(f"RegionActiveLearningDataset: data-set region ids {already[:5].tolist()} are labelled")
        self.label(self._oracle_to_pool_index(ids.tolist()))

    def load_state_dict(self, state_dict) -> None:
        """baal's state (labelled map + random state); ``labeled_regions`` is rebuilt from it, in AL-step order."""
        super().load_state_dict(state_dict)
        steps = np.asarray(self.labelled_map)
        ids = np.flatnonzero(steps)
        state = self.labeled_regions.state_dict()
        state["region_ids"] = ids[np.argsort(steps[ids], kind="stable")].tolist()
        self.labeled_regions.load_state_dict(state)
