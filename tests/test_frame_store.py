"""The frame-stack replay storage: same batches as the naive store, no mixed stacks, resume."""

import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from dqn_cli.buffers import (
    FrameStackStorage,
    PrioritizedSampler,
    ReplayBuffer,
    TransitionStorage,
    make_replay_buffer,
    make_storage,
    storage_nbytes,
)
from dqn_cli.buffers.frame_rings import PlainFrames
from dqn_cli.buffers.nstep import NStepAccumulator
from dqn_cli.buffers.storage import LiveSlots

STACK = 4
FRAME = (3, 4)  # 12 bytes: the first 3 hold the frame's id, so a wrong frame is visible
OBS_SHAPE = (STACK, *FRAME)
SHARED_RESET_ID = 1  # "the game's start screen": the same bytes in every env and episode
CPU = torch.device("cpu")


def frame(frame_id: int) -> np.ndarray:
    pixels = np.zeros(FRAME, dtype=np.uint8)
    pixels.flat[:3] = [frame_id & 255, (frame_id >> 8) & 255, frame_id >> 16]
    pixels.flat[3:] = frame_id % 7  # content beyond the id, so frames are not mostly zeros
    return pixels


def frame_ids(stacks: np.ndarray) -> np.ndarray:
    """The id of every frame of ``stacks`` (..., STACK, *FRAME); 0 for zero padding."""
    flat = stacks.reshape(*stacks.shape[:-2], -1).astype(np.int64)
    return flat[..., 0] | flat[..., 1] << 8 | flat[..., 2] << 16


@dataclass
class Step:
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray  # the true successor: the final obs where an episode ended
    terminated: np.ndarray
    truncated: np.ndarray


