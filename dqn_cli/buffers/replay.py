"""ReplayBuffer: storage plus a sampler, returning training batches as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dqn_cli.buffers.samplers import LatestSampler, PrioritizedSampler, Sampler, UniformSampler
from dqn_cli.buffers.storage import TransitionStorage


@dataclass(frozen=True)
class Batch:
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor  # 1.0 where the episode truly ended: no bootstrap
    discounts: torch.Tensor  # gamma^k: the bootstrap's discount after k summed rewards
    weights: torch.Tensor  # importance weights (1 unless prioritized)
    slots: np.ndarray  # where the batch came from, for priority updates


class ReplayBuffer:
    def __init__(
        self,
        storage: TransitionStorage,
        sampler: Sampler,
        rng: np.random.Generator,
        device: torch.device,
    ) -> None:
        self.storage = storage
        self.sampler = sampler
        self.rng = rng
        self.device = device

    def __len__(self) -> int:
        return self.storage.size

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        discounts: np.ndarray | float,
    ) -> None:
        """Store transitions; ``discounts`` is gamma^k per transition (a scalar for all)."""
        slots = self.storage.add(obs, actions, rewards, next_obs, terminated, discounts)
        self.sampler.on_add(slots)

    def sample(self, batch_size: int, beta: float = 1.0) -> Batch:
        """A training batch; ``beta`` is the importance-sampling exponent (prioritized only)."""
        s = self.storage
        slots, weights = self.sampler.sample(
            batch_size, s.size, s.newest(batch_size), self.rng, beta
        )

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(self.device, non_blocking=True)

        return Batch(
            obs=tensor(s.obs[slots]),
            actions=tensor(s.actions[slots]),
            rewards=tensor(s.rewards[slots]),
            next_obs=tensor(s.next_obs[slots]),
            terminated=tensor(s.terminated[slots]),
            discounts=tensor(s.discounts[slots]),
            weights=tensor(weights),
            slots=slots,
        )

    def update_priorities(self, slots: np.ndarray, td_errors: torch.Tensor) -> None:
        self.sampler.update_priorities(slots, td_errors)

    def state_dict(self) -> dict[str, Any]:
        """Stored transitions and sampler state (the random generator is saved by its owner)."""
        return {"storage": self.storage.state_dict(), "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.storage.load_state_dict(state["storage"])
        self.sampler.load_state_dict(state["sampler"])


def make_sampler(kind: str, capacity: int, alpha: float, eps: float) -> Sampler:
    """The sampler named by ``buffer.kind``: ``uniform``, ``per`` or ``none``."""
    if kind == "uniform":
        return UniformSampler()
    if kind == "none":
        return LatestSampler()
    if kind == "per":
        return PrioritizedSampler(capacity, alpha=alpha, eps=eps)
    raise ValueError(f"unknown buffer kind {kind!r}; valid: uniform, per, none")


def make_replay_buffer(
    kind: str,
    capacity: int,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype,
    rng: np.random.Generator,
    device: torch.device,
    alpha: float = 0.6,
    eps: float = 1e-6,
) -> ReplayBuffer:
    storage = TransitionStorage(capacity, obs_shape, obs_dtype)
    return ReplayBuffer(storage, make_sampler(kind, capacity, alpha, eps), rng, device)
