"""Sum tree over priorities, vectorized over batches of indices."""

from __future__ import annotations

import numpy as np


class SumTree:
    """Binary tree whose leaves hold priorities and whose inner nodes hold the sum below them.

    Stored as one flat array, heap order, root at 1 (slot 0 unused)::

                     [1] = 10
                   /          \\
             [2] = 3          [3] = 7
             /     \\         /      \\
         [4]=1   [5]=2    [6]=4    [7]=3      <- leaves: priorities of items 0..3

    Item ``i`` lives at leaf ``leaves + i``. Updating a leaf rewrites its ancestors, and finding
    the item whose cumulative-priority interval contains a value walks root to leaf: both are
    O(log N) and run for a whole batch at once, one numpy operation per tree level.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.leaves = 1 << max(0, (capacity - 1).bit_length())  # next power of two
        self.depth = self.leaves.bit_length() - 1
        self.nodes = np.zeros(2 * self.leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def get(self, items: np.ndarray) -> np.ndarray:
        return self.nodes[self.leaves + items]

    def set(self, items: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of ``items`` (duplicates: the last value wins)."""
        idx = self.leaves + np.asarray(items, dtype=np.int64)
        self.nodes[idx] = priorities
        nodes = self.nodes
        for _ in range(self.depth):
            # Parents are recomputed from both children, so duplicate indices are harmless.
            idx >>= 1
            left = idx << 1
            nodes[idx] = nodes[left] + nodes[left + 1]

    def find(self, values: np.ndarray) -> np.ndarray:
        """Items whose cumulative-priority interval contains each of ``values`` (in [0, total))."""
        values = np.array(values, dtype=np.float64)
        idx = np.ones(len(values), dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * idx
            left_sum = self.nodes[left]
            # Never step into an empty right subtree: float round-off can leave ``values`` a hair
            # above the left sum when everything to the right has zero priority.
            go_right = (values >= left_sum) & (self.nodes[left + 1] > 0.0)
            values -= np.where(go_right, left_sum, 0.0)
            idx = left + go_right
        return idx - self.leaves
