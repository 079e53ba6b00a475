"""Typed, validated training configuration: the one source of every config key.

Each key is defined once, below, with its default, type, allowed values (a ``Literal`` or a
:class:`Rule`) and a one-line meaning. From these definitions come the defaults Hydra composes
(``dqn_cli.cli.compose`` stores them in Hydra's ConfigStore), the validation of
:func:`parse_train_config`, ``dqn-train --help`` and the README's key table
(``python -m dqn_cli.cli.keys --markdown``). The YAML files in ``conf/`` only select options and
hold presets: values tuned for an env or an option, never a key of their own.

The CLI composes YAML with Hydra and hands a plain nested dict to :func:`parse_train_config`,
which returns frozen dataclasses. Nothing below this module ever sees a DictConfig, and every
value is type- and range-checked here, before any env or network is built, so a typo costs the
user one line of error instead of a crashed overnight run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from dqn_cli.errors import UserError


class ConfigError(UserError):
    """A configuration value is missing, of the wrong type or out of range.

    ``str()`` is a single line that names the key and says what is allowed.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Rule:
    """The range a numeric key must lie in; ``text`` is what errors and help print."""

    text: str
    holds: Callable[[Any], bool]


POSITIVE = Rule("> 0", lambda v: v > 0)
NON_NEGATIVE = Rule(">= 0", lambda v: v >= 0)
UNIT = Rule("in [0, 1]", lambda v: 0 <= v <= 1)
UNIT_OPEN_BELOW = Rule("in (0, 1]", lambda v: 0 < v <= 1)
UNIT_OPEN_ABOVE = Rule("in [0, 1)", lambda v: 0 <= v < 1)
# numpy's legacy global seeding (np.random.seed) takes 32-bit seeds only.
MAX_SEED = 2**32 - 1  # envs seeded from numpy's legacy generators take 32-bit seeds
SEED = Rule(f"in [0, {MAX_SEED}]", lambda v: 0 <= v <= MAX_SEED)
# Counts of OS-level things (threads, env instances): beyond these, a typo, never a plan.
THREADS = Rule("in [1, 1024]", lambda v: 1 <= v <= 1024)
ENVS = Rule("in [1, 4096]", lambda v: 1 <= v <= 4096)
MAX_EVAL_EPISODES = 100_000  # each episode's return is kept in memory until the mean is taken
EPISODES = Rule(f"in [1, {MAX_EVAL_EPISODES}]", lambda v: 1 <= v <= MAX_EVAL_EPISODES)


def key(default: Any, help: str, rule: Rule | None = None) -> Any:
    """A config key: its default, its one-line meaning and, for numbers, its range."""
    metadata = {"help": help, "rule": rule}
    if isinstance(default, dict):  # mutable: every config gets its own copy
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type, help: str) -> Any:
    """A nested section of keys (``buffer.*``, ``eval.*``, ...)."""
    return field(default_factory=cls, metadata={"help": help, "rule": None})


AlgoName = Literal["dqn", "ddqn"]
BufferKind = Literal["uniform", "per", "none"]
FrameCompression = Literal["none", "lz4"]
TargetKind = Literal["hard", "soft", "none"]
Device = Literal["auto", "cpu", "cuda"]
LossName = Literal["huber", "mse"]
ScheduleName = Literal["linear", "exponential"]
LrScheduleName = Literal["constant", "linear"]
HeadName = Literal["linear", "dueling"]
LearnerName = Literal["auto", "autograd", "fast"]
LoggerKind = Literal["tensorboard", "wandb", "mlflow"]
WandbMode = Literal["online", "offline"]
EnvVector = Literal["auto", "gymnasium", "ale"]
# Ids of Atari games (ale-py); dqn_cli/pixel_envs.py builds their pipeline.
ATARI_PREFIX = "ALE/"


@dataclass(frozen=True)
class AlgoConfig:
    name: AlgoName = key("dqn", "set by the algo group: dqn | ddqn (Double DQN targets)")


