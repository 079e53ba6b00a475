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

- The blocks are packed in write order into chunks of bytes (``BlockArena``): frames are
  overwritten in the order they were written, so a chunk is freed whole once all its frames
  are, nothing is compacted, and a checkpoint saves the chunks as they are, without a copy
  (a multi-GB replay must not need a second copy in RAM to be saved). Each slot keeps where
  its block is: 24 bytes.
- The last ``window`` frames are also kept uncompressed, in a small ring of their own
  (``window`` frames, 14 MB at 84x84): the dedup compare reads only those, so ``add``
  compresses each new frame once and decompresses nothing.
- ``read`` decompresses each distinct slot once: a batch's stacks share most of their frames
  (32 transitions reference ~160 distinct frames, not 256).
- A checkpoint holds the compressed bytes: the chunks (uint8 tensors) and each slot's chunk,
  offset and length. Loading decompresses each block once to check it is one whole frame,
  and from those rebuilds the window; states of the format before the chunks (every block end
  to end, and offsets) still load.
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch

from dqn_cli.buffers.storage import state_array, tensor_view

# Bytes per chunk of lz4 blocks (at most): 1M Atari frames take ~45 of them.
_CHUNK_BYTES = 16 * 2**20


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


class BlockArena:
    """lz4 blocks in the order their frames were written, packed into chunks of bytes.

    Frame serial ``s`` has slot ``s % capacity`` and is overwritten by serial ``s + capacity``:
    frames die in the order they were written, so their blocks are a queue of bytes. A chunk
    is freed once every frame whose block it holds has been overwritten.
    """

    def __init__(self, capacity: int, chunk_bytes: int) -> None:
        self.capacity, self.chunk_bytes = capacity, chunk_bytes
        # slot -> (chunk number, offset, length) of its frame's block; chunk numbers count every
        # chunk ever opened, and the first of ``chunks`` is number ``first_chunk``.
        self.where = np.zeros((capacity, 3), dtype=np.int64)
        self.chunks: list[np.ndarray] = []
        self.views: list[memoryview] = []  # the chunks' bytes, for cheap slicing
        self.used: list[int] = []  # bytes written into each chunk
        self.first_serials: list[int] = []  # the serial of each chunk's first block
        self.first_chunk = 0

    @property
    def nbytes(self) -> int:
        return self.where.nbytes + sum(self.used)

    def append(self, serial: int, block: bytes | memoryview) -> None:
        """The block of frame ``serial``, the next serial after the last appended."""
        size = len(block)
        if not self.chunks or self.used[-1] + size > self.chunk_bytes:
            chunk = np.empty(self.chunk_bytes, dtype=np.uint8)  # pages come as they are written
            self.chunks.append(chunk)
            self.views.append(chunk.data)
            self.used.append(0)
            self.first_serials.append(serial)
        start = self.used[-1]
        self.views[-1][start : start + size] = block
        self.used[-1] = start + size
        self.where[serial % self.capacity] = (self.first_chunk + len(self.chunks) - 1, start, size)
        # Serials up to serial - capacity are overwritten: free the chunks that hold only those.
        while len(self.chunks) > 1 and self.first_serials[1] <= serial + 1 - self.capacity:
            for queue in (self.chunks, self.views, self.used, self.first_serials):
                del queue[0]
            self.first_chunk += 1


