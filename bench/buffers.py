"""Micro-benchmarks of the replay buffers through their public API, against a naive O(N) PER.

    .venv/bin/python -m bench.buffers [--capacities 10000 100000 1000000] [--budget 0.3]

For each capacity the buffers are filled to capacity (CartPole-sized transitions: 4 float32
observations), PER priorities are spread out with random TD errors, and then timed: adding one
transition (what the training loop does per env step with one env; once more with its share of
any work the buffer defers to the next sample, e.g. a lazy sum-tree write), a uniform
sample(128), a prioritized sample(64) plus update_priorities(64), and the same for the naive
buffer below.
Results are medians of ``--repeats`` timed loops, in microseconds per call.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import (
    extra_seconds_per_call,
    fmt,
    machine_header,
    print_table,
    seconds_per_call,
    verdict,
)
from dqn_cli.buffers import ReplayBuffer, TransitionStorage, make_replay_buffer
from dqn_cli.buffers.storage import LiveSlots

OBS_SHAPE = (4,)
OBS_DTYPE = np.dtype(np.float32)
ADD_TARGET_US = 10.0
PER_TARGET_US = 100.0
ADDS_PER_ROUND = 10  # env steps per training round in CleanRL's CartPole settings


class NaivePrioritizedSampler:
    """The textbook prioritized replay that costs O(N) per call: the baseline to beat.

    Plugged into our own ``ReplayBuffer`` (same storage, same batches), so only the
    prioritisation differs: a new transition takes the maximum priority found by scanning every
    stored one, and every sample raises all priorities to alpha, normalises them into
    probabilities and draws with ``choice(p=...)``, which builds a cumulative sum over all N.
    """

    def __init__(self, capacity: int, alpha: float = 0.6, eps: float = 1e-6) -> None:
        self.alpha, self.eps = alpha, eps
        self.priorities = np.zeros(capacity, dtype=np.float64)  # raw |TD error| + eps
        self.size = 0

    def on_add(self, slots: slice | np.ndarray) -> None:
        added = slots.stop - slots.start if isinstance(slots, slice) else len(slots)
        self.priorities[slots] = self.priorities[: self.size].max() if self.size else 1.0
        self.size = min(self.size + added, len(self.priorities))

    def on_evict(self, slots: np.ndarray) -> None:
        pass  # TransitionStorage only overwrites

    def sample(
        self,
        batch_size: int,
        live: LiveSlots,
        newest: np.ndarray,
        rng: np.random.Generator,
        beta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        size = live.size  # TransitionStorage: the live slots are 0..size-1
        scaled = self.priorities[:size] ** self.alpha
        probs = scaled / scaled.sum()
        slots = rng.choice(size, batch_size, p=probs)
        weights = (size * probs[slots]) ** (-beta)
        return slots, (weights / weights.max()).astype(np.float32)

    def update_priorities(self, slots: np.ndarray, td_errors: torch.Tensor) -> None:
        self.priorities[slots] = td_errors.abs().numpy() + self.eps

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def naive_prioritized_buffer(capacity: int, rng: np.random.Generator) -> ReplayBuffer:
    storage = TransitionStorage(capacity, OBS_SHAPE, OBS_DTYPE)
    return ReplayBuffer(storage, NaivePrioritizedSampler(capacity), rng, torch.device("cpu"))


def transitions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` transitions with the dtypes the training loop passes (as a vector env returns them)."""
    obs = rng.standard_normal((n, *OBS_SHAPE)).astype(OBS_DTYPE)
    next_obs = rng.standard_normal((n, *OBS_SHAPE)).astype(OBS_DTYPE)
    actions = rng.integers(0, 2, size=n)
    rewards = np.ones(n)
    terminated = rng.random(n) < 0.01
    discounts = np.full(n, 0.99, dtype=np.float32)
    return obs, actions, rewards, next_obs, terminated, discounts


def fill(
    buffer: ReplayBuffer, capacity: int, rng: np.random.Generator, chunk: int = 50_000
) -> None:
    """Fill to capacity in large batches (not what is timed) and spread the priorities."""
    for start in range(0, capacity, chunk):
        n = min(chunk, capacity - start)
        buffer.add(*transitions(n, rng))
        # Random |TD errors| so the priorities are not all equal (a flat tree would flatter any
        # sampler; uniform ignores them); slots are start..start+n-1 as filling begins at 0.
        slots = np.arange(start, start + n)
        buffer.update_priorities(
            slots, torch.from_numpy(rng.exponential(1.0, n).astype(np.float32))
        )


