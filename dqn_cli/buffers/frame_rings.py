"""Where a frame-stack store keeps its frames: a ring of frame slots, plain or lz4-compressed.

``FrameStackStorage`` (frame_store.py) decides which frames are new, which slot each takes
(frame serial ``s`` lives in slot ``s % capacity``) and which transitions die; a frame ring
only holds the bytes. What the store asks of it:

- ``write(serials, rows)``: new frames, as rows of bytes, into their serials' slots;
- ``recent(serials)``: the bytes of frames among the last ``window`` written, for the dedup
  compare of every ``add`` and the dedup table rebuilt on load (so it must be cheap);
- ``read(slots)``: the frames of an array of slots, shaped ``(*slots.shape, *frame_shape)``;
- ``nbytes``, ``state_dict`` and ``load_state_dict`` (which checks everything before it
  changes anything, so a refused state leaves the ring as it was).

``PlainFrames`` is one preallocated array of frames: the store as it always was, with the
checkpoint key ``frames``.

``Lz4Frames`` keeps each slot's frame as an lz4 block, so its memory follows what the frames
hold (Atari frames shrink 5-28x) rather than being preallocated. Why it is built this way:

- One Python ``bytes`` per slot, in a list, rather than one byte arena: slots are overwritten
  in ring order by blocks of other sizes, which an arena would have to compact; the allocator
  reuses freed blocks. Cost: a list pointer and an object header, ~41 bytes per slot.
- The last ``window`` frames are also kept uncompressed, in a small ring of their own
  (``window`` frames, 14 MB at 84x84): the dedup compare reads only those, so ``add``
  compresses each new frame once and decompresses nothing.
- ``read`` decompresses each distinct slot once: a batch's stacks share most of their frames
  (32 transitions reference ~160 distinct frames, not 256).
- A checkpoint holds the compressed bytes: one uint8 tensor of every block end to end, and
  int64 offsets. Loading decompresses each block once to check it is one whole frame.
"""

from __future__ import annotations

import importlib
import itertools
import math
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch

from dqn_cli.buffers.storage import state_array, tensor_view

# What a ``bytes`` object costs beyond its content (CPython, 64-bit).
_BYTES_HEADER = 33


class FrameRing(Protocol):
    compression: str  # the buffer.frame_compression value (saved with lz4 states)

    @property
    def nbytes(self) -> int: ...

    def write(self, serials: np.ndarray, rows: np.ndarray) -> None: ...

    def recent(self, serials: np.ndarray) -> np.ndarray: ...

    def read(self, slots: np.ndarray) -> np.ndarray: ...

    def state_dict(self, stored: int) -> dict[str, Any]: ...

    def load_state_dict(
        self, state: dict[str, Any], stored: int, frame_count: int, what: str
    ) -> None: ...


class PlainFrames:
    """Every slot's frame in one preallocated array (untouched pages cost no RAM)."""

    compression = "none"

    def __init__(
        self, capacity: int, frame_shape: tuple[int, ...], dtype: np.dtype[Any], window: int
    ) -> None:
        self.frames = np.zeros((capacity, *frame_shape), dtype=dtype)
        # Frames as rows of bytes: the store hashes and compares exact bytes, whatever the dtype.
        self._bytes = self.frames.reshape(capacity, -1).view(np.uint8)

    @staticmethod
    def preallocated_nbytes(
        capacity: int, frame_shape: tuple[int, ...], dtype: np.dtype[Any], window: int
    ) -> int:
        return capacity * math.prod(frame_shape) * dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes

    def write(self, serials: np.ndarray, rows: np.ndarray) -> None:
        self._bytes[serials % len(self.frames)] = rows

    def recent(self, serials: np.ndarray) -> np.ndarray:
        return self._bytes[serials % len(self.frames)]

    def read(self, slots: np.ndarray) -> np.ndarray:
        return self.frames[slots]

    def state_dict(self, stored: int) -> dict[str, Any]:
        """The first ``stored`` slots, sharing the ring's memory (not copied)."""
        return {"frames": tensor_view(self.frames[:stored])}

    def load_state_dict(
        self, state: dict[str, Any], stored: int, frame_count: int, what: str
    ) -> None:
        shape = (stored, *self.frames.shape[1:])
        self.frames[:stored] = state_array(state, "frames", shape, self.frames.dtype, what)


def import_lz4_block() -> ModuleType:
    """lz4's block API (the atari extra); ModuleNotFoundError where it is not installed."""
    return importlib.import_module("lz4.block")