class Lz4Frames:
    """Every slot's frame as an lz4 block; the last ``window`` frames also uncompressed."""

    compression = "lz4"

    def __init__(
        self, capacity: int, frame_shape: tuple[int, ...], dtype: np.dtype[Any], window: int
    ) -> None:
        self._lz4 = import_lz4_block()
        self.capacity, self.frame_shape, self.dtype = capacity, frame_shape, np.dtype(dtype)
        self.frame_nbytes = math.prod(frame_shape) * self.dtype.itemsize
        self._blocks = self._new_arena()
        self._recent = np.zeros((window, self.frame_nbytes), dtype=np.uint8)  # serial s: s % window
        self._scratch = np.empty(0, dtype=np.uint8)  # the distinct frames of the last read

    def _new_arena(self) -> BlockArena:
        # A chunk holds at least one block of an incompressible frame (lz4's bound), and is
        # small beside the ring (a few percent of what its frames take raw).
        bound = self.frame_nbytes + self.frame_nbytes // 255 + 16
        return BlockArena(
            self.capacity, max(bound, min(_CHUNK_BYTES, self.capacity * self.frame_nbytes // 32))
        )

    @staticmethod
    def preallocated_nbytes(
        capacity: int, frame_shape: tuple[int, ...], dtype: np.dtype[Any], window: int
    ) -> int:
        """Where each slot's block is, and the uncompressed window; the blocks come on top."""
        return capacity * 3 * 8 + window * math.prod(frame_shape) * dtype.itemsize

    @property
    def nbytes(self) -> int:
        """What the ring holds now: the block index and the blocks, and the window."""
        return self._blocks.nbytes + self._recent.nbytes

    def write(self, serials: np.ndarray, rows: np.ndarray) -> None:
        compress, append = self._lz4.compress, self._blocks.append
        for serial, row in zip(serials.tolist(), rows, strict=True):
            append(serial, compress(row, store_size=False))
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
        scratch, decompress = self._scratch.data, self._lz4.decompress
        views, first = self._blocks.views, self._blocks.first_chunk
        for start, (chunk, offset, length) in zip(
            range(0, len(distinct) * size, size), self._blocks.where[distinct].tolist(), strict=True
        ):
            block = views[chunk - first][offset : offset + length]
            scratch[start : start + size] = decompress(block, uncompressed_size=size)
        frames = self._scratch[: len(distinct) * size].view(self.dtype)
        return frames.reshape(len(distinct), *self.frame_shape)[inverse.reshape(slots.shape)]

    def state_dict(self, stored: int) -> dict[str, Any]:
        """The chunks as they are (tensors sharing their memory: nothing is copied but the
        index, 24 bytes per slot) and where each of the first ``stored`` slots' block is."""
        arena = self._blocks
        where = arena.where[:stored].copy()
        where[:, 0] -= arena.first_chunk
        return {
            "frame_compression": self.compression,
            "frame_chunks": [
                tensor_view(chunk[:used])
                for chunk, used in zip(arena.chunks, arena.used, strict=True)
            ],
            "frame_where": torch.from_numpy(where),
        }

    def load_state_dict(
        self, state: dict[str, Any], stored: int, frame_count: int, what: str
    ) -> None:
        """The saved chunks, copied as they are (so memory and ``nbytes`` are what they were),
        after checking that every block is one whole frame and that the chunks hold the
        frames in write order (which freeing a chunk relies on); the window is rebuilt from
        the same decompressions. Nothing changes until all of it passes."""
        chunks, where = self._saved_blocks(state, stored, what)
        # The serial each slot holds, and the chunk of each, oldest frame first.
        serials = frame_count - 1 - (frame_count - 1 - np.arange(stored)) % self.capacity
        order = np.argsort(serials)
        chunk_in_order = where[order, 0]
        if np.any(np.diff(chunk_in_order) < 0) or not np.array_equal(
            np.unique(chunk_in_order), np.arange(len(chunks))
        ):
            raise ValueError(f"{what} state 'frame_chunks' do not hold the frames in write order")
        recent = np.empty_like(self._recent)
        size, window = self.frame_nbytes, len(recent)
        decompress, error = self._lz4.decompress, self._lz4.LZ4BlockError
        in_order = where[order].T.tolist()
        for slot, chunk, offset, length in zip(order.tolist(), *in_order, strict=True):
            try:
                frame = decompress(
                    chunks[chunk].data[offset : offset + length], uncompressed_size=size
                )
            except error:
                frame = b""
            if len(frame) != size:
                raise ValueError(
                    f"{what} state frame {slot} is damaged: its lz4 block is not one "
                    f"{size}-byte frame"
                )
            serial = int(serials[slot])
            if serial >= frame_count - window:
                recent[serial % window] = np.frombuffer(frame, dtype=np.uint8)

        arena = self._new_arena()
        for chunk in chunks:
            copied = np.empty(max(arena.chunk_bytes, len(chunk)), dtype=np.uint8)
            copied[: len(chunk)] = chunk
            arena.chunks.append(copied)
            arena.views.append(copied.data)
            arena.used.append(len(chunk))
        first_in_order = np.searchsorted(chunk_in_order, np.arange(len(chunks)))
        arena.first_serials = serials[order][first_in_order].tolist()
        arena.where[:stored] = where
        self._blocks, self._recent = arena, recent

    def _saved_blocks(
        self, state: dict[str, Any], stored: int, what: str
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """The chunks of bytes of a state and each slot's (chunk, offset, length) in them,
        checked to lie inside the chunks."""
        if "frame_blocks" in state:
            # Written before the chunks: every block end to end in slot order, and offsets.
            offsets = state_array(state, "frame_offsets", (stored + 1,), np.dtype(np.int64), what)
            if offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
                raise ValueError(f"{what} state 'frame_offsets' must start at 0 and increase")
            joined = state_array(
                state, "frame_blocks", (int(offsets[-1]),), np.dtype(np.uint8), what
            )
            chunk_numbers = np.zeros(stored, dtype=np.int64)
            where = np.stack((chunk_numbers, offsets[:-1], np.diff(offsets)), axis=1)
            return [joined] if stored else [], where
        saved = state.get("frame_chunks")
        if not isinstance(saved, list) or not all(
            isinstance(c, torch.Tensor) and c.dtype == torch.uint8 and c.dim() == 1 for c in saved
        ):
            raise ValueError(f"{what} state 'frame_chunks' must be a list of 1-D uint8 tensors")
        chunks = [c.detach().cpu().numpy() for c in saved]
        where = state_array(state, "frame_where", (stored, 3), np.dtype(np.int64), what)
        chunk, offset, length = where.T
        inside = (chunk >= 0) & (chunk < len(chunks)) & (offset >= 0) & (length > 0)
        ends = np.array([len(c) for c in chunks], dtype=np.int64)
        if not inside.all() or np.any(offset + length > ends[chunk]):
            raise ValueError(f"{what} state 'frame_where' points outside 'frame_chunks'")
        return chunks, where


def frame_ring_class(compression: str) -> type[PlainFrames] | type[Lz4Frames]:
    """The ring for a ``buffer.frame_compression`` value."""
    if compression == "none":
        return PlainFrames
    if compression == "lz4":
        return Lz4Frames
    raise ValueError(f"unknown frame compression {compression!r}; valid: none, lz4")
