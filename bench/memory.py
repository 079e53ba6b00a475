"""Memory: replay storage size and dtypes, and RSS over a long run (no per-step growth).

    .venv/bin/python -m bench.memory [--steps 200000] [--capacity 50000] [dqn-train overrides]

Trains in-process (CleanRL-like cheap settings: an update every 10 env steps, so a long run
takes little time) with a reporter that reads the resident set size from /proc/self/statm
every ``--sample-every`` env steps. numpy's zeroed arrays are only committed to RAM when first
written, so RSS legitimately grows while the buffer fills; the check is from the point the
buffer is full (plus one report) to the end: that growth should be about zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.common import (
    fmt,
    machine_header,
    merge_overrides,
    print_table,
    quiet_overrides,
    train_in_process,
)

MIB = 2**20


def rss_bytes() -> int:
    """Resident set size now (Linux: /proc/self/statm; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


@dataclass
class RssSampler:
    """A ``train()`` reporter recording (env step, RSS) at every progress report."""

    samples: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, progress: Any) -> None:
        self.samples.append((int(progress.step), rss_bytes()))


class Captured(logging.Handler):
    """Keeps the training log's records (the replay size line is printed from them)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def dtype_check() -> list[str]:
    """Storage keeps the env's observation dtype: uint8 frames stay 1 byte per pixel."""
    from dqn_cli.buffers import TransitionStorage, make_replay_buffer

    lines = []
    rng, cpu = np.random.default_rng(0), torch.device("cpu")
    for shape, dtype in [((4,), np.float32), ((84, 84, 4), np.uint8)]:
        buffer = make_replay_buffer("uniform", 1000, shape, np.dtype(dtype), rng, cpu)
        storage = buffer.storage
        assert isinstance(storage, TransitionStorage)
        lines.append(
            f"# dtype check: obs {shape} {np.dtype(dtype).name} -> stored as "
            f"{storage.obs.dtype.name}, {storage.nbytes / 1000:,.1f} bytes per transition"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--capacity", type=int, default=50_000, help="buffer.capacity")
    parser.add_argument("--sample-every", type=int, default=5_000, help="env steps")
    parser.add_argument("--tolerance-mib", type=float, default=8.0, help="allowed growth")
    parser.add_argument("overrides", nargs="*", help="extra dqn-train overrides, e.g. buffer=per")
    args = parser.parse_args(argv)
    base = [
        *quiet_overrides(args.steps),
        f"buffer.capacity={args.capacity}",
        f"log.every={args.sample_every}",
        "learning_starts=1000",
        "train_every=10",
        "batch_size=128",
        "model.hidden=[120,84]",
    ]
    overrides = merge_overrides(base, args.overrides)
    print(machine_header("bench.memory: replay storage and RSS over a long run"))
    print(f"# dqn-train {' '.join(overrides)}")
    for line in dtype_check():
        print(line)

    training_log = logging.getLogger("dqn_cli.training")
    captured, level = Captured(), training_log.level
    training_log.addHandler(captured)
    training_log.setLevel(logging.INFO)
    sampler = RssSampler()
    start = rss_bytes()
    try:
        train_in_process(overrides, sampler)
    finally:
        training_log.removeHandler(captured)
        training_log.setLevel(level)
    replay = [m for m in captured.messages if "replay" in m and "MiB" in m]
    print(f"# train() logged: {replay[0] if replay else 'no replay size line (was it removed?)'}")

    samples = sampler.samples
    warm = next((i for i, (step, _) in enumerate(samples) if step > args.capacity), None)
    if warm is None or warm >= len(samples) - 1:
        print("# run too short: the buffer never filled with reports to spare; raise --steps")
        return 1
    warm_rss = samples[warm][1]
    picks = sorted({0, warm, len(samples) - 1, *range(0, len(samples), max(len(samples) // 8, 1))})
    rows: list[list[object]] = [
        ["before train()", "-", fmt(start / MIB), fmt((start - warm_rss) / MIB)]
    ]
    for i in picks:
        step, rss = samples[i]
        label = (
            "buffer full (warm-up done)" if i == warm else "end" if i == len(samples) - 1 else ""
        )
        rows.append([label, f"{step:,}", fmt(rss / MIB), fmt((rss - warm_rss) / MIB)])
    print_table(["point", "env step", "RSS MiB", "vs warm-up MiB"], rows)
    end_step, end_rss = samples[-1]
    growth = (end_rss - warm_rss) / MIB
    per_100k = growth / max(end_step - samples[warm][0], 1) * 100_000
    flat = "yes" if growth <= args.tolerance_mib else "NO"
    print(
        f"# after warm-up: {growth:+.1f} MiB over {end_step - samples[warm][0]:,} env steps "
        f"({per_100k:+.2f} MiB per 100k steps); flat within {args.tolerance_mib:g} MiB: {flat}; "
        f"peak RSS {peak_rss_bytes() / MIB:,.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
