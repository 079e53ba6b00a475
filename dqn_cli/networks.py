"""Q-networks, built from what the env's spaces say (no gymnasium import needed here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
        self.layers = nn.Sequential(*layers)
        self._scale = 1.0 / 255.0 if spec.obs_dtype == "uint8" else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.spec.obs_categories is not None:
            x = F.one_hot(obs.long(), self.spec.obs_categories).float()
        else:
            x = obs.flatten(1).float()
            if self._scale is not None:
                x = x * self._scale
        return self.layers(x)
