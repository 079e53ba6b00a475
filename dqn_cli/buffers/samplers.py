"""Samplers decide which stored transitions a batch reads and how each is weighted.

Every sampler answers the same two calls, so the learner never asks which buffer it holds:
uniform sampling returns weights of 1 and ignores priority updates.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from dqn_cli.buffers.storage import LiveSlots, state_array


class Sampler(Protocol):
    def on_add(self, slots: slice | np.ndarray) -> None: ...

    def on_evict(self, slots: np.ndarray) -> None:
        """``slots`` no longer hold live transitions: never draw them."""
        ...

    def sample(
        self,
        batch_size: int,
        live: LiveSlots,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (slots, importance weights).

        ``live``: which slots hold transitions; ``newest``: slots of the latest transitions;
        ``beta``: importance-sampling exponent (only prioritized sampling uses it).
        """
        ...

    def update_priorities(self, slots: np.ndarray, td_errors: torch.Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class _UnweightedSampler:
    """Samplers without state: unit weights, priority updates ignored, nothing to save."""

    def on_add(self, slots: slice | np.ndarray) -> None:
        pass

    def on_evict(self, slots: np.ndarray) -> None:
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
        live: LiveSlots,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        positions = rng.integers(0, live.size, size=batch_size)
        return live.slots(positions), np.ones(batch_size, dtype=np.float32)


class LatestSampler(_UnweightedSampler):
    """No replay: each batch is exactly the newest transitions (the tutorials' ablation)."""

    def sample(
        self,
        batch_size: int,
        live: LiveSlots,
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
        # (slots, evicted) in arrival order: new ones get the max priority, evicted ones 0.
        self.pending: list[tuple[slice | np.ndarray, bool]] = []

    def on_add(self, slots: slice | np.ndarray) -> None:
        # New transitions wait here and enter the tree in one vectorized write at the next
        # sample or update: one tree walk per training round instead of one per env step.
        pending = self.pending
        if isinstance(slots, slice) and pending:
            last, evicted = pending[-1]
            # Adds follow each other in ring order: one range per round, not an array per
            # env step (building those cost more than the tree write at 1M slots).
            if not evicted and isinstance(last, slice) and last.stop == slots.start:
                pending[-1] = (slice(last.start, slots.stop), False)
                return
        pending.append((slots, False))

    def on_evict(self, slots: np.ndarray) -> None:
        self.pending.append((slots, True))

    def priorities(self, slots: np.ndarray) -> np.ndarray:
        """Current p^alpha of ``slots`` (new transitions included)."""
        self._flush()
        return self.tree.get(slots)

    def _flush(self) -> None:
        if self.pending:
            parts = [
                (np.arange(s.start, s.stop) if isinstance(s, slice) else s, evicted)
                for s, evicted in self.pending
            ]
            slots = np.concatenate([s for s, _ in parts])
            priorities = np.concatenate(
                [np.full(len(s), 0.0 if evicted else self.max_priority) for s, evicted in parts]
            )
            self.pending.clear()
            self.tree.set(slots, priorities)  # in order: the last write to a slot wins

    def sample(
        self,
        batch_size: int,
        live: LiveSlots,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._flush()
        slots, weights = self.tree.sample_stratified(rng.random(batch_size), live.size, beta)
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
        nodes = state_array(state, "tree", self.tree.nodes.shape, self.tree.nodes.dtype, "PER")
        max_priority = state.get("max_priority")
        if not isinstance(max_priority, float) or not max_priority > 0:
            raise ValueError(f"PER state 'max_priority' must be a float > 0, got {max_priority!r}")
        if not (np.isfinite(nodes).all() and (nodes >= 0).all()):
            raise ValueError("PER state 'tree' holds negative or non-finite priorities")
        self.pending.clear()
        self.tree.nodes[:] = nodes
        self.max_priority = max_priority
