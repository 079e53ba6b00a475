"""Memory of an Atari-sized replay: each frame stored once vs the naive (obs, next_obs) store.

    .venv/bin/python -m bench.replay_memory [--capacity 1000000] [--quick] [--envs 1]
        [--compression none lz4 [--games Pong,Breakout,Seaquest,SpaceInvaders]]

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

``--compression lz4`` measures the lz4 frame store (buffer.frame_compression=lz4) instead, and
``--compression none lz4`` both, one after the other.
Random frames do not compress, so it first records real frames (``--frames-per-game`` from each
of ``--games``, random play through dqn-cli's Atari env) and fills with those, in a cycle
longer than the dedup window so that every pass stores them again, as new play would: the fill
and save above for the lz4 store, each game's bytes per frame, and the speed of the lz4 store
against the plain frame store, both at ``--speed-capacity``. No naive store. Both modes end
with issue #12's verdict: peak RSS of the filled replay process <= 7.2 GB (decimal).
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
# Issue #12: a filled 1M-transition Atari replay within this peak RSS (decimal bytes).
TARGET_PEAK_RSS = 7.2e9


def record_atari_frames(games: list[str], per_game: int, seed: int = 0) -> np.ndarray:
    """``per_game`` consecutive frames of random play of each game, (n, 84, 84) uint8, as the
    Atari env of dqn-train shows them (the newest frame of each stacked observation)."""
    from dqn_cli.config import EnvConfig
    from dqn_cli.envs import make_env

    rng = np.random.default_rng(seed)
    frames = []
    for game in games:
        env = make_env(EnvConfig(id=f"ALE/{game}-v5"))
        obs, _ = env.reset(seed=seed)
        for _ in range(per_game):
            frames.append(np.asarray(obs)[-1])
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                obs, _ = env.reset()
        env.close()
    return np.stack(frames)


def atari_like_transitions(
    num_envs: int, seed: int, frames: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless ReplayBuffer.add arguments: one vector-env step of ``num_envs`` rows each; new
    frames are random, or ``frames`` in a cycle."""
    rng = np.random.default_rng(seed)
    block: list[np.ndarray] = []

    def new_frames() -> np.ndarray:
        # Frames in blocks (generating one at a time costs more than storing it).
        if not block:
            if frames is None:
                block.extend(rng.integers(0, 256, (4096, *FRAME), dtype=np.uint8))
            else:
                block.extend(frames[::-1])  # popped from the end: in recorded order
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


def fill(storage: Any, count: int, num_envs: int, frames: np.ndarray | None = None) -> float:
    """Add ``count`` transitions; return the seconds spent inside ``add`` only."""
    spent, added = 0.0, 0
    for args in atari_like_transitions(num_envs, seed=0, frames=frames):
        start = time.perf_counter()
        storage.add(*args, 0.99)
        spent += time.perf_counter() - start
        added += num_envs
        if added >= count:
            return spent
    raise AssertionError("unreachable")


def load_frames(path: str) -> np.ndarray | None:
    """Recorded frames saved by the parent ('' for random frames)."""
    return np.load(path) if path else None


