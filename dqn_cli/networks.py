"""Q-networks: the built-in bodies and heads, user models, and the one input encoding.

Every model is built the same way, from the ``model`` config: ``_target_`` names a class
(``module.Class``), which is called with keywords ::

    Class(obs_shape=..., obs_dtype=..., n_actions=..., **other model keys)

``obs_shape`` is the shape of one observation *as the model receives it* (after encoding:
Discrete observations arrive one-hot, so their shape is ``(n,)``), ``obs_dtype`` the env's
numpy dtype name (``"uint8"`` for pixels) and ``n_actions`` the number of discrete actions; the
model maps a float32 batch ``(B, *obs_shape)`` to Q-values ``(B, n_actions)``. The encoding is
done in one place for every model, :class:`QNetwork`: uint8 observations are scaled to [0, 1],
Discrete ones one-hot encoded, everything else cast to float32.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dqn_cli.env_spec import EnvSpec
from dqn_cli.errors import UserError
from dqn_cli.locate import locate


class ModelError(UserError):
    """The model config names a class that cannot be imported or built; one line."""


def model_input_shape(spec: EnvSpec) -> tuple[int, ...]:
    """The shape of one observation after :meth:`QNetwork.encode`."""
    return (spec.obs_categories,) if spec.obs_categories is not None else spec.obs_shape


class QNetwork(nn.Module):
    """A model behind the input encoding every model shares; ``net`` is the model itself."""

    def __init__(self, net: nn.Module, spec: EnvSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self._scale = 1.0 / 255.0 if spec.obs_dtype == "uint8" else None

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        if self.spec.obs_categories is not None:
            return F.one_hot(obs.long(), self.spec.obs_categories).float()
        if self._scale is None:
            return obs.float()
        # Straight from uint8 into float in the layout the model reads, scaled in place: a
        # batch of Atari frames is 3.6 MB of floats, and float(), * and a layout copy would
        # each write it again.
        layout = getattr(self.net, "input_memory_format", torch.contiguous_format)
        if obs.dim() != 4:
            layout = torch.contiguous_format
        x = torch.empty(obs.shape, dtype=torch.float32, device=obs.device, memory_format=layout)
        if layout is torch.channels_last and obs.device.type == "cpu":
            # Copied as one tensor, channels-first into channels-last writes with a stride of
            # C floats from a single loop: 0.93 ms for 32 Atari stacks on one EPYC core, twice
            # per update. One copy per channel plane reads contiguously: 0.34 ms, same values.
            for channel in range(obs.shape[1]):
                x[:, channel].copy_(obs[:, channel])
        else:
            x.copy_(obs)
        return x.mul_(self._scale)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encode(obs))


# ---------------------------------------------------------------------------------------------
# Heads


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (Wang et al. 2016, eq. 9): value and
    advantage streams, each with an optional hidden layer; subtracting the mean advantage
    makes V and A identifiable."""

    def __init__(self, in_features: int, n_actions: int, hidden: int | None = None) -> None:
        super().__init__()
        self.value = _stream(in_features, 1, hidden)
        self.advantage = _stream(in_features, n_actions, hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)


def _stream(in_features: int, out_features: int, hidden: int | None) -> nn.Module:
    if hidden is None:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


def q_head(kind: str, in_features: int, n_actions: int, hidden: int | None = None) -> nn.Module:
    """``linear``: one stream to the Q-values; ``dueling``: :class:`DuelingHead`."""
    if kind == "linear":
        return _stream(in_features, n_actions, hidden)
    if kind == "dueling":
        return DuelingHead(in_features, n_actions, hidden)
    raise ModelError(f"model.head: got {kind!r}; allowed: linear, dueling")


# ---------------------------------------------------------------------------------------------
# Bodies