@dataclass(frozen=True)
class BufferConfig:
    kind: BufferKind = key("uniform", "set by the buffer group: uniform | per | none")
    capacity: int | None = key(
        100_000,
        "transitions kept, oldest overwritten first; preallocated at start (buffer=none: unused)",
        POSITIVE,
    )
    alpha: float = key(
        0.6, "per: priority exponent, 0 = uniform, 1 = proportional to |TD error|", NON_NEGATIVE
    )
    beta: float = key(
        0.4, "per: initial importance-sampling exponent, annealed to 1 at total_steps", UNIT
    )
    eps: float = key(1e-6, "per: added to |TD error| so no transition has zero priority", POSITIVE)
    n_step: int = key(
        1, "rewards summed per transition (n-step returns); bootstraps with gamma^n", POSITIVE
    )
    frame_compression: FrameCompression = key(
        "none",
        "acts on stacked frames only (env.frame_stack > 1, ALE/*; env=atari sets lz4): lz4 "
        "keeps each frame compressed, 4.6-28x smaller by game (1M transitions: 0.4-1.6 GB, "
        "not 7.1 GB), for ~0.3 ms more per batch of 32 on CPU",
    )


@dataclass(frozen=True)
class TargetConfig:
    kind: TargetKind = key("hard", "set by the target group: hard | soft | none")
    period: int = key(1000, "hard: env steps between full copies of the online net", POSITIVE)
    tau: float = key(
        0.005,
        "soft: Polyak factor, target <- tau * online + (1 - tau) * target per gradient step",
        UNIT_OPEN_BELOW,
    )


@dataclass(frozen=True)
class EnvConfig:
    """How each env (training, evaluation, dqn-eval) is built: ``gymnasium.make(id, **kwargs)``,
    then every wrapper in order. Saved in checkpoints, so dqn-eval rebuilds the same env."""

    id: str = key(
        "CartPole-v1",
        "gymnasium env id; module:EnvId imports your module that registers it first "
        "(Discrete actions; Box or Discrete obs); ALE/* and MinAtar/* ids need the atari / "
        "minatar extra",
    )
    kwargs: dict[str, Any] = key(
        {}, "keyword arguments for the env's constructor, e.g. env.kwargs={size:7}"
    )
    wrappers: tuple[dict[str, Any], ...] = key(
        (),
        "wrappers around each env, innermost first: [{_target_:module.Class,ARG:VALUE},...]",
    )
    episodic_life: bool = key(
        False,
        "training targets treat a lost life as the episode's end (Atari); the game goes on, "
        "logged returns and evaluation stay whole games",
    )
    clip_rewards: bool = key(
        False, "training targets use sign(reward); logged returns and evaluation stay raw"
    )
    frame_skip: int = key(
        4, "ALE/*: emulator frames per agent step, max-pooled over the last two", POSITIVE
    )
    frame_stack: int = key(
        4, "ALE/*: frames stacked into one observation (replay stores each once)", POSITIVE
    )
    noop_max: int = key(30, "ALE/*: up to this many no-op steps at reset", NON_NEGATIVE)
    sticky_actions: float = key(
        0.25,
        "ALE/*: probability each emulator frame repeats the previous action instead (ALE v5 "
        "default, Machado et al. 2018)",
        UNIT_OPEN_ABOVE,
    )
    full_action_space: bool = key(
        False, "ALE/*: all 18 joystick actions instead of the game's minimal set (v5 default)"
    )
    vector: EnvVector = key(
        "gymnasium",
        "ALE/*: training envs stepped by gymnasium (SyncVectorEnv; exact resume) | ale "
        "(ale-py's C++ vector env, faster with several envs: same keys, FIRE at reset 1 frame "
        "not frame_skip, other noop/sticky random streams; no env.kwargs/wrappers; a resume "
        "starts new games) | auto (ale if num_envs > 1 and it applies)",
    )


@dataclass(frozen=True)
class ModelConfig:
    """The Q-network. Keys besides these two are the model's own constructor arguments
    (``model.hidden`` of the mlp), documented in its ``conf/model/*.yaml`` file."""

    _target_: str = key(
        "dqn_cli.networks.MLP",
        "the network's class, module.Class (set by the model group; yours: module.Class)",
    )
    head: HeadName = key("linear", "linear | dueling (value + advantage streams, Wang et al.)")
    args: dict[str, Any] = field(
        default_factory=lambda: {"hidden": [256, 256]},
        metadata={"help": "the model's own keys (e.g. model.hidden)", "rule": None, "free": True},
    )


@dataclass(frozen=True)
class ExplorationConfig:
    start: float = key(1.0, "epsilon at env step 0", UNIT)
    end: float = key(0.05, "epsilon from exploration.steps on (<= exploration.start)", UNIT)
    steps: int = key(10_000, "env steps over which epsilon goes from start to end", NON_NEGATIVE)
    schedule: ScheduleName = key("linear", "linear | exponential (a constant factor per env step)")


