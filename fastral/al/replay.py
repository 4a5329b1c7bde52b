"""Experience replay for the batch-mode DQN: K sub-action transitions per AL step, one shared state per step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Transition:
    """One sub-action: in pool ``actions`` (``[N, Da]``) under state ``state_id``, candidate ``action`` was picked."""

    state_id: int
    actions: torch.Tensor  # [N, Da]
    action: int
    reward: float
    next_state_id: int | None  # None: the episode ended (terminal transition)
    next_actions: torch.Tensor | None  # [N, Da] the paired pool of the next step


class ReplayMemory:
    """A ring buffer of ``capacity`` transitions, sampled uniformly.

    Every transition of a step shares that step's state (``[R, Ds]``), stored once (:meth:`add_state`, right
    before the pushes that refer to it) and dropped when no transition refers to it any more. All tensors live on
    the CPU.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.transitions: list[Transition] = []
        self.position = 0
        self.states: dict[int, torch.Tensor] = {}
        self._next_state_id = 0

    def __len__(self) -> int:
        return len(self.transitions)

    def add_state(self, state: torch.Tensor) -> int:
        """Store a step's state; returns the id transitions refer to it by."""
        state_id = self._next_state_id
        self._next_state_id += 1
        self.states[state_id] = state.detach().cpu()
        return state_id

    def push(self, transition: Transition) -> None:
        if len(self.transitions) < self.capacity:
            self.transitions.append(transition)
        else:
            self.transitions[self.position] = transition
        self.position = (self.position + 1) % self.capacity
        self._drop_unreferenced_states()

    def sample(self, batch_size: int, rng: np.random.Generator) -> list[Transition]:
        idx = rng.choice(len(self.transitions), size=batch_size, replace=False)
        return [self.transitions[i] for i in idx]

    def _drop_unreferenced_states(self) -> None:
        used = {t.state_id for t in self.transitions} | {t.next_state_id for t in self.transitions}
        for state_id in [s for s in self.states if s not in used]:
            del self.states[state_id]

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "position": self.position,
            "next_state_id": self._next_state_id,
            "states": dict(self.states),
            "transitions": [vars(t) for t in self.transitions],
        }

    def load_state_dict(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self.position = state["position"]
        self._next_state_id = state["next_state_id"]
        self.states = dict(state["states"])
        self.transitions = [Transition(**t) for t in state["transitions"]]
