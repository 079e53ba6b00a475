"""Gymnasium env construction, with errors a user can act on."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqn_cli.ale_vector import AleVectorEnv
from dqn_cli.config import MAX_SEED, EnvConfig, ale_vector_refusal
from dqn_cli.env_spec import EnvSpec
from dqn_cli.errors import UserError, first_line
from dqn_cli.locate import locate
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
    """The env ``config`` describes: ``gym.make(id, **kwargs)`` wrapped in ``wrappers`` in order.

    ``ALE/*`` ids get the Atari DQN preprocessing and ``MinAtar/*`` ids channels-first uint8
    grids (dqn_cli/pixel_envs.py) before the wrappers. Every env of a run is built here
    (training, evaluation, dqn-eval, resume's reference env), so they are all the same env.
    Each problem is a one-line :class:`EnvError` naming the key.
    """
    env = _make_registered(config, render_mode)
    try:
        for i, wrapper in enumerate(config.wrappers):
            env = _wrap(env, wrapper, f"env.wrappers[{i}]")
    except EnvError:
        env.close()
        raise
    return env


def _make_registered(config: EnvConfig, render_mode: str | None) -> gym.Env:
    """``gym.make`` with one-line errors for unknown ids, bad kwargs and missing extras.

    ``module:EnvId`` (gymnasium's own form) first imports ``module``, which registers the env.
    """
    env_id, kwargs = config.id, config.kwargs
    register_family(env_id)  # ALE/* and MinAtar/*: import the extra, register its envs
    module_name, _, name = env_id.rpartition(":")
    if module_name:
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            raise EnvError(
                f"env.id: cannot import module {module_name!r} ({exc}); is it installed "
                "or on PYTHONPATH?"
            ) from None
        if name not in gym.registry:
            raise EnvError(
                f"env.id: module {module_name!r} was imported but registers no env {name!r}"
                f"{_did_you_mean(name)} (register it with gymnasium.register(id={name!r}, ...))"
            )
    elif env_id not in gym.registry:
        raise EnvError(
            f"env.id: {env_id!r} is not a registered gymnasium env{_did_you_mean(env_id)}"
        )
    try:
        family = env_family(name)
        if family == "atari":
            return make_atari_env(name, atari_options(config), render_mode, kwargs)
        if family == "minatar":
            return make_minatar_env(name, render_mode, kwargs)
        return gym.make(name, render_mode=render_mode, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        raise EnvError(f"env.id: {env_id!r} needs an extra package: {first_line(exc)}") from exc
    except (TypeError, ValueError) as exc:
        # gymnasium appends "was raised from the environment creator ..." to the env's message.
        reason = first_line(exc).split(" was raised from the environment creator")[0]
        if kwargs:
            raise EnvError(f"env.kwargs: {env_id!r} rejects {kwargs}: {reason}") from exc
        raise EnvError(f"env.id: cannot create {env_id!r}: {reason}") from exc
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


def _did_you_mean(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _wrap(env: gym.Env, wrapper: dict[str, Any], key: str) -> gym.Env:
    """``Class(env, **arguments)`` for one ``{_target_: module.Class, ...arguments}`` entry."""
    target = str(wrapper["_target_"])
    cls = locate(target, f"{key}._target_", EnvError, gym.Wrapper, "gymnasium.Wrapper")
    arguments = {k: v for k, v in wrapper.items() if k != "_target_"}
    try:
        wrapped = cls(env, **arguments)
    except (TypeError, ValueError) as exc:
        given = f" with {arguments}" if arguments else ""
        raise EnvError(f"{key}: {target}{given} cannot wrap the env: {first_line(exc)}") from exc
    if not isinstance(wrapped, gym.Env):
        raise EnvError(f"{key}: {target} returned a {type(wrapped).__name__}, not a gymnasium env")
    if isinstance(env.action_space, spaces.Discrete) and not isinstance(
        wrapped.action_space, spaces.Discrete
    ):
        raise EnvError(
            f"{key}: {target} changes the action space to "
            f"{type(wrapped.action_space).__name__}; DQN needs a Discrete one"
        )
    return wrapped


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


class OneEnvVector:
    """One env behind the vector-env interface of :func:`make_vector_env`, same semantics
    (same-step auto-reset, ``info["final_obs"]``, an observation buffer reused by the next
    call, per-key info arrays with their ``_key`` masks), without SyncVectorEnv's per-step
    action-space check, stacking and info merging: for one CartPole env those cost twice the
    env step itself (bench.profile_step), and a single env is the common case."""

    num_envs = 1

    def __init__(self, env: gym.Env) -> None:
        self.envs = [env]
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        space = env.observation_space
        self._obs = np.zeros((1, *(space.shape or ())), dtype=space.dtype)

    def reset(
        self, seed: int | list[int | None] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        first_seed = seed[0] if isinstance(seed, list) else seed
        obs, info = self.envs[0].reset(seed=first_seed)
        self._obs[0] = obs
        return self._obs, _as_vector_info(info)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        env = self.envs[0]
        obs, reward, terminated, truncated, info = env.step(actions[0])
        final: dict[str, Any] = {}
        if terminated or truncated:
            final = {"final_obs": obs, "final_info": info}
            obs, info = env.reset()
        self._obs[0] = obs
        vector_info = _as_vector_info({**final, **info})
        return (
            self._obs,
            np.array([reward], dtype=np.float64),
            np.array([terminated], dtype=np.bool_),
            np.array([truncated], dtype=np.bool_),
            vector_info,
        )

    def close(self) -> None:
        self.envs[0].close()


def _as_vector_info(info: dict[str, Any]) -> dict[str, Any]:
    """A single env's info as a vector env of one reports it: each value in a length-1 array
    (object arrays for non-numbers), beside a ``_key`` mask saying it is set."""
    vector: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, bool | int | float | np.bool_ | np.number):
            vector[key] = np.array([value])
        else:
            holder = np.empty(1, dtype=object)
            holder[0] = value
            vector[key] = holder
        vector[f"_{key}"] = np.array([True])
    return vector


VectorEnv = SyncVectorEnv | OneEnvVector | AleVectorEnv


def make_vector_env(config: EnvConfig, num_envs: int) -> VectorEnv:
    """``num_envs`` copies stepped in lockstep; an episode that ends is reset in the same step.

    Atari games on the ``ale`` path (:func:`collection_path`) are stepped by ale-py's C++
    vector env (dqn_cli/ale_vector.py), adapted to the same contract; all else are gymnasium
    envs built by :func:`make_env`.

    Same-step auto-reset: the step that ends an episode returns the next episode's first
    observation and puts the real last one in ``info["final_obs"]``, so every env step is one
    real transition and none spans two episodes.

    The observations ``reset`` and ``step`` return are the vector env's own buffer, rewritten
    in place by the next call (``copy=False``: gymnasium's default deep copy costs more than
    stepping CartPole): copy what must outlive the next step.
    """

    if collection_path(config, num_envs) == "ale":
        return AleVectorEnv(config, num_envs)
    if num_envs == 1:
        return OneEnvVector(make_env(config))

    def factory() -> gym.Env:
        return make_env(config)

    fns: list[Callable[[], gym.Env]] = [factory] * num_envs
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)


def collection_path(config: EnvConfig, num_envs: int) -> Literal["gymnasium", "ale"]:
    """What steps the training envs: ``env.vector``, where ``auto`` means ale-py's vector env
    for several Atari envs it can build (faster there, bench/ale_vector.py; for one env both
    paths run at the emulator's speed) and gymnasium otherwise."""
    if config.vector != "auto":
        return config.vector
    return "ale" if num_envs > 1 and ale_vector_refusal(config) is None else "gymnasium"


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


def env_seeds(first: int, count: int) -> list[int | None]:
    """Reset seeds ``first, first + 1, ...`` for ``count`` envs, as SyncVectorEnv derives them
    from one int, but wrapped into [0, 2**32): envs that seed numpy's legacy generators
    (MinAtar, ale-py) refuse larger ones, and a large run seed plus an offset (the evaluation's,
    a resume's env step) would reach them."""
    return [(first + i) % (MAX_SEED + 1) for i in range(count)]
