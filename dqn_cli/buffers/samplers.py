"""Samplers decide which stored transitions a batch reads and how each is weighted.

Every sampler answers the same two calls, so the learner never asks which buffer it holds:
uniform sampling returns weights of 1 and ignores priority updates.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


class Sampler(Protocol):
    def on_add(self, slots: slice | np.ndarray) -> None: ...

    def sample(
        self,
        batch_size: int,
        size: int,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (slots, importance weights).

        ``newest``: slots of the latest transitions; ``beta``: importance-sampling exponent
        (only prioritized sampling uses it).
        """
        ...

    def update_priorities(self, slots: np.ndarray, td_errors: torch.Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class _UnweightedSampler:
    """Samplers without state: unit weights, priority updates ignored, nothing to save."""

    def on_add(self, slots: slice | np.ndarray) -> None:
        pass

    def update_priorities(self, slots: np.ndarray, td_errors: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class UniformSampler(_UnweightedSampler):
    """Every stored transition equally likely, drawn with replacement."""

    def sample(
        self,
        batch_size: int,
        size: int,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, size, size=batch_size), np.ones(batch_size, dtype=np.float32)


class LatestSampler(_UnweightedSampler):
    """No replay: each batch is exactly the newest transitions (the tutorials' ablation)."""

    def sample(
        self,
        batch_size: int,
        size: int,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        return newest, np.ones(len(newest), dtype=np.float32)


class PrioritizedSampler:
    """Proportional prioritized replay (Schaul et al. 2016, arXiv:1511.05952, section 3.3).

    P(i) = p_i^alpha / sum_k p_k^alpha with p_i = |TD error_i| + eps. New transitions get the
    largest priority seen so far, so each is replayed at least once soon. A batch is drawn
    stratified: the total mass is cut into ``batch_size`` equal segments and one value is drawn
    uniformly in each. Importance weights w_i = (N * P(i))^-beta correct the bias; they are
    divided by the batch's largest weight so they only ever scale the loss down.
    """

    def __init__(self, capacity: int, alpha: float, eps: float) -> None:
        # Imported here: numba's import costs ~0.3 s of start-up that uniform replay never needs.
        from dqn_cli.buffers.sum_tree import SumTree

        self.tree = SumTree(capacity)
        self.alpha = alpha
        self.eps = eps
        self.max_priority = 1.0  # stored as p^alpha, the value kept in the tree
        self.pending: list[np.ndarray] = []

    def on_add(self, slots: slice | np.ndarray) -> None:
        # New transitions wait here and enter the tree in one vectorized write at the next
        # sample or update: one tree walk per training round instead of one per env step.
        self.pending.append(
            np.arange(slots.start, slots.stop) if isinstance(slots, slice) else slots
        )

    def priorities(self, slots: np.ndarray) -> np.ndarray:
        """Current p^alpha of ``slots`` (new transitions included)."""
        self._flush()
        return self.tree.get(slots)

    def _flush(self) -> None:
        if self.pending:
            slots = np.concatenate(self.pending)
            self.pending.clear()
            self.tree.set(slots, np.full(len(slots), self.max_priority))

    def sample(
        self,
        batch_size: int,
        size: int,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._flush()
        slots, weights = self.tree.sample_stratified(rng.random(batch_size), size, beta)
        return slots, weights.astype(np.float32)

    def update_priorities(self, slots: np.ndarray, td_errors: torch.Tensor) -> None:
        self._flush()
        # Only prioritized replay pays for moving TD errors to the host (a sync on GPU).
        errors = td_errors.detach().cpu().numpy()
        largest = self.tree.set_from_errors(slots, errors, self.eps, self.alpha)
        self.max_priority = max(self.max_priority, largest)

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"tree": torch.from_numpy(self.tree.nodes.copy()), "max_priority": self.max_priority}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        nodes = state["tree"].numpy()
        if nodes.shape != self.tree.nodes.shape:
            raise ValueError("saved priorities do not match the buffer capacity")
        self.tree.nodes[:] = nodes
        self.max_priority = float(state["max_priority"])
