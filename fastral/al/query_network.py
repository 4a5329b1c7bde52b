"""The RALIS query network: Q(s, a) for every candidate region of every pool.

As in the official ``QueryNetworkDQN``: every layer is pre-activation, BatchNorm -> ReLU -> 1x1 conv (a linear
layer applied to each region / candidate independently).

  state path   [B, R, Ds] -> BN, ReLU, Ds->256, BN, ReLU, 256->128, BN, ReLU, 128->1   one scalar per state region
               -> BN1d(R), ReLU, Linear(R -> 128)                                      one state vector
  action path  [B, N, Da] (without the KL columns) -> BN, ReLU, Da->512, BN, ReLU, 512->256, BN, ReLU, 256->128
  fusion       concat(state broadcast over N, action) [B, 256, N] -> BN(256), conv 256->1        f_n
  gate         KL columns [B, N, 2*bins] -> BN, ReLU, conv ->1                                   g_n
  Q(s, a_n) = sigmoid(g_n) * f_n                                                                 [B, N]

The state path depends only on the state, so :meth:`forward` takes one state per pool row or a single state
shared by every pool (computed once; the official code recomputes it per pool).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def _pre_activation(channels: list[int]) -> nn.Sequential:
    """BN -> ReLU -> 1x1 conv for each consecutive pair of channel counts."""
    layers = []
    for c_in, c_out in itertools.pairwise(channels):
        layers += [nn.BatchNorm1d(c_in), nn.ReLU(), nn.Conv1d(c_in, c_out, 1)]
    return nn.Sequential(*layers)


class QueryNetwork(nn.Module):
    """Q-values ``[B, N]`` of N candidates in each of B pools.

    Args:
        state_dim: features per state region (Ds).
        state_regions: number of state regions (R): the state path ends in a Linear over them, so their order
            must stay fixed (fastral.region_grid order over the sorted D_S images).
        action_dim: features per candidate, KL histograms included (Da + gate_dim).
        gate_dim: the trailing KL-histogram columns that drive the gate (2 x 32 bins).
    """

    def __init__(self, state_dim: int, state_regions: int, action_dim: int, gate_dim: int = 64):
        super().__init__()
        self.state_dim, self.state_regions, self.action_dim, self.gate_dim = (
            state_dim,
            state_regions,
            action_dim,
            gate_dim,
        )
        self.state_regions_path = _pre_activation([state_dim, 256, 128, 1])
        self.state_summary = nn.Sequential(nn.BatchNorm1d(state_regions), nn.ReLU(), nn.Linear(state_regions, 128))
        self.action_path = _pre_activation([action_dim - gate_dim, 512, 256, 128])
        self.fusion = nn.Sequential(nn.BatchNorm1d(256), nn.Conv1d(256, 1, 1))
        self.gate = _pre_activation([gate_dim, 1])

    def state_vector(self, state: torch.Tensor) -> torch.Tensor:
        """``[B, R, Ds]`` states -> ``[B, 128]``."""
        per_region = self.state_regions_path(state.transpose(1, 2)).squeeze(1)  # [B, R]
        return self.state_summary(per_region)

    def forward(self, actions: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Q-values ``[B, N]`` for ``actions [B, N, Da]`` under ``state`` ``[B, R, Ds]`` or ``[1, R, Ds]`` (shared)."""
        if actions.ndim != 3 or actions.shape[-1] != self.action_dim:
            raise ValueError(f"actions must be [B, N, {self.action_dim}], got {tuple(actions.shape)}")
        if state.ndim != 3 or tuple(state.shape[1:]) != (self.state_regions, self.state_dim):
            raise ValueError(f"state must be [B, {self.state_regions}, {self.state_dim}], got {tuple(state.shape)}")
        B, N, _ = actions.shape
        s = self.state_vector(state)  # [B or 1, 128]
        s = s.unsqueeze(2).expand(B, -1, N)
        a = self.action_path(actions[..., : -self.gate_dim].transpose(1, 2))  # [B, 128, N]
        f = self.fusion(torch.cat([s, a], 1)).squeeze(1)  # [B, N]
        g = self.gate(actions[..., -self.gate_dim :].transpose(1, 2)).squeeze(1)  # [B, N]
        return torch.sigmoid(g) * f
