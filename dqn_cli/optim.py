"""Adam and gradient-norm clipping, for both learners.

``torch.optim.Adam`` costs a DQN run twice over: its first construction imports TorchDynamo
(1.2-1.5 s of start-up in every process), and each ``step()`` runs tens of microseconds of
Python bookkeeping (hooks, profiler records, grad discovery) around one kernel. This class keeps
only the kernel: the same fused Adam operator ``torch.optim.Adam(..., fused=True)`` calls, on
gradient buffers preallocated next to the parameters (the explicit-gradient learner writes
them) or on the ``.grad`` tensors autograd leaves (the autograd learner). The math is Kingma &
Ba's Adam with torch's defaults; tests compare it step for step with torch.optim.Adam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import torch


class AdamState(TypedDict):
    """Adam's state in the plain form both learners save and load (see learner.py)."""

    lr: float
    betas: list[float]
    eps: float
    step: int
    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]


def adam_state(state: Any, params: Sequence[torch.Tensor]) -> AdamState:
    """``state`` checked to be an :class:`AdamState` whose moments fit ``params``; raises
    ValueError (one line) otherwise."""
    try:
        moments = [state["exp_avg"], state["exp_avg_sq"]]
        step = int(state["step"])
        lr, eps = float(state["lr"]), float(state["eps"])
        beta1, beta2 = (float(b) for b in state["betas"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"optimizer state is not dqn-cli's Adam state ({exc!r})") from exc
    shapes = [tuple(p.shape) for p in params]
    for saved in moments:
        if not (
            isinstance(saved, list)
            and all(isinstance(t, torch.Tensor) for t in saved)
            and [tuple(t.shape) for t in saved] == shapes
        ):
            raise ValueError("optimizer state does not match the network's parameter shapes")
    if step < 0:
        raise ValueError(f"optimizer state has a negative step count ({step})")
    return {
        "lr": lr,
        "betas": [beta1, beta2],
        "eps": eps,
        "step": step,
        "exp_avg": moments[0],
        "exp_avg_sq": moments[1],
    }


class Adam:
    """Adam over a fixed list of tensors. Write gradients into ``grads`` (same order and shapes
    as ``params``), then call :meth:`step`; or, with ``own_grads=False``, pass the gradients
    autograd left in ``.grad`` to ``step``. ``lr`` may be changed between steps (schedules)."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        own_grads: bool = True,
    ) -> None:
        self.params = list(params)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.grads = [torch.zeros_like(p) for p in self.params] if own_grads else []
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # The fused kernel reads one step count per parameter; all parameters share one tensor
        # here, so counting a step is one add instead of a (slow on CPU) foreach over the list.
        device = self.params[0].device if self.params else None
        self._step = torch.zeros((), dtype=torch.float32, device=device)

    @property
    def step_count(self) -> int:
        return int(self._step.item())

    def step(self, grads: Sequence[torch.Tensor | None] | None = None) -> None:
        """One Adam step with ``grads`` (default: this optimizer's own buffers). A parameter
        whose gradient is None (unused by the loss) is left alone, as torch.optim does; the
        step count is shared, so its bias correction later counts this step too."""
        params, exp_avg, exp_avg_sq = self.params, self.exp_avg, self.exp_avg_sq
        given = self.grads if grads is None else list(grads)
        if any(g is None for g in given):
            used = [i for i, g in enumerate(given) if g is not None]
            params, exp_avg, exp_avg_sq = (
                [tensors[i] for i in used] for tensors in (params, exp_avg, exp_avg_sq)
            )
            given = [given[i] for i in used]
        self._step.add_(1.0)
        beta1, beta2 = self.betas
        torch._fused_adam_(
            params,
            given,  # type: ignore[arg-type]  # the Nones are gone
            exp_avg,
            exp_avg_sq,
            [],  # no AMSGrad maxima
            [self._step] * len(params),
            lr=self.lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
        )

    def state_dict(self) -> AdamState:
        return {
            "lr": self.lr,
            "betas": [float(b) for b in self.betas],
            "eps": self.eps,
            "step": self.step_count,
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: Any) -> None:
        """Restore moments, step count and hyperparameters; raises ValueError, leaving this
        optimizer untouched, when ``state`` is not an Adam state that fits ``params``."""
        checked = adam_state(state, self.params)
        for own, saved in zip(
            (self.exp_avg, self.exp_avg_sq),
            (checked["exp_avg"], checked["exp_avg_sq"]),
            strict=True,
        ):
            torch._foreach_copy_(own, [t.to(own[0].device) for t in saved])
        self._step.fill_(checked["step"])
        self.lr, self.eps = checked["lr"], checked["eps"]
        self.betas = (checked["betas"][0], checked["betas"][1])


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``, the same
    rule as ``torch.nn.utils.clip_grad_norm_`` (no scaling when already within)."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_(max=1.0))
