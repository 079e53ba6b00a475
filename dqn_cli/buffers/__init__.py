"""Replay memory: storage (where data lives) plus a sampler (what to read).

The sum tree lives in ``dqn_cli.buffers.sum_tree`` and is not imported here: it pulls in
numba (~0.3 s of start-up), which only prioritized replay needs.
"""

from dqn_cli.buffers.frame_store import FrameStackStorage
from dqn_cli.buffers.replay import (
    Batch,
    ReplayBuffer,
    make_replay_buffer,
    make_storage,
    storage_nbytes,
)
from dqn_cli.buffers.samplers import LatestSampler, PrioritizedSampler, UniformSampler
from dqn_cli.buffers.storage import TransitionStorage

__all__ = [
    "Batch",
    "FrameStackStorage",
    "LatestSampler",
    "PrioritizedSampler",
    "ReplayBuffer",
    "TransitionStorage",
    "UniformSampler",
    "make_replay_buffer",
    "make_storage",
    "storage_nbytes",
]