class MLP(nn.Module):
    """Fully connected ReLU layers on the flattened observation (vector observations)."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        obs_dtype: str,
        n_actions: int,
        hidden: Sequence[int] = (256, 256),
        head: str = "linear",
    ) -> None:
        super().__init__()
        if not isinstance(hidden, Sequence) or isinstance(hidden, str):
            raise ModelError(
                f"model.hidden: expected a list of widths, e.g. [256,256], got {hidden!r}"
            )
        for i, width in enumerate(hidden):
            if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
                raise ModelError(f"model.hidden[{i}]: must be an integer > 0, got {width!r}")
        in_features = math.prod(obs_shape)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_features, int(width)), nn.ReLU()]
            in_features = int(width)
        self.head_kind = head
        if head == "linear":
            # One Sequential, so the state_dict keys ("layers.0.weight") are those of the
            # MLPs dqn-cli has always saved.
            layers.append(q_head(head, in_features, n_actions))
            self.layers = nn.Sequential(*layers)
        else:
            self.layers = nn.Sequential(*layers)
            self.head = q_head(head, in_features, n_actions)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x.flatten(1))
        return x if self.head_kind == "linear" else self.head(x)


class ConvQNet(nn.Module):
    """A convolutional torso (ending in Flatten) under a Q head whose streams have a hidden
    layer of ``features`` units: the shape of both built-in CNNs."""

    def __init__(
        self,
        torso: nn.Sequential,
        obs_shape: tuple[int, ...],
        n_actions: int,
        head: str,
        features: int,
        channels_last: bool,
    ) -> None:
        super().__init__()
        self.torso = torso
        self.head = q_head(head, _flat_size(torso, obs_shape), n_actions, features)
        # Channels-last (NHWC) weights and inputs let oneDNN on the CPU and cuDNN on GPUs pick
        # faster kernels for Atari-sized convolutions, but cost time on tiny ones such as
        # MinAtar's 10x10 (bench.update_cost), hence a choice per network. Flatten still reads
        # the logical NCHW order, so the function computed is the same either way.
        self.input_memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.torso.to(memory_format=self.input_memory_format)  # type: ignore[call-overload]  # not in the stub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(x.contiguous(memory_format=self.input_memory_format)))


class NatureCNN(ConvQNet):
    """Mnih et al. 2015: conv 32x8x8/4, 64x4x4/2, 64x3x3/1, then a 512-unit layer (per stream
    with a dueling head). Expects channels-first frames, e.g. 4x84x84."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        obs_dtype: str,
        n_actions: int,
        head: str = "linear",
        features: int = 512,
    ) -> None:
        _require_image(obs_shape, "NatureCNN")
        # In-place ReLUs: a convolution's backward needs its input, never its output, so the
        # output can be rectified where it lies (1% of an update, bench.atari_peers).
        torso = nn.Sequential(
            nn.Conv2d(obs_shape[0], 32, 8, stride=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        super().__init__(torso, obs_shape, n_actions, head, features, channels_last=True)


class MinAtarCNN(ConvQNet):
    """Young & Tian 2019 (MinAtar): conv 16x3x3/1, then a 128-unit layer. Expects
    channels-first 10x10 frames."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        obs_dtype: str,
        n_actions: int,
        head: str = "linear",
        features: int = 128,
    ) -> None:
        _require_image(obs_shape, "MinAtarCNN")
        torso = nn.Sequential(
            nn.Conv2d(obs_shape[0], 16, 3, stride=1), nn.ReLU(inplace=True), nn.Flatten()
        )
        super().__init__(torso, obs_shape, n_actions, head, features, channels_last=False)


def _require_image(obs_shape: tuple[int, ...], name: str) -> None:
    if len(obs_shape) != 3:
        raise ModelError(
            f"model: {name} needs image observations (channels, height, width), "
            f"this env's are of shape {list(obs_shape)}; use model=mlp"
        )


def _flat_size(torso: nn.Sequential, obs_shape: tuple[int, ...]) -> int:
    """Features the torso (convolutions, activations, Flatten) gives one observation, by the
    convolution arithmetic. Running it instead would take a second on torch's meta device
    (its first use imports the meta kernels), where networks are built to check checkpoints
    and memory before every run."""
    channels, height, width = obs_shape
    for layer in torso:
        if isinstance(layer, nn.Conv2d):
            padding = layer.padding
            assert isinstance(padding, tuple), "the built-in CNNs pad by numbers"
            height, width = (
                (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
                for size, pad, dilation, kernel, stride in zip(
                    (height, width),
                    padding,
                    layer.dilation,
                    layer.kernel_size,
                    layer.stride,
                    strict=True,
                )
            )
            channels = layer.out_channels
            if height < 1 or width < 1:
                raise ModelError(
                    f"model: observations of shape {list(obs_shape)} are too small for this CNN"
                )
    return channels * height * width


# ---------------------------------------------------------------------------------------------
# Building a model from its config


def build_q_network(target: str, head: str, kwargs: Mapping[str, Any], spec: EnvSpec) -> QNetwork:
    """Instantiate ``target`` for ``spec`` with the model's other keys, behind :class:`QNetwork`."""
    cls = locate(target, "model._target_", ModelError, nn.Module, "torch.nn.Module")
    arguments = dict(kwargs)
    try:
        parameters = dict(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        parameters = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "head" in parameters or takes_any:
        arguments["head"] = head
    elif head != "linear":
        raise ModelError(f"model.head: {target} takes no head argument; leave model.head=linear")
    for name in arguments:
        if name not in parameters and not takes_any:
            accepted = [p for p in parameters if p not in ("obs_shape", "obs_dtype", "n_actions")]
            raise ModelError(
                f"model.{name}: not an argument of {target} (it takes: "
                f"{', '.join(accepted) or 'nothing else'}); if an env preset set it, drop it "
                f"with ~model.{name}"
            )
    try:
        net = cls(
            obs_shape=model_input_shape(spec),
            obs_dtype=spec.obs_dtype,
            n_actions=spec.n_actions,
            **arguments,
        )
    except ModelError:
        raise
    except Exception as exc:  # a user's constructor may raise anything
        raise ModelError(f"model: {target}(...) failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise ModelError(f"model._target_: {target} did not build a torch.nn.Module")
    return QNetwork(net, spec)


def parameter_shapes(
    target: str, head: str, kwargs: Mapping[str, Any], spec: EnvSpec
) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of the network a config describes, built on torch's meta device:
    no memory is allocated, so sizes a checkpoint declares cost nothing to check."""
    with torch.device("meta"):
        net = build_q_network(target, head, kwargs, spec)
    return {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Acting


def plain_mlp(q_net: QNetwork) -> MLP | None:
    """The MLP inside ``q_net`` when it is a plain one (linear head): the case the fast paths
    (explicit-gradient updates, numpy acting) handle."""
    net = q_net.net
    return net if type(net) is MLP and net.head_kind == "linear" else None


class HostQFunction:
    """Q-values of a CPU plain-MLP :class:`QNetwork` computed with numpy, for acting.

    For the small MLPs DQN uses on vector observations, torch's per-call overhead (tens of
    microseconds) is most of the cost of choosing an action. The numpy arrays here are views
    of the network's parameters (same memory), so every optimizer step and every
    ``load_state_dict`` is seen without copying anything.
    """

    def __init__(self, q_net: QNetwork) -> None:
        mlp = plain_mlp(q_net)
        if mlp is None or any(p.device.type != "cpu" for p in q_net.parameters()):
            raise ValueError("HostQFunction needs a plain MLP on the CPU")
        self.layers = [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in mlp.linears]
        self.spec = q_net.spec
        if q_net.spec.obs_categories is not None:
            self.one_hot = np.eye(q_net.spec.obs_categories, dtype=np.float32)
        self.scale = np.float32(1 / 255) if q_net.spec.obs_dtype == "uint8" else None

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


def greedy_policy(q_net: QNetwork, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """argmax_a Q(obs, a) for a batch of observations, the fastest way for the model: numpy
    for a plain MLP on the CPU, torch in inference mode for everything else."""
    if device.type == "cpu" and plain_mlp(q_net) is not None:
        host = HostQFunction(q_net)
        return lambda obs: host(obs).argmax(axis=1)

    @torch.inference_mode()
    def act(obs: np.ndarray) -> np.ndarray:
        q = q_net(torch.as_tensor(obs, device=device))
        return q.argmax(dim=1).cpu().numpy()

    return act
