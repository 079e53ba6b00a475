"""Greedy (or small-epsilon) evaluation episodes on an env instance of their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqn_cli.config import EnvConfig
from dqn_cli.envs import env_seeds, make_env
from dqn_cli.networks import QNetwork, greedy_policy


@dataclass(frozen=True)
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())


class Evaluator:
    """Runs ``episodes`` seeded episodes, up to ``max_parallel`` at once in a vector env.

    Episode ``i`` resets with seed ``seed + i``, so the same network gives the same returns.
    The env is separate from the training envs: evaluating never disturbs training episodes.
    Acting is greedy unless ``epsilon`` > 0 (Mnih et al. 2015 evaluated with 0.05, to avoid
    deterministic loops in envs that never end on their own).

    ``env_factory`` replaces ``make_env(env)`` for the sub-envs, e.g. to wrap them in a
    video recorder; the episodes, seeds and acting stay the same.
    """

    def __init__(
        self,
        env: EnvConfig,
        episodes: int,
        seed: int,
        epsilon: float = 0.0,
        device: torch.device | None = None,
        max_parallel: int = 32,
        env_factory: Callable[[], gym.Env] | None = None,
    ) -> None:
        self.episodes = episodes
        self.seed = seed
        self.epsilon = epsilon
        self.device = device or torch.device("cpu")
        self.width = min(episodes, max_parallel)
        factory = env_factory or (lambda: make_env(env))
        # copy=False: the loop reads each batch of observations before the next step.
        self.envs = SyncVectorEnv(
            [factory] * self.width, autoreset_mode=AutoresetMode.NEXT_STEP, copy=False
        )

    def close(self) -> None:
        self.envs.close()

    def run(self, q_net: QNetwork) -> EvalResult:
        # The same fast greedy policy training acts with (numpy on CPU); built per call, so
        # it always reads the network's current weights.
        policy = greedy_policy(q_net, self.device)
        returns = np.zeros(self.episodes)
        lengths = np.zeros(self.episodes, dtype=np.int64)
        for first in range(0, self.episodes, self.width):
            n = min(self.width, self.episodes - first)
            returns[first : first + n], lengths[first : first + n] = self._run_group(
                policy, q_net.spec.n_actions, first, n
            )
        return EvalResult(returns, lengths)

    def _run_group(
        self, policy: Callable[[np.ndarray], np.ndarray], n_actions: int, first: int, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        obs, _ = self.envs.reset(seed=env_seeds(self.seed + first, self.width))
        rng = np.random.default_rng(self.seed + first)
        ret = np.zeros(self.width)
        length = np.zeros(self.width, dtype=np.int64)
        running = np.arange(self.width) < n  # extra sub-envs in the last group are ignored
        while running.any():
            actions = policy(obs)
            if self.epsilon > 0:
                explore = rng.random(self.width) < self.epsilon
                actions = np.where(explore, rng.integers(n_actions, size=self.width), actions)
            obs, rewards, terminated, truncated, _ = self.envs.step(actions)
            ret += np.where(running, rewards, 0.0)
            length += running
            # Finished sub-envs auto-reset next step; their later episodes are not counted.
            running &= ~(terminated | truncated)
        return ret[:n], length[:n]
