"""The RALIS environment: the labelled set, candidate pools, state / action features, training and reward.

Indices, everywhere in this module:
  * *image index*: a data-set image index of the source split (``dataset.image(i)``);
  * *region id*: a data-set region id of that split (:class:`fastral.data.RegionGrid` numbering);
  * *pool position*: the column ``n`` of a candidate in its pool, ``Pools.region_ids[k, n]``.
A pool (D_T while training the policy, D_V when evaluating it) is a list of image indices.

Candidate sampling follows the official code (``get_region_candidates``): pool images with unlabelled regions are
drawn at random, without replacement, until their unlabelled regions number more than K*N; then K*N times a
random one of those images gives up a random unlabelled region (no duplicates); the K*N candidates are shuffled
and cut into K pools of N. Features of an image are computed with one forward pass whose logits feed
``region_stats`` directly. Under theta_0 they are read from / written to the HDF5
:class:`~fastral.al.cache.FeatureCache` (keyed by the weights' hash), so the initial network's features of the
pools and of D_S are computed once for all episodes, policies and seeds (and runs sharing the cache file). Weights
reached after a training step are met once, so their features are computed and not stored (storing them would grow
the file by every step's features: tens of GB on Cityscapes); the next state's features, computed at the end of a
step, are carried to the next step rather than recomputed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .. import BaldAccumulator
from ..data import LabeledRegions
from ..training import TrainConfig, evaluate, make_optimizer, train_steps
from .cache import FeatureCache, weights_hash
from .features import RegionFeatures, action_features, ground_truth_distribution, region_features
from .timing import Timer


@dataclass(frozen=True)
class Pools:
    """K pools of N candidate regions: ``region_ids[k, n]`` is the data-set region id at pool position n of
    pool k (int64 ``[K, N]``)."""

    region_ids: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.region_ids.shape)

    def chosen(self, positions) -> np.ndarray:
        """Data-set region ids picked by one pool position per pool (``positions``: ``[K]``)."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        K, N = self.shape
        if positions.shape != (K,) or positions.min(initial=0) < 0 or positions.max(initial=0) >= N:
            raise ValueError(f"positions must be {K} pool positions in [0, {N}), got {positions.tolist()}")
        return self.region_ids[np.arange(K), positions]


@dataclass
class Observation:
    """What the query network sees at one step: the state and the action features of every candidate."""

    pools: Pools
    state: torch.Tensor  #: ``[R, Ds]`` features of the D_S regions under the current network
    actions: torch.Tensor  #: ``[K, N, Da]`` candidate features, the two KL histograms last