@dataclass(frozen=True)
class EvalConfig:
    every: int = key(
        5_000, "env steps between greedy evaluations (best.pt follows the best one)", POSITIVE
    )
    episodes: int = key(
        20, "episodes per evaluation, seeded, on an env instance of their own", EPISODES
    )
    epsilon: float = key(0.0, "epsilon while evaluating; 0 is greedy", UNIT)
    stop_at: float | None = key(
        None, "stop training once an evaluation's mean return reaches this (null: never)"
    )


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = key(
        10_000, "env steps between writes of checkpoints/last.pt (the full state)", POSITIVE
    )
    keep: int = key(
        3, "periodic copies step_<N>.pt kept besides last.pt and best.pt (0: none)", NON_NEGATIVE
    )
    save_buffer: bool = key(
        True, "include the replay buffer in last.pt: exact resume, costs its size on disk"
    )


@dataclass(frozen=True)
class LogConfig:
    every: int = key(1_000, "env steps between TensorBoard scalars and progress lines", POSITIVE)


@dataclass(frozen=True)
class LoggerConfig:
    kind: LoggerKind = key(
        "tensorboard",
        "set by the logger group: tensorboard | wandb | mlflow (TensorBoard files are "
        "always written as well)",
    )
    project: str = key("dqn-cli", "wandb: the project; mlflow: the experiment")
    entity: str | None = key(None, "wandb: the team or user (null: your default entity)")
    mode: WandbMode = key(
        "online", "wandb: online | offline (no network; upload later with wandb sync)"
    )
    tracking_uri: str | None = key(
        None, "mlflow: server or store URI (null: a local file store ./mlruns)"
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    algo: AlgoConfig = section(AlgoConfig, "algorithm (the algo group)")
    buffer: BufferConfig = section(BufferConfig, "experience replay (the buffer group)")
    target: TargetConfig = section(TargetConfig, "target network (the target group)")
    env: EnvConfig = section(EnvConfig, "the environment (the env group: presets)")
    model: ModelConfig = section(ModelConfig, "the Q-network")
    exploration: ExplorationConfig = section(ExplorationConfig, "epsilon-greedy exploration")
    eval: EvalConfig = section(EvalConfig, "greedy evaluation during training")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "checkpoints/ in the run dir")
    log: LogConfig = section(LogConfig, "TensorBoard scalars and progress")
    logger: LoggerConfig = section(
        LoggerConfig, "experiment tracker beside TensorBoard (the logger group)"
    )
    seed: int = key(
        0, "seeds python, numpy, torch and the envs; same seed + config + CPU = same run", SEED
    )
    device: Device = key("auto", "auto (cuda if available) | cpu | cuda")
    torch_threads: int = key(
        1, "torch intra-op threads; 1 is fastest for small MLPs and reproducible", THREADS
    )
    total_steps: int = key(50_000, "env steps to train for", POSITIVE)
    num_envs: int = key(
        1,
        "envs stepped in lockstep (SyncVectorEnv; Atari: see env.vector), acted on in one "
        "forward pass",
        ENVS,
    )
    lr: float = key(1e-3, "Adam learning rate", POSITIVE)
    adam_eps: float = key(
        1e-8, "Adam's epsilon; larger values damp steps on tiny gradients", POSITIVE
    )
    lr_schedule: LrScheduleName = key("constant", "constant | linear (decays to 0 at total_steps)")
    gamma: float = key(0.99, "discount factor", UNIT)
    batch_size: int = key(64, "transitions per gradient step", POSITIVE)
    learning_starts: int = key(
        1_000,
        "env steps of pure collection before the first gradient step (>= batch_size)",
        POSITIVE,
    )
    train_every: int = key(1, "env steps between training rounds", POSITIVE)
    gradient_steps: int = key(1, "gradient steps per training round", POSITIVE)
    max_grad_norm: float | None = key(
        10.0, "clip the global gradient norm to this; null disables clipping", POSITIVE
    )
    loss: LossName = key("huber", "huber (smooth L1, delta 1) | mse")
    learner: LearnerName = key(
        "auto", "auto (fast where it applies: plain MLP on CPU) | autograd | fast"
    )
    compile: bool = key(
        False,
        "torch.compile the autograd learner's loss and its gradient (GPU: pays off after a "
        "one-off compile of tens of seconds)",
    )

    @property
    def replay_capacity(self) -> int:
        """Transitions the buffer holds; ``buffer=none`` keeps just one batch of the newest."""
        if self.buffer.kind == "none" or self.buffer.capacity is None:
            return self.batch_size
        return self.buffer.capacity

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples): safe for JSON and ``weights_only`` checkpoints.
        The model's own keys sit beside ``_target_`` and ``head``, as in the YAML."""
        plain = _to_plain(dataclasses.asdict(self))
        model = plain["model"]
        plain["model"] = {"_target_": model["_target_"], "head": model["head"], **model["args"]}
        return plain


