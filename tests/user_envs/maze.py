"""A user's own env, as a user would write it: a module that registers its env with gymnasium.

Tests put this folder on PYTHONPATH and train it with env.id=maze:Maze-v0 (gymnasium imports
``maze``, which registers ``Maze-v0``); ``env.kwargs={size:4}`` reaches the constructor.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# up, right, down, left
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])


class Maze(gym.Env):
    """An open ``size`` x ``size`` grid: walk from the top-left corner to the bottom-right one.

    With probability ``slip`` a step goes a random way (drawn from the env's own generator, so
    an exact resume has to restore it). Reward -0.01 per step, +1 on reaching the goal.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(self, size: int = 5, slip: float = 0.1, render_mode: str | None = None) -> None:
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        self.size = size
        self.slip = slip
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        self.position = np.zeros(2, dtype=np.int64)

    def _obs(self) -> np.ndarray:
        return (self.position / (self.size - 1)).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = np.zeros(2, dtype=np.int64)
        return self._obs(), {}

    def step(self, action):
        if self.np_random.random() < self.slip:
            action = int(self.np_random.integers(4))
        self.position = np.clip(self.position + MOVES[int(action)], 0, self.size - 1)
        at_goal = bool((self.position == self.size - 1).all())
        return self._obs(), 1.0 if at_goal else -0.01, at_goal, False, {}


class StepCounter(gym.Wrapper):
    """A user's own wrapper with state of its own: counts the env steps it has seen."""

    def __init__(self, env: gym.Env, start: int = 0) -> None:
        super().__init__(env)
        self.steps = start

    def step(self, action):
        self.steps += 1
        return self.env.step(action)


class ContinuousActions(gym.ActionWrapper):
    """A wrapper DQN cannot use: it turns the actions into a Box."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def action(self, action):
        return int(action[0] > 0)


gym.register(id="Maze-v0", entry_point="maze:Maze", max_episode_steps=60)
