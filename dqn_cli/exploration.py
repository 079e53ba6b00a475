"""Epsilon schedules, in env steps."""

from __future__ import annotations

from collections.abc import Callable

EpsilonSchedule = Callable[[int], float]


def make_epsilon_schedule(kind: str, start: float, end: float, steps: int) -> EpsilonSchedule:
    """Epsilon as a function of the env step, reaching ``end`` at ``steps`` and staying there.

    ``linear`` moves by a constant amount per step; ``exponential`` shrinks by a constant factor
    per step (geometric interpolation), spending longer near ``end``. An ``end`` of 0 with the
    exponential schedule is floored at 1e-3 for the interpolation, then 0 from ``steps`` on.
    """
    if steps == 0:
        return lambda step: end
    if kind == "linear":
        return linear_anneal(start, end, steps)
    if kind == "exponential":
        ratio = max(end, 1e-3) / max(start, 1e-3)
        return lambda step: start * ratio ** (step / steps) if step < steps else end
    raise ValueError(f"unknown exploration schedule {kind!r}; valid: linear, exponential")


def linear_anneal(start: float, end: float, steps: int) -> Callable[[int], float]:
    """A value moving linearly from ``start`` to ``end`` over ``steps`` (e.g. PER's beta)."""
    return lambda step: start + (end - start) * min(1.0, step / max(steps, 1))
