"""The peer run of bench/peers.py: Stable-Baselines3's DQN with settings given as JSON.

    .venv/bin/python bench/sb3_dqn.py --settings '{"total_steps": 100000, ...}' [--seed 0]

Builds SB3's DQN with exactly the settings bench/scenarios.py maps to dqn-train, runs learn(),
then the same number of greedy evaluation episodes as our run, and prints one JSON line:
learn_s, eval_s, in_process_s, eval_return_mean. It imports nothing from dqn-cli, so its
whole-process time is SB3's own start-up plus its work. Needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import types
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.dqn import dqn as dqn_module


def use_mse_loss(dqn_module: types.ModuleType) -> None:
    """Make SB3's DQN train with the MSE loss (CleanRL's default) instead of its fixed Huber.

    SB3 has no option for it: its train step calls ``F.smooth_l1_loss`` where ``F`` is the name
    it imported torch.nn.functional under. Rebinding that one name, in that one module, to a
    namespace whose smooth_l1_loss is mse_loss changes the loss and nothing else (same call,
    same mean reduction, same cost class), without copying or subclassing SB3's code.
    """
    functional = types.SimpleNamespace(**vars(torch.nn.functional))
    functional.smooth_l1_loss = torch.nn.functional.mse_loss
    dqn_module.F = functional  # type: ignore[attr-defined]


def dqn_keywords(s: dict[str, Any]) -> dict[str, Any]:
    """SB3 DQN's keyword arguments for the settings both peer scripts take (the mappings are
    documented in bench/scenarios.py and bench/atari_peers.py)."""
    return {
        "learning_rate": s["lr"],
        "buffer_size": s["buffer_size"],
        "learning_starts": s["learning_starts"],
        "batch_size": s["batch_size"],
        "tau": 1.0,  # hard copies
        "gamma": s["gamma"],
        "train_freq": (s["train_every"], "step"),
        "gradient_steps": s["gradient_steps"],
        "target_update_interval": s["target_period"],
        "exploration_fraction": s["eps_steps"] / s["total_steps"],
        "exploration_initial_eps": 1.0,
        "exploration_final_eps": s["eps_end"],
        # SB3 always clips; +inf never scales the gradient (clip coefficient clamps to 1).
        "max_grad_norm": math.inf if s["max_grad_norm"] is None else s["max_grad_norm"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True, help="JSON from Scenario.sb3_settings()")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    s = json.loads(args.settings)

    torch.set_num_threads(args.threads)
    started = time.perf_counter()  # in-process: like dqn-train's train(), from building on
    if s["loss"] == "mse":
        use_mse_loss(dqn_module)
    elif s["loss"] != "huber":
        raise SystemExit(f"unknown loss {s['loss']!r}")
    model = DQN(
        "MlpPolicy",
        gym.make(s["env_id"]),
        **dqn_keywords(s),
        policy_kwargs={"net_arch": list(s["hidden"])},
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    learn_started = time.perf_counter()
    model.learn(total_timesteps=s["total_steps"])
    learn_s = time.perf_counter() - learn_started

    # Greedy episodes, seeded like dqn-train's evaluation (seed + 1000000 + i).
    eval_started = time.perf_counter()
    env = gym.make(s["env_id"])
    returns = []
    for i in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 1_000_000 + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "learn_s": learn_s,
                "eval_s": finished - eval_started,
                "in_process_s": finished - started,
                "eval_return_mean": float(np.mean(returns)) if returns else math.nan,
                "total_steps": int(model.num_timesteps),
            }
        )
    )


if __name__ == "__main__":
    main()
