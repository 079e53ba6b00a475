"""TD targets, the loss, and the learners: one interface, "take a batch, update, report TD
errors", with two implementations.

- :class:`AutogradLearner` trains any ``torch.nn.Module`` with autograd and torch's fused Adam
  kernel (dqn_cli/optim.py). New methods are written against it first.
- :class:`~dqn_cli.fast_learner.ExplicitGradientLearner` computes the gradient of a plain MLP
  by hand and steps torch's fused Adam kernel directly: several times cheaper per update for
  the small MLPs of vector-observation envs on CPU. Tests hold it equal to the autograd one.

:func:`make_learner` picks one (``learner=auto|autograd|fast``). Both keep their optimizer state
in the same plain form (:func:`dqn_cli.optim.adam_state`), so a checkpoint written by one
resumes with the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dqn_cli.buffers.replay import Batch
from dqn_cli.config import ConfigError
from dqn_cli.networks import QNetwork, plain_mlp
from dqn_cli.optim import Adam, AdamState, clip_grad_norm

log = logging.getLogger(__name__)


def td_targets(
    rewards: torch.Tensor,
    next_obs: torch.Tensor,
    terminated: torch.Tensor,
    discounts: torch.Tensor | float,
    target_net: nn.Module,
    online_net: nn.Module | None = None,
) -> torch.Tensor:
    """r + discount * (1 - terminated) * V(s'), computed without building a graph.

    ``discounts`` is gamma for 1-step transitions and gamma^k for n-step ones (k rewards
    summed in ``rewards``). Only ``terminated`` stops the bootstrap: a time-limit truncation is
    not a terminal state of the MDP, so its successor still has value (Pardo et al. 2018).

    V(s') = max_a Q_target(s', a) for DQN. With ``online_net`` given, Double DQN
    (van Hasselt et al. 2016): the online net picks argmax_a Q_online(s', a) and the target net
    values it, which removes most of the max operator's overestimation.
    """
    with torch.no_grad():
        next_q = target_net(next_obs)
        if online_net is None:
            next_value = next_q.amax(dim=1)
        else:
            next_actions = online_net(next_obs).argmax(dim=1, keepdim=True)
            next_value = next_q.gather(1, next_actions).squeeze(1)
        return rewards + discounts * (1.0 - terminated) * next_value


def per_sample_loss(q: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """The TD loss of each sample, before importance weighting: ``huber`` or ``mse``."""
    if kind == "huber":
        return F.smooth_l1_loss(q, targets, reduction="none")
    return F.mse_loss(q, targets, reduction="none")


@dataclass(frozen=True)
class TDLoss:
    """What every learner minimises: the importance-weighted TD loss of DQN or Double DQN
    (``double_q``), ``huber`` or ``mse`` per sample, with the gradient's global norm clipped
    to ``max_grad_norm`` (None: no clipping). The discount travels with each transition
    (``Batch.discounts``), so it is not a setting here."""

    double_q: bool
    kind: str
    max_grad_norm: float | None

    def __post_init__(self) -> None:
        if self.kind not in ("huber", "mse"):
            raise ValueError(f"unknown loss {self.kind!r}; valid: huber, mse")

    def targets(self, batch: Batch, online_net: nn.Module, target_net: nn.Module) -> torch.Tensor:
        """The batch's TD targets (no graph)."""
        return td_targets(
            batch.rewards,
            batch.next_obs,
            batch.terminated,
            batch.discounts,
            target_net,
            online_net if self.double_q else None,
        )


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
    def importance_weight_mean(self) -> torch.Tensor:
        """Scalar, mean importance weight of the batch (1 unless prioritized)."""
        return self._weights.mean()

    @property
    def mean_q(self) -> torch.Tensor:
        """Scalar, mean Q(s, a) of the batch before the update."""
        return self._q.mean()


class Learner(Protocol):
    """Updates the online network from batches; what the training loop sees of a learner."""

    online_net: QNetwork
    target_net: QNetwork  # the online net itself with target=none
    td: TDLoss
    name: str  # "autograd" or "fast", for the log

    def update(self, batch: Batch) -> UpdateResult: ...

    def set_lr(self, lr: float) -> None: ...

    def state_dict(self) -> AdamState: ...

    def load_state_dict(self, state: Any) -> None: ...


class AutogradLearner:
    """The DQN update for any network: autograd, gradient clipping, Adam."""

    name = "autograd"

    def __init__(
        self,
        online_net: QNetwork,
        target_net: QNetwork,
        td: TDLoss,
        lr: float,
        adam_eps: float = 1e-8,
        compile: bool = False,
    ) -> None:
        self.online_net, self.target_net, self.td = online_net, target_net, td
        # The loss's forward passes (target, online, TD targets) become one compiled graph,
        # and its backward one more; the optimizer step stays a fused kernel.
        self._loss = torch.compile(self._eager_loss) if compile else self._eager_loss
        online_net.requires_grad_(True)
        if target_net is not online_net:
            target_net.requires_grad_(False)
        self.params = list(online_net.parameters())
        # torch's fused Adam kernel (one kernel for all parameters, CPU and CUDA) without
        # torch.optim around it: see dqn_cli/optim.py.
        self.optimizer = Adam(self.params, lr=lr, eps=adam_eps, own_grads=False)

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr

    def _eager_loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        discounts: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, Q(s, a) detached, TD targets); plain tensors in, so torch.compile sees no
        numpy fields."""
        online = self.online_net
        targets = td_targets(
            rewards,
            next_obs,
            terminated,
            discounts,
            self.target_net,
            online if self.td.double_q else None,
        )
        q = online(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = (per_sample_loss(q, targets, self.td.kind) * weights).mean()
        return loss, q.detach(), targets

    def update(self, batch: Batch) -> UpdateResult:
        loss, q, targets = self._loss(
            batch.obs,
            batch.actions,
            batch.rewards,
            batch.next_obs,
            batch.terminated,
            batch.discounts,
            batch.weights,
        )
        for p in self.params:
            p.grad = None  # backward then hands its fresh gradient over instead of adding
        loss.backward()
        grads = [p.grad for p in self.params]
        if self.td.max_grad_norm is not None:
            clip_grad_norm([g for g in grads if g is not None], self.td.max_grad_norm)
        self.optimizer.step(grads)
        return UpdateResult(q, targets, batch.weights, self.td.kind)

    def state_dict(self) -> AdamState:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.optimizer.load_state_dict(state)


def fast_learner_refusal(q_net: QNetwork, device: torch.device) -> str | None:
    """Why the explicit-gradient learner cannot train ``q_net`` here, or None if it can."""
    from dqn_cli.fast_learner import fused_adam_refusal

    if plain_mlp(q_net) is None:
        return "it handles a plain MLP (model=mlp, model.head=linear) only"
    if device.type != "cpu":
        return "it runs on the CPU only"
    return fused_adam_refusal()


def choose_learner(kind: str, q_net: QNetwork, device: torch.device, compile: bool = False) -> str:
    """The learner ``learner=kind`` means for ``q_net`` on ``device``: "fast" or "autograd".
    ``auto`` takes the explicit-gradient learner where it applies (saying so in the log when
    only a missing torch op stops it); ``fast`` where it does not apply is a one-line
    :class:`ConfigError`. ``compile`` compiles the autograd learner, so it implies it."""
    if kind not in ("auto", "autograd", "fast"):
        raise ConfigError("learner", f"got {kind!r}; allowed: auto, autograd, fast")
    if compile and kind == "fast":
        raise ConfigError(
            "compile", "true compiles the autograd learner; use learner=auto or learner=autograd"
        )
    if kind == "autograd" or compile:
        return "autograd"
    refusal = fast_learner_refusal(q_net, device)
    if refusal is None:
        return "fast"
    if kind == "fast":
        raise ConfigError("learner", f"fast cannot train this model: {refusal}; use learner=auto")
    if plain_mlp(q_net) is not None and device.type == "cpu":
        log.info("learner=auto: the fast learner is unavailable (%s); using autograd", refusal)
    return "autograd"


def make_learner(
    kind: str,
    online_net: QNetwork,
    target_net: QNetwork,
    device: torch.device,
    td: TDLoss,
    *,
    lr: float,
    adam_eps: float,
    compile: bool = False,
) -> Learner:
    """The learner :func:`choose_learner` picks, built."""
    if choose_learner(kind, online_net, device, compile) == "autograd":
        return AutogradLearner(
            online_net, target_net, td, lr=lr, adam_eps=adam_eps, compile=compile
        )
    from dqn_cli.fast_learner import ExplicitGradientLearner

    return ExplicitGradientLearner(online_net, target_net, td, lr=lr, adam_eps=adam_eps)
