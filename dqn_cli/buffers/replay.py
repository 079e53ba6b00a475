"""ReplayBuffer: storage plus a sampler, returning training batches as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dqn_cli.buffers.frame_store import FrameStackStorage
from dqn_cli.buffers.samplers import LatestSampler, PrioritizedSampler, Sampler, UniformSampler
from dqn_cli.buffers.storage import LiveSlots, Storage, TransitionStorage, layout_nbytes


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


class BatchTransfer:
    """Moves a gathered batch (numpy arrays) to the training device.

    On the CPU the tensors share the arrays' memory. On CUDA each array is copied into a
    page-locked (pinned) staging tensor and from there to the GPU asynchronously, by DMA, while
    the CPU goes on; observations travel as uint8 and become floats on the GPU (4x less to
    copy). The staging tensors are reused; a CUDA event recorded after the copies keeps the next
    batch from overwriting them before the GPU has read them.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: list[torch.Tensor] = []
        self._copied: torch.cuda.Event | None = None

    def __call__(self, arrays: tuple[np.ndarray, ...]) -> list[torch.Tensor]:
        if self.device.type != "cuda":
            return [torch.from_numpy(a).to(self.device) for a in arrays]
        if self._copied is not None:
            self._copied.synchronize()
        if [tuple(t.shape) for t in self._staging] != [a.shape for a in arrays]:
            self._staging = [torch.from_numpy(a).pin_memory() for a in arrays]
        else:
            for staging, array in zip(self._staging, arrays, strict=True):
                staging.numpy()[...] = array
        on_device = [t.to(self.device, non_blocking=True) for t in self._staging]
        self._copied = torch.cuda.Event()
        self._copied.record()
        return on_device


class ReplayBuffer:
    def __init__(
        self,
        storage: Storage,
        sampler: Sampler,
        rng: np.random.Generator,
        device: torch.device,
    ) -> None:
        self.storage = storage
        self.sampler = sampler
        self.rng = rng
        self.device = device
        self.to_device = BatchTransfer(device)

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
        evicted = self.storage.pop_evicted()
        if len(evicted):
            self.sampler.on_evict(evicted)

    def sample(self, batch_size: int, beta: float = 1.0) -> Batch:
        """A training batch; ``beta`` is the importance-sampling exponent (prioritized only)."""
        s = self.storage
        slots, weights = self.sampler.sample(
            batch_size, LiveSlots.of(s), s.newest(batch_size), self.rng, beta
        )
        obs, next_obs, actions, rewards, terminated, discounts = s.gather(slots)
        arrays = (obs, actions, rewards, next_obs, terminated, discounts, weights)
        t_obs, t_actions, t_rewards, t_next, t_terminated, t_discounts, t_weights = self.to_device(
            arrays
        )
        return Batch(
            obs=t_obs,
            actions=t_actions,
            rewards=t_rewards,
            next_obs=t_next,
            terminated=t_terminated,
            discounts=t_discounts,
            weights=t_weights,
            slots=slots,
        )

    def update_priorities(self, slots: np.ndarray, td_errors: torch.Tensor) -> None:
        self.sampler.update_priorities(slots, td_errors)

    def state_dict(self) -> dict[str, Any]:
        """Stored transitions and sampler state (the random generator is saved by its owner)."""
        return {"storage": self.storage.state_dict(), "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("storage", "sampler"):
            if not isinstance(state.get(key), dict):
                raise ValueError(f"replay state has no {key!r} dict")
        self.storage.load_state_dict(state["storage"])
        self.sampler.load_state_dict(state["sampler"])
        # Whatever the saved priorities say, a slot without a live transition is never drawn.
        self.sampler.on_evict(LiveSlots.of(self.storage).dead())


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
    frame_stack: int = 1,
    frame_compression: str = "none",
) -> ReplayBuffer:
    """A replay buffer; ``frame_stack`` > 1 stores each frame of stacked observations once,
    compressed as ``frame_compression`` says."""
    storage = make_storage(capacity, obs_shape, obs_dtype, frame_stack, frame_compression)
    return ReplayBuffer(storage, make_sampler(kind, capacity, alpha, eps), rng, device)


def _check_frame_stack(obs_shape: tuple[int, ...], frame_stack: int) -> bool:
    """Whether observations are ``frame_stack``-frame stacks (leading axis); refuse a mismatch."""
    if frame_stack < 1:
        raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
    if frame_stack > 1 and (len(obs_shape) < 2 or obs_shape[0] != frame_stack):
        raise ValueError(
            f"frame_stack={frame_stack} needs observations of shape ({frame_stack}, *frame), "
            f"got {tuple(obs_shape)}"
        )
    return frame_stack > 1


def make_storage(
    capacity: int,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype,
    frame_stack: int = 1,
    frame_compression: str = "none",
) -> Storage:
    """Frame-stack storage for stacked frames (its frames compressed as ``frame_compression``
    says), else one (obs, next_obs) pair per transition (``frame_compression`` unused)."""
    if _check_frame_stack(obs_shape, frame_stack):
        return FrameStackStorage(
            capacity, obs_shape, obs_dtype, frame_compression=frame_compression
        )
    return TransitionStorage(capacity, obs_shape, obs_dtype)


def storage_nbytes(
    capacity: int,
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype,
    frame_stack: int = 1,
    frame_compression: str = "none",
) -> int:
    """Bytes ``make_storage`` with these arguments allocates, computed without allocating
    (compressed frames, which grow as they come, are not part of it)."""
    if _check_frame_stack(obs_shape, frame_stack):
        return FrameStackStorage.preallocated_nbytes(
            capacity, obs_shape, np.dtype(obs_dtype), frame_compression=frame_compression
        )
    return layout_nbytes(TransitionStorage.layout(capacity, obs_shape, np.dtype(obs_dtype)))
