"""What to check before a run dir exists, and how to continue a run: plain library code.

``dqn-train`` calls these after composing its config and before Hydra creates a run dir, so a
bad value, an unknown env, a missing device or a broken ``resume=`` target costs one line and no
empty run dir. Nothing here knows Hydra; every function takes plain values and can be tested
with plain values. torch and gymnasium are imported only once a config has passed, so a config
error returns at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dqn_cli.config import ConfigError, TrainConfig, parse_train_config

# The only key that may change when a run is continued: extending (or shortening) it.
RESUME_OVERRIDABLE = ("total_steps",)


@dataclass(frozen=True)
class ResumePlan:
    """A run to continue: where it is, the checkpoint and its contents, the config to use."""

    run_dir: Path
    checkpoint: Path
    payload: dict[str, Any]
    config: TrainConfig

    @property
    def start_step(self) -> int:
        return int(self.payload["env_step"])


def check_new_run(raw: dict[str, Any]) -> TrainConfig:
    """Validate a new run's config, then its env, device, model and learner (cheapest first)."""
    config = parse_train_config(raw)
    from dqn_cli.loggers import require_tracker

    require_tracker(config.logger.kind)
    # gymnasium and torch load only once the config itself is known to be good.
    from dqn_cli.envs import env_spec, make_env

    env = make_env(config.env)
    try:
        spec = env_spec(env.observation_space, env.action_space, config.env.id)
    finally:
        env.close()
    from dqn_cli.learner import choose_learner
    from dqn_cli.networks import build_q_network
    from dqn_cli.training import resolve_device

    device = resolve_device(config.device)
    model = config.model
    q_net = build_q_network(model._target_, model.head, model.args, spec)
    choose_learner(config.learner, q_net, device, config.compile)
    return config


def resume_overrides(overrides: dict[str, str]) -> int | None:
    """The new ``total_steps`` among a resume's ``key -> value`` overrides (None: unchanged);
    any other key is refused, since a continued run keeps its saved config."""
    extra = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
    if extra:
        raise ConfigError(
            "resume",
            "only total_steps=N may be given with resume= (the run keeps its saved config); "
            f"remove: {' '.join(f'{k}={overrides[k]}' for k in extra)}",
        )
    if "total_steps" not in overrides:
        return None
    value = overrides["total_steps"]
    if not value.isdigit():
        raise ConfigError("total_steps", f"expected an integer, got {value!r}")
    return int(value)


def plan_resume(run_dir: Path, total_steps: int | None = None) -> ResumePlan:
    """Find, read and check the checkpoint that continues ``run_dir``."""
    from dqn_cli.checkpoint import (
        CHECKPOINT_FORMAT,
        CheckpointError,
        load_checkpoint,
        newest_checkpoint,
    )
    from dqn_cli.training import resolve_device

    run_dir = run_dir.expanduser().resolve()
    if not run_dir.is_dir():
        raise ConfigError("resume", f"{run_dir} is not a directory")
    checkpoint = newest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise ConfigError(
            "resume", f"no checkpoint in {run_dir / 'checkpoints'}; nothing to resume"
        )
    payload = load_checkpoint(checkpoint)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: it has checkpoint format "
            f"{payload.get('format')!r}, this dqn-cli resumes format {CHECKPOINT_FORMAT} only; "
            "evaluate it with dqn-eval or start a new run"
        )
    config = parse_train_config(payload["config"])
    if total_steps is not None:
        config = replace(config, total_steps=total_steps)
    step = int(payload["env_step"])
    if config.total_steps <= step:
        raise ConfigError(
            "total_steps",
            f"the run already has {step} env steps; give total_steps > {step} to continue it",
        )
    resolve_device(config.device)
    from dqn_cli.loggers import require_tracker

    require_tracker(config.logger.kind)
    return ResumePlan(run_dir, checkpoint, payload, config)
