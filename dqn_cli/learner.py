"""TD targets, the loss and its gradient, and one update of the online Q-network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dqn_cli.buffers.replay import Batch
from dqn_cli.networks import QNetwork
from dqn_cli.optim import Adam, clip_grad_norm


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

    The nets are QNetworks, whose parameters do not require grad: the targets carry no graph.
    """
    next_q = target_net(next_obs)
    if online_net is None:
        next_value = next_q.amax(dim=1)
    else:
        next_actions = online_net(next_obs).argmax(dim=1, keepdim=True)
        next_value = next_q.gather(1, next_actions).squeeze(1)
    return torch.addcmul(rewards, 1.0 - terminated, next_value, value=gamma)


class UpdateResult:
    """What one update measured. ``loss`` and ``mean_q`` are computed when read: they are
    logged every ``log.every`` env steps, not after every update."""

    def __init__(
        self, q: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, loss_kind: str
    ) -> None:
        self._q, self._targets, self._weights, self._loss_kind = q, targets, weights, loss_kind
        self.td_errors = targets - q  # per sample, for priority updates

    @property
    def loss(self) -> torch.Tensor:
        """Scalar, the importance-weighted mean over the batch that the update minimised."""
        return (per_sample_loss(self._q, self._targets, self._loss_kind) * self._weights).mean()

    @property
    def mean_q(self) -> torch.Tensor:
        """Scalar, mean Q(s, a) of the batch before the update."""
        return self._q.mean()


def per_sample_loss(q: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """The TD loss of each sample, before importance weighting: ``huber`` or ``mse``."""
    if kind == "huber":
        return F.smooth_l1_loss(q, targets, reduction="none")
    return F.mse_loss(q, targets, reduction="none")


def per_sample_loss_gradient(td_errors: torch.Tensor, kind: str) -> torch.Tensor:
    """d loss / d q for each sample, with td_errors = targets - q."""
    if kind == "huber":  # smooth L1 with beta 1: quadratic inside [-1, 1], linear outside
        return td_errors.clamp(-1.0, 1.0).neg_()
    return td_errors.mul(-2.0)


class DQNLearner:
    """Owns the online/target networks and the optimizer; performs gradient updates.

    ``target_net`` may be the online net itself (``target=none``): targets then move with every
    update, the unstable setting the target network was invented to fix.

    The update computes the gradient of the weighted TD loss explicitly (see
    :meth:`QNetwork.backward`), which is what makes it cheap on CPU; tests hold it equal to
    autograd with ``torch.optim.Adam``.
    """

    def __init__(
        self,
        online_net: QNetwork,
        target_net: QNetwork,
        optimizer: Adam,
        gamma: float,
        double_q: bool,
        loss: str,
        max_grad_norm: float | None,
    ) -> None:
        if loss not in ("huber", "mse"):
            raise ValueError(f"unknown loss {loss!r}; valid: huber, mse")
        # backward() writes gradients by position: the optimizer must hold exactly the online
        # net's parameters, in parameters() order.
        if [id(p) for p in optimizer.params] != [id(p) for p in online_net.parameters()]:
            raise ValueError("optimizer must be built from list(online_net.parameters())")
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
        q_all, activations = self.online_net.forward_keeping_activations(batch.obs)
        actions = batch.actions.unsqueeze(1)
        result = UpdateResult(
            q_all.gather(1, actions).squeeze(1), targets, batch.weights, self.loss
        )
        # loss = mean_i(w_i * l(q_i - y_i)), so dloss/dq_i = w_i * l'(q_i - y_i) / batch size;
        # the Q-values of actions not taken get no gradient.
        grad_q = per_sample_loss_gradient(result.td_errors, self.loss)
        grad_q.mul_(batch.weights).div_(len(grad_q))
        grad_q_all = torch.zeros_like(q_all).scatter_(1, actions, grad_q.unsqueeze(1))
        self.online_net.backward(activations, grad_q_all, self.optimizer.grads)
        if self.max_grad_norm is not None:
            clip_grad_norm(self.optimizer.grads, self.max_grad_norm)
        self.optimizer.step()
        return result
