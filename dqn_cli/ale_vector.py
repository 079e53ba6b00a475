"""ale-py's C++ vector env as the Atari collection path (``env.vector=ale``).

``ale_py.vector_env.AtariVectorEnv`` steps every game in C++ worker threads and does the DQN
preprocessing there (frame skip with max-pooling over the last two frames, grayscale, an
INTER_AREA resize to 84x84, frame stacking, no-ops and FIRE at reset). :class:`AleVectorEnv`
pins every setting whose default differs from dqn_cli/pixel_envs.py's gymnasium pipeline and
adapts what it returns to the contract of :func:`dqn_cli.envs.make_vector_env`:

- same-step auto-reset, the final observation in ``info["final_obs"]`` (mask ``_final_obs``);
- whole games with raw rewards (float64): ale-py's reward clipping and episodic life are off,
  since the training loop applies ``env.clip_rewards`` / ``env.episodic_life`` to what it
  stores; ``info["life_lost"]`` comes from the lives counter, as ``LifeLossSignal`` does;
- sticky actions ``env.sticky_actions`` (ale-py's vector default is 0, ALE v5's 0.25);
- a new episode's stack repeats its first frame (ale-py pads with black frames);
- up to ``env.noop_max`` one-frame no-ops (ale-py draws 0 .. its argument - 1);
- the 108,000-frame cap of the game's v5 registration (counted after the reset's no-ops).

What stays different (measured in bench/ale_vector.py, stated in the key's help and the README):
ale-py presses FIRE for one emulator frame at reset where gymnasium's path presses it for one
agent step (``env.frame_skip`` frames), and takes it before the no-ops rather than after; its
no-op draw and emulator seeding use other random streams than gymnasium's. With no no-ops, no
sticky actions and a game without FIRE, the observations, rewards and ends are identical.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from dqn_cli.config import EnvConfig
from dqn_cli.pixel_envs import register_family
from dqn_cli.run_planning import usable_cores

# ale-py seeds each C++ env with a non-negative 32-bit int; our seeds go up to 2**32 - 1 plus
# an env-step offset on resume.
_ALE_SEED_MODULUS = 2**31


class AleVectorEnv:
    """``num_envs`` copies of the Atari game ``config.id`` stepped by ale-py in C++ threads,
    with the semantics of :func:`dqn_cli.envs.make_vector_env` (see the module docstring)."""

    def __init__(self, config: EnvConfig, num_envs: int, threads: int | None = None) -> None:
        """``threads``: C++ worker threads, by default one per env up to the usable cores."""
        register_family(config.id)  # the atari extra, or a one-line error naming it
        from ale_py.vector_env import AtariVectorEnv

        game_kwargs = gym.spec(config.id).kwargs
        self.num_envs = num_envs
        self.frame_stack = config.frame_stack
        self._vector = AtariVectorEnv(
            game_kwargs["game"],
            num_envs,
            num_threads=threads or min(num_envs, usable_cores()),
            max_num_frames_per_episode=game_kwargs["max_num_frames_per_episode"],
            repeat_action_probability=config.sticky_actions,
            full_action_space=config.full_action_space,
            autoreset_mode=AutoresetMode.SAME_STEP,
            img_height=84,
            img_width=84,
            grayscale=True,
            stack_num=config.frame_stack,
            frameskip=config.frame_skip,
            maxpool=True,
            noop_max=config.noop_max + 1,  # it draws 0 .. noop_max: "up to noop_max" no-ops
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=True,  # where the action set has FIRE: FireOnReset's rule
        )
        self.single_observation_space = spaces.Box(0, 255, (config.frame_stack, 84, 84), np.uint8)
        self.single_action_space = self._vector.single_action_space
        # Per env: agent steps since its episode began (stack frames that are still padding)
        # and the lives it had after the previous step.
        self._episode_steps = np.zeros(num_envs, dtype=np.int64)
        self._lives = np.zeros(num_envs, dtype=np.int64)

    def reset(
        self, seed: int | list[int | None] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            obs, info = self._vector.reset()
        else:
            if isinstance(seed, int):
                seed = [seed + i for i in range(self.num_envs)]
            # -1: that env is not reseeded (gymnasium's None)
            seeds = [-1 if s is None else s % _ALE_SEED_MODULUS for s in seed]
            obs, info = self._vector.reset(seed=np.array(seeds, dtype=np.int64))
        self._episode_steps[:] = 0
        self._lives[:] = info["lives"]
        self._repeat_first_frame(obs, self._episode_steps)
        return obs, info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self._vector.step(actions)
        done = terminated | truncated
        self._episode_steps += 1
        lives = np.asarray(info["lives"], dtype=np.int64)
        # On a done step ``lives`` is already the next episode's: no life lost is reported,
        # as LifeLossSignal reports none on the step that ends the game.
        info["life_lost"] = (lives < self._lives) & ~done
        info["_life_lost"] = np.ones(self.num_envs, dtype=np.bool_)
        self._lives = lives
        if done.any():
            self._repeat_first_frame(info["final_obs"], self._episode_steps, done)
            self._episode_steps[done] = 0
        info["_final_obs"] = done
        self._repeat_first_frame(obs, self._episode_steps)
        return obs, rewards.astype(np.float64), terminated, truncated, info

    def _repeat_first_frame(
        self, stacks: np.ndarray, episode_steps: np.ndarray, only: np.ndarray | None = None
    ) -> None:
        """In place: the black frames ale-py stacks before an episode's first frame become
        copies of that frame, as gymnasium's FrameStackObservation pads."""
        young = episode_steps < self.frame_stack - 1
        if only is not None:
            young &= only
        for i in np.flatnonzero(young):
            first = self.frame_stack - 1 - int(episode_steps[i])
            stacks[i, :first] = stacks[i, first]

    def close(self) -> None:
        self._vector.close()
