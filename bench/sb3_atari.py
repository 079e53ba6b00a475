"""The peer run of bench/atari_peers.py: Stable-Baselines3's DQN on an Atari game.

    .venv/bin/python -m bench.sb3_atari --settings '{"env_id": "ALE/Pong-v5", ...}' [--seed 0]

SB3's own Atari pipeline: ``make_atari_env`` (Monitor, then AtariWrapper: no-op reset, frame
skip 4 with max-pooling, episodic life, FIRE reset, 84x84 grayscale, clipped rewards) on the
ALE v5 env at ``frameskip=1`` (sticky actions stay at v5's 0.25, inside the emulator), then
``VecFrameStack(4)``; DQN transposes the frames to channels first itself (VecTransposeImage).
Trains ``DQN("CnnPolicy", ...)`` with the settings bench/atari_peers.py maps, then plays one
greedy game on a fresh env built the same way and prints one JSON line: learn_s, eval_s,
in_process_s, eval_return_mean, eval_length, total_steps.

The evaluation scores whole games: AtariWrapper ends an episode at every lost life (the
learning signal), but the Monitor sits below it and reports ``info["episode"]`` only when the
game itself is over, with the raw (unclipped) score. It imports nothing from dqn-cli, so its
whole-process time is SB3's own start-up plus its work. Needs the `bench` and `atari` extras.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import ale_py
import gymnasium as gym
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from bench.sb3_dqn import dqn_keywords


def atari_env(env_id: str, seed: int, frame_stack: int) -> VecEnv:
    """One game through SB3's Atari wrappers; the emulator skips no frames, AtariWrapper does."""
    gym.register_envs(ale_py)
    env = make_atari_env(env_id, n_envs=1, seed=seed, env_kwargs={"frameskip": 1})
    return VecFrameStack(env, frame_stack)


def build_model(s: dict[str, Any], seed: int) -> DQN:
    """SB3's DQN on its Atari pipeline with the settings AtariScenario.sb3_settings() gives."""
    if s["loss"] != "huber":
        raise SystemExit(f"SB3's DQN trains with the Huber loss only, got {s['loss']!r}")
    return DQN(
        "CnnPolicy",
        atari_env(s["env_id"], seed, s["frame_stack"]),
        **dqn_keywords(s),
        optimize_memory_usage=False,  # obs and next_obs stored apart, as dqn-cli stores them
        seed=seed,
        device="cpu",
        verbose=0,
    )


def play_one_game(model: DQN, env: VecEnv) -> tuple[float, int]:
    """(raw score, agent steps) of one whole greedy game; the Monitor's own length counts
    emulator frames, so the agent steps are counted here."""
    obs = env.reset()
    steps = 0
    while True:
        action, _ = model.predict(obs, deterministic=True)  # type: ignore[arg-type]
        obs, _, _, infos = env.step(action)
        steps += 1
        episode = infos[0].get("episode")
        if episode is not None:  # the game is over, not just a life
            return float(episode["r"]), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True, help="JSON from AtariScenario.sb3_settings()")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    s: dict[str, Any] = json.loads(args.settings)

    torch.set_num_threads(args.threads)
    started = time.perf_counter()  # in-process: like dqn-train's train(), from building on
    model = build_model(s, args.seed)
    learn_started = time.perf_counter()
    model.learn(total_timesteps=s["total_steps"])
    learn_s = time.perf_counter() - learn_started

    # One greedy game on an env of its own, seeded like dqn-train's evaluation (seed + 1000000).
    eval_started = time.perf_counter()
    env = atari_env(s["env_id"], args.seed + 1_000_000, s["frame_stack"])
    score, length = play_one_game(model, env)
    env.close()
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "learn_s": learn_s,
                "eval_s": finished - eval_started,
                "in_process_s": finished - started,
                "eval_return_mean": score,
                "eval_length": length,
                "total_steps": int(model.num_timesteps),
            }
        )
    )


if __name__ == "__main__":
    main()
