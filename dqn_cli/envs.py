"""Gymnasium env construction, with errors a user can act on."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqn_cli.config import EnvConfig
from dqn_cli.env_spec import EnvSpec
from dqn_cli.errors import UserError
from dqn_cli.pixel_envs import (
    AtariOptions,
    env_family,
    make_atari_env,
    make_minatar_env,
    register_family,
)


class EnvError(UserError):
    """The env cannot be built or is unsuitable for DQN; ``str()`` is one line."""


def make_env(config: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env as ``config`` describes it, with one-line errors for unknown ids and extras.

    ``ALE/*`` ids get the Atari DQN preprocessing, ``MinAtar/*`` ids channels-first uint8
    grids (dqn_cli/pixel_envs.py); any other id is ``gymnasium.make``'s own env.
    """
    env_id = config.id
    register_family(env_id)
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EnvError(f"env.id: {env_id!r} is not a registered gymnasium env{hint}")
    family = env_family(env_id)
    try:
        if family == "atari":
            return make_atari_env(env_id, atari_options(config), render_mode)
        if family == "minatar":
            return make_minatar_env(env_id, render_mode)
        return gym.make(env_id, render_mode=render_mode)
    except gym.error.DependencyNotInstalled as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise EnvError(f"env.id: {env_id!r} needs an extra package: {first_line}") from exc
    except (gym.error.Error, ImportError) as exc:
        raise EnvError(f"env.id: cannot create {env_id!r}: {exc}") from exc


def atari_options(config: EnvConfig) -> AtariOptions:
    return AtariOptions(
        frame_skip=config.frame_skip,
        frame_stack=config.frame_stack,
        noop_max=config.noop_max,
        sticky_actions=config.sticky_actions,
        full_action_space=config.full_action_space,
    )


def replay_frame_stack(config: EnvConfig) -> int:
    """Frames per observation that replay can store once each (1: store observations whole)."""
    return config.frame_stack if env_family(config.id) == "atari" else 1


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


def make_vector_env(config: EnvConfig, num_envs: int) -> SyncVectorEnv:
    """``num_envs`` copies stepped in lockstep; an episode that ends is reset in the same step.

    Same-step auto-reset: the step that ends an episode returns the next episode's first
    observation and puts the real last one in ``info["final_obs"]``, so every env step is one
    real transition and none spans two episodes.

    The observations ``reset`` and ``step`` return are the vector env's own buffer, rewritten
    in place by the next call (``copy=False``: gymnasium's default deep copy costs more than
    stepping CartPole): copy what must outlive the next step.
    """

    def factory() -> gym.Env:
        return make_env(config)

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


def life_lost(info: dict, num_envs: int) -> np.ndarray:
    """Per env, whether this step cost a life without ending the game (Atari; else False)."""
    lost = info.get("life_lost")
    if lost is None:
        return np.zeros(num_envs, dtype=bool)
    return np.asarray(lost, dtype=bool) & np.asarray(info.get("_life_lost", True), dtype=bool)