@dataclass(frozen=True)
class RunOptions:
    """Keys of ``dqn-train`` itself: how to start, not what to train (never saved in a run)."""

    resume: str | None = key(
        None, "RUN_DIR: continue that run from its newest checkpoint (only total_steps may change)"
    )
    overwrite: bool = key(
        False,
        "start a new run in a dir that holds one: first deletes its checkpoints/, summary.json, "
        "train.log, events files and .hydra/",
    )

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def flatten_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"buffer.capacity": 100000, ...}``."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, Mapping) and value:  # an empty mapping (env.kwargs) is a value
            flat.update(flatten_keys(value, f"{prefix}{name}."))
        else:
            flat[prefix + str(name)] = value
    return flat


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# The key list: what help, the README table and "did you mean" read


@dataclass(frozen=True)
class KeyDoc:
    """One config key as users see it."""

    name: str  # dotted, e.g. "buffer.capacity"
    default: Any
    type: str  # "int", "float or null", "list of int", ...
    allowed: str  # choices or range, "" when any value of the type goes
    help: str


def config_keys(cls: type = TrainConfig, prefix: str = "") -> Iterator[KeyDoc]:
    """Every key of ``cls`` (sections flattened), in definition order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from config_keys(typing.cast(type, hint), f"{prefix}{f.name}.")
            continue
        if f.metadata.get("free"):
            continue
        rule: Rule | None = f.metadata["rule"]
        choices = _choices(hint)
        default = f.default
        if default is dataclasses.MISSING:
            default = typing.cast(Callable[[], Any], f.default_factory)()
        yield KeyDoc(
            name=prefix + f.name,
            default=_to_plain(default),
            type=_type_name(hint),
            allowed=" | ".join(choices) if choices else (rule.text if rule else ""),
            help=f.metadata["help"],
        )


def section_help(cls: type = TrainConfig) -> dict[str, str]:
    """One line per section of keys, e.g. ``{"buffer": "experience replay ..."}``."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: f.metadata["help"]
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints[f.name])
    }


def _choices(hint: Any) -> tuple[str, ...]:
    return tuple(str(a) for a in get_args(hint)) if get_origin(hint) is Literal else ()


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "str"
    if origin in (typing.Union, types.UnionType):
        (inner,) = (o for o in get_args(hint) if o is not type(None))
        return f"{_type_name(inner)} or null"
    if origin is tuple:
        return f"list of {_type_name(get_args(hint)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def suggest_key(name: str) -> str:
    """' did you mean ...?' for an unknown dotted key, or '' when nothing is close."""
    known = [k.name for k in config_keys()] + [k.name for k in config_keys(RunOptions)]
    leaf = name.rsplit(".", 1)[-1]
    close = (
        difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        # lr_rate -> lr, buffer.capacity_max -> buffer.capacity
        or [k for k in known if name.startswith(k + "_") or k.startswith(name + "_")][:1]
        # capacity -> buffer.capacity
        or [k for k in known if k.rsplit(".", 1)[-1] == leaf][:1]
    )
    return f"; did you mean {close[0]}?" if close else ""


# ---------------------------------------------------------------------------------------------
# Parsing: structure, types, ranges


