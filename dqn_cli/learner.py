"""TD targets, the loss, and one gradient update of the online Q-network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dqn_cli.buffers.replay import Batch


@torch.no_grad()
def td_targets(
    rewards: torch.Tensor,
    next_obs: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    target_net: nn.Module,
    online_net: nn.Module | None = None,
) -> torch.Tensor:
    """r + gamma * (1 - terminated) * V(s').

    Only ``terminated`` stops the bootstrap: a time-limit truncation is not a terminal state of
    the MDP, so its successor still has value (Pardo et al. 2018, "Time Limits in RL").

    V(s') = max_a Q_target(s', a) for DQN. With ``online_net`` given, Double DQN
    (van Hasselt et al. 2016): the online net picks argmax_a Q_online(s', a) and the target net
    values it, which removes most of the max operator's overestimation.
    """
    next_q = target_net(next_obs)
    if online_net is None:
        next_value = next_q.max(dim=1).values
    else:
        next_actions = online_net(next_obs).argmax(dim=1, keepdim=True)
        next_value = next_q.gather(1, next_actions).squeeze(1)
    return rewards + gamma * (1.0 - terminated) * next_value


@dataclass(frozen=True)
class UpdateResult:
    loss: torch.Tensor  # scalar, weighted mean over the batch
    mean_q: torch.Tensor  # scalar, mean Q(s, a) of the batch
    td_errors: torch.Tensor  # per sample, for priority updates


class DQNLearner:
    """Owns the online/target networks and the optimizer; performs gradient updates.

    ``target_net`` may be the online net itself (``target=none``): targets then move with every
    update, the unstable setting the target network was invented to fix.
    """

    def __init__(
        self,
        online_net: nn.Module,
        target_net: nn.Module,
        optimizer: torch.optim.Optimizer,
        gamma: float,
        double_q: bool,
        loss: str,
        max_grad_norm: float | None,
    ) -> None:
        if loss not in ("huber", "mse"):
            raise ValueError(f"unknown loss {loss!r}; valid: huber, mse")
        self.online_net = online_net
        self.target_net = target_net
        self.optimizer = optimizer
        self.gamma = gamma
        self.double_q = double_q
        self.loss = loss
        self.max_grad_norm = max_grad_norm

    def update(self, batch: Batch) -> UpdateResult:
        targets = td_targets(
            batch.rewards,
            batch.next_obs,
            batch.terminated,
            self.gamma,
            self.target_net,
            self.online_net if self.double_q else None,
        )
        q = self.online_net(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        if self.loss == "huber":
            per_sample = F.smooth_l1_loss(q, targets, reduction="none")
        else:
            per_sample = F.mse_loss(q, targets, reduction="none")
        # Importance weights (prioritized replay) scale each sample's loss; 1 for uniform.
        loss = (per_sample * batch.weights).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.online_net.parameters(), self.max_grad_norm)
        self.optimizer.step()
        q = q.detach()
        return UpdateResult(loss=loss.detach(), mean_q=q.mean(), td_errors=targets - q)
