"""What the agent needs to know of an env's spaces, as plain data (no torch, no gymnasium)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
            obs_categories=None
            if data.get("obs_categories") is None
            else int(data["obs_categories"]),
        )
