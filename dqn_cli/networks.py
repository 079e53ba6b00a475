"""Q-networks, built from what the env's spaces say (no gymnasium import needed here)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EnvSpec:
    """The shape of an env as far as the agent cares, storable in a ``weights_only`` checkpoint."""

    obs_shape: tuple[int, ...]
    obs_dtype: str  # numpy dtype name, e.g. "float32", "uint8", "int64"
    n_actions: int
    obs_categories: int | None = None  # Discrete observation spaces: one-hot width

    def to_dict(self) -> dict[str, Any]:
        return {
            "obs_shape": list(self.obs_shape),
            "obs_dtype": self.obs_dtype,
            "n_actions": self.n_actions,
            "obs_categories": self.obs_categories,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvSpec:
        return cls(
            obs_shape=tuple(int(d) for d in data["obs_shape"]),
            obs_dtype=str(data["obs_dtype"]),
            n_actions=int(data["n_actions"]),
            obs_categories=data.get("obs_categories"),
        )


class QNetwork(nn.Module):
    """MLP mapping an observation to one Q-value per action.

    Box observations are flattened (uint8 scaled to [0, 1]); Discrete observations are one-hot
    encoded, so tabular envs such as FrozenLake or Taxi work unchanged.

    The parameters do not require grad: :meth:`backward` computes their gradients explicitly.
    For the small MLPs DQN uses, autograd's graph building and engine start-up cost more than
    the arithmetic, and nothing here needs more than a chain of linear layers and ReLUs.
    """

    def __init__(self, spec: EnvSpec, hidden: Sequence[int]) -> None:
        super().__init__()
        self.spec = spec
        in_features = spec.obs_categories or math.prod(spec.obs_shape)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, spec.n_actions))
        self.layers = nn.Sequential(*layers)  # kept for the state_dict keys ("layers.0.weight")
        self.linears = [m for m in layers if isinstance(m, nn.Linear)]
        self.requires_grad_(False)
        self._scale = 1.0 / 255.0 if spec.obs_dtype == "uint8" else None

    def inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """What the first layer sees: flattened float features or one-hot codes."""
        if self.spec.obs_categories is not None:
            return F.one_hot(obs.long(), self.spec.obs_categories).float()
        x = obs.flatten(1).float()
        return x * self._scale if self._scale is not None else x

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward_keeping_activations(obs)[0]

    def forward_keeping_activations(
        self, obs: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Q-values and the input of every linear layer, which :meth:`backward` needs."""
        x = self.inputs(obs)
        activations = [x]
        last = len(self.linears) - 1
        for i, linear in enumerate(self.linears):
            x = torch.addmm(linear.bias, x, linear.weight.t())
            if i < last:
                x.relu_()
                activations.append(x)
        return x, activations

    def backward(
        self, activations: list[torch.Tensor], grad_q: torch.Tensor, out: list[torch.Tensor]
    ) -> None:
        """Write dL/dθ into ``out`` (ordered like ``parameters()``: weight, bias per layer)
        given dL/dQ for the batch whose ``activations`` came from
        :meth:`forward_keeping_activations`."""
        grad = grad_q
        for i in range(len(self.linears) - 1, -1, -1):
            x = activations[i]
            torch.mm(grad.t(), x, out=out[2 * i])
            torch.sum(grad, dim=0, out=out[2 * i + 1])
            if i > 0:
                # ReLU passes the gradient where its output was positive (autograd's own op).
                grad = torch.ops.aten.threshold_backward(grad.mm(self.linears[i].weight), x, 0.0)


class HostQFunction:
    """Q-values of a CPU :class:`QNetwork` computed with numpy, for acting.

    For the small MLPs DQN uses on vector observations, torch's per-call overhead (tens of
    microseconds) is most of the cost of choosing an action. The numpy arrays here are views
    of the network's parameters (same memory), so every optimizer step and every
    ``load_state_dict`` is seen without copying anything.
    """

    def __init__(self, net: QNetwork) -> None:
        if any(p.device.type != "cpu" for p in net.parameters()):
            raise ValueError("HostQFunction needs a network on the CPU")
        self.layers = [(m.weight.numpy().T, m.bias.numpy()) for m in net.linears]
        self.spec = net.spec
        if net.spec.obs_categories is not None:
            self.one_hot = np.eye(net.spec.obs_categories, dtype=np.float32)
        self.scale = np.float32(1 / 255) if net.spec.obs_dtype == "uint8" else None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.spec.obs_categories is not None:
            x = self.one_hot[obs]
        else:
            x = obs.reshape(len(obs), -1).astype(np.float32, copy=False)
            if self.scale is not None:
                x = x * self.scale
        last = len(self.layers) - 1
        for i, (weight_t, bias) in enumerate(self.layers):
            x = x @ weight_t + bias
            if i < last:
                np.maximum(x, 0.0, out=x)
        return x


def greedy_policy(net: QNetwork, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """argmax_a Q(obs, a) for a batch of observations, the fastest way for ``device``."""
    if device.type == "cpu":
        host = HostQFunction(net)
        return lambda obs: host(obs).argmax(axis=1)

    @torch.inference_mode()
    def act(obs: np.ndarray) -> np.ndarray:
        q = net(torch.as_tensor(obs, device=device))
        return q.argmax(dim=1).cpu().numpy()

    return act