class FakeVectorEnv:
    """Stacked-frame episodes of random lengths (many of 1-2 steps) in a same-step auto-reset
    vector env. Every frame has a new id, except shared reset screens if ``shared_resets``;
    reset stacks repeat the first frame or pad it with zeros (ale-py's vector env)."""

    def __init__(self, num_envs: int, seed: int, shared_resets: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.num_envs, self.shared_resets = num_envs, shared_resets
        self.next_id = SHARED_RESET_ID + 1
        self.origin: dict[int, tuple[int, int, int]] = {}  # frame id -> (env, episode, step)
        self.episode = [0] * num_envs
        self.length_left = [0] * num_envs
        self.stacks = np.stack([self._reset(env) for env in range(num_envs)])

    def _new_frame(self, env: int, step: int) -> np.ndarray:
        frame_id, self.next_id = self.next_id, self.next_id + 1
        self.origin[frame_id] = (env, self.episode[env], step)
        return frame(frame_id)

    def _reset(self, env: int) -> np.ndarray:
        self.episode[env] += 1
        self.length_left[env] = int(self.rng.choice([1, 2, self.rng.integers(3, 40)]))
        first = (
            frame(SHARED_RESET_ID)
            if self.shared_resets and self.rng.random() < 0.5
            else self._new_frame(env, 0)
        )
        padding = np.zeros_like(first) if self.rng.random() < 0.5 else first
        return np.stack([padding] * (STACK - 1) + [first])

    def steps(self, count: int) -> Iterator[Step]:
        for t in range(count):
            obs = self.stacks.copy()
            next_obs = np.empty_like(obs)
            ended = np.zeros(self.num_envs, dtype=bool)
            for env in range(self.num_envs):
                self.length_left[env] -= 1
                new = self._new_frame(env, t)
                next_obs[env] = np.concatenate([obs[env, 1:], new[None]])
                ended[env] = self.length_left[env] == 0
                self.stacks[env] = self._reset(env) if ended[env] else next_obs[env]
            terminated = ended & (self.rng.random(self.num_envs) < 0.7)
            yield Step(
                obs,
                self.rng.integers(0, 6, self.num_envs),
                self.rng.normal(size=self.num_envs),
                next_obs,
                terminated,
                ended & ~terminated,
            )


def transitions(num_envs: int, steps: int, n_step: int, seed: int, shared_resets: bool = True):
    """Argument tuples for ReplayBuffer.add, as training writes them (1-step or n-step)."""
    env = FakeVectorEnv(num_envs, seed, shared_resets)
    accumulator = NStepAccumulator(n_step, 0.9, num_envs, OBS_SHAPE, np.dtype(np.uint8))
    for step in env.steps(steps):
        if n_step == 1:
            yield step.obs, step.actions, step.rewards, step.next_obs, step.terminated, 0.9
            continue
        batch = accumulator.push(
            step.obs, step.actions, step.rewards, step.next_obs, step.terminated, step.truncated
        )
        if batch is not None:
            yield (
                batch.obs,
                batch.actions,
                batch.returns,
                batch.next_obs,
                batch.terminated,
                batch.discounts,
            )


def assert_same_batches(a, b) -> None:
    for name in ("obs", "next_obs", "actions", "rewards", "terminated", "discounts", "weights"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    np.testing.assert_array_equal(a.slots, b.slots)


def buffer_pair(kind: str, capacity: int, seed: int):
    naive = make_replay_buffer(
        kind, capacity, OBS_SHAPE, np.dtype(np.uint8), np.random.default_rng(seed), CPU
    )
    frames = make_replay_buffer(
        kind,
        capacity,
        OBS_SHAPE,
        np.dtype(np.uint8),
        np.random.default_rng(seed),
        CPU,
        frame_stack=STACK,
    )
    assert isinstance(naive.storage, TransitionStorage)
    assert isinstance(frames.storage, FrameStackStorage)
    return naive, frames


def train_step(buffers, td_rng: np.random.Generator) -> None:
    """Draw a batch from each, check they are identical, and feed both the same TD errors."""
    batches = [buffer.sample(16, beta=0.5) for buffer in buffers]
    assert_same_batches(*batches)
    errors = torch.from_numpy(td_rng.normal(size=16))
    for buffer, batch in zip(buffers, batches, strict=True):
        buffer.update_priorities(batch.slots, errors)


@pytest.mark.parametrize("kind", ["uniform", "per"])
@pytest.mark.parametrize(("num_envs", "n_step"), [(1, 1), (3, 1), (3, 3)])
def test_identical_batches_to_the_naive_store(kind, num_envs, n_step):
    naive, frames = buffer_pair(kind, capacity=200, seed=7)
    td_rng, added = np.random.default_rng(1), 0
    for args in transitions(num_envs, 900, n_step, seed=num_envs * 10 + n_step):
        naive.add(*args)
        frames.add(*args)
        added += len(args[1])
        assert frames.storage.size == naive.storage.size  # nothing evicted early
        if len(naive) >= 16:
            train_step([naive, frames], td_rng)
    assert added > 4 * 200  # the ring wrapped several times
    # Each transition added about one frame: the shared frames of its stacks cost nothing.
    assert frames.storage.frame_count < 1.5 * added


def test_identical_batches_when_every_hash_collides(monkeypatch):
    # Equality of bytes decides, the hash only narrows the search: with one hash for all
    # frames nothing is shared wrongly (it only shares less).
    monkeypatch.setattr(FrameStackStorage, "_hash", lambda self, f: np.zeros(len(f), np.uint64))
    naive, frames = buffer_pair("per", capacity=50, seed=3)  # small: sharing less evicts early
    td_rng = np.random.default_rng(2)
    for args in transitions(2, 200, 2, seed=5):
        naive.add(*args)
        frames.add(*args)
        assert frames.storage.size == naive.storage.size
        if len(naive) >= 16:
            train_step([naive, frames], td_rng)


def test_no_replay_reads_the_newest_transitions_alike():
    naive, frames = buffer_pair("none", capacity=50, seed=0)
    for args in transitions(2, 100, 1, seed=1):
        naive.add(*args)
        frames.add(*args)
        assert_same_batches(naive.sample(8), frames.sample(8))


def assert_stacks_are_whole_episodes(env: FakeVectorEnv, obs: np.ndarray, next_obs: np.ndarray):
    """Each stack's frames come from one env's one episode, consecutive, next_obs one later."""
    for stack, successor in zip(frame_ids(obs), frame_ids(next_obs), strict=True):
        np.testing.assert_array_equal(stack[1:], successor[:-1])
        real = [env.origin[i] for i in successor if i != 0]  # zero padding has no origin
        assert len({(e, episode) for e, episode, _ in real}) == 1, real
        steps = [s for _, _, s in real]
        # consecutive steps, except the reset frame (step 0) before the first step
        assert all(b - a == 1 or a == 0 for a, b in itertools.pairwise(steps)), real


@pytest.mark.parametrize("num_envs", [1, 3])
def test_tiny_window_evicts_early_and_never_mixes_episodes(num_envs):
    """1-2 step episodes with a frame ring barely larger than capacity: transitions whose
    frames would be overwritten are evicted first, and every live one reads back as written."""
    env = FakeVectorEnv(num_envs, seed=num_envs, shared_resets=False)
    storage = FrameStackStorage(64, OBS_SHAPE, np.dtype(np.uint8), window=8)
    sampler = PrioritizedSampler(64, alpha=0.6, eps=1e-6)
    buffer = ReplayBuffer(storage, sampler, np.random.default_rng(0), CPU)
    written_obs = np.zeros((64, *OBS_SHAPE), dtype=np.uint8)  # what each slot was given
    written_next_obs = np.zeros_like(written_obs)
    evicted_early = 0
    for step in env.steps(400):
        slots = (storage.cursor + np.arange(num_envs)) % 64
        buffer.add(step.obs, step.actions, step.rewards, step.next_obs, step.terminated, 0.9)
        written_obs[slots], written_next_obs[slots] = step.obs, step.next_obs
        evicted_early += storage.size < storage.filled
        live = LiveSlots.of(storage)
        live_slots = live.slots(np.arange(live.size))
        obs, next_obs, *_ = storage.gather(live_slots)
        np.testing.assert_array_equal(obs, written_obs[live_slots])
        np.testing.assert_array_equal(next_obs, written_next_obs[live_slots])
        assert_stacks_are_whole_episodes(env, obs, next_obs)
        if storage.size:
            # Prioritized sampling never draws an evicted slot.
            drawn = buffer.sample(32).slots
            assert np.all((drawn - storage.oldest) % 64 < storage.size)
    assert evicted_early > 50


def roundtrip(state: dict) -> dict:
    """Through torch.save and a weights_only load, as checkpoint.save_buffer does."""
    file = io.BytesIO()
    torch.save(state, file)
    file.seek(0)
    return torch.load(file, weights_only=True)


def train_for(buffer, stream, steps: int, td_rng: np.random.Generator) -> None:
    """``steps`` adds from ``stream``, each followed (once a batch fits) by a sample and its
    priority update, as training does."""
    for _, args in zip(range(steps), stream, strict=False):
        buffer.add(*args)
        if len(buffer) >= 16:
            batch = buffer.sample(16, beta=0.5)
            buffer.update_priorities(batch.slots, torch.from_numpy(td_rng.normal(size=16)))


def assert_resumed_goes_on_alike(original, resumed, stream, td_rng: np.random.Generator) -> None:
    """``resumed`` (loaded from ``original``'s state) shares frames and draws batches exactly
    as ``original`` does for the rest of ``stream``."""
    resumed.rng.bit_generator.state = original.rng.bit_generator.state
    for args in stream:
        original.add(*args)
        resumed.add(*args)
        assert resumed.storage.frame_count == original.storage.frame_count  # same sharing
        train_step([original, resumed], td_rng)


@pytest.mark.parametrize("kind", ["uniform", "per"])
def test_resume_from_state_dict_gives_identical_future_batches(kind):
    stream = transitions(3, 400, 3, seed=11)
    original, td_rng = buffer_pair(kind, capacity=150, seed=4)[1], np.random.default_rng(0)
    train_for(original, stream, 120, td_rng)
    state = roundtrip(original.state_dict())
    resumed = buffer_pair(kind, capacity=150, seed=99)[1]
    resumed.load_state_dict(state)
    assert resumed.storage.frame_count == original.storage.frame_count
    assert_resumed_goes_on_alike(original, resumed, stream, td_rng)


def filled_frame_storage() -> FrameStackStorage:
    storage = FrameStackStorage(40, OBS_SHAPE, np.dtype(np.uint8))
    for args in transitions(2, 60, 1, seed=0):
        storage.add(*args)
    return storage


def test_state_dict_shares_memory_and_saves_only_the_written_frames():
    storage = filled_frame_storage()
    state = storage.state_dict()
    frames = state["frames"]
    assert isinstance(storage.ring, PlainFrames)
    assert frames.data_ptr() == storage.ring.frames.ctypes.data  # a view, not a copy
    assert frames.untyped_storage().nbytes() == storage.frame_count * 12
    file = io.BytesIO()
    torch.save(state, file)
    written = sum(t.untyped_storage().nbytes() for t in state.values() if torch.is_tensor(t))
    assert written <= len(file.getvalue()) < written + 8192  # the arrays plus a small header


def corrupt(name: str, state: dict) -> None:
    if name == "missing key":
        del state["written_at"]
    elif name == "wrong frame shape":
        state["frames"] = state["frames"][:-1]
    elif name == "reference out of range":
        state["obs_refs"] = state["obs_refs"].clone()
        state["obs_refs"][3, 1] = state["frames"].shape[0]
    elif name == "negative reference":
        state["next_obs_refs"] = state["next_obs_refs"].clone()
        state["next_obs_refs"][0, 0] = -1
    elif name == "wrong dtype":
        state["obs_refs"] = state["obs_refs"].long()
    elif name == "size beyond what was written":
        state["size"] = state["filled"] + 1
    elif name == "size not an int":
        state["size"] = float(state["size"])
    elif name == "frame count beyond the frames":
        state["frame_count"] += 5_000  # live transitions would reference overwritten frames
    elif name == "written_at out of order":
        state["written_at"] = state["written_at"].flip(0)
    elif name == "cursor off":
        state["cursor"] = (state["cursor"] + 1) % 40


@pytest.mark.parametrize(
    "damage",
    [
        "missing key",
        "wrong frame shape",
        "reference out of range",
        "negative reference",
        "wrong dtype",
        "size beyond what was written",
        "size not an int",
        "frame count beyond the frames",
        "written_at out of order",
        "cursor off",
    ],
)
def test_damaged_state_is_refused_with_one_line(damage):
    state = roundtrip(filled_frame_storage().state_dict())
    corrupt(damage, state)
    fresh = FrameStackStorage(40, OBS_SHAPE, np.dtype(np.uint8))
    with pytest.raises(ValueError) as refused:
        fresh.load_state_dict(state)
    assert "\n" not in str(refused.value)
    assert fresh.size == 0  # nothing was half-loaded


@pytest.mark.parametrize(
    ("obs_shape", "dtype", "frame_stack"),
    [
        ((4, 84, 84), np.uint8, 4),
        ((4, 84, 84), np.uint8, 1),
        ((4,), np.float32, 1),
        ((2, 5, 3), np.float32, 2),
    ],
)
def test_storage_nbytes_is_what_make_storage_allocates(obs_shape, dtype, frame_stack):
    predicted = storage_nbytes(1000, obs_shape, np.dtype(dtype), frame_stack)
    assert make_storage(1000, obs_shape, np.dtype(dtype), frame_stack).nbytes == predicted


def test_a_million_atari_transitions_cost_about_one_frame_each():
    frame_bytes = 84 * 84
    nbytes = storage_nbytes(1_000_000, (4, 84, 84), np.dtype(np.uint8), 4)
    per_transition = nbytes / 1_000_000
    assert frame_bytes < per_transition < 1.02 * frame_bytes  # the naive store: 2 * 4 frames
    assert nbytes < 7.2e9


def test_frame_stack_must_match_the_observation():
    with pytest.raises(ValueError, match="frame_stack=4"):
        make_storage(10, (3, 84, 84), np.dtype(np.uint8), 4)


def test_memory_benchmark_fills_and_saves_a_small_atari_replay():
    from bench.replay_memory import FRAME_BYTES, child_fill

    result = child_fill("frames", 1500, 2, save=True)
    assert result["size"] == 1500
    assert result["frames"] < 1.01 * 1500  # one new frame per transition, one per episode
    # The file holds the written frames once, plus the small per-transition arrays.
    assert (
        result["frames"] * FRAME_BYTES
        < result["file_bytes"]
        < (result["frames"] + 20) * FRAME_BYTES
    )
