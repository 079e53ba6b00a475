"""Pixel envs: Atari (ale-py) with the standard DQN preprocessing, and MinAtar.

Atari follows Mnih et al. (2015) as revisited by Machado et al. (2018): the emulator runs at
``frameskip=1`` and gymnasium's ``AtariPreprocessing`` repeats each action ``frame_skip`` times,
max-pools the last two frames (sprites flicker), resizes to 84x84 grayscale and plays up to
``noop_max`` no-ops at reset; FIRE is pressed at reset in games that wait for it; the last
``frame_stack`` frames form one observation. Sticky actions (the v5 default, 0.25) stay on:
each emulator frame repeats the previous action with that probability (gymnasium's
``StickyAction`` on the ``frameskip=1`` game, in place of ALE's own, whose previous action
lives outside the state ALE can save, so a restored game would forget it).

What the published pipeline does to the *learning signal* only, ending an episode on a lost life
and clipping rewards to their sign, is not done here: the training loop applies it to what it
stores in replay (``TrainConfig.env.episodic_life`` / ``clip_rewards``), so the env itself always
plays whole games with raw scores, and logged returns and evaluation are game scores. The env
reports a lost life through ``info["life_lost"]``.

Both packages are optional extras, imported only when an id of theirs is asked for.

An Atari env's chain pickles like any other except for its ale-py game, which pickles its
constructor arguments only: :func:`atari_state` and :func:`restore_atari_state` carry the game
itself as plain data (ALE's serialized emulator state, RNG included, and the env's generator),
so a checkpoint can continue the very same game (env_state.py).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dqn_cli.config import ATARI_PREFIX
from dqn_cli.errors import MissingExtraError

MINATAR_PREFIX = "MinAtar/"
# ALE v5 caps a game at 108,000 emulator frames (30 minutes); MinAtar has no cap, and a perfect
# Breakout paddle would never end an evaluation game, so MinAtar gets the same cap in agent
# steps at frame skip 4.
MINATAR_MAX_EPISODE_STEPS = 27_000


@dataclass(frozen=True)
class AtariOptions:
    """The Atari pipeline's settings (see ``EnvConfig`` for their meaning and defaults)."""

    frame_skip: int = 4
    frame_stack: int = 4
    noop_max: int = 30
    sticky_actions: float = 0.25
    full_action_space: bool = False


def env_family(env_id: str) -> str:
    """``atari``, ``minatar`` or ``gym``: which pipeline builds ``env_id``."""
    if env_id.startswith(ATARI_PREFIX):
        return "atari"
    if env_id.startswith(MINATAR_PREFIX):
        return "minatar"
    return "gym"


_EXTRAS = {"atari": ("ale_py", "cv2"), "minatar": ("minatar",)}


def register_family(env_id: str) -> None:
    """Import the extra an id needs and register its envs with gymnasium, or say how to get it."""
    family = env_family(env_id)
    if family == "gym":
        return
    for module in _EXTRAS[family]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtraError(
                f"env.id: {env_id!r} needs the {family} extra: "
                f"pip install 'dqn-cli[{family}]' (or make install)"
            ) from exc
    if family == "atari":
        import ale_py

        # Errors only: ALE's start-up banner would otherwise precede dqn-train's own output,
        # and its one-line errors, on stderr.
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        gym.register_envs(ale_py)
    else:
        # gymnasium 1.x no longer loads MinAtar's plugin entry point: register by hand.
        from minatar import gym as minatar_gym

        if f"{MINATAR_PREFIX}Breakout-v1" not in gym.registry:
            minatar_gym.register_envs()


class FireOnReset(gym.Wrapper):
    """Presses FIRE once after each reset: games such as Breakout wait for it to start."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:  # never seen in practice; start over rather than loop
            obs, info = self.env.reset()
        return obs, info


class LifeLossSignal(gym.Wrapper):
    """Adds ``info["life_lost"]``: True on a step that cost a life but did not end the game."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.lives = int(info.get("lives", 0))
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = int(info.get("lives", 0))
        info["life_lost"] = lives < self.lives and not terminated
        self.lives = lives
        return obs, reward, terminated, truncated, info


