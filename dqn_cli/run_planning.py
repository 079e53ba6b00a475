"""What to check before a run dir exists, and how to continue a run: plain library code.

``dqn-train`` calls these after composing its config and before Hydra creates a run dir, so a
bad value, an unknown env, a missing device, too little memory or a broken ``resume=`` target
costs one line and no empty run dir, and a resume that is refused changes no file of the run.
Then the run dir is claimed: one run per dir, one process per run (see run_lock.py).
Nothing here knows Hydra; every function takes plain values and can be tested with plain
values. torch and gymnasium are imported only once a config has passed, so a config
error returns at once.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dqn_cli.config import ConfigError, EnvConfig, TrainConfig, parse_train_config
from dqn_cli.env_spec import EnvSpec
from dqn_cli.errors import MissingExtraError
from dqn_cli.run_lock import LOCK_NAME, RunDirError, RunLock

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
    """Validate a new run's config, then its env, memory, device, model and learner (cheapest
    first)."""
    config = parse_train_config(raw)
    from dqn_cli.loggers import require_tracker

    require_tracker(config.logger.kind)
    require_frame_compression(config)
    # gymnasium loads only once the config itself is known to be good, torch once the env is.
    spec = actual_env_spec(config.env)
    from dqn_cli.learner import choose_learner
    from dqn_cli.networks import build_q_network
    from dqn_cli.training import resolve_device

    check_memory(config, spec)
    device = resolve_device(config.device)
    model = config.model
    q_net = build_q_network(model._target_, model.head, model.args, spec)
    choose_learner(config.learner, q_net, device, config.compile)
    return config


def require_frame_compression(config: TrainConfig) -> None:
    """Fail in one line, before any run dir, when the replay is to compress its frames and
    the compressor (the atari extra's lz4) is not installed."""
    from dqn_cli.envs import replay_frame_stack

    if config.buffer.frame_compression != "lz4" or replay_frame_stack(config.env) == 1:
        return
    try:
        found = importlib.util.find_spec("lz4") is not None
    except ValueError:  # a module set to None in sys.modules, as when it is blocked
        found = False
    if not found:
        raise MissingExtraError(
            "buffer.frame_compression: lz4 needs the atari extra: "
            "pip install 'dqn-cli[atari]' (or make install)"
        )


def actual_env_spec(env: EnvConfig) -> EnvSpec:
    """The spec of the env ``env`` describes, as installed here (one-line EnvError when it
    cannot be made)."""
    from dqn_cli.envs import env_spec, make_env

    made = make_env(env)
    try:
        return env_spec(made.observation_space, made.action_space, env.id)
    finally:
        made.close()


# ---------------------------------------------------------------------------------------------
# Memory: what a run preallocates, against what the machine has

# Float32 copies of the network a run holds: online and target weights, gradients, two Adam
# moments.
NETWORK_COPIES = 5


def required_replay_bytes(config: TrainConfig, spec: EnvSpec) -> int:
    """Bytes the replay buffer preallocates, computed by the storage it will be (each frame
    once for stacked Atari frames, whole observations otherwise) without allocating. With
    buffer.frame_compression the frames are not preallocated and not counted: what they take
    depends on how well the game's frames compress (the log's replay/bytes shows it)."""
    from dqn_cli.buffers.replay import storage_nbytes
    from dqn_cli.envs import replay_frame_stack

    return storage_nbytes(
        config.replay_capacity,
        spec.obs_shape,
        np.dtype(spec.obs_dtype),
        replay_frame_stack(config.env),
        config.buffer.frame_compression,
    )


def required_n_step_bytes(config: TrainConfig, spec: EnvSpec) -> int:
    """Bytes of the n-step accumulator: per env, the last n observations, int64 actions and
    float64 rewards (nothing for 1-step returns)."""
    n = config.buffer.n_step
    if n == 1:
        return 0
    obs_bytes = math.prod(spec.obs_shape) * np.dtype(spec.obs_dtype).itemsize
    return config.num_envs * n * (obs_bytes + 8 + 8)


def required_network_bytes(config: TrainConfig, spec: EnvSpec) -> int:
    """Bytes of the network's weights and optimizer state (measured without allocating them)."""
    from dqn_cli.networks import parameter_shapes

    model = config.model
    shapes = parameter_shapes(model._target_, model.head, model.args, spec)
    return NETWORK_COPIES * 4 * sum(math.prod(shape) for shape in shapes.values())


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. under SLURM), not the host's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory_bytes() -> int | None:
    """Memory this process may still use: MemAvailable, or the cgroup's remaining limit where
    lower; None where neither can be read (then nothing is checked)."""
    limits = [_meminfo_available(), _cgroup_remaining()]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_remaining() -> int | None:
    """The cgroup v2 (or v1) memory limit less current usage; None when unlimited or unknown."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        # v1 reports "no limit" as a huge number rather than "max".
        if limit == "max" or int(limit) >= 2**60:
            return None
        return max(int(limit) - usage, 0)
    return None


def check_memory(config: TrainConfig, spec: EnvSpec) -> None:
    """Refuse a run whose replay buffer and network cannot fit in the memory available, before
    anything is allocated or any run dir exists."""
    available = available_memory_bytes()
    if available is None:
        return
    needs = {
        "buffer.capacity": required_replay_bytes(config, spec),
        "buffer.n_step": required_n_step_bytes(config, spec),
        "model": required_network_bytes(config, spec),
    }
    total = sum(needs.values())
    if total <= available:
        return
    largest = max(needs, key=lambda name: needs[name])
    what = {
        "buffer.capacity": f"{config.replay_capacity} replay transitions of {config.env.id}",
        "buffer.n_step": f"n-step sums of {config.buffer.n_step} steps over {config.num_envs} envs",
        "model": "the network and its optimizer state",
    }[largest]
    raise ConfigError(
        largest,
        f"{what} need {_size(needs[largest])} of memory, {_size(available)} is available; "
        f"lower {largest if largest != 'model' else 'the model size'}",
    )


def _size(n_bytes: int) -> str:
    return f"{n_bytes:,} bytes ({n_bytes / 2**30:,.1f} GiB)"


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


def resume_dir(text: str) -> Path:
    """The run dir ``resume=`` names, which must exist."""
    run_dir = Path(text).expanduser().absolute()
    if not run_dir.is_dir():
        raise ConfigError("resume", f"{run_dir} is not a directory")
    return run_dir


def plan_resume(run_dir: Path, total_steps: int | None = None) -> ResumePlan:
    """Find, read and check the checkpoint that continues ``run_dir``: everything in it is
    restored once into throwaway objects, so whatever the resumed run would refuse is refused
    here, before anything in the run dir changes."""
    from dqn_cli.checkpoint import (
        CHECKPOINT_FORMAT,
        CheckpointError,
        load_checkpoint,
        newest_checkpoint,
        shown,
    )
    from dqn_cli.training import resolve_device

    checkpoint = newest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise ConfigError(
            "resume", f"no checkpoint in {run_dir / 'checkpoints'}; nothing to resume"
        )
    payload = load_checkpoint(checkpoint)
    version = payload.get("format")
    if type(version) is not int or version != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: it has checkpoint format {shown(version)}, this "
            f"dqn-cli resumes format {CHECKPOINT_FORMAT} only; evaluate it with dqn-eval or "
            "start a new run"
        )
    try:
        config = parse_train_config(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: its config is refused: {exc}"
        ) from exc
    step = payload.get("env_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: its env_step is {shown(step)}, not a count of steps"
        )
    if total_steps is not None:
        config = replace(config, total_steps=total_steps)
    if config.total_steps <= step:
        raise ConfigError(
            "total_steps",
            f"the run already has {step} env steps; give total_steps > {step} to continue it",
        )
    resolve_device(config.device)
    from dqn_cli.loggers import require_tracker

    require_tracker(config.logger.kind)
    require_frame_compression(config)
    rehearse_resume(checkpoint, payload, config)
    return ResumePlan(run_dir, checkpoint, payload, config)


def rehearse_resume(checkpoint: Path, payload: dict[str, Any], config: TrainConfig) -> None:
    """Restore ``payload`` into objects built from ``config`` and thrown away: the same code
    the resumed run uses, so no check is left for later. Declared sizes are checked against
    the env and the config before anything of that size is allocated."""
    from dqn_cli.checkpoint import CheckpointError, check_weights
    from dqn_cli.envs import env_seeds, make_vector_env
    from dqn_cli.networks import parameter_shapes
    from dqn_cli.run_state import LoopState, restore
    from dqn_cli.training import build_agent, resolve_device

    def refused(reason: str) -> CheckpointError:
        return CheckpointError(f"cannot resume from {checkpoint}: {reason}")

    spec = actual_env_spec(config.env)
    try:
        saved_spec = EnvSpec.from_dict(payload["env_spec"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, OverflowError) as exc:
        raise refused(f"its env_spec is missing or damaged ({type(exc).__name__})") from exc
    if saved_spec != spec:
        raise refused(f"it was trained on {saved_spec}, env {config.env.id!r} here is {spec}")
    model = config.model
    shapes = parameter_shapes(model._target_, model.head, model.args, spec)
    check_weights(payload["model"], shapes, checkpoint)
    if config.target.kind != "none":
        check_weights(payload.get("target_model"), shapes, checkpoint, "target network weights")
    check_memory(config, spec)
    envs = make_vector_env(config.env, config.num_envs)
    # Silent: what the restore has to say ("episodes restart", ...) the resumed run logs.
    restore_log = logging.getLogger("dqn_cli.run_state")
    restore_log.disabled = True
    try:
        rng = np.random.default_rng(config.seed)
        agent = build_agent(config, spec, resolve_device(config.device), rng)
        obs, _ = envs.reset(seed=env_seeds(config.seed, envs.num_envs))
        n = config.num_envs
        state = LoopState(obs.copy(), np.zeros(n), np.zeros(n, dtype=np.int64))
        restore(payload, agent, envs, state, rng, config)
    except CheckpointError as exc:
        raise refused(str(exc)) from exc
    except Exception as exc:  # damaged state fails deep inside torch, numpy or pickle
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise refused(f"its training state does not fit this run ({detail})") from exc
    finally:
        restore_log.disabled = False
        envs.close()


# ---------------------------------------------------------------------------------------------
# Run dirs: one run per dir, one process per run

# What a run leaves in its dir (README, "What a run leaves"): any of them means a run is there.
RUN_ENTRIES = ("checkpoints", "summary.json", "train.log", ".hydra")
EVENTS_PATTERN = "events.out.tfevents.*"


def run_entries(run_dir: Path) -> list[Path]:
    """The files and dirs of a run in ``run_dir`` (none for a new or an unrelated dir)."""
    if not run_dir.is_dir():
        return []
    named = [run_dir / name for name in RUN_ENTRIES]
    return [p for p in named if p.exists() or p.is_symlink()] + sorted(run_dir.glob(EVENTS_PATTERN))


def claim_new_run_dir(run_dir: Path, overwrite: bool) -> RunLock:
    """Make ``run_dir`` a new run's own: create it and lock it for this process. A dir that
    already holds a run is refused, or with ``overwrite`` emptied of that run's files."""
    lock = RunLock.acquire(run_dir) if (run_dir / LOCK_NAME).exists() else None
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirError(f"run dir {run_dir} is a file; choose another hydra.run.dir")
        checkpoints = run_dir / "checkpoints"
        if checkpoints.exists() and not checkpoints.is_dir() and not overwrite:
            raise RunDirError(
                f"{checkpoints} is a file where checkpoints go: move it away or choose another "
                "hydra.run.dir"
            )
        entries = run_entries(run_dir)
        if entries and not overwrite:
            names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:4])
            raise RunDirError(
                f"run dir {run_dir} already holds a run ({names}); continue it with "
                f"resume={run_dir}, choose another hydra.run.dir, or add overwrite=true to "
                "replace it"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run dir {run_dir}: {exc.strerror or exc}") from exc
        lock = lock or RunLock.acquire(run_dir)
        if overwrite:
            remove_run(run_dir)
        prepare_run_dir(run_dir, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def remove_run(run_dir: Path) -> None:
    """Delete the run in ``run_dir`` (what overwrite=true promises); other files stay."""
    for entry in run_entries(run_dir):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise RunDirError(f"cannot delete {entry}: {exc.strerror or exc}") from exc


def claim_sweep_dir(sweep_dir: Path, overwrite: bool) -> None:
    """Refuse a sweep into a dir that holds runs, or with ``overwrite`` delete those runs."""
    from dqn_cli.rundirs import find_run_dirs

    if not sweep_dir.is_dir():
        return
    runs = [run for run in find_run_dirs(sweep_dir) if run_entries(run)]
    if runs and not overwrite:
        raise RunDirError(
            f"sweep dir {sweep_dir} already holds {len(runs)} run(s); choose another "
            "hydra.sweep.dir, or add overwrite=true to replace them"
        )
    for run in runs:
        with RunLock.acquire(run):
            remove_run(run)


def prepare_run_dir(run_dir: Path, lock: RunLock) -> None:
    """Last steps of claiming a locked run dir: check it can be written, delete temporary
    files a killed checkpoint write left behind, record this process as the holder."""
    from dqn_cli.checkpoint import remove_temp_files

    for where in (run_dir, run_dir / "checkpoints"):
        if where.exists() and not os.access(where, os.W_OK | os.X_OK):
            raise RunDirError(f"cannot write in {where}: permission denied")
    remove_temp_files(run_dir / "checkpoints")
    lock.record_holder()
