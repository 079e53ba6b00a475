"""N-step returns for DQN (``buffer.n_step``), built from a vector env's 1-step transitions.

Kept free of torch so it can be tested and reasoned about on its own: the training loop feeds it
every vector-env step and writes what it returns into the replay buffer, with the per-transition
discount ``gamma^k`` stored beside the reward so the learner's target reads
``returns + discounts * (1 - terminated) * max_a Q(next_obs, a)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Arrays saved by state_dict: pending steps are kept as raw rewards (not partial sums), so the
# snapshot is plain data and a restored accumulator recomputes identical returns.
_STATE_ARRAYS = ("obs", "actions", "rewards", "head", "count")


@dataclass(frozen=True)
class NStepBatch:
    """The n-step transitions that became complete at one vector-env step.

    Rows are ordered by env index, then by time, so a fixed input stream always writes the
    replay buffer in the same order (reproducible runs and resumes).
    """

    obs: np.ndarray  # (m, *obs_shape), obs dtype: s_t
    actions: np.ndarray  # (m,) int64: a_t
    returns: np.ndarray  # (m,) float32: sum_{j<k} gamma^j r_{t+j}
    next_obs: np.ndarray  # (m, *obs_shape): s_{t+k}, the true successor (final obs at an end)
    terminated: np.ndarray  # (m,) float32: 1.0 if the episode terminated at t+k-1 (no bootstrap)
    discounts: np.ndarray  # (m,) float32: gamma^k, k = number of rewards summed (1..n)

    def __len__(self) -> int:
        return len(self.actions)


class NStepAccumulator:
    """Turns per-env 1-step transitions from a vector env into n-step transitions.

    Each env owns a ring of at most ``n`` pending steps in preallocated arrays (no per-step
    Python objects: this runs once per env step). A step leaves the ring either when ``n`` later
    rewards are known, or when its episode ends (terminated or truncated), in which case every
    pending step of that env is flushed with the shorter tail it has. Envs never share state, so
    an auto-reset in one env leaves the others' pending sums untouched.

    Truncation flushes with ``terminated=0``: the learner still bootstraps from the final
    observation, discounted by ``gamma^k`` for the ``k`` rewards actually summed.
    """

    def __init__(
        self,
        n: int,
        gamma: float,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype[Any] | type | str,
    ) -> None:
        if n < 1:
            raise ValueError(f"n_step must be >= 1, got {n}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.n = int(n)
        self.gamma = float(gamma)
        self.num_envs = int(num_envs)
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.obs_dtype: np.dtype[Any] = np.dtype(obs_dtype)
        # Ring slot (head + i) % n holds an env's i-th oldest pending step, i < count.
        self.obs = np.zeros((self.num_envs, self.n, *self.obs_shape), dtype=self.obs_dtype)
        self.actions = np.zeros((self.num_envs, self.n), dtype=np.int64)
        # float64: rewards arrive as float64 from gymnasium; the sum is rounded once, at the end.
        self.rewards = np.zeros((self.num_envs, self.n), dtype=np.float64)
        self.head = np.zeros(self.num_envs, dtype=np.int64)
        self.count = np.zeros(self.num_envs, dtype=np.int64)
        self._envs = np.arange(self.num_envs)
        self._steps = np.arange(self.n)
        # gamma^k for k = 0..n, computed once so discounts are bit-identical across calls.
        self._powers = self.gamma ** np.arange(self.n + 1, dtype=np.float64)

    def pending(self) -> int:
        """Steps still waiting for their n-step return (for logging and tests)."""
        return int(self.count.sum())

    def push(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> NStepBatch | None:
        """Record one vector-env step; return the n-step transitions it completed, if any.

        ``next_obs`` must be the true successor (the final observation where an episode ended,
        not the auto-reset one): it is the bootstrap state of every transition flushed here.
        Inputs are copied, so the caller may reuse its arrays.
        """
        n, envs = self.n, self._envs
        batch_shape = (self.num_envs, *self.obs_shape)
        if obs.shape != batch_shape or next_obs.shape != batch_shape:
            raise ValueError(
                f"obs and next_obs must have shape {batch_shape}, "
                f"got {obs.shape} and {next_obs.shape}"
            )
        for name, array in (
            ("actions", actions),
            ("rewards", rewards),
            ("terminated", terminated),
            ("truncated", truncated),
        ):
            if np.shape(array) != (self.num_envs,):
                raise ValueError(
                    f"{name} must have shape ({self.num_envs},), got {np.shape(array)}"
                )

        slot = (self.head + self.count) % n
        self.obs[envs, slot] = obs
        self.actions[envs, slot] = actions
        self.rewards[envs, slot] = rewards
        self.count += 1

        terminated = np.asarray(terminated, dtype=bool)
        done = terminated | np.asarray(truncated, dtype=bool)
        full = (self.count == n) & ~done
        emitting = np.flatnonzero(done | full)
        if emitting.size == 0:
            return None

        # Rewards of the emitting envs in time order, zero past each env's pending count, so a
        # backward pass G_i = r_i + gamma * G_{i+1} yields every pending step's truncated sum.
        count = self.count[emitting]
        ring = (self.head[emitting, None] + self._steps) % n  # (E, n) time order -> ring slot
        valid = self._steps < count[:, None]
        r = np.where(valid, self.rewards[emitting[:, None], ring], 0.0)
        sums = np.zeros((emitting.size, n + 1), dtype=np.float64)
        for i in range(n - 1, -1, -1):
            sums[:, i] = r[:, i] + self.gamma * sums[:, i + 1]

        # An ended episode flushes all its pending steps; a full ring emits only its oldest.
        take = np.where(done[emitting, None], valid, self._steps == 0)
        rows, steps = np.nonzero(take)  # row-major: by env index, then by time
        env_of = emitting[rows]
        slots = ring[rows, steps]
        k = count[rows] - steps
        batch = NStepBatch(
            obs=self.obs[env_of, slots],
            actions=self.actions[env_of, slots],
            returns=sums[rows, steps].astype(np.float32),
            next_obs=next_obs[env_of].astype(self.obs_dtype, copy=False),  # indexing copies
            terminated=terminated[env_of].astype(np.float32),
            discounts=self._powers[k].astype(np.float32),
        )

        full_envs = emitting[~done[emitting]]
        self.head[full_envs] = (self.head[full_envs] + 1) % n
        self.count[full_envs] -= 1
        ended = np.flatnonzero(done)
        self.head[ended] = 0
        self.count[ended] = 0
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-sum: config for validation plus copies of the rings.

        Values are python ints/strings/lists and numpy arrays (no torch); the caller converts
        them for its checkpoint format and converts back before ``load_state_dict``.
        """
        state: dict[str, Any] = {
            "n": self.n,
            "num_envs": self.num_envs,
            "obs_shape": list(self.obs_shape),
            "obs_dtype": self.obs_dtype.str,
        }
        for name in _STATE_ARRAYS:
            state[name] = getattr(self, name).copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot; refuse one from a differently configured accumulator.

        ``gamma`` is not part of the state: pending steps hold raw rewards and the discount is
        applied when they are emitted, so the snapshot is valid for any gamma.
        """
        missing = [
            key
            for key in ("n", "num_envs", "obs_shape", "obs_dtype", *_STATE_ARRAYS)
            if key not in state
        ]
        if missing:
            raise ValueError(f"n-step state is missing {', '.join(missing)}")
        saved = (
            int(state["n"]),
            int(state["num_envs"]),
            tuple(int(d) for d in state["obs_shape"]),
            np.dtype(state["obs_dtype"]),
        )
        ours = (self.n, self.num_envs, self.obs_shape, self.obs_dtype)
        if saved != ours:
            raise ValueError(
                f"n-step state is for (n, num_envs, obs_shape, obs_dtype) = {saved}, "
                f"this run has {ours}"
            )
        arrays: dict[str, np.ndarray] = {}
        for name in _STATE_ARRAYS:
            ours_array: np.ndarray = getattr(self, name)
            value = state[name]
            if not isinstance(value, np.ndarray):
                raise ValueError(
                    f"n-step state {name!r} must be a numpy array, got {type(value).__name__}"
                )
            if value.shape != ours_array.shape or value.dtype != ours_array.dtype:
                raise ValueError(
                    f"n-step state {name!r} has shape {value.shape} and dtype {value.dtype}, "
                    f"expected {ours_array.shape} and {ours_array.dtype}"
                )
            arrays[name] = value
        head, count = arrays["head"], arrays["count"]
        # After any push an env holds at most n - 1 pending steps (n would have been emitted).
        if np.any((head < 0) | (head >= self.n) | (count < 0) | (count >= self.n)):
            raise ValueError(f"n-step state has head/count outside [0, {self.n - 1}]")
        for name, value in arrays.items():
            getattr(self, name)[...] = value
