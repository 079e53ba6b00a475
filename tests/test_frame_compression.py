"""buffer.frame_compression=lz4: the frame store keeps its frames lz4-compressed and gives the
very batches the plain store gives; its checkpoints hold the compressed bytes, are checked on
load, and resume exactly."""

import json
import re
import sys
from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dqn_cli.buffers import FrameStackStorage, ReplayBuffer, storage_nbytes
from dqn_cli.buffers.replay import make_sampler
from dqn_cli.checkpoint import load_checkpoint
from dqn_cli.config import ConfigError, parse_train_config
from dqn_cli.run_planning import check_new_run
from tests.helpers import run_installed, run_main
from tests.test_frame_store import (
    CPU,
    FRAME,
    STACK,
    assert_resumed_goes_on_alike,
    roundtrip,
    train_for,
    train_step,
    transitions,
)

pytest.importorskip("lz4", reason="the atari extra (make install) is not installed")

BIG_FRAME = (84, 84)
BIG_SHAPE = (STACK, *BIG_FRAME)
FRAME_NBYTES = 84 * 84


@cache
def screen(small: bytes) -> np.ndarray:
    """A real-looking 84x84 frame for a small test frame: mostly black, with a few blocks
    placed by its bytes, and those bytes themselves (distinct frames stay distinct)."""
    rng = np.random.default_rng(list(small))
    pixels = np.zeros(BIG_FRAME, dtype=np.uint8)
    for _ in range(4):
        top, left = rng.integers(0, 76, 2)
        pixels[top : top + 8, left : left + 8] = rng.integers(1, 256)
    pixels.flat[: len(small)] = np.frombuffer(small, np.uint8)
    return pixels


def screens(stacks: np.ndarray) -> np.ndarray:
    """Each (STACK, *FRAME) stack of ``stacks`` with every frame as its 84x84 screen."""
    flat = stacks.reshape(-1, *FRAME)
    return np.stack([screen(f.tobytes()) for f in flat]).reshape(*stacks.shape[:-2], *BIG_FRAME)


def screen_transitions(num_envs: int, steps: int, n_step: int, seed: int):
    """``tests.test_frame_store.transitions`` (resets, shared reset screens, n-step) on
    Atari-sized frames that compress like Atari's."""
    for obs, actions, rewards, next_obs, terminated, discounts in transitions(
        num_envs, steps, n_step, seed
    ):
        yield screens(obs), actions, rewards, screens(next_obs), terminated, discounts


def frame_buffer(kind: str, capacity: int, seed: int, compression: str, window: int = 64):
    """A replay buffer on a frame store with a small dedup ``window`` (so its frame ring,
    ``capacity + window`` and a little more, wraps soon)."""
    storage = FrameStackStorage(
        capacity, BIG_SHAPE, np.dtype(np.uint8), window=window, frame_compression=compression
    )
    sampler = make_sampler(kind, capacity, alpha=0.6, eps=1e-6)
    return ReplayBuffer(storage, sampler, np.random.default_rng(seed), CPU)


@pytest.mark.parametrize("kind", ["uniform", "per"])
@pytest.mark.parametrize(("num_envs", "n_step"), [(1, 1), (3, 3)])
def test_lz4_store_gives_the_plain_store_batches(kind, num_envs, n_step):
    plain = frame_buffer(kind, 150, seed=7, compression="none")
    packed = frame_buffer(kind, 150, seed=7, compression="lz4")
    td_rng = np.random.default_rng(1)
    for step, args in enumerate(screen_transitions(num_envs, 400, n_step, seed=num_envs + n_step)):
        plain.add(*args)
        packed.add(*args)
        assert packed.storage.size == plain.storage.size
        assert packed.storage.frame_count == plain.storage.frame_count  # same frames shared
        if len(plain) >= 16 and step % 3 == 0:
            train_step([plain, packed], td_rng)
    assert plain.storage.frame_count > plain.storage.frame_capacity  # the frame ring wrapped
    # Frames compress: the whole lz4 store is smaller than the plain store's frames alone.
    assert packed.storage.nbytes < 0.5 * plain.storage.ring.nbytes


