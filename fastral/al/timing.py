"""Wall-clock accounting of an AL run by section (segmentation forward, featurizers, DQN, training, reward...).

Sections nest; each second is charged to the innermost open section only (exclusive time), so the parts of a
step add up to the step. ``Timer.step()`` counts AL steps, for per-step means.
"""

from __future__ import annotations

import contextlib
import time

# The sections a step is broken into, in report order.
STEP_SECTIONS = (
    "segmentation_forward",  # network forwards for features (state, candidates, MC-dropout samples)
    "featurizers",  # region_stats, kl_histogram, BALD accumulation: fastral's ops
    "feature_cache",  # HDF5 reads and writes
    "dqn",  # query-network selection and updates
    "training",  # segmentation training on the new regions
    "reward_evaluation",  # mIoU on D_R after the step
    "bookkeeping",  # candidate sampling, labelling, everything else in a step
    "checkpoint",  # the per-step atomic run state
)


class Timer:
    """Accumulates exclusive seconds per section name; state round-trips through :meth:`state_dict`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.steps = 0
        self._stack: list[list] = []  # [name, start, seconds spent in children]

    @contextlib.contextmanager
    def section(self, name: str):
        frame = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - frame[1]
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - frame[2]
            if self._stack:
                self._stack[-1][2] += elapsed

    def step(self) -> None:
        self.steps += 1

    def summary(self) -> dict:
        """Totals, per-step means and fractions of the step sections; other sections as totals."""
        in_steps = {k: self.seconds.get(k, 0.0) for k in STEP_SECTIONS}
        step_total = sum(in_steps.values())
        return {
            "steps": self.steps,
            "step_seconds_total": step_total,
            "seconds_per_step": {k: v / max(self.steps, 1) for k, v in in_steps.items()},
            "fraction_of_step": {k: (v / step_total if step_total else 0.0) for k, v in in_steps.items()},
            "other_seconds": {k: v for k, v in self.seconds.items() if k not in STEP_SECTIONS},
        }

    def state_dict(self) -> dict:
        return {"seconds": dict(self.seconds), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.seconds, self.steps = dict(state["seconds"]), int(state["steps"])
