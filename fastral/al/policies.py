"""Acquisition policies with one interface: ``select(pools) -> one pool position per pool`` (``[K]`` int64).

Every policy picks one region per pool (argmax within each of the K pools, not a global top-K), as the official
code does, and computes only what it scores with:

  * ``uniform``: a random position per pool; no network pass at all.
  * ``entropy``: the highest mean pixel entropy; one cached forward pass per candidate image, no state, no KL.
  * ``bald``: the highest mean MC-dropout BALD; the backbone once per batch of candidate images and ``samples``
    dropout + classifier passes streamed into a ``BaldAccumulator``.
  * ``ralis``: the query network's greedy choice over the state and the full action features.
"""

from __future__ import annotations

import numpy as np
import torch

from .dqn import DQNAgent
from .environment import ALEnvironment, Pools


class Policy:
    name = ""

    def select(self, pools: Pools) -> np.ndarray:
        """One pool position per pool, ``[K]`` int64."""
        raise NotImplementedError


class UniformPolicy(Policy):
    name = "uniform"

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def select(self, pools: Pools) -> np.ndarray:
        K, N = pools.shape
        return self.rng.integers(0, N, size=K)


class EntropyPolicy(Policy):
    name = "entropy"

    def __init__(self, env: ALEnvironment):
        self.env = env

    def select(self, pools: Pools) -> np.ndarray:
        return self.env.entropy_scores(pools).argmax(1).numpy()


class BaldPolicy(Policy):
    name = "bald"

    def __init__(self, env: ALEnvironment, samples: int, generator: torch.Generator):
        self.env, self.samples, self.generator = env, samples, generator

    def select(self, pools: Pools) -> np.ndarray:
        return self.env.bald_scores(pools, self.samples, self.generator).argmax(1).numpy()


class RalisPolicy(Policy):
    """The trained query network, greedy (no exploration)."""

    name = "ralis"

    def __init__(self, env: ALEnvironment, agent: DQNAgent):
        self.env, self.agent = env, agent

    def select(self, pools: Pools) -> np.ndarray:
        obs = self.env.observe(pools)
        with self.env.timer.section("dqn"):
            return self.agent.select(obs.actions, obs.state, explore=False).numpy()
