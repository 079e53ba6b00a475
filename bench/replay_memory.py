"""Memory of an Atari-sized replay: each frame stored once vs the naive (obs, next_obs) store.

    .venv/bin/python -m bench.replay_memory [--capacity 1000000] [--quick] [--envs 1]

Each measurement runs in a fresh subprocess, so one's pages never count in another's RSS:

- fill: a (4, 84, 84) uint8 replay filled to capacity with random frames shifted through a
  stack, episodes of 200-400 steps from ``--envs`` envs (reset stacks repeat the first frame);
  peak RSS, the RSS after imports (torch alone is ~0.22 GB), the storage's own nbytes, and
  the floor of ``capacity`` distinct 84x84 frames.
- save: that replay's state_dict written with torch.save into a file on /tmp (deleted after):
  seconds, file size, and the peak RSS before and during the save (it must not double).
- naive: the same fill into TransitionStorage at ``--naive-capacity``, scaled to ``capacity``
  (the real thing would need 56 GB).
- speed: microseconds per add of one transition and per sample of 32, frame store at
  ``--speed-capacity`` and naive store at ``--naive-capacity`` in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from bench.common import machine_header, print_table
from bench.memory import peak_rss_bytes, rss_bytes

STACK, FRAME = 4, (84, 84)
OBS_SHAPE = (STACK, *FRAME)
FRAME_BYTES = FRAME[0] * FRAME[1]
GB, GIB = 1e9, 2**30


def atari_like_transitions(num_envs: int, seed: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless ReplayBuffer.add arguments: one vector-env step of ``num_envs`` rows each."""
    rng = np.random.default_rng(seed)
    block: list[np.ndarray] = []

    def new_frames() -> np.ndarray:
        # Random frames in blocks (generating one at a time costs more than storing it).
        if not block:
            block.extend(rng.integers(0, 256, (4096, *FRAME), dtype=np.uint8))
        return np.stack([block.pop() for _ in range(num_envs)])

    def reset_stack(first: np.ndarray) -> np.ndarray:
        return np.repeat(first[None], STACK, axis=0)

    stacks = np.stack([reset_stack(f) for f in new_frames()])
    steps_left = rng.integers(200, 400, num_envs)
    actions = np.zeros(num_envs, dtype=np.int64)
    while True:
        next_obs = np.concatenate([stacks[:, 1:], new_frames()[:, None]], axis=1)
        steps_left -= 1
        ended = steps_left == 0
        yield stacks, actions, rng.normal(size=num_envs), next_obs, ended.astype(np.float32)
        stacks = next_obs.copy()
        for env in np.flatnonzero(ended):
            stacks[env] = reset_stack(new_frames()[0])
            steps_left[env] = rng.integers(200, 400)


def fill(storage: Any, count: int, num_envs: int) -> float:
    """Add ``count`` transitions; return the seconds spent inside ``add`` only."""
    spent, added = 0.0, 0
    for args in atari_like_transitions(num_envs, seed=0):
        start = time.perf_counter()
        storage.add(*args, 0.99)
        spent += time.perf_counter() - start
        added += num_envs
        if added >= count:
            return spent
    raise AssertionError("unreachable")


def child_fill(kind: str, capacity: int, num_envs: int, save: bool) -> dict[str, Any]:
    from dqn_cli.buffers import make_storage

    baseline = rss_bytes()  # interpreter, numpy and torch (imported by dqn_cli.buffers)
    storage = make_storage(
        capacity, OBS_SHAPE, np.dtype(np.uint8), STACK if kind == "frames" else 1
    )
    fill(storage, capacity, num_envs)
    result: dict[str, Any] = {
        "baseline_rss": baseline,
        "filled_rss": rss_bytes(),
        "peak_rss": peak_rss_bytes(),
        "nbytes": storage.nbytes,
        "size": storage.size,
        "frames": getattr(storage, "frame_count", None),
    }
    if save:
        import torch

        with tempfile.TemporaryDirectory(dir="/tmp") as directory:
            path = os.path.join(directory, "replay.pt")
            start = time.perf_counter()
            with open(path, "wb") as f:
                torch.save({"replay": storage.state_dict()}, f)
                f.flush()
                os.fsync(f.fileno())
            result["save_seconds"] = time.perf_counter() - start
            result["file_bytes"] = os.path.getsize(path)
        result["peak_rss_after_save"] = peak_rss_bytes()
    return result


