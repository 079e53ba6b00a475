"""Target-network update policies, all built on one interpolation primitive."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from dqn_cli.periodic import Every


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target; ``tau=1`` is an exact copy."""
    target_params = list(target.parameters()) + list(target.buffers())
    online_params = list(online.parameters()) + list(online.buffers())
    if tau == 1.0:
        # lerp with weight 1 is not bitwise equal to the source in floating point: copy instead.
        torch._foreach_copy_(target_params, online_params)
    else:
        torch._foreach_lerp_(target_params, online_params, tau)


class TargetUpdater(Protocol):
    def after_gradient_step(self) -> None: ...

    def after_env_steps(self, previous_step: int, step: int) -> None: ...


class HardTargetUpdate:
    """Full copy every ``period`` env steps (Mnih et al. 2015); untouched in between."""

    def __init__(self, target: nn.Module, online: nn.Module, period: int) -> None:
        self.target, self.online, self.every = target, online, Every(period)

    def after_gradient_step(self) -> None:
        pass

    def after_env_steps(self, previous_step: int, step: int) -> None:
        if self.every.due(previous_step, step):
            polyak_update(self.target, self.online, 1.0)


class SoftTargetUpdate:
    """Polyak averaging with rate ``tau`` after every gradient step (Lillicrap et al. 2016)."""

    def __init__(self, target: nn.Module, online: nn.Module, tau: float) -> None:
        self.target, self.online, self.tau = target, online, tau

    def after_gradient_step(self) -> None:
        polyak_update(self.target, self.online, self.tau)

    def after_env_steps(self, previous_step: int, step: int) -> None:
        pass


class NoTargetNetwork:
    """The ablation: targets come straight from the online network, nothing to sync."""

    def after_gradient_step(self) -> None:
        pass

    def after_env_steps(self, previous_step: int, step: int) -> None:
        pass


def make_target_updater(
    kind: str, target: nn.Module, online: nn.Module, period: int, tau: float
) -> TargetUpdater:
    """The policy named by ``target.kind``: ``hard``, ``soft`` or ``none``."""
    if kind == "hard":
        return HardTargetUpdate(target, online, period)
    if kind == "soft":
        return SoftTargetUpdate(target, online, tau)
    if kind == "none":
        return NoTargetNetwork()
    raise ValueError(f"unknown target kind {kind!r}; valid: hard, soft, none")
