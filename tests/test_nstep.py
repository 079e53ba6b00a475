"""N-step accumulator: hand-computed episodes, a pure-Python reference, and exact resumes."""

from __future__ import annotations

import numpy as np
import pytest

from dqn_cli.buffers.nstep import NStepAccumulator, NStepBatch

GAMMA = 0.5  # powers of 0.5 and small integer rewards: every hand-computed value is exact


def state(env: int, t: int) -> np.ndarray:
    """A recognisable observation: which env, which time step."""
    return np.array([100 * env + t, -(100 * env + t)], dtype=np.float32)


class Stream:
    """Drives an accumulator with per-env episodes whose obs/actions encode (env, t)."""

    def __init__(self, acc: NStepAccumulator) -> None:
        self.acc = acc
        self.t = 0

    def step(
        self, rewards: list[float], terminated: list[bool], truncated: list[bool] | None = None
    ) -> NStepBatch | None:
        envs = range(len(rewards))
        t = self.t
        self.t += 1
        return self.acc.push(
            obs=np.stack([state(e, t) for e in envs]),
            actions=np.array([10 * e + t for e in envs]),
            rewards=np.array(rewards, dtype=np.float64),
            next_obs=np.stack([state(e, t + 1) for e in envs]),
            terminated=np.array(terminated),
            truncated=np.array(truncated or [False] * len(rewards)),
        )


def rows(batch: NStepBatch | None) -> list[tuple[float, ...]]:
    """(obs[0], action, return, next_obs[0], terminated, discount) per row, for exact asserts."""
    assert batch is not None
    return [
        (
            float(batch.obs[i, 0]),
            int(batch.actions[i]),
            float(batch.returns[i]),
            float(batch.next_obs[i, 0]),
            float(batch.terminated[i]),
            float(batch.discounts[i]),
        )
        for i in range(len(batch))
    ]


def assert_dtypes(batch: NStepBatch, obs_dtype: np.dtype) -> None:
    assert batch.obs.dtype == obs_dtype and batch.next_obs.dtype == obs_dtype
    assert batch.actions.dtype == np.int64
    for array in (batch.returns, batch.terminated, batch.discounts):
        assert array.dtype == np.float32
    m = len(batch)
    assert batch.obs.shape[0] == batch.next_obs.shape[0] == m
    assert batch.returns.shape == batch.terminated.shape == batch.discounts.shape == (m,)


def test_episode_terminating_after_two_steps_flushes_both_with_shorter_tails():
    acc = NStepAccumulator(3, GAMMA, 1, (2,), np.dtype(np.float32))
    stream = Stream(acc)
    assert stream.step([1.0], [False]) is None
    batch = stream.step([2.0], [True])
    assert batch is not None
    assert_dtypes(batch, np.dtype(np.float32))
    # t=0: k=2, 1 + 0.5*2; t=1: k=1, 2. Both bootstrap-free, both point at the final obs s_2.
    assert rows(batch) == [(0, 0, 2.0, 2, 1.0, 0.25), (1, 1, 2.0, 2, 1.0, 0.5)]
    assert acc.pending() == 0


def test_episode_truncated_after_four_steps_keeps_bootstrapping():
    acc = NStepAccumulator(3, GAMMA, 1, (2,), np.dtype(np.float32))
    stream = Stream(acc)
    assert stream.step([1.0], [False]) is None
    assert stream.step([2.0], [False]) is None
    # Third reward completes t=0's 3-step return: 1 + 0.5*2 + 0.25*4, bootstrapping from s_3.
    assert rows(stream.step([4.0], [False])) == [(0, 0, 3.0, 3, 0.0, 0.125)]
    # Truncation flushes t=1..3 against the final obs s_4, with terminated=0 and gamma^k.
    assert rows(stream.step([8.0], [False], [True])) == [
        (1, 1, 2.0 + 0.5 * 4 + 0.25 * 8, 4, 0.0, 0.125),
        (2, 2, 4.0 + 0.5 * 8, 4, 0.0, 0.25),
        (3, 3, 8.0, 4, 0.0, 0.5),
    ]
    assert acc.pending() == 0


