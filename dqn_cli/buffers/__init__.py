"""Replay memory: storage (where data lives) plus a sampler (what to read)."""

from dqn_cli.buffers.replay import Batch, ReplayBuffer, make_replay_buffer
from dqn_cli.buffers.samplers import LatestSampler, PrioritizedSampler, UniformSampler
from dqn_cli.buffers.storage import TransitionStorage
from dqn_cli.buffers.sum_tree import SumTree

__all__ = [
    "Batch",
    "LatestSampler",
    "PrioritizedSampler",
    "ReplayBuffer",
    "SumTree",
    "TransitionStorage",
    "UniformSampler",
    "make_replay_buffer",
]
