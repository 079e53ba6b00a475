"""One gradient update: dqn-cli's DQNLearner vs the textbook autograd + torch.optim.Adam update.

    .venv/bin/python -m bench.update_cost [--budget 1.0] [--repeats 5]

Both sides start from the same weights and train on the same fixed batch in one process, one
torch thread, timed in alternating loops. The textbook side is what CleanRL's and
Stable-Baselines3's DQN do per update: nn.Sequential forward, loss, ``backward()``, optional
``clip_grad_norm_``, ``torch.optim.Adam.step()`` (default implementation, as they construct
it). :func:`autograd_update` is also the oracle tests/test_learner.py holds DQNLearner equal to.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.common import fmt, machine_header, print_table, seconds_per_call
from dqn_cli.buffers.replay import Batch
from dqn_cli.learner import DQNLearner
from dqn_cli.networks import EnvSpec, QNetwork
from dqn_cli.optim import Adam

# (label, hidden widths, batch size, loss, max_grad_norm)
CASES = [
    ("CleanRL scenario", (120, 84), 128, "mse", None),
    ("CartPole preset", (128, 128), 64, "huber", 10.0),
    ("RL-Zoo3 scenario", (256, 256), 64, "huber", 10.0),
]


def autograd_update(
    online: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    gamma: float,
    double_q: bool,
    loss: str,
    max_grad_norm: float | None,
) -> None:
    """The DQN update written the usual way, with autograd and a torch optimizer."""
    with torch.no_grad():
        next_q = target(batch.next_obs)
        if double_q:
            next_value = next_q.gather(1, online(batch.next_obs).argmax(1, keepdim=True))[:, 0]
        else:
            next_value = next_q.max(1).values
        y = batch.rewards + gamma * (1 - batch.terminated) * next_value
    q = online(batch.obs).gather(1, batch.actions[:, None])[:, 0]
    loss_fn = F.mse_loss if loss == "mse" else F.smooth_l1_loss
    per_sample = loss_fn(q, y, reduction="none")
    optimizer.zero_grad()
    (per_sample * batch.weights).mean().backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(online.parameters(), max_grad_norm)
    optimizer.step()


def autograd_copy(net: QNetwork) -> nn.Sequential:
    """The same weights (copied) in a plain nn.Sequential that autograd tracks."""
    return copy.deepcopy(net.layers).requires_grad_(True)


def random_batch(batch_size: int, obs_dim: int, n_actions: int, seed: int) -> Batch:
    """Random transitions, ~30% terminal, importance weights in [0, 1) as prioritized replay
    gives them."""
    generator = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(batch_size, obs_dim, generator=generator),
        actions=torch.randint(0, n_actions, (batch_size,), generator=generator),
        rewards=torch.randn(batch_size, generator=generator),
        next_obs=torch.randn(batch_size, obs_dim, generator=generator),
        terminated=(torch.rand(batch_size, generator=generator) < 0.3).float(),
        weights=torch.rand(batch_size, generator=generator),
        slots=np.arange(batch_size),
    )


def update_functions(
    hidden: tuple[int, ...], batch_size: int, loss: str, max_grad_norm: float | None
) -> tuple[Callable[[], object], Callable[[], object]]:
    """(ours, textbook): zero-argument callables doing one update each on CartPole shapes."""
    torch.manual_seed(0)
    spec = EnvSpec((4,), "float32", 2)
    online, target = QNetwork(spec, hidden), QNetwork(spec, hidden)
    learner = DQNLearner(
        online, target, Adam(list(online.parameters()), lr=1e-4), 0.99, False, loss, max_grad_norm
    )
    ref_online, ref_target = autograd_copy(online), autograd_copy(target)
    ref_optimizer = torch.optim.Adam(ref_online.parameters(), lr=1e-4)
    batch = random_batch(batch_size, 4, 2, seed=1)

    def ours() -> object:
        return learner.update(batch)

    def textbook() -> None:
        autograd_update(
            ref_online, ref_target, ref_optimizer, batch, 0.99, False, loss, max_grad_norm
        )

    return ours, textbook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per timed side")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(machine_header("bench.update_cost: one gradient update, us (median)"))
    rows = []
    for label, hidden, batch_size, loss, clip in CASES:
        ours, textbook = update_functions(hidden, batch_size, loss, clip)
        times: dict[str, list[float]] = {"ours": [], "textbook": []}
        for _ in range(args.repeats):  # alternate: drift of a shared machine hits both sides
            times["ours"].append(seconds_per_call(ours, args.budget / args.repeats, 3))
            times["textbook"].append(seconds_per_call(textbook, args.budget / args.repeats, 3))
        ours_us, textbook_us = (float(np.median(times[k])) * 1e6 for k in ("ours", "textbook"))
        clip_text = "none" if clip is None else fmt(clip, 0)
        setting = f"{'-'.join(map(str, hidden))}, batch {batch_size}, {loss}, clip {clip_text}"
        ratio = f"{ours_us / textbook_us:.2f}"
        rows.append([label, setting, fmt(textbook_us), fmt(ours_us), ratio])
    print_table(["setting", "update", "autograd + torch Adam us", "dqn-cli us", "ratio"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
