"""Batch-mode double DQN (RALIS section 3.2): K sub-actions per step, one per pool, trained from replay.

Follows the official code, with these deliberate deviations (each is a known bug or a fragility there):
  * the next state's best action is chosen with the policy net in eval mode, so computing targets does not
    drift its BatchNorm statistics (the official code runs it in train mode);
  * the learning-rate decay steps once per episode, not once per AL step (per step, 0.97^t freezes the policy
    after a few episodes);
  * a batch whose transitions are all terminal is handled (the official code crashes on torch.cat([])).
The TD target is standard double DQN: y = r + gamma * Q_target(s', argmax_a Q_policy(s', a)); the paper's text
swaps which net selects and which evaluates, the official code does it this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .query_network import QueryNetwork
from .replay import ReplayMemory, Transition


@dataclass
class DQNConfig:
    """Hyper-parameters; defaults are the official Cityscapes ones (see fastral.al.presets for CamVid)."""

    lr: float = 1e-4
    momentum: float = 0.95
    weight_decay: float = 1e-3
    lr_decay_per_episode: float = 0.97
    gamma: float = 0.999
    batch_size: int = 16
    buffer_size: int = 3200
    target_update: int = 5  # copy the policy into the target net every this many steps of an episode
    eps_start: float = 0.9  # epsilon = eps_end + (eps_start - eps_end) * exp(-steps / eps_decay), over all steps
    eps_end: float = 0.05
    eps_decay: float = 10.0
    # The ralis-shuffled control: each sampled transition learns from the reward of another random transition in
    # memory (same reward distribution, no link between an action and what it earned).
    shuffle_rewards: bool = False


def td_targets(
    rewards: torch.Tensor, live: list[int], policy_next: torch.Tensor, target_next: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Double-DQN targets ``[B]``: ``r + gamma * Q_target(s', argmax_a Q_policy(s', a))`` for the transitions
    listed in ``live`` (rows of the ``[len(live), N]`` next-state Q tables), ``r`` alone for terminal ones."""
    targets = rewards.clone()
    if live:
        best = policy_next.argmax(1, keepdim=True)
        targets[live] += gamma * target_next.gather(1, best).squeeze(1)
    return targets


class DQNAgent:
    """The query network, its target copy, the replay memory and the optimiser, with a resumable state."""

    def __init__(self, net: QueryNetwork, config: DQNConfig, seed: int = 0):
        self.config = config
        self.policy = net
        self.target = QueryNetwork(net.state_dim, net.state_regions, net.action_dim, net.gate_dim)
        self.target.load_state_dict(net.state_dict())
        self.target.eval()
        self.optimizer = torch.optim.SGD(
            net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, config.lr_decay_per_episode)
        self.memory = ReplayMemory(config.buffer_size)
        self.rng = np.random.default_rng(seed)
        self.steps_done = 0  # AL steps over all episodes: drives epsilon
        self.updates = 0  # gradient updates so far
        self.episode_step = 0  # AL steps in this episode: drives the target copy

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def epsilon(self) -> float:
        c = self.config
        return c.eps_end + (c.eps_start - c.eps_end) * math.exp(-self.steps_done / c.eps_decay)

    @torch.no_grad()
    def q_values(self, pools: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``[K, N]`` Q-values of K pools ``[K, N, Da]`` under one state ``[R, Ds]`` (eval mode)."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            return self.policy(pools, state.unsqueeze(0))
        finally:
            self.policy.train(was_training)

    def select(self, pools: torch.Tensor, state: torch.Tensor, explore: bool) -> torch.Tensor:
        """One candidate index per pool, ``[K]``: greedy, or with probability epsilon (one draw per step, as
        in the official code) a uniformly random candidate in every pool."""
        K, N, _ = pools.shape
        if explore and self.rng.random() < self.epsilon():
            return torch.from_numpy(self.rng.integers(0, N, size=K))
        return self.q_values(pools, state).argmax(1).cpu()

    def remember(self, state, pools, actions, reward: float, next_state, next_pools) -> None:
        """Store the K sub-action transitions of one step; pool k of s is paired with pool k of s'
        (``next_state``/``next_pools`` None at the end of the episode)."""
        state_id = self.memory.add_state(state)
        next_id = None if next_state is None else self.memory.add_state(next_state)
        for k, action in enumerate(actions.tolist()):
            self.memory.push(
                Transition(
                    state_id,
                    pools[k].detach().cpu(),
                    int(action),
                    float(reward),
                    next_id,
                    None if next_pools is None else next_pools[k].detach().cpu(),
                )
            )

    def optimize(self) -> float | None:
        """One double-DQN gradient step on a replay batch (Huber loss); None while the memory is too small."""
        c = self.config
        if len(self.memory) < c.batch_size:
            return None
        batch = self.memory.sample(c.batch_size, self.rng)
        states = torch.stack([self.memory.states[t.state_id] for t in batch])
        pools = torch.stack([t.actions for t in batch])
        actions = torch.tensor([t.action for t in batch])
        if c.shuffle_rewards:
            donors = self.rng.integers(0, len(self.memory), size=len(batch))
            rewards = torch.tensor([self.memory.transitions[j].reward for j in donors], dtype=torch.float32)
        else:
            rewards = torch.tensor([t.reward for t in batch], dtype=torch.float32)
        live = [i for i, t in enumerate(batch) if t.next_state_id is not None]
        policy_next = target_next = torch.zeros(0, pools.shape[1])
        if live:
            next_states = torch.stack([self.memory.states[batch[i].next_state_id] for i in live])
            next_pools = torch.stack([batch[i].next_actions for i in live])
            with torch.no_grad():
                self.policy.eval()
                policy_next = self.policy(next_pools, next_states)
                target_next = self.target(next_pools, next_states)
        targets = td_targets(rewards, live, policy_next, target_next, c.gamma)
        self.policy.train()
        q = self.policy(pools, states).gather(1, actions[:, None]).squeeze(1)
        loss = F.smooth_l1_loss(q, targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return loss.item()

    def end_step(self) -> None:
        """Count an AL step; copy the policy into the target net every ``target_update`` steps of an episode."""
        self.steps_done += 1
        self.episode_step += 1
        if self.episode_step % self.config.target_update == 0:
            self.target.load_state_dict(self.policy.state_dict())

    def end_episode(self) -> None:
        self.episode_step = 0
        self.target.load_state_dict(self.policy.state_dict())
        self.scheduler.step()

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "memory": self.memory.state_dict(),
            "rng": self.rng.bit_generator.state,
            "steps_done": self.steps_done,
            "episode_step": self.episode_step,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.memory.load_state_dict(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        self.steps_done = state["steps_done"]
        self.episode_step = state["episode_step"]
        self.updates = state["updates"]
