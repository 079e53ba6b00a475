"""How fast dqn-train answers when it does not train: --help and bad input.

    .venv/bin/python -m bench.cli_latency [--repeats 5]

Times whole processes of the installed command (median of alternating runs) beside a bare
``python -c pass`` of the same interpreter, the floor any console script pays. Target: under
1.5 s each on this machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import dqn_train_executable, fmt, machine_header, median, print_table, verdict

CASES = [
    ("dqn-train --help", ["--help"]),
    ("bad value (lr=-1)", ["lr=-1"]),
    ("misspelled key (lr_rate=0.1)", ["lr_rate=0.1"]),
    ("unknown group option (algo=rainbow)", ["algo=rainbow"]),
    ("unknown env (env.id=NoSuchEnv-v0)", ["env.id=NoSuchEnv-v0"]),
]
LIMIT_S = 1.5


def wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    exe = dqn_train_executable()
    print(machine_header("bench.cli_latency: seconds per process (median)"))
    floor = [sys.executable, "-c", "pass"]
    times: dict[str, list[float]] = {label: [] for label, _ in [("python -c pass", []), *CASES]}
    for _ in range(args.repeats):  # alternate: drift of a shared machine hits every case
        times["python -c pass"].append(wall(floor))
        for label, case in CASES:
            times[label].append(wall([exe, *case]))
    base = median(times["python -c pass"])
    rows = [["python -c pass", fmt(base, 3), "1.0", "-"]]
    for label, _ in CASES:
        seconds = median(times[label])
        rows.append([label, fmt(seconds, 3), f"{seconds / base:.1f}", verdict(seconds, LIMIT_S)])
    print_table(["command", "seconds", "x python -c pass", f"<= {LIMIT_S} s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
