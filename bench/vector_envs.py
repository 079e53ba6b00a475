"""Do vector envs pay off? Env steps/s for num_envs 1, 2, 4, 8, 16, collecting and training.

    .venv/bin/python -m bench.vector_envs [--num-envs 1 2 4 8 16] [--repeats 2]
        [--collect-steps 20000] [--train-steps 12000]

In-process runs of dqn_cli.training.train on CartPole-v1 (its preset otherwise), alternating
over num_envs within each repeat. Rates come from the progress reports (every log.every env
steps) and leave out start-up, the first reports (warm-up) and the final evaluation:

- collection: learning_starts beyond the run, so nothing is learned. Once with epsilon 1 (no
  forward pass: env + store + loop) and once with a fixed epsilon 0.05, where the network acts
  on all envs' observations in one forward pass every step: the case batching should speed up.
- training: train_every=2, gradient_steps=1 at every num_envs. train_every counts env steps
  summed over the envs, so this is 0.5 gradient steps per env step throughout.
"""

from __future__ import annotations

import argparse
import sys

from bench.common import (
    ProgressClock,
    alternate,
    fmt,
    machine_header,
    median,
    print_table,
    quiet_overrides,
    train_in_process,
    verdict,
)

SPEEDUP_TARGET = 2.5  # collection per env step, 8 envs vs 1 (the issue)
LOG_EVERY = 1000
TRAIN_EVERY, GRADIENT_STEPS, LEARNING_STARTS = 2, 1, 1000
MODES = ("collect eps=1", "collect eps=0.05", "train")


def mode_overrides(mode: str, num_envs: int, collect_steps: int, train_steps: int) -> list[str]:
    if mode == "train":
        steps = train_steps
        extra = [
            f"learning_starts={LEARNING_STARTS}",
            f"train_every={TRAIN_EVERY}",
            f"gradient_steps={GRADIENT_STEPS}",
        ]
    else:
        steps = collect_steps
        eps = 1.0 if mode == "collect eps=1" else 0.05
        extra = [
            f"learning_starts={10 * steps}",  # never reached: collection only
            f"exploration.start={eps}",
            f"exploration.end={eps}",
            "exploration.steps=0",
        ]
    return [*quiet_overrides(steps), f"num_envs={num_envs}", f"log.every={LOG_EVERY}", *extra]


def measure(overrides: list[str], warmup_steps: int) -> float:
    clock = ProgressClock()
    train_in_process(overrides, clock)
    return clock.rate(from_step=warmup_steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--collect-steps", type=int, default=20_000)
    parser.add_argument("--train-steps", type=int, default=12_000)
    args = parser.parse_args(argv)

    print(machine_header("bench.vector_envs: env steps/s by num_envs, CartPole-v1, 1 thread"))
    print(
        f"# {args.repeats} in-process runs per cell, alternating over num_envs; collection "
        f"{args.collect_steps} steps, rate after {2 * LOG_EVERY}; training {args.train_steps} "
        f"steps, learning_starts {LEARNING_STARTS}, {GRADIENT_STEPS / TRAIN_EVERY} gradient "
        f"steps per env step, rate after {LEARNING_STARTS + 2 * LOG_EVERY}"
    )
    cells = [f"{mode}|{n}" for n in args.num_envs for mode in MODES]

    def run(cell: str, repeat: int) -> float:
        mode, n = cell.split("|")
        overrides = mode_overrides(mode, int(n), args.collect_steps, args.train_steps)
        warmup = LEARNING_STARTS + 2 * LOG_EVERY if mode == "train" else 2 * LOG_EVERY
        rate = measure(overrides, warmup)
        print(f"#   run {repeat + 1} num_envs={n} {mode}: {fmt(rate, 0)} env steps/s", flush=True)
        return rate

    rates = {cell: median(values) for cell, values in alternate(cells, args.repeats, run).items()}
    base = {mode: rates.get(f"{mode}|1", float("nan")) for mode in MODES}
    rows = []
    for n in args.num_envs:
        r = {mode: rates[f"{mode}|{n}"] for mode in MODES}
        rows.append(
            [
                n,
                fmt(r["collect eps=1"], 0),
                f"{r['collect eps=1'] / base['collect eps=1']:.2f}x",
                fmt(r["collect eps=0.05"], 0),
                fmt(1e6 / r["collect eps=0.05"]),
                f"{r['collect eps=0.05'] / base['collect eps=0.05']:.2f}x",
                fmt(r["train"], 0),
                fmt(r["train"] * GRADIENT_STEPS / TRAIN_EVERY, 0),
                f"{r['train'] / base['train']:.2f}x",
            ]
        )
    print()
    print_table(
        [
            "num_envs",
            "collect eps=1 steps/s",
            "vs 1 env",
            "collect eps=0.05 steps/s",
            "us / env step",
            "vs 1 env",
            "train steps/s",
            "updates/s",
            "vs 1 env",
        ],
        rows,
    )
    if 8 in args.num_envs and 1 in args.num_envs:
        speedup = rates["collect eps=0.05|8"] / base["collect eps=0.05"]
        met = verdict(speedup, SPEEDUP_TARGET, higher_is_better=True)
        print(
            f"# collection (acting with the network) per env step, 8 envs vs 1: {speedup:.2f}x "
            f"(target >= {SPEEDUP_TARGET}: {met})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