def measure(capacity: int, budget_s: float, repeats: int) -> list[list[object]]:
    rng = np.random.default_rng(0)
    cpu = torch.device("cpu")
    uniform = make_replay_buffer("uniform", capacity, OBS_SHAPE, OBS_DTYPE, rng, cpu)
    per = make_replay_buffer("per", capacity, OBS_SHAPE, OBS_DTYPE, rng, cpu)
    naive = naive_prioritized_buffer(capacity, rng)
    for buffer in (uniform, per, naive):
        fill(buffer, capacity, rng)
    one = transitions(1, rng)
    td_errors = torch.from_numpy(rng.exponential(1.0, 64).astype(np.float32))
    storage = uniform.storage  # the floor: indexing the preallocated arrays, nothing else
    assert isinstance(storage, TransitionStorage)

    def floor_sample() -> object:
        slots = rng.integers(0, capacity, size=128)
        return (
            storage.obs[slots],
            storage.actions[slots],
            storage.rewards[slots],
            storage.next_obs[slots],
            storage.terminated[slots],
        )

    def per_round() -> None:
        batch = per.sample(64, 0.4)
        per.update_priorities(batch.slots, td_errors)

    def naive_round() -> None:
        batch = naive.sample(64, 0.4)
        naive.update_priorities(batch.slots, td_errors)

    def us(fn: Callable[[], object]) -> float:
        return seconds_per_call(fn, budget_s, repeats) * 1e6

    add_uniform, add_per, add_naive = (
        us(functools.partial(b.add, *one)) for b in (uniform, per, naive)
    )
    sample_uniform = us(lambda: uniform.sample(128))
    floor = us(floor_sample)
    per_us, naive_us = us(per_round), us(naive_round)

    # A buffer may defer part of an add (e.g. the sum-tree write) to the next sample or update,
    # which the add-alone timing then misses: charge it back by timing ADDS_PER_ROUND adds plus
    # one round against the round alone, loop for loop.
    def adds_then_round() -> None:
        for _ in range(ADDS_PER_ROUND):
            per.add(*one)
        per_round()

    extra = extra_seconds_per_call(adds_then_round, per_round, budget_s, repeats)
    add_per_full = extra * 1e6 / ADDS_PER_ROUND

    def row(
        operation: str, ours: float, naive_: float = float("nan"), target: float = 0.0
    ) -> list[object]:
        vs = ratio(naive_, ours) if naive_ == naive_ else ""
        cell = f"<= {target:g}" if target else ""
        met = verdict(ours, target) if target else ""
        return [f"{capacity:,}", operation, fmt(ours), fmt(naive_) if vs else "", vs, cell, met]

    return [
        row("add 1 transition, uniform", add_uniform, target=ADD_TARGET_US),
        row("add 1 transition, per", add_per, add_naive, ADD_TARGET_US),
        row(
            f"add 1, per, + deferred work ({ADDS_PER_ROUND}/round)",
            add_per_full,
            add_naive,
            ADD_TARGET_US,
        ),
        row("sample 128, uniform", sample_uniform),
        row("sample 128, numpy floor (index 5 arrays)", floor),
        row("per sample 64 + update 64", per_us, naive_us, PER_TARGET_US),
    ]


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:,.1f}x" if fast > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacities", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops per measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in training (torch_threads=1)
    print(machine_header("bench.buffers: replay buffer micro-benchmarks, us per call (median)"))
    print(
        f"# buffers filled to capacity, obs {OBS_SHAPE} {OBS_DTYPE}, PER alpha 0.6 beta 0.4; "
        f"naive = O(N) textbook PER (bench/buffers.py); targets from the issue apply at 1M"
    )
    rows: list[list[object]] = []
    for capacity in args.capacities:
        rows += measure(capacity, args.budget, args.repeats)
    print_table(
        ["capacity", "operation", "ours us", "naive us", "naive/ours", "target us", "meets"], rows
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
