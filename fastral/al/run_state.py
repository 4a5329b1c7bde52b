"""The resumable state of a run: one atomic file rewritten after every AL step, and the run's random streams.

A run is a fixed list of tasks (pretraining, then per seed: policy training, one evaluation per policy). The
state file holds the index of the current task, that task's progress (labelled set, segmentation weights and
optimiser, DQN agent with its replay memory, the pending observation), everything finished tasks produced, and
the state of every random stream. It is written with :func:`fastral._atomic.torch_save` (temporary file + rename),
so a kill, even ``kill -9``, leaves either the previous or the next complete state: a resumed run repeats at
most the step that was in progress, from the same random state, and ends with the same result.

All randomness goes through :class:`Streams`: explicit numpy / torch generators derived from the run seed and a
name (so, e.g., the candidate pools of a seed are the same sequence for every policy, and one policy's
evaluation does not depend on which others ran), plus torch's global generator (weight init, training dropout).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .._atomic import torch_save

STATE_FORMAT = "fastral-run-state/2"
STATE_FILE = "run_state.pt"


class RunStateError(ValueError):
    """A run state that cannot be read, or that belongs to a different configuration."""


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a run seed and names (stable across machines and Python versions)."""
    words = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return int(np.random.SeedSequence([w & 0xFFFFFFFF for w in words]).generate_state(2, np.uint64)[0] >> 1)


class Streams:
    """The named random generators of one task, created from ``keys`` (e.g. ``(seed, "eval", "bald")``).

    ``pools``: candidate sampling, keyed by ``pool_keys`` (shared by every policy of a seed); ``policy``: the
    policy's own draws (uniform's choices); ``train``: crops and flips; ``mc``: MC-dropout masks (on
    ``device``). Creating the streams also seeds torch's global generator.
    """

    def __init__(self, keys: tuple, pool_keys: tuple, device: torch.device | str = "cpu"):
        self.pools = np.random.default_rng(derive_seed(*pool_keys, "pools"))
        self.policy = np.random.default_rng(derive_seed(*keys, "policy"))
        self.train = torch.Generator().manual_seed(derive_seed(*keys, "train"))
        self.mc = torch.Generator(device=device).manual_seed(derive_seed(*keys, "mc"))
        torch.manual_seed(derive_seed(*keys, "global"))

    def state_dict(self) -> dict:
        state = {
            "pools": self.pools.bit_generator.state,
            "policy": self.policy.bit_generator.state,
            "train": self.train.get_state(),
            "mc": self.mc.get_state(),
            "global": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["global_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.pools.bit_generator.state = state["pools"]
        self.policy.bit_generator.state = state["policy"]
        self.train.set_state(state["train"])
        self.mc.set_state(state["mc"])
        torch.set_rng_state(state["global"])
        if "global_cuda" in state:
            torch.cuda.set_rng_state_all(state["global_cuda"])


def save_state(out: str | os.PathLike, state: dict) -> Path:
    """Write the run state into folder ``out``, atomically."""
    return torch_save({"format": STATE_FORMAT, **state}, Path(out) / STATE_FILE)


def load_state(out: str | os.PathLike) -> dict:
    """Read the run state of folder ``out``; :class:`RunStateError` if it is missing or unreadable."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise RunStateError(f"--resume: no run state '{path}' to resume (start the run without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on a damaged file
        raise RunStateError(f"--resume: cannot read run state '{path}': {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RunStateError(f"--resume: '{path}' is not a fastral run state (expected format {STATE_FORMAT!r})")
    return state


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``key: saved -> current`` for every setting that differs between two run configurations (nested dicts
    compared key by key, e.g. ``config.episodes: 2 -> 3``)."""
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out