def test_episode_terminating_exactly_when_the_window_fills():
    acc = NStepAccumulator(3, GAMMA, 1, (2,), np.dtype(np.float32))
    stream = Stream(acc)
    stream.step([1.0], [False])
    stream.step([2.0], [False])
    # The step that fills the window also ends the episode: all three go, none is emitted twice.
    assert rows(stream.step([4.0], [True])) == [
        (0, 0, 3.0, 3, 1.0, 0.125),
        (1, 1, 4.0, 3, 1.0, 0.25),
        (2, 2, 4.0, 3, 1.0, 0.5),
    ]
    assert acc.pending() == 0


def test_terminated_and_truncated_together_counts_as_terminated():
    acc = NStepAccumulator(2, GAMMA, 1, (2,), np.dtype(np.float32))
    stream = Stream(acc)
    assert rows(stream.step([2.0], [True], [True])) == [(0, 0, 2.0, 1, 1.0, 0.5)]


def test_vector_envs_end_independently_and_rows_are_ordered_by_env_then_time():
    acc = NStepAccumulator(3, GAMMA, 2, (2,), np.dtype(np.float32))
    stream = Stream(acc)
    assert stream.step([1.0, 10.0], [False, False]) is None
    # Env 0 terminates after two steps; env 1's two pending steps are untouched.
    assert rows(stream.step([2.0, 20.0], [True, False])) == [
        (0, 0, 2.0, 2, 1.0, 0.25),
        (1, 1, 2.0, 2, 1.0, 0.5),
    ]
    assert acc.count.tolist() == [0, 2]
    # Env 0 starts a new episode at t=2; env 1's window fills: 10 + 0.5*20 + 0.25*40.
    assert rows(stream.step([3.0, 40.0], [False, False])) == [(100, 10, 30.0, 103, 0.0, 0.125)]
    # Both end at t=3 (env 0 terminates, env 1 is truncated): env 0's rows come first.
    assert rows(stream.step([4.0, 80.0], [True, False], [False, True])) == [
        (2, 2, 3.0 + 0.5 * 4, 4, 1.0, 0.25),
        (3, 3, 4.0, 4, 1.0, 0.5),
        (101, 11, 20.0 + 0.5 * 40 + 0.25 * 80, 104, 0.0, 0.125),
        (102, 12, 40.0 + 0.5 * 80, 104, 0.0, 0.25),
        (103, 13, 80.0, 104, 0.0, 0.5),
    ]
    # Fresh episodes in both envs: nothing carried over from before the resets.
    assert stream.step([5.0, 50.0], [False, False]) is None
    assert stream.step([6.0, 60.0], [False, False]) is None
    assert rows(stream.step([8.0, 80.0], [False, False])) == [
        (4, 4, 5.0 + 0.5 * 6 + 0.25 * 8, 7, 0.0, 0.125),
        (104, 14, 50.0 + 0.5 * 60 + 0.25 * 80, 107, 0.0, 0.125),
    ]


def random_stream(rng: np.random.Generator, steps: int, num_envs: int, obs_shape: tuple[int, ...]):
    """Steps of a vector env with random rewards and random terminations/truncations."""
    for _ in range(steps):
        terminated = rng.random(num_envs) < 0.1
        yield (
            rng.integers(0, 256, (num_envs, *obs_shape), dtype=np.uint8),
            rng.integers(0, 4, num_envs),
            rng.normal(size=num_envs),
            rng.integers(0, 256, (num_envs, *obs_shape), dtype=np.uint8),
            terminated,
            # Some steps are both: termination must win.
            rng.random(num_envs) < 0.08,
        )


