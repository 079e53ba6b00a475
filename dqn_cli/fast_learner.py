"""The explicit-gradient learner: the DQN update of a plain MLP on CPU, without autograd.

For the small MLPs DQN uses on vector observations, autograd's graph building and engine
start-up cost more than the arithmetic. Here the forward pass keeps the input of every linear
layer, the gradient of the weighted TD loss is written by hand (one matmul pair per layer), and
:class:`dqn_cli.optim.Adam` steps torch's fused Adam kernel on preallocated gradient buffers.
tests/test_learner.py holds it equal to :class:`~dqn_cli.learner.AutogradLearner`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from dqn_cli.buffers.replay import Batch
from dqn_cli.learner import TDLoss, UpdateResult
from dqn_cli.networks import MLP, QNetwork, plain_mlp
from dqn_cli.optim import Adam, AdamState, clip_grad_norm


@functools.cache
def fused_adam_refusal() -> str | None:
    """None when this torch has the fused Adam op with the signature optim.Adam calls; else
    why not (a private op: a torch release may drop or change it)."""
    if not hasattr(torch, "_fused_adam_"):
        return "this torch has no torch._fused_adam_"
    probe = Adam([torch.zeros(1)], lr=0.1)
    try:
        probe.step()
    except (TypeError, RuntimeError, AttributeError) as exc:
        return f"torch._fused_adam_ failed here ({type(exc).__name__})"
    return None


def forward_keeping_activations(
    mlp: MLP, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Q-values of an encoded batch and the input of every linear layer (for :func:`backward`)."""
    x = x.flatten(1)
    activations = [x]
    linears = mlp.linears
    last = len(linears) - 1
    for i, linear in enumerate(linears):
        x = torch.addmm(linear.bias, x, linear.weight.t())
        if i < last:
            x.relu_()
            activations.append(x)
    return x, activations


def backward(
    mlp: MLP, activations: list[torch.Tensor], grad_q: torch.Tensor, out: list[torch.Tensor]
) -> None:
    """Write dL/dθ into ``out`` (ordered like ``parameters()``: weight, bias per layer) given
    dL/dQ for the batch whose ``activations`` :func:`forward_keeping_activations` kept."""
    linears = mlp.linears
    grad = grad_q
    for i in range(len(linears) - 1, -1, -1):
        x = activations[i]
        torch.mm(grad.t(), x, out=out[2 * i])
        torch.sum(grad, dim=0, out=out[2 * i + 1])
        if i > 0:
            # ReLU passes the gradient where its output was positive (autograd's own op).
            grad = torch.ops.aten.threshold_backward(grad.mm(linears[i].weight), x, 0.0)


def per_sample_loss_gradient(td_errors: torch.Tensor, kind: str) -> torch.Tensor:
    """d loss / d q for each sample, with td_errors = targets - q."""
    if kind == "huber":  # smooth L1 with beta 1: quadratic inside [-1, 1], linear outside
        return td_errors.clamp(-1.0, 1.0).neg_()
    return td_errors.mul(-2.0)


class ExplicitGradientLearner:
    """The same update as :class:`~dqn_cli.learner.AutogradLearner`, for a plain MLP on CPU."""

    name = "fast"

    def __init__(
        self,
        online_net: QNetwork,
        target_net: QNetwork,
        td: TDLoss,
        lr: float,
        adam_eps: float = 1e-8,
    ) -> None:
        mlp = plain_mlp(online_net)
        if mlp is None:
            raise ValueError("the explicit-gradient learner trains a plain MLP only")
        self.online_net, self.target_net, self.td, self.mlp = online_net, target_net, td, mlp
        # No graphs are built: gradients are computed by backward() below.
        online_net.requires_grad_(False)
        target_net.requires_grad_(False)
        # backward() writes gradients by position, in parameters() order.
        self.optimizer = Adam(list(mlp.parameters()), lr=lr, eps=adam_eps)

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr

    def update(self, batch: Batch) -> UpdateResult:
        targets = self.td.targets(batch, self.online_net, self.target_net)
        q_all, activations = forward_keeping_activations(
            self.mlp, self.online_net.encode(batch.obs)
        )
        actions = batch.actions.unsqueeze(1)
        result = UpdateResult(
            q_all.gather(1, actions).squeeze(1), targets, batch.weights, self.td.kind
        )
        # loss = mean_i(w_i * l(q_i - y_i)), so dloss/dq_i = w_i * l'(q_i - y_i) / batch size;
        # the Q-values of actions not taken get no gradient.
        grad_q = per_sample_loss_gradient(result.td_errors, self.td.kind)
        grad_q.mul_(batch.weights).div_(len(grad_q))
        grad_q_all = torch.zeros_like(q_all).scatter_(1, actions, grad_q.unsqueeze(1))
        backward(self.mlp, activations, grad_q_all, self.optimizer.grads)
        if self.td.max_grad_norm is not None:
            clip_grad_norm(self.optimizer.grads, self.td.max_grad_norm)
        self.optimizer.step()
        return result

    def state_dict(self) -> AdamState:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.optimizer.load_state_dict(state)