def counting_decompress(storage: FrameStackStorage) -> list[int]:
    """Patch the lz4 ring's decompress to record the size of each call; return the record."""
    calls: list[int] = []
    lz4 = storage.ring._lz4

    def decompress(block, uncompressed_size):
        calls.append(uncompressed_size)
        return lz4.decompress(block, uncompressed_size=uncompressed_size)

    storage.ring._lz4 = SimpleNamespace(compress=lz4.compress, decompress=decompress)
    return calls


def test_a_batch_decompresses_each_distinct_frame_once():
    buffer = frame_buffer("uniform", 200, seed=0, compression="lz4")
    for args in screen_transitions(2, 120, 1, seed=3):
        buffer.add(*args)
    storage = buffer.storage
    calls = counting_decompress(storage)
    slots = np.random.default_rng(0).integers(0, storage.size, 32)
    obs, next_obs, *_ = storage.gather(slots)
    distinct = np.unique(np.concatenate((storage.obs_refs[slots], storage.next_obs_refs[slots])))
    assert len(calls) == len(distinct) < 2 * 32 * STACK  # consecutive stacks share frames
    plain = FrameStackStorage(200, BIG_SHAPE, np.dtype(np.uint8))
    for args in screen_transitions(2, 120, 1, seed=3):
        plain.add(*args)
    want_obs, want_next_obs, *_ = plain.gather(slots)
    np.testing.assert_array_equal(obs, want_obs)
    np.testing.assert_array_equal(next_obs, want_next_obs)


def test_resume_from_lz4_state_gives_identical_future_batches():
    stream = screen_transitions(3, 250, 3, seed=11)
    original, td_rng = frame_buffer("per", 150, seed=4, compression="lz4"), np.random.default_rng(0)
    train_for(original, stream, 80, td_rng)
    state = roundtrip(original.state_dict())
    stored = min(original.storage.frame_count, original.storage.frame_capacity)
    # The checkpoint holds the compressed bytes, not the frames.
    saved_bytes = sum(chunk.numel() for chunk in state["storage"]["frame_chunks"])
    assert saved_bytes < 0.3 * stored * FRAME_NBYTES
    assert "frames" not in state["storage"]
    resumed = frame_buffer("per", 150, seed=99, compression="lz4")
    resumed.load_state_dict(state)
    assert resumed.storage.nbytes == original.storage.nbytes
    assert_resumed_goes_on_alike(original, resumed, stream, td_rng)


def filled_lz4_storage() -> FrameStackStorage:
    storage = FrameStackStorage(40, BIG_SHAPE, np.dtype(np.uint8), frame_compression="lz4")
    for args in screen_transitions(2, 30, 1, seed=0):
        storage.add(*args)
    return storage


def with_block(state: dict, index: int, block: bytes) -> None:
    """Point frame ``index`` of ``state`` at ``block``, put at the end of its chunk."""
    chunks = list(state["frame_chunks"])
    chunk = int(state["frame_where"][index, 0])
    end = len(chunks[chunk])
    chunks[chunk] = torch.cat((chunks[chunk], torch.tensor(list(block), dtype=torch.uint8)))
    state["frame_chunks"] = chunks
    state["frame_where"] = state["frame_where"].clone()
    state["frame_where"][index] = torch.tensor([chunk, end, len(block)])


def edited_where(state: dict, index: int, column: int, value: int) -> None:
    state["frame_where"] = state["frame_where"].clone()
    state["frame_where"][index, column] = value


def older_format(state: dict) -> dict:
    """``state`` as lz4 states were written before the chunks: every block end to end in slot
    order, and where each starts."""
    chunks = [chunk.numpy().tobytes() for chunk in state["frame_chunks"]]
    blocks = [chunks[c][o : o + n] for c, o, n in state["frame_where"].tolist()]
    offsets = np.concatenate(([0], np.cumsum([len(b) for b in blocks])))
    old = {k: v for k, v in state.items() if k not in ("frame_chunks", "frame_where")}
    old["frame_blocks"] = torch.from_numpy(np.frombuffer(b"".join(blocks), np.uint8).copy())
    old["frame_offsets"] = torch.from_numpy(offsets.astype(np.int64))
    return old


