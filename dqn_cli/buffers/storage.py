"""Preallocated circular storage for transitions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_ARRAYS = ("obs", "next_obs", "actions", "rewards", "terminated", "discounts")


class TransitionStorage:
    """Fixed-size ring of transitions held in preallocated numpy arrays.

    Observations keep the env's dtype (uint8 frames stay uint8). ``next_obs`` is stored beside
    ``obs`` rather than derived from the following slot: with vector envs and auto-reset the
    following slot usually belongs to another env or another episode.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        # gamma^k for a transition summing k rewards (n-step returns; gamma when n = 1)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        self.cursor = 0  # next slot to write
        self.size = 0

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    def state_dict(self) -> dict[str, Any]:
        """The stored part only (``size`` rows), as tensors for a ``weights_only`` checkpoint."""
        state: dict[str, Any] = {"cursor": self.cursor, "size": self.size}
        for name in _ARRAYS:
            state[name] = torch.from_numpy(getattr(self, name)[: self.size].copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"saved replay holds {size} transitions, capacity is {self.capacity}")
        for name in _ARRAYS:
            getattr(self, name)[:size] = state[name].numpy()
        self.cursor, self.size = int(state["cursor"]), size

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        discounts: np.ndarray | float,
    ) -> slice | np.ndarray:
        """Write a batch of transitions (leading axis = transition); return the slots written."""
        n = len(actions)
        end = self.cursor + n
        # A slice (no wrap-around, the usual case) writes much faster than an index array.
        slots: slice | np.ndarray = (
            slice(self.cursor, end)
            if end <= self.capacity
            else np.arange(self.cursor, end) % self.capacity
        )
        self.obs[slots] = obs
        self.next_obs[slots] = next_obs
        self.actions[slots] = actions
        self.rewards[slots] = rewards
        self.terminated[slots] = terminated
        self.discounts[slots] = discounts
        self.cursor = end % self.capacity
        self.size = min(self.size + n, self.capacity)
        return slots

    def newest(self, n: int) -> np.ndarray:
        """Slots of the ``n`` most recently written transitions, oldest first."""
        n = min(n, self.size)
        return (self.cursor - n + np.arange(n)) % self.capacity
