"""Time the default `dqn-train` on CartPole-v1 for several seeds, one whole process each.

    .venv/bin/python bench/solve_cartpole.py [--seeds 0 1 2 3 4] [extra overrides...]

Prints, per seed: final greedy eval (20 episodes), best eval, the first env step whose eval
reached 475, and wall seconds for the whole process (start-up, training, evaluations).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SOLVED = 475.0


def first_solved_step(run_dir: Path) -> int | None:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    for event in events.Scalars("eval/return_mean"):
        if event.value >= SOLVED:
            return int(event.step)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args, overrides = parser.parse_known_args()
    exe = shutil.which("dqn-train", path=str(Path(sys.executable).parent))
    if exe is None:
        sys.exit("dqn-train is not installed next to this python; run `make install` first")
    print(
        f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__}, overrides: {' '.join(overrides) or '(none)'}"
    )
    print("| seed | final eval (20 ep) | best eval | first env step >= 475 | wall s |")
    print("|---|---|---|---|---|")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            run_dir = Path(tmp) / f"seed{seed}"
            started = time.perf_counter()
            done = subprocess.run(
                [exe, f"seed={seed}", f"hydra.run.dir={run_dir}", *overrides],
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
            if done.returncode != 0:
                print(f"| {seed} | failed: {done.stderr.strip()[-200:]} | | | |")
                failures += 1
                continue
            summary = json.loads((run_dir / "summary.json").read_text())
            final = summary["final_eval_return_mean"]
            failures += final < SOLVED
            print(
                f"| {seed} | {final:.1f} +- {summary['final_eval_return_std']:.1f} | "
                f"{summary['best_eval_return_mean']:.1f} | {first_solved_step(run_dir)} | "
                f"{wall:.1f} |",
                flush=True,
            )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
