"""One gradient update: dqn-cli's learners vs the textbook autograd + torch.optim.Adam update.

    .venv/bin/python -m bench.update_cost [--budget 1.0] [--repeats 5]

Both sides start from the same weights and train on the same fixed batch in one process, one
torch thread, timed in alternating loops. The textbook side is what CleanRL's and
Stable-Baselines3's DQN do per update: nn.Sequential forward, loss, ``backward()``, optional
``clip_grad_norm_``, ``torch.optim.Adam.step()`` (default implementation, as they construct
it). "ours" is the learner ``learner=auto`` picks: the explicit-gradient one for the MLPs, the
autograd one for the Nature CNN (batch 32 of 4x84x84 frames). The learners' own equality is
tested in tests/test_learner.py, not here.
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
from dqn_cli.env_spec import EnvSpec
from dqn_cli.learner import TDLoss, make_learner
from dqn_cli.networks import QNetwork, build_q_network

MLP, NATURE = "dqn_cli.networks.MLP", "dqn_cli.networks.NatureCNN"
# (label, model, model args, env spec, batch size, loss, max_grad_norm)
CASES = [
    ("CleanRL scenario", MLP, {"hidden": [120, 84]}, EnvSpec((4,), "float32", 2), 128, "mse", None),
    (
        "CartPole preset",
        MLP,
        {"hidden": [128, 128]},
        EnvSpec((4,), "float32", 2),
        64,
        "huber",
        10.0,
    ),
    (
        "RL-Zoo3 scenario",
        MLP,
        {"hidden": [256, 256]},
        EnvSpec((4,), "float32", 2),
        64,
        "huber",
        10.0,
    ),
    ("Atari nature_cnn", NATURE, {}, EnvSpec((4, 84, 84), "uint8", 6), 32, "huber", 10.0),
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
        y = batch.rewards + batch.discounts * (1 - batch.terminated) * next_value
    q = online(batch.obs).gather(1, batch.actions[:, None])[:, 0]
    loss_fn = F.mse_loss if loss == "mse" else F.smooth_l1_loss
    per_sample = loss_fn(q, y, reduction="none")
    optimizer.zero_grad()
    (per_sample * batch.weights).mean().backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(online.parameters(), max_grad_norm)
    optimizer.step()


def autograd_copy(net: QNetwork) -> nn.Module:
    """The same weights (copied) in a plain module that autograd tracks."""
    return copy.deepcopy(net).requires_grad_(True)


def random_batch(spec: EnvSpec, batch_size: int, seed: int) -> Batch:
    """Random transitions, ~30% terminal, importance weights in [0, 1) as prioritized replay
    gives them; uint8 frames for pixel specs."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, *spec.obs_shape)
    if spec.obs_dtype == "uint8":
        obs = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        next_obs = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    else:
        obs, next_obs = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    return Batch(
        obs=obs,
        actions=torch.randint(0, spec.n_actions, (batch_size,), generator=g),
        rewards=torch.randn(batch_size, generator=g),
        next_obs=next_obs,
        terminated=(torch.rand(batch_size, generator=g) < 0.3).float(),
        discounts=torch.full((batch_size,), 0.99),
        weights=torch.rand(batch_size, generator=g),
        slots=np.arange(batch_size),
    )


def update_functions(
    model: str, args: dict, spec: EnvSpec, batch_size: int, loss: str, max_grad_norm: float | None
) -> tuple[str, Callable[[], object], Callable[[], object]]:
    """(learner name, ours, textbook): zero-argument callables doing one update each."""
    torch.manual_seed(0)
    online = build_q_network(model, "linear", args, spec)
    target = build_q_network(model, "linear", args, spec)
    ref_online, ref_target = autograd_copy(online), autograd_copy(target)
    learner = make_learner(
        "auto",
        online,
        target,
        torch.device("cpu"),
        TDLoss(double_q=False, kind=loss, max_grad_norm=max_grad_norm),
        lr=1e-4,
        adam_eps=1e-8,
    )
    ref_optimizer = torch.optim.Adam(ref_online.parameters(), lr=1e-4)
    batch = random_batch(spec, batch_size, seed=1)

    def ours() -> object:
        return learner.update(batch)

    def textbook() -> None:
        autograd_update(
            ref_online, ref_target, ref_optimizer, batch, 0.99, False, loss, max_grad_norm
        )

    return learner.name, ours, textbook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per timed side")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(machine_header("bench.update_cost: one gradient update, us (median)"))
    rows = []
    for label, model, model_args, spec, batch_size, loss, clip in CASES:
        name, ours, textbook = update_functions(model, model_args, spec, batch_size, loss, clip)
        times: dict[str, list[float]] = {"ours": [], "textbook": []}
        for _ in range(args.repeats):  # alternate: drift of a shared machine hits both sides
            times["ours"].append(seconds_per_call(ours, args.budget / args.repeats, 3))
            times["textbook"].append(seconds_per_call(textbook, args.budget / args.repeats, 3))
        ours_us, textbook_us = (float(np.median(times[k])) * 1e6 for k in ("ours", "textbook"))
        clip_text = "none" if clip is None else fmt(clip, 0)
        shape = "-".join(map(str, model_args.get("hidden", spec.obs_shape)))
        setting = f"{shape}, batch {batch_size}, {loss}, clip {clip_text}, ours: {name}"
        ratio = f"{ours_us / textbook_us:.2f}"
        rows.append([label, setting, fmt(textbook_us), fmt(ours_us), ratio])
    print_table(["setting", "update", "autograd + torch Adam us", "dqn-cli us", "ratio"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