def child_fill(
    kind: str,
    capacity: int,
    num_envs: int,
    save: bool,
    compression: str = "none",
    frames_path: str = "",
) -> dict[str, Any]:
    from dqn_cli.buffers import make_storage, storage_nbytes

    frames = load_frames(frames_path)
    baseline = rss_bytes()  # interpreter, numpy, torch (imported by dqn_cli.buffers), frames
    stack = STACK if kind == "frames" else 1
    storage = make_storage(capacity, OBS_SHAPE, np.dtype(np.uint8), stack, compression)
    fill(storage, capacity, num_envs, frames)
    result: dict[str, Any] = {
        "baseline_rss": baseline,
        "filled_rss": rss_bytes(),
        "peak_rss": peak_rss_bytes(),
        "nbytes": storage.nbytes,
        "preallocated": storage_nbytes(capacity, OBS_SHAPE, np.dtype(np.uint8), stack, compression),
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


def child_speed(
    frame_capacity: int, naive_capacity: int, compression: str = "none", frames_path: str = ""
) -> dict[str, Any]:
    """add and sample of the frame store against the naive store, or with ``compression``
    against the plain frame store, both filled with the same frames."""
    import torch

    from dqn_cli.buffers import make_replay_buffer

    frames = load_frames(frames_path)
    stores = (
        [("frames", frame_capacity, STACK, "none"), ("naive", naive_capacity, 1, "none")]
        if compression == "none"
        else [
            (compression, frame_capacity, STACK, compression),
            ("frames", frame_capacity, STACK, "none"),
        ]
    )
    result: dict[str, Any] = {}
    for kind, capacity, stack, store_compression in stores:
        buffer = make_replay_buffer(
            "uniform",
            capacity,
            OBS_SHAPE,
            np.dtype(np.uint8),
            np.random.default_rng(0),
            torch.device("cpu"),
            frame_stack=stack,
            frame_compression=store_compression,
        )
        seconds = fill(buffer.storage, capacity, num_envs=1, frames=frames)
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


def verdict(peak_rss: float, what: str) -> str:
    met = "met" if peak_rss <= TARGET_PEAK_RSS else "missed"
    return (
        f"# issue #12 target, peak RSS <= {TARGET_PEAK_RSS / GB:.1f} GB: {met} by {what} "
        f"({peak_rss / GB:.3f} GB)"
    )


def report_speed(speed: dict[str, Any], fast: str, slow: str, args: argparse.Namespace) -> None:
    at = {"naive": args.naive_capacity}
    print(
        f"# speed: add 1 transition {speed[f'{fast}_add_us']:.1f} us ({slow} "
        f"{speed[f'{slow}_add_us']:.1f} us); sample 32 {speed[f'{fast}_sample_us']:.1f} us "
        f"({slow} {speed[f'{slow}_sample_us']:.1f} us); {fast} store at "
        f"{args.speed_capacity:,}, {slow} at {at.get(slow, args.speed_capacity):,}, same process"
    )


def report_fill(frames: dict[str, Any], capacity: int) -> None:
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


def main_plain(args: argparse.Namespace, capacity: int) -> None:
    """The plain frame store and the naive store, filled with random frames."""
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
    report_fill(frames, capacity)
    report_speed(speed, "frames", "naive", args)
    print(
        verdict(
            frames["peak_rss"], f"the plain frame store (frame_compression=none) at {capacity:,}"
        )
    )


def lz4_bytes_per_frame(frames: np.ndarray) -> float:
    """Mean lz4 block size of ``frames`` (as the lz4 frame store compresses them)."""
    import lz4.block

    return float(np.mean([len(lz4.block.compress(f, store_size=False)) for f in frames]))


def main_compressed(args: argparse.Namespace, capacity: int, compression: str) -> None:
    """The frame store with ``compression``, filled with recorded Atari frames."""
    from dqn_cli.buffers.frame_store import DEFAULT_WINDOW

    games = args.games.split(",")
    frames = record_atari_frames(games, args.frames_per_game)
    if len(frames) <= DEFAULT_WINDOW:
        print(
            f"# warning: the cycle of {len(frames)} frames fits in the dedup window "
            f"({DEFAULT_WINDOW}): each is stored once, not once per pass as in real play"
        )
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        path = os.path.join(directory, "frames.npy")
        np.save(path, frames)
        filled = run_child(
            "fill", "frames", str(capacity), str(args.envs), "save", compression, path
        )
        speed = run_child("speed", str(args.speed_capacity), "0", compression, path)

    floor = capacity * FRAME_BYTES
    stored = filled["frames"]  # the fill wraps no frame: the frame ring holds more
    grown = filled["nbytes"] - filled["preallocated"]
    rows: list[list[object]] = [
        [
            f"{compression} frame store: peak RSS",
            gb(filled["peak_rss"]),
            f"{filled['peak_rss'] / floor:.3f}",
        ],
        [
            "  minus RSS after imports (torch, recorded frames)",
            gb(filled["peak_rss"] - filled["baseline_rss"]),
            f"{(filled['peak_rss'] - filled['baseline_rss']) / floor:.3f}",
        ],
        ["  storage nbytes", gb(filled["nbytes"]), f"{filled['nbytes'] / floor:.3f}"],
        [
            "    preallocated (index, raw window)",
            gb(filled["preallocated"]),
            f"{filled['preallocated'] / floor:.3f}",
        ],
        ["    compressed frames (chunks of lz4 blocks)", gb(grown), f"{grown / floor:.3f}"],
        ["  RSS after imports", gb(filled["baseline_rss"]), "-"],
        ["floor: capacity x 84 x 84 bytes", gb(floor), "1.000"],
    ]
    print(
        f"# capacity {capacity:,} transitions, {args.envs} env(s), episodes of 200-399 steps; "
        f"frames: {len(frames):,} recorded ({args.frames_per_game:,} of random play each of "
        f"{', '.join(games)}), fed in a cycle"
    )
    print_table(["what", "bytes", "/ floor"], rows)
    print(
        f"# {compression}: {grown / stored:,.0f} bytes per stored frame in the chunks "
        f"({FRAME_BYTES / (grown / stored):.1f}x less than {FRAME_BYTES}); per game, lz4 block "
        "bytes per frame and the ratio: "
        + "; ".join(
            f"{game} {size:,.0f} ({FRAME_BYTES / size:.1f}x)"
            for game, size in (
                (game, lz4_bytes_per_frame(part))
                for game, part in zip(games, np.split(frames, len(games)), strict=True)
            )
        )
    )
    report_fill(filled, capacity)
    report_speed(speed, compression, "frames", args)
    print(
        verdict(
            filled["peak_rss"],
            f"the {compression} frame store (env=atari's default) at {capacity:,}",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="transitions")
    parser.add_argument("--quick", action="store_true", help="capacity 100k")
    parser.add_argument("--envs", type=int, default=1, help="vector envs writing rows")
    parser.add_argument("--naive-capacity", type=int, default=20_000, help="naive store size")
    parser.add_argument("--speed-capacity", type=int, default=100_000, help="frame store size")
    parser.add_argument(
        "--compression",
        nargs="+",
        choices=("none", "lz4"),
        default=["none"],
        help="frame store compressions to measure, in turn",
    )
    parser.add_argument(
        "--games", default="Pong,Breakout,Seaquest,SpaceInvaders", help="recorded (lz4 only)"
    )
    parser.add_argument("--frames-per-game", type=int, default=2500, help="recorded (lz4 only)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        what, *rest = args.child
        if what == "fill":
            kind, capacity, envs, save, *compressed = rest
            out = child_fill(kind, int(capacity), int(envs), save == "save", *compressed)
        else:
            out = child_speed(int(rest[0]), int(rest[1]), *rest[2:])
        print(json.dumps(out))
        return 0

    capacity = 100_000 if args.quick else args.capacity
    print(machine_header("bench.replay_memory: a (4, 84, 84) uint8 replay filled to capacity"))
    for compression in args.compression:
        print(f"# frame_compression={compression}")
        if compression == "none":
            main_plain(args, capacity)
        else:
            main_compressed(args, capacity, compression)
    return 0


if __name__ == "__main__":
    sys.exit(main())
