"""Ours vs Stable-Baselines3 DQN at identical settings, whole fresh processes, run alternately.

    .venv/bin/python -m bench.peers [--scenarios cleanrl zoo] [--repeats 3] [--seed 0]

For each scenario of bench/scenarios.py (the settings mapping is documented there): dqn-train
with the mapped overrides, then bench/sb3_dqn.py, then dqn-train again, ... ``--repeats`` runs
each. Every run is a new process timed from the outside, start-up included. Prints the median
wall time, env steps/s, the in-process time (ours: train() from summary.json; SB3: building the
model, learn() and the evaluation), the final greedy return and the ratio ours / SB3 against
the target. The CleanRL figure is a reference measured earlier on this machine (CleanRL's code
is not shipped here): labelled as such and never mixed with the in-session ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

from bench.common import (
    ROOT,
    Measurement,
    alternate,
    fmt,
    machine_header,
    median,
    print_run,
    print_table,
    run_dqn_train,
    run_process,
    verdict,
)
from bench.scenarios import SCENARIOS, Scenario

TOOLS = ("ours", "sb3")


def run_ours(scenario: Scenario, seed: int, eval_episodes: int, workdir: Path) -> Measurement:
    run_dir = workdir / f"ours-{len(list(workdir.iterdir()))}"
    return run_dqn_train(scenario.dqn_train_overrides(seed, eval_episodes), run_dir)


def run_sb3(scenario: Scenario, seed: int, eval_episodes: int) -> Measurement:
    script = ROOT / "bench" / "sb3_dqn.py"
    settings = json.dumps(scenario.sb3_settings())
    cmd = [sys.executable, str(script), "--settings", settings, "--seed", str(seed)]
    done = run_process([*cmd, "--eval-episodes", str(eval_episodes)])
    if done.returncode != 0:
        return Measurement(done.wall_s, float("nan"), float("nan"), done.tail())
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Measurement(done.wall_s, result["in_process_s"], result["eval_return_mean"])


def sb3_available() -> bool:
    return importlib.util.find_spec("stable_baselines3") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS)
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10, help="final greedy episodes")
    parser.add_argument(
        "--total-steps",
        type=int,
        help="shrink the scenarios for a quick check (learning_starts and the exploration "
        "steps shrink in proportion); the targets are for the full scenarios",
    )
    args = parser.parse_args(argv)
    if not sb3_available():
        sys.exit("stable-baselines3 is not installed: `make bench` installs the `bench` extra")

    print(machine_header("bench.peers: dqn-train vs Stable-Baselines3 DQN, 1 torch thread"))
    print(
        f"# {args.repeats} whole-process runs per tool, alternating ours/SB3; seed {args.seed}; "
        f"{args.eval_episodes} greedy evaluation episodes at the end of every run"
    )
    rows: list[list[object]] = []
    notes: list[str] = []
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        if args.total_steps is not None:
            scenario = scenario.scaled(args.total_steps)
        print(f"# {scenario.name}: {scenario.title}", flush=True)
        print(
            f"#   dqn-train {' '.join(scenario.dqn_train_overrides(args.seed, args.eval_episodes))}"
        )
        print(f"#   bench/sb3_dqn.py --settings '{json.dumps(scenario.sb3_settings())}'")
        with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
            workdir = Path(tmp)

            def run(
                tool: str, repeat: int, scenario: Scenario = scenario, workdir: Path = workdir
            ) -> Measurement:
                if tool == "ours":
                    m = run_ours(scenario, args.seed, args.eval_episodes, workdir)
                else:
                    m = run_sb3(scenario, args.seed, args.eval_episodes)
                print_run(tool, repeat, m)
                return m

            results = alternate(TOOLS, args.repeats, run)
        walls = {t: median([m.wall_s for m in results[t] if not m.failed]) for t in TOOLS}
        ratio = walls["ours"] / walls["sb3"]
        # The targets are for the full scenarios: a shrunken run only checks the plumbing.
        target = "n/a, scaled" if args.total_steps else verdict(ratio, scenario.target_ratio)
        ratio_cell = f"{ratio:.2f} (<= {scenario.target_ratio}: {target})"
        for tool in TOOLS:
            ok = [m for m in results[tool] if not m.failed]
            spread = (
                f"{min(m.wall_s for m in ok):.1f}-{max(m.wall_s for m in ok):.1f}" if ok else "-"
            )
            rows.append(
                [
                    scenario.name,
                    "dqn-train" if tool == "ours" else "SB3 DQN",
                    f"{len(ok)}/{len(results[tool])}",
                    fmt(walls[tool]),
                    spread,
                    fmt(scenario.total_steps / walls[tool], 0),
                    fmt(median([m.in_process_s for m in ok])),
                    fmt(median([m.wall_s - m.in_process_s for m in ok])),
                    fmt(median([m.eval_return for m in ok])),
                    ratio_cell if tool == "ours" else "1.00",
                ]
            )
        ref = scenario.reference
        if ref is not None:
            ref_ratio = walls["ours"] / ref.wall_s
            notes.append(
                f"# reference, NOT measured in this session: {ref.label} = {ref.wall_s:.1f} s "
                f"(measured earlier on this machine). {scenario.name}: ours {fmt(walls['ours'])} s "
                f"/ {ref.wall_s:.1f} s = {ref_ratio:.2f} "
                f"(target <= {ref.target_ratio}: {verdict(ref_ratio, ref.target_ratio)})"
            )
    print()
    print_table(
        [
            "scenario",
            "tool",
            "runs ok",
            "median wall s",
            "min-max s",
            "env steps/s",
            "in-process s",
            "outside s",
            "eval return",
            "ratio ours/SB3 (target)",
        ],
        rows,
    )
    for note in notes:
        print(note)
    print(
        "# wall s: whole process, start-up included, median of the runs; env steps/s = "
        "total_steps / median wall s; in-process s: ours = train() (summary.json wall_seconds), "
        "SB3 = DQN(...) + learn() + evaluation; outside s = wall - in-process: interpreter, "
        "imports, config composition (ours: Hydra, twice), exit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
