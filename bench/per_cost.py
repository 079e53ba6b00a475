"""What prioritized replay costs in training: buffer=per vs buffer=uniform, same settings.

    .venv/bin/python -m bench.per_cost [--scenario preset|cleanrl|zoo] [--steps N] [--repeats 2]

Whole dqn-train processes, alternating uniform, per, uniform, per, ...; everything else is
identical (the scenario's overrides from bench/scenarios.py, with PER's alpha/beta defaults).
Prints median wall time of the whole process and of train() alone, and per / uniform for both
against the target (at most 1.3x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.common import (
    Measurement,
    alternate,
    fmt,
    machine_header,
    median,
    merge_overrides,
    print_run,
    print_table,
    run_dqn_train,
    verdict,
)
from bench.scenarios import SCENARIOS, overrides_for

TARGET_RATIO = 1.3
KINDS = ("uniform", "per")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["preset", *SCENARIOS], default="preset")
    parser.add_argument("--steps", type=int, help="total env steps (default: the scenario's)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per buffer kind")
    args = parser.parse_args(argv)
    base = overrides_for(args.scenario, args.steps, eval_episodes=10)
    print(machine_header("bench.per_cost: training wall time, buffer=per vs buffer=uniform"))
    print(f"# dqn-train {' '.join(base)} buffer=uniform|per")
    print(f"# {args.repeats} whole-process runs per kind, alternating")

    with tempfile.TemporaryDirectory(prefix="bench-per-") as tmp:

        def run(kind: str, repeat: int) -> Measurement:
            overrides = merge_overrides(base, [f"buffer={kind}"])
            m = run_dqn_train(overrides, Path(tmp) / f"{kind}-{repeat}")
            print_run(kind, repeat, m, inner="train()")
            return m

        results = alternate(KINDS, args.repeats, run)
    wall = {k: median([m.wall_s for m in results[k] if not m.failed]) for k in KINDS}
    inner = {k: median([m.in_process_s for m in results[k] if not m.failed]) for k in KINDS}
    rows = [
        [
            kind,
            fmt(wall[kind]),
            fmt(inner[kind]),
            f"{wall[kind] / wall['uniform']:.2f}",
            f"{inner[kind] / inner['uniform']:.2f}",
        ]
        for kind in KINDS
    ]
    print_table(["buffer", "wall s", "train() s", "wall vs uniform", "train() vs uniform"], rows)
    ratio, whole = inner["per"] / inner["uniform"], wall["per"] / wall["uniform"]
    print(
        f"# per / uniform, train(): {ratio:.2f}; whole process: {whole:.2f} "
        f"(target <= {TARGET_RATIO}: {verdict(ratio, TARGET_RATIO)} on train())"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
