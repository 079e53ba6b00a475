"""Preallocated circular storage for transitions, and what every storage shares.

A storage keeps transitions in a ring of ``capacity`` slots. The live ones are the ``size``
slots that end just before ``cursor`` (ring order, oldest first). Samplers pick slots among
those, and ``gather`` reads a batch back as numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

# Per-transition scalars every storage keeps, with their dtypes (a batch has exactly these).
SCALAR_DTYPES: dict[str, np.dtype[Any]] = {
    "actions": np.dtype(np.int64),
    "rewards": np.dtype(np.float32),
    "terminated": np.dtype(np.float32),
    # gamma^k for a transition summing k rewards (n-step returns; gamma when n = 1)
    "discounts": np.dtype(np.float32),
}

# What ``gather`` returns: obs, next_obs, actions, rewards, terminated, discounts.
Gathered = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# Arrays a storage allocates: name -> (shape, dtype).
Layout = dict[str, tuple[tuple[int, ...], np.dtype[Any]]]


class Storage(Protocol):
    """What ReplayBuffer and the samplers use of a storage."""

    capacity: int
    cursor: int
    size: int

    @property
    def nbytes(self) -> int: ...

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        discounts: np.ndarray | float,
    ) -> slice | np.ndarray: ...

    def gather(self, slots: np.ndarray) -> Gathered: ...

    def newest(self, n: int) -> np.ndarray: ...

    def pop_evicted(self) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class LiveSlots:
    """Where a storage's live transitions are: ``size`` slots in ring order up to ``cursor``."""

    size: int
    cursor: int
    capacity: int

    @classmethod
    def of(cls, storage: Storage) -> LiveSlots:
        return cls(storage.size, storage.cursor, storage.capacity)

    def slots(self, positions: np.ndarray) -> np.ndarray:
        """The slots of live ``positions`` (0 = the oldest live transition)."""
        if self.size == self.capacity:
            return positions  # every slot is live: a position names its slot
        return (self.cursor - self.size + positions) % self.capacity

    def dead(self) -> np.ndarray:
        """Every slot that holds no live transition."""
        return (self.cursor + np.arange(self.capacity - self.size)) % self.capacity


def layout_nbytes(layout: Layout) -> int:
    """Bytes the arrays of ``layout`` take once allocated."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in layout.values())


def allocate(owner: object, layout: Layout) -> None:
    """Set one zeroed array per ``layout`` entry on ``owner``.

    np.zeros maps untouched pages: they cost no RAM until a transition is written there.
    """
    for name, (shape, dtype) in layout.items():
        setattr(owner, name, np.zeros(shape, dtype=dtype))


def ring_slots(cursor: int, n: int, capacity: int) -> slice | np.ndarray:
    """The ``n`` slots from ``cursor`` on; a slice (much faster to write) unless they wrap."""
    end = cursor + n
    return slice(cursor, end) if end <= capacity else np.arange(cursor, end) % capacity


def newest_slots(cursor: int, size: int, capacity: int, n: int) -> np.ndarray:
    """Slots of the ``n`` most recently written live transitions, oldest first."""
    n = min(n, size)
    return (cursor - n + np.arange(n)) % capacity


def write_scalars(
    storage: object,
    slots: slice | np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    discounts: np.ndarray | float,
) -> None:
    """Write the ``SCALAR_DTYPES`` arrays of ``storage`` at ``slots``."""
    values = (actions, rewards, terminated, discounts)
    for name, value in zip(SCALAR_DTYPES, values, strict=True):
        getattr(storage, name)[slots] = value


def read_scalars(
    storage: object, slots: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """actions, rewards, terminated and discounts of ``storage`` at ``slots``."""
    actions, rewards, terminated, discounts = (
        getattr(storage, name)[slots] for name in SCALAR_DTYPES
    )
    return actions, rewards, terminated, discounts


def state_int(state: dict[str, Any], key: str, low: int, high: int, what: str) -> int:
    """``state[key]`` as an int in [low, high]; ValueError (one line) otherwise."""
    if key not in state:
        raise ValueError(f"{what} state is missing {key!r}")
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} state {key!r} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} state {key!r} is {value}, expected {low}..{high}")
    return value


def state_array(
    state: dict[str, Any], key: str, shape: tuple[int, ...], dtype: np.dtype[Any], what: str
) -> np.ndarray:
    """``state[key]``, a tensor of exactly ``shape`` and ``dtype``, as a numpy array (no copy)."""
    if key not in state:
        raise ValueError(f"{what} state is missing {key!r}")
    value = state[key]
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what} state {key!r} must be a tensor, got {type(value).__name__}")
    array = value.detach().cpu().numpy()
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(
            f"{what} state {key!r} has shape {array.shape} and dtype {array.dtype}, "
            f"expected {shape} and {dtype}"
        )
    return array


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory: torch.save writes it without a second copy in RAM."""
    return torch.from_numpy(np.ascontiguousarray(array))


class TransitionStorage:
    """Fixed-size ring of transitions held in preallocated numpy arrays.

    Observations keep the env's dtype (uint8 frames stay uint8). ``next_obs`` is stored beside
    ``obs`` rather than derived from the following slot: with vector envs and auto-reset the
    following slot usually belongs to another env or another episode.
    """

    obs: np.ndarray
    next_obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    discounts: np.ndarray

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self._layout = self.layout(capacity, self.obs_shape, self.obs_dtype)
        allocate(self, self._layout)
        self.cursor = 0  # next slot to write
        self.size = 0

    @staticmethod
    def layout(capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype[Any]) -> Layout:
        obs = ((capacity, *obs_shape), np.dtype(obs_dtype))
        return {
            "obs": obs,
            "next_obs": obs,
            **{name: ((capacity,), dtype) for name, dtype in SCALAR_DTYPES.items()},
        }

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self._layout)

    def state_dict(self) -> dict[str, Any]:
        """The stored part only (``size`` rows) as tensors for a ``weights_only`` checkpoint.

        The tensors share the storage's memory (no copy of a large buffer): save them before
        the next ``add``.
        """
        state: dict[str, Any] = {"cursor": self.cursor, "size": self.size}
        for name in self._layout:
            state[name] = tensor_view(getattr(self, name)[: self.size])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        what = "replay"
        size = state_int(state, "size", 0, self.capacity, what)
        cursor = state_int(state, "cursor", 0, self.capacity - 1, what)
        if size < self.capacity and cursor != size:
            # Slots fill from 0, so until the ring is full the next one to write is ``size``.
            raise ValueError(f"{what} state has cursor {cursor} with size {size}: they must match")
        arrays = {
            name: state_array(state, name, (size, *shape[1:]), dtype, what)
            for name, (shape, dtype) in self._layout.items()
        }
        for name, array in arrays.items():
            getattr(self, name)[:size] = array
        self.cursor, self.size = cursor, size

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
        slots = ring_slots(self.cursor, n, self.capacity)
        self.obs[slots] = obs
        self.next_obs[slots] = next_obs
        write_scalars(self, slots, actions, rewards, terminated, discounts)
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return slots

    def gather(self, slots: np.ndarray) -> Gathered:
        """The transitions in ``slots``: obs, next_obs, actions, rewards, terminated, discounts."""
        return (self.obs[slots], self.next_obs[slots], *read_scalars(self, slots))

    def newest(self, n: int) -> np.ndarray:
        """Slots of the ``n`` most recently written transitions, oldest first."""
        return newest_slots(self.cursor, self.size, self.capacity, n)

    def pop_evicted(self) -> np.ndarray:
        """Slots that stopped being live without being overwritten: never, in this storage."""
        return np.empty(0, dtype=np.int64)
