"""Replay storage for stacked frames that keeps each distinct frame once.

An Atari observation is a stack of the last 4 frames, so ``s_t`` and ``s_{t+1}`` share 3 of
them and a store of (obs, next_obs) pairs holds every frame 8 times. Here each distinct frame
is written once into a ring of frames, and each transition keeps the ring slots (int32) of the
frames of its obs stack and of its next_obs stack; a batch is rebuilt by fancy indexing.

Which frames are "the same" is decided by content only, never by row order or env ids, so rows
from vector envs, auto-resets, n-step flushes and reset stacks that repeat one frame (or pad
with zeros) all work alike: a frame is looked up among the last ``window`` frames written, by a
64-bit hash of its bytes, and reused only if its bytes are equal. A stack can therefore never
take a frame of another episode or env unless the two frames are bit-identical, in which case
the rebuilt stack is bit-identical too.

Safety. A transition written when ``frame_count`` frames had been written (``written_at``)
references only frames with serial numbers >= ``written_at - window``. Frame serial ``s``
lives in ring slot ``s % frame_capacity`` until serial ``s + frame_capacity`` is written.
Before writing new frames, the storage evicts the oldest transitions whose frames those writes
would overwrite. ``written_at`` never decreases in ring order, so the transitions to evict are
always the oldest ones: the live transitions stay one contiguous run of ring slots, and a
live transition never references an overwritten frame. The frame ring has ``window`` frames
plus one write's worth plus 0.5% of slack over ``capacity``; an episode of L steps costs
about L + 1 frames, so with episodes shorter than ~200 steps the oldest transitions are evicted
before ``capacity`` is reached (``size`` says how many are live).

Where the frames' bytes live is the frame ring's business (frame_rings.py): one plain array,
or lz4 blocks (``frame_compression="lz4"``). Everything above is the same for both.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from dqn_cli.buffers.frame_rings import FrameRing, frame_ring_class
from dqn_cli.buffers.storage import (
    SCALAR_DTYPES,
    Gathered,
    Layout,
    allocate,
    layout_nbytes,
    newest_slots,
    read_scalars,
    ring_slots,
    state_array,
    state_int,
    tensor_view,
    write_scalars,
)

# Frames a new frame is compared with. Consecutive stacks of one env share frames written at
# most (n_step + frame_stack) vector steps apart, i.e. a few frames per env: 2048 covers 64
# envs with n-step 10 and costs 14 MB at 84x84. A miss only stores a frame twice.
DEFAULT_WINDOW = 2048
# Spare frames per transition slot, for the extra frame each episode's reset stack costs.
_SLACK_DIVISOR = 200
# Fixed so that a frame's hash (and so the dedup table rebuilt on load) never changes.
_HASH_SEED = 20240612
_REFS = np.dtype(np.int32)


def _rows_per_write(capacity: int, frame_stack: int, window: int) -> int:
    """Transitions written per step of ``add``: their new frames (at most 2 stacks each) take
    at most a quarter of ``window``, which bounds the slack the frame ring needs for them."""
    return max(1, min(capacity, window // (8 * frame_stack)))


def frame_ring_size(capacity: int, frame_stack: int, window: int = DEFAULT_WINDOW) -> int:
    """Frames the ring holds for ``capacity`` transitions of ``frame_stack``-frame stacks."""
    new_frames_per_write = 2 * frame_stack * _rows_per_write(capacity, frame_stack, window)
    return capacity + window + new_frames_per_write + capacity // _SLACK_DIVISOR


class FrameStackStorage:
    """Ring of transitions whose stacked observations reference one shared ring of frames.

    Same interface as ``TransitionStorage``; observations have shape (frame_stack, *frame).
    ``frame_compression`` picks the frame ring: ``none`` (a plain array) or ``lz4``.
    """

    ring: FrameRing  # frame_capacity frames: frame serial s lives in slot s % frame_capacity
    obs_refs: np.ndarray  # (capacity, frame_stack) int32: frame slots of each obs stack
    next_obs_refs: np.ndarray  # (capacity, frame_stack) int32: ... and of each next_obs stack
    written_at: np.ndarray  # (capacity,) int64: frame_count when the transition was written
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    discounts: np.ndarray

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype[Any],
        window: int = DEFAULT_WINDOW,
        frame_compression: str = "none",
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        if len(obs_shape) < 2 or obs_shape[0] < 2:
            raise ValueError(f"frame-stack storage needs (stack >= 2, *frame) obs, got {obs_shape}")
        self.capacity = capacity
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.frame_stack = self.obs_shape[0]
        self.frame_shape = self.obs_shape[1:]
        self.window = window
        self.frame_capacity = frame_ring_size(capacity, self.frame_stack, window)
        if self.frame_capacity >= 2**31:
            raise ValueError(f"capacity {capacity} is too large for int32 frame references")
        self._rows_per_write = _rows_per_write(capacity, self.frame_stack, window)
        self.obs_dtype = np.dtype(obs_dtype)
        self._layout = self.layout(capacity, self.frame_stack)
        allocate(self, self._layout)
        ring_class = frame_ring_class(frame_compression)
        self.ring = ring_class(self.frame_capacity, self.frame_shape, self.obs_dtype, window)
        # Hashing and equality are on exact bytes, whatever the dtype.
        frame_nbytes = math.prod(self.frame_shape) * self.obs_dtype.itemsize
        word_size = next(w for w in (8, 4, 2, 1) if frame_nbytes % w == 0)
        self._word = np.dtype(f"<u{word_size}")
        rng = np.random.default_rng(_HASH_SEED)
        self._multipliers = np.frombuffer(rng.bytes(frame_nbytes // word_size * 8), "<u8") | 1
        self.cursor = 0  # next transition slot to write
        self.size = 0  # live transitions, the ``size`` slots before ``cursor``
        self.filled = 0  # slots ever written (what state_dict saves)
        self.frame_count = 0  # frames ever written; the next one gets this serial
        self._recent: dict[int, int] = {}  # frame hash -> serial of its newest copy
        self._evicted: list[np.ndarray] = []

    @staticmethod
    def layout(capacity: int, frame_stack: int) -> Layout:
        """The per-transition arrays (the frames are the frame ring's)."""
        refs = ((capacity, frame_stack), _REFS)
        return {
            "obs_refs": refs,
            "next_obs_refs": refs,
            "written_at": ((capacity,), np.dtype(np.int64)),
            **{name: ((capacity,), dtype) for name, dtype in SCALAR_DTYPES.items()},
        }

    @classmethod
    def preallocated_nbytes(
        cls,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype[Any],
        window: int = DEFAULT_WINDOW,
        frame_compression: str = "none",
    ) -> int:
        """Bytes a new storage allocates, computed without allocating: every frame with
        ``none``; with ``lz4`` only the index arrays and the uncompressed window (the
        compressed frames come on top, as many bytes as they compress to)."""
        stack, frame = int(obs_shape[0]), tuple(int(d) for d in obs_shape[1:])
        frames = frame_ring_class(frame_compression).preallocated_nbytes(
            frame_ring_size(capacity, stack, window), frame, np.dtype(obs_dtype), window
        )
        return layout_nbytes(cls.layout(capacity, stack)) + frames

    @property
    def nbytes(self) -> int:
        """Bytes held now: the arrays, and the frames as the frame ring keeps them."""
        return sum(getattr(self, name).nbytes for name in self._layout) + self.ring.nbytes

    @property
    def oldest(self) -> int:
        """Slot of the oldest live transition."""
        return (self.cursor - self.size) % self.capacity

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
        shape = (n, *self.obs_shape)
        if np.shape(obs) != shape or np.shape(next_obs) != shape:
            raise ValueError(
                f"obs and next_obs must have shape {shape}, got {np.shape(obs)} and "
                f"{np.shape(next_obs)}"
            )
        obs = np.asarray(obs).astype(self.obs_dtype, copy=False)
        next_obs = np.asarray(next_obs).astype(self.obs_dtype, copy=False)
        discounts = np.broadcast_to(discounts, (n,))
        written = [
            self._add_rows(
                obs[rows],
                actions[rows],
                rewards[rows],
                next_obs[rows],
                terminated[rows],
                discounts[rows],
            )
            for rows in (
                slice(start, start + self._rows_per_write)
                for start in range(0, n, self._rows_per_write)
            )
        ]
        if len(written) == 1:
            return written[0]
        if not written:
            return ring_slots(self.cursor, 0, self.capacity)
        return np.concatenate(
            [np.arange(w.start, w.stop) if isinstance(w, slice) else w for w in written]
        )

    def _add_rows(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        discounts: np.ndarray,
    ) -> slice | np.ndarray:
        n, ring_size = len(actions), self.frame_capacity
        # Every frame of the batch as a row of bytes: the obs stacks, then the next_obs stacks.
        incoming = np.concatenate((obs, next_obs)).reshape(2 * n * self.frame_stack, -1)
        incoming = incoming.view(np.uint8)
        hashes = self._hash(incoming)

        # Within the batch, a frame shares the entry of the first frame with its hash, unless
        # its bytes differ (a hash collision): then it is an entry of its own.
        first_with: dict[int, int] = {}
        owner = np.array([first_with.setdefault(h, i) for i, h in enumerate(hashes.tolist())])
        index = np.arange(len(owner))
        shared = np.flatnonzero(owner != index)
        differs = shared[(incoming[shared] != incoming[owner[shared]]).any(axis=1)]
        owner[differs] = differs
        entries = np.flatnonzero(owner == index)  # ascending, so owners are found by search
        entry_of_frame = np.searchsorted(entries, owner)

        # Reuse a frame written within the window whose bytes are equal; the rest are new.
        start = self.frame_count
        entry_hashes = hashes[entries]
        serials = np.array([self._recent.get(h, -1) for h in entry_hashes.tolist()], np.int64)
        candidates = np.flatnonzero(serials >= start - self.window)
        stored = self.ring.recent(serials[candidates])
        found = np.zeros(len(entries), dtype=bool)
        found[candidates[(stored == incoming[entries[candidates]]).all(axis=1)]] = True
        serials[~found] = -1
        new = np.flatnonzero(serials < 0)
        # Transitions referencing a frame these writes overwrite die first (see module doc).
        self._evict_written_before(start + len(new) - ring_size + self.window)
        serials[new] = start + np.arange(len(new))
        self.ring.write(serials[new], incoming[entries[new]])
        self.frame_count = start + len(new)
        self._remember(entry_hashes[new], serials[new])

        refs = (serials[entry_of_frame] % ring_size).astype(_REFS).reshape(2, n, self.frame_stack)
        slots = ring_slots(self.cursor, n, self.capacity)
        self.obs_refs[slots] = refs[0]
        self.next_obs_refs[slots] = refs[1]
        self.written_at[slots] = start
        write_scalars(self, slots, actions, rewards, terminated, discounts)
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.filled = min(self.filled + n, self.capacity)
        return slots

    def _hash(self, frames: np.ndarray) -> np.ndarray:
        """A 64-bit hash of each row of bytes: a dot product with fixed odd multipliers."""
        return frames.view(self._word).astype(np.uint64, copy=False) @ self._multipliers

    def _remember(self, hashes: np.ndarray, serials: np.ndarray) -> None:
        """Index new frames by hash; forget ones that left the window (now and then)."""
        recent = self._recent
        recent.update(zip(hashes.tolist(), serials.tolist(), strict=True))
        if len(recent) > 4 * self.window:
            floor = self.frame_count - self.window
            self._recent = {h: s for h, s in recent.items() if s >= floor}

    def _evict_written_before(self, frame_count: int) -> None:
        """Drop the oldest live transitions written before ``frame_count`` frames existed."""
        oldest, capacity, written_at = self.oldest, self.capacity, self.written_at
        if self.size == 0 or written_at[oldest] >= frame_count:
            return
        dead = bisect.bisect_left(
            range(self.size), frame_count, key=lambda p: int(written_at[(oldest + p) % capacity])
        )
        self._evicted.append((oldest + np.arange(dead)) % capacity)
        self.size -= dead

    def pop_evicted(self) -> np.ndarray:
        """Slots evicted (not overwritten) since the last call that are still not live."""
        if not self._evicted:
            return np.empty(0, dtype=np.int64)
        slots = np.unique(np.concatenate(self._evicted))
        self._evicted.clear()
        return slots[(slots - self.oldest) % self.capacity >= self.size]

    def gather(self, slots: np.ndarray) -> Gathered:
        """The transitions in ``slots``: obs, next_obs, actions, rewards, terminated, discounts."""
        # One read for both stacks: a compressed ring decompresses each distinct frame once.
        obs, next_obs = self.ring.read(np.stack((self.obs_refs[slots], self.next_obs_refs[slots])))
        return (obs, next_obs, *read_scalars(self, slots))

    def newest(self, n: int) -> np.ndarray:
        """Slots of the ``n`` most recently written live transitions, oldest first."""
        return newest_slots(self.cursor, self.size, self.capacity, n)

    def state_dict(self) -> dict[str, Any]:
        """Counters, the written part of every array and the written frames, as tensors for
        ``weights_only``.

        The arrays' tensors share the storage's memory (a multi-GB frame ring is not copied):
        save them before the next ``add``.
        """
        state: dict[str, Any] = {
            "cursor": self.cursor,
            "size": self.size,
            "filled": self.filled,
            "frame_count": self.frame_count,
            "window": self.window,
            **self.ring.state_dict(min(self.frame_count, self.frame_capacity)),
        }
        for name in self._layout:
            state[name] = tensor_view(getattr(self, name)[: self.filled])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot after checking every field; ValueError (one line) if any is off."""
        what = "frame replay"
        if not isinstance(state, dict):
            raise ValueError(f"{what} state must be a dict, got {type(state).__name__}")
        # States of plain rings predate the key.
        saved_compression = state.get("frame_compression", "none")
        if not isinstance(saved_compression, str) or saved_compression != self.ring.compression:
            raise ValueError(
                f"{what} state holds frames with frame_compression={saved_compression!r}, this "
                f"store keeps them with {self.ring.compression!r}; load it with "
                f"buffer.frame_compression={saved_compression}"
            )
        state_int(state, "window", self.window, self.window, what)
        filled = state_int(state, "filled", 0, self.capacity, what)
        size = state_int(state, "size", 0, filled, what)
        cursor = state_int(state, "cursor", 0, self.capacity - 1, what)
        if filled < self.capacity and cursor != filled % self.capacity:
            raise ValueError(f"{what} state has cursor {cursor} with {filled} slots written")
        frame_count = state_int(state, "frame_count", 0, 2**62, what)
        stored = min(frame_count, self.frame_capacity)
        arrays = {
            name: state_array(state, name, (filled, *shape[1:]), dtype, what)
            for name, (shape, dtype) in self._layout.items()
        }
        self._check_references(arrays, stored, cursor, size, frame_count)

        # The ring checks its frames before it changes any; then nothing else can fail.
        self.ring.load_state_dict(state, stored, frame_count, what)
        for name, array in arrays.items():
            getattr(self, name)[: len(array)] = array
        self.cursor, self.size, self.filled, self.frame_count = cursor, size, filled, frame_count
        self._evicted.clear()
        self._rebuild_recent()

    def _check_references(
        self, arrays: dict[str, np.ndarray], stored: int, cursor: int, size: int, frame_count: int
    ) -> None:
        """Every reference is one of the ``stored`` frames, and live ones hold the invariant of
        the doc."""
        what, ring_size = "frame replay", self.frame_capacity
        for name in ("obs_refs", "next_obs_refs"):
            refs = arrays[name]
            if refs.size and (refs.min() < 0 or refs.max() >= stored):
                raise ValueError(f"{what} state {name!r} references frames outside 0..{stored - 1}")
        live = (cursor - size + np.arange(size)) % self.capacity
        written_at = arrays["written_at"][live]
        if size == 0:
            return
        if np.any(np.diff(written_at) < 0) or written_at[-1] > frame_count:
            raise ValueError(f"{what} state 'written_at' is out of order for live transitions")
        if written_at[0] < frame_count - ring_size + self.window:
            raise ValueError(f"{what} state holds live transitions whose frames were overwritten")
        for name in ("obs_refs", "next_obs_refs"):
            refs = arrays[name][live].astype(np.int64)
            serials = frame_count - 1 - (frame_count - 1 - refs) % ring_size
            if np.any(serials < written_at[:, None] - self.window):
                raise ValueError(f"{what} state {name!r} references frames outside their window")

    def _rebuild_recent(self) -> None:
        """The dedup table as it was when saved: the window's frames, newest copy winning."""
        serials = np.arange(max(0, self.frame_count - self.window), self.frame_count)
        hashes = self._hash(self.ring.recent(serials))
        self._recent = dict(zip(hashes.tolist(), serials.tolist(), strict=True))