def per_call_us(call: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


def child_speed(frame_capacity: int, naive_capacity: int) -> dict[str, Any]:
    import torch

    from dqn_cli.buffers import make_replay_buffer

    result: dict[str, Any] = {}
    for kind, capacity, stack in (
        ("frames", frame_capacity, STACK),
        ("naive", naive_capacity, 1),
    ):
        buffer = make_replay_buffer(
            "uniform",
            capacity,
            OBS_SHAPE,
            np.dtype(np.uint8),
            np.random.default_rng(0),
            torch.device("cpu"),
            frame_stack=stack,
        )
        seconds = fill(buffer.storage, capacity, num_envs=1)
        result[f"{kind}_add_us"] = seconds / capacity * 1e6
        result[f"{kind}_sample_us"] = per_call_us(partial(buffer.sample, 32), 2000)
        del buffer
    return result


def run_child(*args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.replay_memory", "--child", *args]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def gb(value: float) -> str:
    return f"{value / GB:.3f} GB ({value / GIB:.3f} GiB)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="transitions")
    parser.add_argument("--quick", action="store_true", help="capacity 100k")
    parser.add_argument("--envs", type=int, default=1, help="vector envs writing rows")
    parser.add_argument("--naive-capacity", type=int, default=20_000, help="naive store size")
    parser.add_argument("--speed-capacity", type=int, default=100_000, help="frame store size")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        what, *rest = args.child
        if what == "fill":
            kind, capacity, envs, save = rest
            out = child_fill(kind, int(capacity), int(envs), save == "save")
        else:
            out = child_speed(int(rest[0]), int(rest[1]))
        print(json.dumps(out))
        return 0

    capacity = 100_000 if args.quick else args.capacity
    print(machine_header("bench.replay_memory: a (4, 84, 84) uint8 replay filled to capacity"))
    frames = run_child("fill", "frames", str(capacity), str(args.envs), "save")
    naive = run_child("fill", "naive", str(args.naive_capacity), str(args.envs), "nosave")
    speed = run_child("speed", str(args.speed_capacity), str(args.naive_capacity))

    floor = capacity * FRAME_BYTES
    naive_scale = capacity / args.naive_capacity
    naive_grown = (naive["peak_rss"] - naive["baseline_rss"]) * naive_scale
    naive_peak = naive["baseline_rss"] + naive_grown
    rows: list[list[object]] = [
        ["frame store: peak RSS", gb(frames["peak_rss"]), f"{frames['peak_rss'] / floor:.3f}"],
        [
            "  minus RSS after imports (torch)",
            gb(frames["peak_rss"] - frames["baseline_rss"]),
            f"{(frames['peak_rss'] - frames['baseline_rss']) / floor:.3f}",
        ],
        ["  storage nbytes", gb(frames["nbytes"]), f"{frames['nbytes'] / floor:.3f}"],
        ["  RSS after imports", gb(frames["baseline_rss"]), "-"],
        [
            f"naive store, scaled from {args.naive_capacity:,}",
            gb(naive_peak),
            f"{naive_peak / floor:.2f}",
        ],
        ["floor: capacity x 84 x 84 bytes", gb(floor), "1.000"],
    ]
    print(f"# capacity {capacity:,} transitions, {args.envs} env(s), episodes of 200-399 steps")
    print_table(["what", "bytes", "/ floor"], rows)
    print(
        f"# frame store: {frames['size']:,} live transitions, {frames['frames']:,} frames written "
        f"({frames['frames'] / capacity:.4f} per transition); peak RSS in bytes: "
        f"{frames['peak_rss']}"
    )
    print(
        f"# checkpoint: torch.save of the state_dict took {frames['save_seconds']:.1f} s, "
        f"file {gb(frames['file_bytes'])}; peak RSS {gb(frames['peak_rss'])} before the save, "
        f"{gb(frames['peak_rss_after_save'])} after it"
    )
    print(
        f"# speed: add 1 transition {speed['frames_add_us']:.1f} us (naive "
        f"{speed['naive_add_us']:.1f} us); sample 32 {speed['frames_sample_us']:.1f} us (naive "
        f"{speed['naive_sample_us']:.1f} us); frame store at {args.speed_capacity:,}, naive at "
        f"{args.naive_capacity:,}, same process"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
