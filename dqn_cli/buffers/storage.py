"""Preallocated circular storage for transitions."""

from __future__ import annotations

import numpy as np


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
        self.cursor = 0  # next slot to write
        self.size = 0

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes for a in (self.obs, self.next_obs, self.actions, self.rewards, self.terminated)
        )

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> np.ndarray:
        """Write a batch of transitions (leading axis = transition); return the slots written."""
        n = len(actions)
        slots = (self.cursor + np.arange(n)) % self.capacity
        self.obs[slots] = obs
        self.next_obs[slots] = next_obs
        self.actions[slots] = actions
        self.rewards[slots] = rewards
        self.terminated[slots] = terminated
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        return slots

    def newest(self, n: int) -> np.ndarray:
        """Slots of the ``n`` most recently written transitions, oldest first."""
        n = min(n, self.size)
        return (self.cursor - n + np.arange(n)) % self.capacity
