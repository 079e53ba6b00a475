"""Atari collection paths: gymnasium's SyncVectorEnv of wrapped envs vs ale-py's C++ vector env.

    .venv/bin/python -m bench.ale_vector [--num-envs 1 4 8] [--steps 6000] [--repeats 2]
        [--train-envs 4] [--train-steps 4000] [--episodes 100]

Both paths are built by dqn_cli.envs.make_vector_env from one EnvConfig, differing only in
``env.vector`` (gymnasium | ale), so they run the same preprocessing (frame skip 4 max-pooled,
84x84 grayscale, 4 stacked frames, up to 30 no-ops, FIRE at reset, sticky actions 0.25) and
what is timed includes dqn-cli's adapter of the ale path:

- speed: env steps/s (summed over the envs) of ``--steps`` random-action env steps on
  ALE/Pong-v5 after a warm-up, per num_envs, alternating the paths, median of ``--repeats``.
  The ale path runs min(num_envs, usable cores) C++ threads: on a 2-core machine that caps
  what threads can add; the path is also timed with one thread, which is what C++ stepping
  and preprocessing gain without parallelism.
- in dqn-train: env steps/s of in-process training runs on ALE/Breakout-v5 on each path that
  only collect (learning_starts beyond the run), ``--train-envs`` envs, epsilon 1 (no forward pass)
  and a fixed 0.05 (the Nature CNN acts on every step, on the CPU), after 1000 env steps
  (half the run if shorter).
- agreement: what stays different between the paths (FIRE at reset lasts 1 frame on the ale
  path, frame_skip frames on gymnasium's; other random streams for no-ops and sticky actions)
  measured where it shows: the return and length of ``--episodes`` random-play games of
  ALE/Breakout-v5 (FIRE, five lives) on each path, default keys, seed 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

from bench.common import (
    ProgressClock,
    alternate,
    fmt,
    machine_header,
    median,
    print_table,
    quiet_overrides,
    train_in_process,
)
from dqn_cli.ale_vector import AleVectorEnv
from dqn_cli.config import EnvConfig
from dqn_cli.envs import VectorEnv, make_vector_env
from dqn_cli.run_planning import usable_cores

PATHS = ("gymnasium", "ale")
ONE_THREAD = "ale, 1 thread"  # what the ale path gains without parallel threads
SPEED_GAME, AGREEMENT_GAME = "ALE/Pong-v5", "ALE/Breakout-v5"
# Random play loses Breakout within ~180 steps (Pong: ~900), so each run's final evaluation game
# costs little.
TRAIN_GAME = AGREEMENT_GAME
AGREEMENT_ENVS = 4
WARMUP_VECTOR_STEPS = 50
TRAIN_EPSILONS = (1.0, 0.05)
TRAIN_WARMUP_STEPS, TRAIN_LOG_EVERY = 1000, 500


def steps_per_second(path: str, num_envs: int, env_steps: int, seed: int) -> float:
    """Random-action env steps per second on ``path`` (or ONE_THREAD), summed over
    ``num_envs`` envs."""
    envs: VectorEnv
    if path == ONE_THREAD:
        envs = AleVectorEnv(EnvConfig(id=SPEED_GAME), num_envs, threads=1)
    else:
        envs = make_vector_env(EnvConfig(id=SPEED_GAME, vector=path), num_envs)
    try:
        envs.reset(seed=seed)
        rng = np.random.default_rng(seed)
        n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]
        vector_steps = max(1, env_steps // num_envs)
        actions = rng.integers(n_actions, size=(WARMUP_VECTOR_STEPS + vector_steps, num_envs))
        for row in actions[:WARMUP_VECTOR_STEPS]:
            envs.step(row)
        started = time.perf_counter()
        for row in actions[WARMUP_VECTOR_STEPS:]:
            envs.step(row)
        return vector_steps * num_envs / (time.perf_counter() - started)
    finally:
        envs.close()


def training_collection_rate(path: str, num_envs: int, steps: int, epsilon: float) -> float:
    """Env steps/s of a dqn-train run on ``path`` that collects only, acting with ``epsilon``."""
    clock = ProgressClock()
    overrides = [
        *quiet_overrides(steps),
        "env=atari",
        f"env.id={TRAIN_GAME}",
        f"env.vector={path}",
        f"num_envs={num_envs}",
        f"learning_starts={10 * steps}",  # never reached: collection only
        f"buffer.capacity={steps}",
        f"exploration.start={epsilon}",
        f"exploration.end={epsilon}",
        "exploration.steps=0",
        f"log.every={TRAIN_LOG_EVERY}",
        "eval.epsilon=1.0",  # the final evaluation game: no forward passes to wait for
    ]
    train_in_process(overrides, clock)
    return clock.rate(from_step=min(TRAIN_WARMUP_STEPS, steps // 2))


def random_play(path: str, episodes: int, seed: int) -> tuple[list[float], list[int]]:
    """Returns and lengths (agent steps) of the first ``episodes`` games that end."""
    envs = make_vector_env(EnvConfig(id=AGREEMENT_GAME, vector=path), AGREEMENT_ENVS)
    rng = np.random.default_rng(seed)
    n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]
    returns: list[float] = []
    lengths: list[int] = []
    episode_return = np.zeros(AGREEMENT_ENVS)
    episode_length = np.zeros(AGREEMENT_ENVS, dtype=np.int64)
    try:
        envs.reset(seed=seed)
        while len(returns) < episodes:
            _, rewards, terminated, truncated, _ = envs.step(
                rng.integers(n_actions, size=AGREEMENT_ENVS)
            )
            episode_return += rewards
            episode_length += 1
            for i in np.flatnonzero(terminated | truncated):
                returns.append(float(episode_return[i]))
                lengths.append(int(episode_length[i]))
                episode_return[i], episode_length[i] = 0.0, 0
    finally:
        envs.close()
    return returns[:episodes], lengths[:episodes]


def mean_and_error(values: list[float] | list[int]) -> tuple[float, float]:
    """Mean and its standard error."""
    if len(values) < 2:
        return float(np.mean(values)), float("nan")
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def print_training_table(num_envs: int, steps: int, repeats: int) -> None:
    print()
    print(
        f"# in dqn-train: {num_envs} envs, {TRAIN_GAME}, collection only ({steps} env steps, "
        f"rate after {min(TRAIN_WARMUP_STEPS, steps // 2)}), 1 torch thread, alternating, "
        f"median of {repeats}"
    )
    cells = [f"{path}|{eps}" for eps in TRAIN_EPSILONS for path in PATHS]

    def run(cell: str, repeat: int) -> float:
        path, eps = cell.split("|")
        rate = training_collection_rate(path, num_envs, steps, float(eps))
        print(f"#   run {repeat + 1} {path} epsilon {eps}: {fmt(rate, 0)} env steps/s", flush=True)
        return rate

    rates = {cell: median(values) for cell, values in alternate(cells, repeats, run).items()}
    rows = []
    for eps in TRAIN_EPSILONS:
        gym_rate, ale_rate = rates[f"gymnasium|{eps}"], rates[f"ale|{eps}"]
        rows.append([eps, fmt(gym_rate, 0), fmt(ale_rate, 0), f"{ale_rate / gym_rate:.2f}x"])
    print_table(["epsilon", "gymnasium steps/s", "ale steps/s", "ale vs gymnasium"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=6000, help="timed env steps per cell")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-envs", type=int, default=4, help="num_envs of the dqn-train runs")
    parser.add_argument(
        "--train-steps", type=int, default=4000, help="env steps per dqn-train run (0: skip)"
    )
    parser.add_argument("--episodes", type=int, default=100, help="Breakout games per path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(machine_header("bench.ale_vector: Atari collection, gymnasium path vs ale-py's"))
    print(
        f"# {SPEED_GAME}, random actions, default env keys; {args.steps} env steps per cell "
        f"after {WARMUP_VECTOR_STEPS} vector steps of warm-up, alternating the paths, median "
        f"of {args.repeats}; ale path: min(num_envs, {usable_cores()} usable cores) C++ threads"
    )
    cells = [f"{path}|{n}" for n in args.num_envs for path in (*PATHS, ONE_THREAD)]

    def run(cell: str, repeat: int) -> float:
        path, n = cell.split("|")
        rate = steps_per_second(path, int(n), args.steps, args.seed + repeat)
        print(f"#   run {repeat + 1} num_envs={n} {path}: {fmt(rate, 0)} env steps/s", flush=True)
        return rate

    rates = {cell: median(values) for cell, values in alternate(cells, args.repeats, run).items()}
    print()
    rows = []
    for n in args.num_envs:
        gym_rate, ale_rate = rates[f"gymnasium|{n}"], rates[f"ale|{n}"]
        one_thread_rate = rates[f"{ONE_THREAD}|{n}"]
        rows.append(
            [
                n,
                fmt(gym_rate, 0),
                fmt(1e6 / gym_rate),
                fmt(ale_rate, 0),
                fmt(1e6 / ale_rate),
                f"{ale_rate / gym_rate:.2f}x",
                fmt(one_thread_rate, 0),
                f"{one_thread_rate / gym_rate:.2f}x",
            ]
        )
    print_table(
        [
            "num_envs",
            "gymnasium steps/s",
            "us / env step",
            "ale steps/s",
            "us / env step",
            "ale vs gymnasium",
            "ale 1 thread steps/s",
            "vs gymnasium",
        ],
        rows,
    )

    if args.train_steps > 0:
        print_training_table(args.train_envs, args.train_steps, args.repeats)
    print()
    print(
        f"# agreement: {args.episodes} random-play games of {AGREEMENT_GAME} per path, "
        f"{AGREEMENT_ENVS} envs, default env keys, seed {args.seed}; mean +- standard error"
    )
    played = {path: random_play(path, args.episodes, args.seed) for path in PATHS}
    rows = []
    for path in PATHS:
        returns, lengths = played[path]
        return_mean, return_error = mean_and_error(returns)
        length_mean, length_error = mean_and_error(lengths)
        rows.append(
            [
                path,
                len(returns),
                f"{return_mean:.2f} +- {return_error:.2f}",
                f"{length_mean:.1f} +- {length_error:.1f}",
            ]
        )
    print_table(["path", "games", "return", "length (agent steps)"], rows)
    (gym_mean, gym_error), (ale_mean, ale_error) = (mean_and_error(played[p][0]) for p in PATHS)
    gap = abs(ale_mean - gym_mean) / math.hypot(gym_error, ale_error)
    print(f"# return gap ale - gymnasium: {ale_mean - gym_mean:+.2f} ({gap:.1f} standard errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