def damage(name: str, state: dict) -> dict:
    import lz4.block

    if name == "index of the wrong shape":
        state["frame_where"] = state["frame_where"][:-1]
    elif name == "a chunk that is not there":
        edited_where(state, 3, 0, len(state["frame_chunks"]))
    elif name == "a block beyond its chunk":
        edited_where(state, 3, 1, len(state["frame_chunks"][0]))
    elif name == "an empty block":
        edited_where(state, 3, 2, 0)
    elif name == "block that does not decompress":
        with_block(state, 3, bytes(12))
    elif name == "block of a smaller frame":
        with_block(state, 3, lz4.block.compress(bytes(3000), store_size=False))
    elif name == "chunks of the wrong dtype":
        state["frame_chunks"] = [chunk.int() for chunk in state["frame_chunks"]]
    elif name == "chunks out of write order":
        state["frame_chunks"] = [*state["frame_chunks"], state["frame_chunks"][0]]
        edited_where(state, 3, 0, 1)
    elif name == "no chunks":
        del state["frame_chunks"]
    elif name == "older format, offsets out of order":
        state = older_format(state)
        state["frame_offsets"][5] = state["frame_offsets"][7]
    elif name == "older format, offsets beyond the bytes":
        state = older_format(state)
        state["frame_offsets"][-1] += 100
    elif name == "older format, block that does not decompress":
        state = older_format(state)
        state["frame_blocks"][: state["frame_offsets"][1]] = 0
    return state


DAMAGES = {  # damage -> what the one-line refusal says
    "index of the wrong shape": "'frame_where' has shape",
    "a chunk that is not there": "'frame_where' points outside 'frame_chunks'",
    "a block beyond its chunk": "'frame_where' points outside 'frame_chunks'",
    "an empty block": "'frame_where' points outside 'frame_chunks'",
    "block that does not decompress": "frame 3 is damaged",
    "block of a smaller frame": "frame 3 is damaged",
    "chunks of the wrong dtype": "'frame_chunks' must be a list of 1-D uint8 tensors",
    "chunks out of write order": "'frame_chunks' do not hold the frames in write order",
    "no chunks": "'frame_chunks' must be a list of 1-D uint8 tensors",
    "older format, offsets out of order": "'frame_offsets' must start at 0 and increase",
    "older format, offsets beyond the bytes": "'frame_blocks' has shape",
    "older format, block that does not decompress": "frame 0 is damaged",
}


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_lz4_state_is_refused_with_one_line(name):
    state = damage(name, roundtrip(filled_lz4_storage().state_dict()))
    fresh = FrameStackStorage(40, BIG_SHAPE, np.dtype(np.uint8), frame_compression="lz4")
    with pytest.raises(ValueError, match=re.escape(DAMAGES[name])) as refused:
        fresh.load_state_dict(state)
    assert "\n" not in str(refused.value)
    assert fresh.size == 0 and fresh.nbytes == fresh.preallocated_nbytes(
        40, BIG_SHAPE, np.dtype(np.uint8), frame_compression="lz4"
    )  # nothing was half-loaded


def test_a_state_of_the_format_before_chunks_loads_the_same_frames():
    empty = FrameStackStorage(40, BIG_SHAPE, np.dtype(np.uint8), frame_compression="lz4")
    for source in (filled_lz4_storage(), empty):
        state = roundtrip(source.state_dict())
        for loaded_from in (state, older_format(state)):
            fresh = FrameStackStorage(40, BIG_SHAPE, np.dtype(np.uint8), frame_compression="lz4")
            fresh.load_state_dict(loaded_from)
            assert fresh.size == source.size
            slots = np.arange(fresh.size)
            for got, want in zip(fresh.gather(slots), source.gather(slots), strict=True):
                np.testing.assert_array_equal(got, want)