def test_n1_reproduces_plain_one_step_transitions():
    acc = NStepAccumulator(1, 0.99, 3, (2, 3), np.dtype(np.uint8))
    for obs, actions, rewards, next_obs, terminated, truncated in random_stream(
        np.random.default_rng(0), 100, 3, (2, 3)
    ):
        batch = acc.push(obs, actions, rewards, next_obs, terminated, truncated)
        assert batch is not None
        assert_dtypes(batch, np.dtype(np.uint8))
        np.testing.assert_array_equal(batch.obs, obs)
        np.testing.assert_array_equal(batch.actions, actions)
        np.testing.assert_array_equal(batch.returns, rewards.astype(np.float32))
        np.testing.assert_array_equal(batch.next_obs, next_obs)
        np.testing.assert_array_equal(batch.terminated, terminated.astype(np.float32))
        np.testing.assert_array_equal(batch.discounts, np.full(3, 0.99, dtype=np.float32))
        assert acc.pending() == 0


def test_inputs_are_copied_so_the_caller_can_reuse_its_arrays():
    acc = NStepAccumulator(2, GAMMA, 1, (2,), np.dtype(np.float32))
    obs, next_obs = np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32)
    acc.push(obs, np.array([0]), np.array([1.0]), next_obs, np.array([False]), np.array([False]))
    obs[:] = 7.0  # the caller overwrites its buffers for the next step
    next_obs[:] = 8.0
    batch = acc.push(
        obs, np.array([1]), np.array([1.0]), next_obs, np.array([False]), np.array([False])
    )
    assert batch is not None
    np.testing.assert_array_equal(batch.obs, [[0.0, 0.0]])
    next_obs[:] = 9.0
    np.testing.assert_array_equal(batch.next_obs, [[8.0, 8.0]])


def reference(n: int, gamma: float, stream) -> list[list[tuple]]:
    """Straightforward per-env lists of pending steps; outputs per push, by env then time."""
    num_envs = None
    pending: list[list[tuple]] = []
    outputs = []
    for obs, actions, rewards, next_obs, terminated, truncated in stream:
        if num_envs is None:
            num_envs = len(actions)
            pending = [[] for _ in range(num_envs)]
        out = []
        for e in range(num_envs):
            queue = pending[e]
            queue.append((obs[e].copy(), int(actions[e]), float(rewards[e])))
            done = bool(terminated[e]) or bool(truncated[e])
            if done:
                starts = range(len(queue))
            elif len(queue) == n:
                starts = range(1)
            else:
                starts = range(0)
            for i in starts:
                tail = [r for _, _, r in queue[i:]]
                g = sum(gamma**j * r for j, r in enumerate(tail))
                s, a, _ = queue[i]
                out.append(
                    (s, a, g, next_obs[e].copy(), float(bool(terminated[e])), gamma ** len(tail))
                )
            if done:
                queue.clear()
            elif len(queue) == n:
                queue.pop(0)
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_matches_a_pure_python_reference_on_random_episodes(n):
    rng = np.random.default_rng(n)
    gamma = float(rng.uniform(0.8, 1.0))
    steps = list(random_stream(rng, 300, 3, (2, 3)))
    acc = NStepAccumulator(n, gamma, 3, (2, 3), np.dtype(np.uint8))
    expected = reference(n, gamma, steps)
    emitted = 0
    for step, want in zip(steps, expected, strict=True):
        batch = acc.push(*step)
        if not want:
            assert batch is None
            continue
        assert batch is not None
        assert_dtypes(batch, np.dtype(np.uint8))
        assert len(batch) == len(want)
        emitted += len(batch)
        s, a, g, s2, term, disc = (list(column) for column in zip(*want, strict=True))
        np.testing.assert_array_equal(batch.obs, np.stack(s))
        np.testing.assert_array_equal(batch.actions, a)
        np.testing.assert_allclose(batch.returns, np.array(g, dtype=np.float32), rtol=1e-6)
        np.testing.assert_array_equal(batch.next_obs, np.stack(s2))
        np.testing.assert_array_equal(batch.terminated, term)
        np.testing.assert_allclose(batch.discounts, np.array(disc, dtype=np.float32), rtol=1e-6)
        assert np.all(batch.discounts <= np.float32(gamma) + 1e-7)
        assert np.all(batch.discounts >= np.float32(gamma**n) - 1e-7)
    # Nothing lost, nothing duplicated: every pushed step is emitted or still pending.
    assert emitted + acc.pending() == 300 * 3


