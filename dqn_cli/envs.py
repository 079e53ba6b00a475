"""Gymnasium env construction, with errors a user can act on."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqn_cli.env_spec import EnvSpec
from dqn_cli.errors import UserError


class EnvError(UserError):
    """The env cannot be built or is unsuitable for DQN; ``str()`` is one line."""


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """``gym.make`` with one-line errors for unknown ids and missing extras."""
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EnvError(f"env.id: {env_id!r} is not a registered gymnasium env{hint}")
    try:
        return gym.make(env_id, render_mode=render_mode)
    except gym.error.DependencyNotInstalled as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise EnvError(f"env.id: {env_id!r} needs an extra package: {first_line}") from exc
    except (gym.error.Error, ImportError) as exc:
        raise EnvError(f"env.id: cannot create {env_id!r}: {exc}") from exc


def env_spec(observation_space: spaces.Space, action_space: spaces.Space, env_id: str) -> EnvSpec:
    """What the agent needs to know of an env; refuses envs DQN cannot act in."""
    if not isinstance(action_space, spaces.Discrete):
        raise EnvError(
            f"env.id: {env_id!r} has a {type(action_space).__name__} action space; "
            "DQN needs a Discrete one (pick a discrete-action env)"
        )
    if int(action_space.start) != 0:
        raise EnvError(f"env.id: {env_id!r} has a Discrete action space not starting at 0")
    if isinstance(observation_space, spaces.Discrete):
        return EnvSpec((), "int64", int(action_space.n), obs_categories=int(observation_space.n))
    if isinstance(observation_space, spaces.Box):
        return EnvSpec(
            tuple(observation_space.shape),
            np.dtype(observation_space.dtype).name,
            int(action_space.n),
        )
    raise EnvError(
        f"env.id: {env_id!r} has a {type(observation_space).__name__} observation space; "
        "supported: Box, Discrete"
    )


def make_vector_env(env_id: str, num_envs: int) -> SyncVectorEnv:
    """``num_envs`` copies stepped in lockstep; an episode that ends is reset in the same step.

    Same-step auto-reset: the step that ends an episode returns the next episode's first
    observation and puts the real last one in ``info["final_obs"]``, so every env step is one
    real transition and none spans two episodes.

    The observations ``reset`` and ``step`` return are the vector env's own buffer, rewritten
    in place by the next call (``copy=False``: gymnasium's default deep copy costs more than
    stepping CartPole): copy what must outlive the next step.
    """

    def factory() -> gym.Env:
        return make_env(env_id)

    fns: list[Callable[[], gym.Env]] = [factory] * num_envs
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)


def true_next_obs(next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """Successor observations with auto-reset undone: the final obs where an episode ended."""
    if not done.any():
        return next_obs
    fixed = next_obs.copy()
    for i in np.flatnonzero(done):
        fixed[i] = info["final_obs"][i]
    return fixed
