"""Typed, validated training configuration.

The CLI composes YAML with Hydra and hands a plain nested dict to :func:`parse_train_config`,
which returns frozen dataclasses. Nothing below this module ever sees a DictConfig, and every
value is type- and range-checked here, before any env or network is built, so a typo costs the
user one line of error instead of a crashed overnight run. The meaning of each key is documented
where it is defined: in ``conf/*.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range.

    ``str()`` is a single line that names the key and says what is allowed.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


AlgoName = Literal["dqn", "ddqn"]
BufferKind = Literal["uniform", "per", "none"]
TargetKind = Literal["hard", "soft", "none"]
Device = Literal["auto", "cpu", "cuda"]
LossName = Literal["huber", "mse"]
ScheduleName = Literal["linear", "exponential"]
LrScheduleName = Literal["constant", "linear"]


@dataclass(frozen=True)
class AlgoConfig:
    name: AlgoName = "dqn"


@dataclass(frozen=True)
class BufferConfig:
    kind: BufferKind = "uniform"
    capacity: int | None = 100_000
    alpha: float = 0.6
    beta: float = 0.4
    eps: float = 1e-6


@dataclass(frozen=True)
class TargetConfig:
    kind: TargetKind = "hard"
    period: int = 1000
    tau: float = 0.005


@dataclass(frozen=True)
class EnvConfig:
    id: str = "CartPole-v1"


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (256, 256)


@dataclass(frozen=True)
class ExplorationConfig:
    start: float = 1.0
    end: float = 0.05
    steps: int = 10_000
    schedule: ScheduleName = "linear"


@dataclass(frozen=True)
class EvalConfig:
    every: int = 5_000
    episodes: int = 20
    epsilon: float = 0.0
    stop_at: float | None = None


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 10_000
    keep: int = 3
    save_buffer: bool = True


@dataclass(frozen=True)
class LogConfig:
    every: int = 1_000


@dataclass(frozen=True)
class TrainConfig:
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    device: Device = "auto"
    torch_threads: int = 1
    total_steps: int = 50_000
    num_envs: int = 1
    lr: float = 1e-3
    adam_eps: float = 1e-8
    lr_schedule: LrScheduleName = "constant"
    gamma: float = 0.99
    batch_size: int = 64
    learning_starts: int = 1_000
    train_every: int = 1
    gradient_steps: int = 1
    max_grad_norm: float | None = 10.0
    loss: LossName = "huber"

    @property
    def replay_capacity(self) -> int:
        """Transitions the buffer holds; ``buffer=none`` keeps just one batch of the newest."""
        if self.buffer.kind == "none" or self.buffer.capacity is None:
            return self.batch_size
        return self.buffer.capacity

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples): safe for JSON and ``weights_only`` checkpoints."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Parsing: structure and types


def parse_train_config(raw: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested mapping, checking every key.

    Raises :class:`ConfigError` naming the first offending key.
    """
    config = _parse_dataclass(TrainConfig, raw, prefix="")
    _check_ranges(config)
    return config


def _parse_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            prefix + str(unknown[0]),
            f"unknown key; valid keys here: {', '.join(names)}",
        )
    values: dict[str, Any] = {}
    for name in names:
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], prefix + name)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _parse_dataclass(typing.cast(type, hint), value, key + ".")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(key, f"got {value!r}; allowed: {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = (o for o in options if o is not type(None))
        return _coerce(inner, value, key)
    if origin is tuple:
        (item,) = (a for a in get_args(hint) if a is not Ellipsis)
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, e.g. [256,256], got {value!r}")
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        # bool is an int subclass in Python; 'True' as a step count is always a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module


# ---------------------------------------------------------------------------------------------
# Ranges


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(key, f"must be {rule}, got {value!r}")


def _check_ranges(c: TrainConfig) -> None:
    for key, value in [
        ("total_steps", c.total_steps),
        ("num_envs", c.num_envs),
        ("batch_size", c.batch_size),
        ("train_every", c.train_every),
        ("gradient_steps", c.gradient_steps),
        ("torch_threads", c.torch_threads),
        ("target.period", c.target.period),
        ("eval.every", c.eval.every),
        ("eval.episodes", c.eval.episodes),
        ("checkpoint.every", c.checkpoint.every),
        ("log.every", c.log.every),
        ("lr", c.lr),
        ("adam_eps", c.adam_eps),
    ]:
        _require(value > 0, key, "> 0", value)
    for i, width in enumerate(c.model.hidden):
        _require(width > 0, f"model.hidden[{i}]", "> 0", width)
    _require(c.seed >= 0, "seed", ">= 0", c.seed)
    _require(0.0 <= c.gamma <= 1.0, "gamma", "in [0, 1]", c.gamma)
    _require(0.0 < c.target.tau <= 1.0, "target.tau", "in (0, 1]", c.target.tau)
    _require(c.buffer.alpha >= 0.0, "buffer.alpha", ">= 0", c.buffer.alpha)
    _require(0.0 <= c.buffer.beta <= 1.0, "buffer.beta", "in [0, 1]", c.buffer.beta)
    _require(c.buffer.eps > 0.0, "buffer.eps", "> 0", c.buffer.eps)
    if c.max_grad_norm is not None:
        _require(c.max_grad_norm > 0, "max_grad_norm", "> 0 or null (no clipping)", c.max_grad_norm)
    for key, eps in [
        ("exploration.start", c.exploration.start),
        ("exploration.end", c.exploration.end),
        ("eval.epsilon", c.eval.epsilon),
    ]:
        _require(0.0 <= eps <= 1.0, key, "in [0, 1]", eps)
    _require(c.exploration.steps >= 0, "exploration.steps", ">= 0", c.exploration.steps)
    _require(c.checkpoint.keep >= 0, "checkpoint.keep", ">= 0", c.checkpoint.keep)
    if c.buffer.kind != "none":
        capacity = c.buffer.capacity
        _require(capacity is not None and capacity > 0, "buffer.capacity", "> 0", capacity)
        _require(
            capacity is not None and c.batch_size <= capacity,
            "batch_size",
            f"<= buffer.capacity ({capacity})",
            c.batch_size,
        )
    _require(
        c.learning_starts >= c.batch_size,
        "learning_starts",
        f">= batch_size ({c.batch_size}) so the first batch can be filled",
        c.learning_starts,
    )
