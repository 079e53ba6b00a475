"""Periodic events in env steps: train rounds, target syncs, logs, evaluations, checkpoints.

The loop advances by ``num_envs`` env steps at a time, so "every N env steps" means "each time
the step count crosses a multiple of N", which may happen between two multiples of num_envs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Every:
    """An event due each time the env step count crosses a multiple of ``period``."""

    period: int

    def count(self, previous_step: int, step: int) -> int:
        """Multiples of ``period`` crossed going from ``previous_step`` to ``step``."""
        return step // self.period - previous_step // self.period

    def due(self, previous_step: int, step: int) -> bool:
        return self.count(previous_step, step) > 0