def parse_train_config(raw: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested mapping, checking every key.

    Raises :class:`ConfigError` naming the first offending key.
    """
    config = _parse_dataclass(TrainConfig, raw, prefix="")
    _check_rules(config, "")
    _check_relations(config)
    return config


def parse_run_options(raw: Mapping[str, Any]) -> RunOptions:
    options = _parse_dataclass(RunOptions, raw, prefix="")
    if options.resume is not None and not options.resume.strip():
        raise ConfigError("resume", "is empty; give the run dir to continue: resume=RUN_DIR")
    return options


def _parse_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    if cls is ModelConfig:
        return _parse_model(raw, prefix)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(raw) - set(names))
    if unknown:
        raise ConfigError(
            prefix + unknown[0],
            f"unknown key{suggest_key(prefix + unknown[0])} (dqn-train --help lists every key)",
        )
    values: dict[str, Any] = {}
    for name in names:
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], prefix + name)
    return cls(**values)


def _parse_model(raw: Mapping[str, Any], prefix: str) -> ModelConfig:
    """``_target_`` and ``head`` are typed keys; every other key is the model's own argument,
    checked against its constructor when the model is built (dqn_cli.networks)."""
    target = raw.get("_target_", ModelConfig._target_)
    if target is None:
        raise ConfigError(
            prefix + "_target_", "model=custom needs your class: model._target_=my_pkg.nets.MyQNet"
        )
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(
            prefix + "_target_",
            f"expected module.Class, got {target!r} (e.g. model._target_=my_pkg.nets.MyQNet)",
        )
    head = _coerce(
        typing.get_type_hints(ModelConfig)["head"], raw.get("head", "linear"), prefix + "head"
    )
    args = {str(k): v for k, v in raw.items() if k not in ("_target_", "head")}
    if "_target_" not in raw and not args:
        args = ModelConfig().args  # the default MLP, as in checkpoints written before models
    for name, value in args.items():
        _require_plain(value, prefix + name)
    return ModelConfig(_target_=target, head=head, args=args)


def _require_plain(value: Any, key: str) -> None:
    """Model arguments travel in checkpoints and JSON: plain data only, finite numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if isinstance(value, list | tuple):
        for item in value:
            _require_plain(item, key)
    elif isinstance(value, Mapping):
        for item in value.values():
            _require_plain(item, key)
    elif not (value is None or isinstance(value, bool | int | float | str)):
        raise ConfigError(key, f"expected plain data (numbers, strings, lists), got {value!r}")


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
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(key, f"expected a mapping of names to values, got {value!r}")
        _require_plain(value, key)
        return dict(value)
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
        # No key has a use for inf or nan; each would poison the run silently (lr=inf).
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module


def _check_rules(section_value: Any, prefix: str) -> None:
    """Each key's own :class:`Rule` (element-wise for lists; null passes)."""
    for f in dataclasses.fields(section_value):
        value = getattr(section_value, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_rules(value, name + ".")
            continue
        rule: Rule | None = f.metadata["rule"]
        if rule is None or value is None or f.metadata.get("free"):
            continue
        items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
        for i, item in items:
            if not rule.holds(item):
                where = name if i is None else f"{name}[{i}]"
                raise ConfigError(where, f"must be {rule.text}, got {item!r}")


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(key, f"must be {rule}, got {value!r}")


def _check_wrappers(wrappers: tuple[dict[str, Any], ...]) -> None:
    """Each wrapper names its class; the class itself is imported when the env is built."""
    for i, wrapper in enumerate(wrappers):
        target = wrapper.get("_target_")
        if not isinstance(target, str) or "." not in target:
            raise ConfigError(
                f"env.wrappers[{i}]._target_",
                f"expected module.Class, got {target!r} "
                "(e.g. {_target_:gymnasium.wrappers.TimeLimit,max_episode_steps:100})",
            )


def ale_vector_refusal(env: EnvConfig) -> tuple[str, str] | None:
    """Why ale-py's vector env cannot step ``env`` (the key at fault, the reason), or None.
    It builds Atari games itself: nothing else to construct or wrap."""
    if not env.id.rpartition(":")[2].startswith(ATARI_PREFIX):
        return "env.vector", f"ale steps {ATARI_PREFIX}* games only, env.id is {env.id!r}"
    for name, value in (("env.kwargs", env.kwargs), ("env.wrappers", env.wrappers)):
        if value:
            return name, "env.vector=ale takes none (ale-py builds the games itself)"
    return None


def _check_relations(c: TrainConfig) -> None:
    """Rules between keys."""
    _check_wrappers(c.env.wrappers)
    refusal = ale_vector_refusal(c.env) if c.env.vector == "ale" else None
    if refusal is not None:
        raise ConfigError(refusal[0], f"{refusal[1]}; use env.vector=gymnasium")
    _require(
        c.exploration.end <= c.exploration.start,
        "exploration.end",
        f"<= exploration.start ({c.exploration.start}): epsilon decays",
        c.exploration.end,
    )
    if c.buffer.kind != "none":
        capacity = c.buffer.capacity
        _require(capacity is not None, "buffer.capacity", "> 0", capacity)
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