class ALEnvironment:
    """Labelled set, segmentation net and optimiser of one active-learning trajectory, plus its featurizers.

    Args:
        dataset: the source split (D_S, D_T and D_V images all live in it).
        pool_images: image indices of the unlabelled pool (D_T or D_V).
        state_images: image indices of D_S (sorted; their region order is the state's row order).
        model: the segmentation network (its weights are this environment's; :meth:`reset` restores ``theta0``).
        theta0: the initial weights (a state dict).
        train_config: optimiser and crop settings of the per-step (and final) training.
        reward_set, reward_indices: D_R (data set and its image indices).
        cache: the feature cache of ``dataset``.
        timer: where time is charged.
    """

    def __init__(
        self,
        dataset,
        pool_images,
        state_images,
        model: torch.nn.Module,
        theta0: dict,
        train_config: TrainConfig,
        reward_set,
        reward_indices,
        cache: FeatureCache,
        timer: Timer,
        *,
        step_epochs: int = 1,
        entropy_pool: tuple[int, int] = (8, 8),
        kl_bins: int = 32,
        eval_batch_size: int = 4,
    ):
        self.dataset, self.grid = dataset, dataset.regions
        self.pool_images = np.array(sorted(int(i) for i in pool_images), np.int64)
        self.state_images = [int(i) for i in sorted(state_images)]
        self.model, self.theta0, self.train_config = model, theta0, train_config
        self.reward_set, self.reward_indices = reward_set, list(reward_indices)
        self.cache, self.timer = cache, timer
        self.step_epochs, self.entropy_pool, self.kl_bins = step_epochs, tuple(entropy_pool), kl_bins
        self.eval_batch_size = eval_batch_size
        self.device = next(model.parameters()).device
        self.reset()
        self._theta0_key = self.weights_key()

    # -- trajectory state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to theta_0 with a fresh optimiser and nothing labelled (start of an episode / evaluation)."""
        self.model.load_state_dict(self.theta0)
        self.model.eval()
        self.optimizer = make_optimizer(self.model, self.train_config)
        self.labelled = LabeledRegions(self.dataset)
        self._weights = None

    def state_dict(self) -> dict:
        return {
            "labelled": self.labelled.state_dict(),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # a snapshot, not the live momentum buffers
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.optimizer = make_optimizer(self.model, self.train_config)
        self.optimizer.load_state_dict(state["optimizer"])
        self.labelled = LabeledRegions(self.dataset)
        self.labelled.load_state_dict(state["labelled"])
        self._weights = None

    def weights_key(self) -> str:
        """Hash of the current segmentation weights (the cache key); recomputed only after they change."""
        if self._weights is None:
            self._weights = weights_hash(self.model)
        return self._weights

    # -- candidates ------------------------------------------------------------------------------------------
    def unlabelled_per_image(self) -> np.ndarray:
        """Unlabelled regions of each pool image (aligned with ``pool_images``)."""
        done = np.bincount(self.grid.image_of(self.labelled.region_ids), minlength=self.grid.num_images)
        return self.grid.per_image - done[self.pool_images]

    def sample_pools(self, pools: int, size: int, rng: np.random.Generator) -> Pools:
        """``pools`` (K) pools of ``size`` (N) distinct unlabelled candidates, sampled as the official code does.

        If fewer than K*N regions are left unlabelled, N shrinks to what is left (at least one per pool).
        """
        with self.timer.section("bookkeeping"):
            free = self.unlabelled_per_image()
            left = int(free.sum())
            if left < pools:
                raise ValueError(f"the pool has {left} unlabelled regions left, fewer than the {pools} pools to fill")
            size = min(size, left // pools)
            want = pools * size
            has_free = np.flatnonzero(free > 0)
            order = has_free[rng.permutation(len(has_free))]
            enough = int(np.searchsorted(np.cumsum(free[order]), want, side="right")) + 1  # sum > want, or all
            images = self.pool_images[order[:enough]]
            regions = [list(self.labelled.unlabelled_ids([i])) for i in images]
            live = list(range(len(regions)))
            draws = rng.random((want, 2))
            picked = np.empty(want, np.int64)
            for j, (u_image, u_region) in enumerate(draws):
                slot = int(u_image * len(live))
                bucket = regions[live[slot]]
                k = int(u_region * len(bucket))
                bucket[k], bucket[-1] = bucket[-1], bucket[k]
                picked[j] = bucket.pop()
                if not bucket:
                    live[slot] = live[-1]
                    live.pop()
            return Pools(picked[rng.permutation(want)].reshape(pools, size))

    # -- features --------------------------------------------------------------------------------------------
    def features(self, images) -> RegionFeatures:
        """Region features of ``images`` (image indices) under the current weights, regions concatenated in
        the given image order (each image's in region_grid order). Cached under theta_0."""
        images = [int(i) for i in images]
        if self.weights_key() != self._theta0_key:
            return self._compute_features(images)
        with self.timer.section("feature_cache"):
            return self.cache.features(self._theta0_key, images, self._compute_features)

    @torch.no_grad()
    def _compute_features(self, images: list[int]) -> RegionFeatures:
        """One forward pass per image (batch of one, so values never depend on which images are batched)."""
        parts = []
        self.model.eval()
        for i in images:
            with self.timer.section("segmentation_forward"):
                logits = self.model(self.dataset.image(i)[None].to(self.device))
            with self.timer.section("featurizers"):
                parts.append(region_features(logits, self.dataset.region, self.entropy_pool))
        return RegionFeatures(*(torch.cat([getattr(p, f) for p in parts]).cpu() for f in RegionFeatures._fields))

    def _candidate_rows(self, pools: Pools) -> tuple[np.ndarray, np.ndarray]:
        """(sorted candidate images, row of each candidate in their concatenated features), flattened pools."""
        ids = pools.region_ids.reshape(-1)
        owner = self.grid.image_of(ids)
        images = np.unique(owner)
        return images, np.searchsorted(images, owner) * self.grid.per_image + ids % self.grid.per_image

    def state(self) -> torch.Tensor:
        """``[R, Ds]`` features of every D_S region under the current network."""
        return self.features(self.state_images).base

    def labelled_distribution(self) -> torch.Tensor:
        """``[L, C+1]`` ground-truth class fractions of the labelled regions, in labelling order, as the official
        ``balance_cl``: void included as the last slot, 1e-7 for absent classes, not renormalised."""
        return ground_truth_distribution(torch.from_numpy(self.labelled.region_class_counts()))

    def action_features(self, pools: Pools) -> torch.Tensor:
        """``[K, N, Da]`` action features: base features + KL histograms to the labelled set and to all K*N
        candidates of this step (pools flattened in order), from the candidates' raw predicted counts as in the
        official code (see :mod:`fastral.al.features`)."""
        images, rows = self._candidate_rows(pools)
        feats = self.features(images)
        with self.timer.section("featurizers"):
            base, counts = feats.base[rows].to(self.device), feats.class_counts[rows].to(self.device)
            actions = action_features(base, counts, self.labelled_distribution().to(self.device), self.kl_bins)
        return actions.cpu().reshape(*pools.shape, -1)

    def observe(self, pools: Pools) -> Observation:
        return Observation(pools, self.state(), self.action_features(pools))

    def entropy_scores(self, pools: Pools) -> torch.Tensor:
        """``[K, N]`` mean pixel entropy of every candidate (the Entropy baseline's score)."""
        images, rows = self._candidate_rows(pools)
        return self.features(images).entropy_mean[rows].reshape(pools.shape)

    @torch.no_grad()
    def bald_scores(self, pools: Pools, samples: int, generator: torch.Generator) -> torch.Tensor:
        """``[K, N]`` mean MC-dropout BALD of every candidate: per batch of candidate images, the backbone runs
        once and ``samples`` dropout + classifier passes stream into a :class:`fastral.BaldAccumulator`."""
        images, rows = self._candidate_rows(pools)
        scores = []
        for start in range(0, len(images), self.eval_batch_size):
            x = self.dataset.images(images[start : start + self.eval_batch_size].tolist()).to(self.device)
            acc = BaldAccumulator()
            mc = self.model.mc_samples(x, samples, generator=generator)
            for _ in range(samples):
                with self.timer.section("segmentation_forward"):
                    logits = next(mc)
                with self.timer.section("featurizers"):
                    acc.update(logits)
            with self.timer.section("featurizers"):
                scores.append(acc.compute(region=self.dataset.region).region_bald.cpu())
        return torch.cat(scores)[torch.from_numpy(rows)].reshape(pools.shape)

    # -- labelling, training, reward ---------------------------------------------------------------------------
    def label(self, region_ids) -> list[int]:
        """The oracle labels these region ids."""
        with self.timer.section("bookkeeping"):
            return self.labelled.add(region_ids)

    def train_on(self, region_ids, generator: torch.Generator) -> float:
        """Train on just-labelled regions (``step_epochs`` passes; crops contain each region). Returns the loss."""
        with self.timer.section("training"):
            items = self.labelled.training_items(region_ids)
            stats = train_steps(
                self.model,
                self.dataset,
                items,
                self.optimizer,
                self.train_config,
                epochs=self.step_epochs,
                generator=generator,
            )
            self.model.eval()
            self._weights = None
        return stats.loss

    def acquire(self, pools: Pools, positions, budget: int, generator: torch.Generator) -> np.ndarray:
        """One AL step's labelling: the oracle labels the candidate at ``positions`` in each pool (no more than
        ``budget`` regions labelled in all) and the network trains on them. Returns their region ids."""
        ids = pools.chosen(positions)[: budget - len(self.labelled)]
        self.label(ids)
        self.train_on(ids, generator)
        return ids

    def reward_miou(self) -> float:
        """mIoU of the current network on D_R."""
        with self.timer.section("reward_evaluation"):
            return evaluate(self.model, self.reward_set, self.reward_indices, self.eval_batch_size).miou