def test_saving_shares_the_chunks_and_overwritten_frames_free_theirs():
    from dqn_cli.buffers.frame_rings import Lz4Frames

    ring = Lz4Frames(100, BIG_FRAME, np.dtype(np.uint8), window=16)
    rng = np.random.default_rng(0)
    frames = np.stack([screen(rng.bytes(20)) for _ in range(1000)]).reshape(1000, -1)
    sizes = []
    for start in range(0, 1000, 10):
        ring.write(np.arange(start, start + 10), frames[start : start + 10])
        sizes.append(sum(ring._blocks.used))
    np.testing.assert_array_equal(ring.read(np.arange(100)).reshape(100, -1), frames[900:])
    # The last 100 frames' blocks, plus at most a chunk of ones already overwritten.
    live = sum(int(n) for n in ring._blocks.where[:, 2])
    assert live <= sizes[-1] <= live + ring._blocks.chunk_bytes
    assert max(sizes) <= 2 * live + ring._blocks.chunk_bytes  # memory stays flat
    saved = ring.state_dict(100)
    for tensor, chunk in zip(saved["frame_chunks"], ring._blocks.chunks, strict=True):
        assert tensor.data_ptr() == chunk.ctypes.data  # not a copy
    # Loaded, the chunks are as they were, and both rings go on alike, freeing chunks alike.
    fresh = Lz4Frames(100, BIG_FRAME, np.dtype(np.uint8), window=16)
    fresh.load_state_dict(roundtrip(saved), 100, 1000, "test")
    assert len(fresh._blocks.chunks) == len(ring._blocks.chunks) > 1
    for start in range(1000, 1300, 10):
        more = np.stack([screen(rng.bytes(20)) for _ in range(10)]).reshape(10, -1)
        ring.write(np.arange(start, start + 10), more)
        fresh.write(np.arange(start, start + 10), more)
        assert fresh.nbytes == ring.nbytes
        assert len(fresh._blocks.chunks) == len(ring._blocks.chunks)
    np.testing.assert_array_equal(fresh.read(np.arange(100)), ring.read(np.arange(100)))


@pytest.mark.parametrize(("saved", "loaded"), [("lz4", "none"), ("none", "lz4")])
def test_a_state_of_the_other_compression_is_refused_with_one_line(saved, loaded):
    source = FrameStackStorage(40, BIG_SHAPE, np.dtype(np.uint8), frame_compression=saved)
    for args in screen_transitions(2, 10, 1, seed=0):
        source.add(*args)
    fresh = FrameStackStorage(40, BIG_SHAPE, np.dtype(np.uint8), frame_compression=loaded)
    with pytest.raises(ValueError, match=f"buffer.frame_compression={saved}$") as refused:
        fresh.load_state_dict(roundtrip(source.state_dict()))
    assert "\n" not in str(refused.value)


def test_lz4_preallocates_only_the_index_and_the_window():
    plain = storage_nbytes(1_000_000, BIG_SHAPE, np.dtype(np.uint8), STACK)
    packed = storage_nbytes(1_000_000, BIG_SHAPE, np.dtype(np.uint8), STACK, "lz4")
    # Per transition 60 bytes (int32 refs of 2 x 4 frames, written_at, scalars), per frame
    # slot where its block is (24), and 2048 raw frames (14 MB): 98 MB, not 7 GB.
    assert 60e6 < packed < 110e6 and plain > 7e9
    fresh = FrameStackStorage(1000, BIG_SHAPE, np.dtype(np.uint8), frame_compression="lz4")
    assert fresh.nbytes == storage_nbytes(1000, BIG_SHAPE, np.dtype(np.uint8), STACK, "lz4")