def make_atari_env(
    env_id: str,
    options: AtariOptions,
    render_mode: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> gym.Env:
    """One Atari game with the DQN preprocessing; observations (frame_stack, 84, 84) uint8.
    ``kwargs`` (env.kwargs) go to ale-py's env, e.g. ``mode`` or ``difficulty``."""
    env = gym.make(
        env_id,
        frameskip=1,  # AtariPreprocessing skips frames itself, max-pooling the last two
        # AtariPreprocessing reads ALE's grayscale screen itself and drops the env's own
        # observation: a grayscale one is a third of the RGB copy made on every frame.
        obs_type="grayscale",
        repeat_action_probability=0.0,  # StickyAction below does it, in state a snapshot holds
        full_action_space=options.full_action_space,
        render_mode=render_mode,
        **(kwargs or {}),
    )
    if options.sticky_actions > 0:
        # Per emulator frame (frameskip=1), drawn from the game's own generator.
        env = gym.wrappers.StickyAction(env, repeat_action_probability=options.sticky_actions)
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=options.noop_max,
        frame_skip=options.frame_skip,
        screen_size=84,
        terminal_on_life_loss=False,  # whole games; lost lives are a learning signal only
        grayscale_obs=True,
        scale_obs=False,  # stay uint8: 4x smaller in replay; the model input scales
    )
    if "FIRE" in env.unwrapped.get_action_meanings():  # type: ignore[attr-defined]
        env = FireOnReset(env)
    env = LifeLossSignal(env)
    return gym.wrappers.FrameStackObservation(env, options.frame_stack)


def is_atari_game(env: object) -> bool:
    """Whether ``env`` is an ale-py game (the innermost env of an ``ALE/*`` chain)."""
    ale_py = sys.modules.get("ale_py")
    return ale_py is not None and isinstance(env, ale_py.AtariEnv)


def atari_state(game: gym.Env) -> dict[str, Any]:
    """What an ale-py game's pickle leaves out, as plain data: the emulator (RAM, CPU, frame
    counters and its RNG) as ALE serializes it, and the env's generator (no-op counts at reset,
    sticky actions), as numpy describes a bit generator's state (names and ints)."""
    return {
        "ale": game.ale.cloneState(include_rng=True).serialize(),  # type: ignore[attr-defined]
        "np_random": game.np_random.bit_generator.state,
    }


def restore_atari_state(game: gym.Env, state: Any) -> None:
    """Put an :func:`atari_state` into a fresh ``game`` of the same config; ValueError (one
    line) when ``state`` is not one or ALE refuses it."""
    if not isinstance(state, dict) or set(state) != {"ale", "np_random"}:
        raise ValueError("the Atari game state is not a dict of 'ale' and 'np_random'")
    if not isinstance(state["ale"], bytes):
        raise ValueError("the Atari game state's 'ale' is not bytes")
    _restore_emulator(game, state["ale"])
    try:
        game.np_random.bit_generator.state = state["np_random"]
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"the Atari game's generator state is refused ({exc!r})") from exc


def _restore_emulator(game: gym.Env, serialized: bytes) -> None:
    """``ale.restoreState`` from ALE's serialized bytes.

    ALE writes why it refuses a state to the process's stderr from C++ and then raises an
    exception that reaches Python without a message: its reason is taken back from file
    descriptor 2, so that the user reads one line saying why.
    """
    import ale_py

    error: Exception | None = None
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            game.ale.restoreState(ale_py.ALEState(serialized))  # type: ignore[attr-defined]
        except Exception as exc:  # nanobind's SystemError for an untranslated C++ exception
            error = exc
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
        if error is None:
            return
        captured.seek(0)
        said = " ".join(captured.read().decode(errors="replace").split())
    raise ValueError(f"ALE cannot load the game state ({said or type(error).__name__})") from error


class MinAtarChannelsFirst(gym.ObservationWrapper):
    """MinAtar's (10, 10, C) bool grid as (C, 10, 10) uint8 in {0, 255}.

    Channels first is what torch convolutions take; 255 for "on" lets every uint8 observation
    share one input scaling (/255) in the model, so a MinAtar cell reaches the network as 1.0.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        height, width, channels = env.observation_space.shape  # type: ignore[misc]
        self.observation_space = spaces.Box(0, 255, (channels, height, width), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(observation.transpose(2, 0, 1), dtype=np.uint8) * np.uint8(255)


def make_minatar_env(
    env_id: str, render_mode: str | None = None, kwargs: dict[str, Any] | None = None
) -> gym.Env:
    """``kwargs`` (env.kwargs) go to MinAtar, e.g. ``sticky_action_prob`` (its default: 0.1)."""
    env = gym.make(
        env_id,
        render_mode=render_mode,
        max_episode_steps=MINATAR_MAX_EPISODE_STEPS,
        **(kwargs or {}),
    )
    return MinAtarChannelsFirst(env)