class Lz4Frames:
    """Every slot's frame as an lz4 block; the last ``window`` frames also uncompressed."""

    compression = "lz4"

    def __init__(
        self, capacity: int, frame_shape: tuple[int, ...], dtype: np.dtype[Any], window: int
    ) -> None:
        self._lz4 = import_lz4_block()
        self.capacity, self.frame_shape, self.dtype = capacity, frame_shape, np.dtype(dtype)
        self.frame_nbytes = math.prod(frame_shape) * self.dtype.itemsize
        self._blocks: list[bytes] = [b""] * capacity  # slot -> its frame's lz4 block
        self._block_bytes = 0  # sum of the blocks' lengths
        self._written = 0  # slots that hold a block
        self._recent = np.zeros((window, self.frame_nbytes), dtype=np.uint8)  # serial s: s % window
        self._scratch = np.empty(0, dtype=np.uint8)  # the distinct frames of the last read

    @staticmethod
    def preallocated_nbytes(
        capacity: int, frame_shape: tuple[int, ...], dtype: np.dtype[Any], window: int
    ) -> int:
        """The slot list and the uncompressed window; the blocks come on top as frames do."""
        return capacity * 8 + window * math.prod(frame_shape) * dtype.itemsize

    @property
    def nbytes(self) -> int:
        """What the ring holds now: its preallocated part, the blocks and their headers."""
        preallocated = len(self._blocks) * 8 + self._recent.nbytes
        return preallocated + self._block_bytes + self._written * _BYTES_HEADER

    def write(self, serials: np.ndarray, rows: np.ndarray) -> None:
        compress, blocks = self._lz4.compress, self._blocks
        for slot, row in zip((serials % self.capacity).tolist(), rows, strict=True):
            block = compress(row, store_size=False)
            self._written += not blocks[slot]
            self._block_bytes += len(block) - len(blocks[slot])
            blocks[slot] = block
        self._recent[serials % len(self._recent)] = rows

    def recent(self, serials: np.ndarray) -> np.ndarray:
        return self._recent[serials % len(self._recent)]

    def read(self, slots: np.ndarray) -> np.ndarray:
        distinct, inverse = np.unique(slots.ravel(), return_inverse=True)
        size = self.frame_nbytes
        if len(self._scratch) < len(distinct) * size:
            self._scratch = np.empty(len(distinct) * size, dtype=np.uint8)
        # Into a buffer kept from batch to batch, through a memoryview: a fresh array's pages
        # and numpy's per-row assignment cost more than the decompression itself.
        scratch, decompress, blocks = self._scratch.data, self._lz4.decompress, self._blocks
        for start, slot in zip(
            range(0, len(distinct) * size, size), distinct.tolist(), strict=True
        ):
            scratch[start : start + size] = decompress(blocks[slot], uncompressed_size=size)
        frames = self._scratch[: len(distinct) * size].view(self.dtype)
        return frames.reshape(len(distinct), *self.frame_shape)[inverse.reshape(slots.shape)]

    def state_dict(self, stored: int) -> dict[str, Any]:
        """The blocks of the first ``stored`` slots end to end, and where each starts (a copy:
        the compressed bytes, small beside the frames they stand for)."""
        blocks = self._blocks[:stored]
        lengths = np.fromiter(map(len, blocks), dtype=np.int64, count=stored)
        offsets = np.concatenate((np.zeros(1, np.int64), np.cumsum(lengths)))
        joined = np.frombuffer(bytearray().join(blocks), dtype=np.uint8)
        return {
            "frame_compression": self.compression,
            "frame_blocks": torch.from_numpy(joined),
            "frame_offsets": torch.from_numpy(offsets),
        }

    def load_state_dict(
        self, state: dict[str, Any], stored: int, frame_count: int, what: str
    ) -> None:
        offsets = state_array(state, "frame_offsets", (stored + 1,), np.dtype(np.int64), what)
        if offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
            raise ValueError(f"{what} state 'frame_offsets' must start at 0 and increase")
        total = int(offsets[-1])
        joined = state_array(state, "frame_blocks", (total,), np.dtype(np.uint8), what)
        bounds = offsets.tolist()
        blocks = [joined[start:end].tobytes() for start, end in itertools.pairwise(bounds)]
        for slot, block in enumerate(blocks):
            self._check_block(block, slot, what)

        self._blocks[:stored] = blocks
        self._blocks[stored:] = [b""] * (self.capacity - stored)
        self._block_bytes, self._written = total, stored
        serials = np.arange(max(0, frame_count - len(self._recent)), frame_count)
        self._recent[serials % len(self._recent)] = (
            self.read(serials % self.capacity).reshape(len(serials), -1).view(np.uint8)
        )

    def _check_block(self, block: bytes, slot: int, what: str) -> None:
        try:
            size = len(self._lz4.decompress(block, uncompressed_size=self.frame_nbytes))
        except self._lz4.LZ4BlockError:
            size = -1
        if size != self.frame_nbytes:
            raise ValueError(
                f"{what} state frame {slot} is damaged: its lz4 block is not one "
                f"{self.frame_nbytes}-byte frame"
            )


def frame_ring_class(compression: str) -> type[PlainFrames] | type[Lz4Frames]:
    """The ring for a ``buffer.frame_compression`` value."""
    if compression == "none":
        return PlainFrames
    if compression == "lz4":
        return Lz4Frames
    raise ValueError(f"unknown frame compression {compression!r}; valid: none, lz4")