def assert_same(a: NStepBatch | None, b: NStepBatch | None) -> None:
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        for name in ("obs", "actions", "returns", "next_obs", "terminated", "discounts"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


def test_resume_mid_sum_continues_exactly():
    steps = list(random_stream(np.random.default_rng(7), 120, 3, (2, 3)))
    acc = NStepAccumulator(4, 0.97, 3, (2, 3), np.dtype(np.uint8))
    for step in steps[:37]:
        acc.push(*step)
    assert acc.pending() > 0  # the snapshot really is mid-sum
    snapshot = acc.state_dict()
    assert all(isinstance(v, (int, str, list, np.ndarray)) for v in snapshot.values())
    # Pushing after the snapshot must not leak into it (it holds copies).
    original = [acc.push(*step) for step in steps[37:]]

    resumed = NStepAccumulator(4, 0.97, 3, (2, 3), np.dtype(np.uint8))
    resumed.load_state_dict(snapshot)
    again = resumed.state_dict()
    assert again.keys() == snapshot.keys()
    for key, value in snapshot.items():
        np.testing.assert_array_equal(again[key], value)
    for step, want in zip(steps[37:], original, strict=True):
        assert_same(resumed.push(*step), want)
    assert resumed.pending() == acc.pending()


def make(n=3, num_envs=2, obs_shape=(2,), obs_dtype="float32"):
    return NStepAccumulator(n, GAMMA, num_envs, obs_shape, np.dtype(obs_dtype))


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (make(n=4), "n-step state is for"),
        (make(num_envs=3), "n-step state is for"),
        (make(obs_shape=(3,)), "n-step state is for"),
        (make(obs_shape=(2, 1)), "n-step state is for"),
        (make(obs_dtype="uint8"), "n-step state is for"),
    ],
)
def test_load_refuses_a_state_of_a_different_shape(other, match):
    with pytest.raises(ValueError, match=match) as error:
        make().load_state_dict(other.state_dict())
    assert "\n" not in str(error.value)


def test_load_refuses_malformed_arrays_and_leaves_state_untouched():
    source = make()
    stream = Stream(source)
    stream.step([1.0, 2.0], [False, False])
    good = source.state_dict()

    target = make()
    before = target.state_dict()
    bad_shape = dict(good, rewards=np.zeros((2, 4)))
    bad_dtype = dict(good, actions=good["actions"].astype(np.int32))
    not_array = dict(good, obs=good["obs"].tolist())
    bad_count = dict(good, count=np.array([3, 0]))
    missing = {k: v for k, v in good.items() if k != "head"}
    for state, match in [
        (bad_shape, "'rewards' has shape"),
        (bad_dtype, "'actions' has shape"),
        (not_array, "'obs' must be a numpy array"),
        (bad_count, "head/count outside"),
        (missing, "missing head"),
    ]:
        with pytest.raises(ValueError, match=match):
            target.load_state_dict(state)
    for key, value in before.items():
        np.testing.assert_array_equal(target.state_dict()[key], value)
    target.load_state_dict(good)
    assert target.pending() == 2


def test_push_rejects_wrong_shapes():
    acc = make()
    obs = np.zeros((2, 2), np.float32)
    flags = np.zeros(2, bool)
    with pytest.raises(ValueError, match="obs and next_obs"):
        acc.push(obs[:1], np.zeros(1), np.zeros(1), obs[:1], flags[:1], flags[:1])
    with pytest.raises(ValueError, match="rewards must have shape"):
        acc.push(obs, np.zeros(2), np.zeros(3), obs, flags, flags)
    assert acc.pending() == 0


def test_constructor_rejects_bad_config():
    with pytest.raises(ValueError, match="n_step"):
        NStepAccumulator(0, GAMMA, 1, (2,), np.dtype(np.float32))
    with pytest.raises(ValueError, match="gamma"):
        NStepAccumulator(3, 1.5, 1, (2,), np.dtype(np.float32))