def test_frames_that_fit_only_compressed_are_warned_of_at_start(monkeypatch, caplog):
    import dqn_cli.training as training

    storage = FrameStackStorage(1000, BIG_SHAPE, np.dtype(np.uint8), frame_compression="lz4")
    raw = storage.frame_capacity * FRAME_NBYTES
    for available, warned in ((raw + 1, False), (raw - 1, True), (None, False)):
        monkeypatch.setattr(training, "available_memory_bytes", lambda a=available: a)
        caplog.clear()
        with caplog.at_level("WARNING", logger=training.log.name):
            training.warn_if_frames_may_not_fit(storage)
        assert bool(caplog.records) == warned, available  # memory unknown (None): no word
    monkeypatch.setattr(training, "available_memory_bytes", lambda: raw // 4)
    with caplog.at_level("WARNING", logger=training.log.name):
        training.warn_if_frames_may_not_fit(storage)
    message = caplog.records[-1].getMessage()
    assert f"{storage.frame_capacity} frames take" in message and "compress 4.0x or more" in message
    assert "lower buffer.capacity" in message and "\n" not in message


def test_an_unknown_compression_is_a_config_error():
    with pytest.raises(ConfigError) as refused:
        parse_train_config({"buffer": {"frame_compression": "zstd"}})
    assert str(refused.value) == "buffer.frame_compression: got 'zstd'; allowed: none, lz4"


def test_lz4_without_the_extra_is_refused_before_anything(monkeypatch):
    pytest.importorskip("ale_py", reason="the atari extra (make install) is not installed")
    monkeypatch.setitem(sys.modules, "lz4", None)  # `import lz4` now fails
    raw = {"env": {"id": "ALE/Pong-v5"}, "buffer": {"frame_compression": "lz4"}}
    with pytest.raises(ValueError) as refused:
        check_new_run(raw)
    assert str(refused.value) == (
        "buffer.frame_compression: lz4 needs the atari extra: "
        "pip install 'dqn-cli[atari]' (or make install)"
    )
    check_new_run({**raw, "env": {"id": "CartPole-v1"}})  # no stacked frames: not needed


def test_an_atari_run_with_lz4_frames_resumes_and_evaluates_through_the_cli(tmp_path, capfd):
    """The env=atari preset compresses its frames unless told otherwise."""
    from tests.test_pixel_resume import ATARI_RUN_ARGS

    run_dir = tmp_path / "run"
    preset = [arg for arg in ATARI_RUN_ARGS if not arg.startswith("buffer.frame_compression")]
    args = [*preset, f"hydra.run.dir={run_dir}"]
    done = run_installed("dqn-train", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    log = (run_dir / "train.log").read_text()
    assert "MiB preallocated, plus the lz4-compressed frames as they come" in log
    storage = load_checkpoint(run_dir / "checkpoints/last.pt")["replay"]["storage"]
    assert storage["frame_compression"] == "lz4" and "frames" not in storage
    code, _, err = run_main(f"resume={run_dir}", "total_steps=400", capfd=capfd)
    assert code == 0, err
    assert "resumed at env step 300" in (run_dir / "train.log").read_text()
    evaluated = run_installed(
        "dqn-eval",
        str(run_dir),
        "--last",
        "--episodes",
        "1",
        "--epsilon",
        "1",
        "--json",
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["episodes"] == 1


def test_memory_benchmark_fills_an_lz4_replay_with_recorded_atari_frames(tmp_path):
    pytest.importorskip("ale_py", reason="the atari extra (make install) is not installed")
    from bench.replay_memory import child_fill, record_atari_frames

    frames = record_atari_frames(["Breakout"], 300)
    assert frames.shape == (300, *BIG_FRAME) and len(np.unique(frames, axis=0)) > 50
    path = tmp_path / "frames.npy"
    np.save(path, frames)
    result = child_fill("frames", 1500, 2, True, "lz4", str(path))
    assert result["size"] == 1500
    # Real frames compress: the written frames and the file are a fraction of raw frames.
    raw = result["frames"] * FRAME_NBYTES
    assert result["nbytes"] - result["preallocated"] < 0.2 * raw
    assert result["file_bytes"] < 0.2 * raw
