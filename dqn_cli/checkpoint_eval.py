"""Evaluating saved checkpoints: find them from a path, rebuild env and network, run episodes.

Nothing here touches the terminal; ``dqn_cli.cli.evaluate`` (``dqn-eval``) draws the output.
A checkpoint is evaluated from what it carries alone (config, env spec, weights), so a file
copied to another directory or machine gives the same returns as in its run dir.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from dqn_cli.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_weights,
    load_checkpoint,
    shown,
)
from dqn_cli.config import ConfigError, EnvConfig, parse_train_config
from dqn_cli.env_spec import EnvSpec
from dqn_cli.envs import EnvError, env_spec, make_env
from dqn_cli.errors import first_line
from dqn_cli.evaluation import Evaluator
from dqn_cli.networks import ModelError, QNetwork, build_q_network, parameter_shapes
from dqn_cli.rundirs import find_run_dirs, is_run_dir, read_overrides

VIDEO_EXTRA_HINT = "pip install 'dqn-cli[video]'"


class EvalTargetError(ValueError):
    """A path names nothing that can be evaluated; ``str()`` is one line."""


class VideoError(ValueError):
    """Videos cannot be recorded (a missing extra); ``str()`` is one line."""


@dataclass(frozen=True)
class EvalTarget:
    """One checkpoint to evaluate and how to name it.

    ``label`` is what a person reads: the path given, or inside a sweep the job's dir relative
    to the sweep dir plus the overrides that set it apart from the other jobs. ``name`` is the
    job's relative dir inside a sweep (videos go in a subdir of that name), else "".
    """

    checkpoint: Path
    label: str
    name: str = ""


@dataclass(frozen=True)
class Resolved:
    """What a path resolved to; ``skipped`` are sweep jobs without the requested checkpoint."""

    targets: list[EvalTarget]
    skipped: list[Path]


def checkpoint_name(last: bool) -> str:
    return "last.pt" if last else "best.pt"


def resolve_targets(path: Path, last: bool = False) -> Resolved:
    """The checkpoints ``path`` names: a checkpoint file, a run dir, or a sweep dir of runs."""
    name = checkpoint_name(last)
    if not path.exists():
        raise EvalTargetError(f"{path} does not exist")
    if path.is_file():
        return Resolved([EvalTarget(path, str(path))], [])
    if not path.is_dir():
        raise EvalTargetError(f"{path} is neither a checkpoint file nor a directory")
    if is_run_dir(path):
        checkpoint = path / "checkpoints" / name
        if not checkpoint.is_file():
            raise EvalTargetError(_missing_checkpoint_message(path, last))
        return Resolved([EvalTarget(checkpoint, str(path))], [])

    runs = find_run_dirs(path)
    if not runs:
        raise EvalTargetError(
            f"{path} holds no checkpoints: expected a .pt file, a run dir (with checkpoints/) "
            "or a sweep dir of run dirs"
        )
    have = [run for run in runs if (run / "checkpoints" / name).is_file()]
    if not have:
        other = checkpoint_name(not last)
        some_other = any((run / "checkpoints" / other).is_file() for run in runs)
        hint = (
            f" (some have {other}: run {'without' if last else 'with'} --last)"
            if some_other
            else ""
        )
        raise EvalTargetError(
            f"sweep dir {path}: none of its {len(runs)} runs has checkpoints/{name}{hint}"
        )
    names = [run.relative_to(path).as_posix() for run in have]
    distinct = distinguishing_overrides([read_overrides(run) for run in have])
    targets = [
        EvalTarget(run / "checkpoints" / name, " ".join([job, *overrides]), job)
        for run, job, overrides in zip(have, names, distinct, strict=True)
    ]
    return Resolved(targets, [run for run in runs if run not in have])


def _missing_checkpoint_message(run_dir: Path, last: bool) -> str:
    name, other = checkpoint_name(last), checkpoint_name(not last)
    if (run_dir / "checkpoints" / other).is_file():
        flag = "without --last" if last else "with --last"
        return f"run dir {run_dir} has no checkpoints/{name} (it has {other}: run {flag})"
    return f"run dir {run_dir} has no checkpoints/{name} (has its training written one yet?)"


def distinguishing_overrides(per_run: list[list[str]]) -> list[list[str]]:
    """Each run's overrides less those every run shares (``seed=1`` stays, ``lr=...`` goes)."""
    if len(per_run) < 2:
        return [[] for _ in per_run]
    shared = set.intersection(*(set(overrides) for overrides in per_run))
    return [[o for o in overrides if o not in shared] for overrides in per_run]


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read safely and checked against the env it names, ready to evaluate."""

    path: Path
    env: EnvConfig  # id, kwargs and wrappers as trained: the env is rebuilt the same
    step: int
    network: QNetwork

    @property
    def env_id(self) -> str:
        return self.env.id


def load_for_eval(path: Path) -> LoadedCheckpoint:
    """Read ``path`` (weights only, onto the CPU), rebuild its network and check its env.

    Every problem is a one-line ``CheckpointError`` or ``EnvError`` naming the file, raised
    before any episode runs.
    """
    payload = load_checkpoint(path)
    version = payload.get("format", CHECKPOINT_FORMAT)
    # Older formats still carry model, config and env_spec; only a newer one is unknown.
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {shown(version)}, newer than this dqn-cli reads "
            f"({CHECKPOINT_FORMAT}): upgrade dqn-cli"
        )
    try:
        config = parse_train_config(payload["config"])
        env_id = config.env.id
        spec = EnvSpec.from_dict(payload["env_spec"])
        step = int(payload.get("env_step") or 0)
    except ConfigError as exc:
        raise CheckpointError(
            f"checkpoint {path} has a config this dqn-cli refuses: {exc}"
        ) from exc
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        RuntimeError,
    ) as exc:
        raise CheckpointError(
            f"checkpoint {path} is not a dqn-cli checkpoint (bad or missing {first_line(exc)})"
        ) from exc
    # The env first: sizes the file declares are believed only once the env confirms them.
    try:
        env = make_env(config.env)
        actual = env_spec(env.observation_space, env.action_space, env_id)
        env.close()
    except EnvError as exc:
        raise EnvError(f"checkpoint {path}: {exc}") from exc
    if actual != spec:
        # A different gymnasium version may change an env under the same id.
        raise EnvError(
            f"checkpoint {path}: env {env_id!r} here has {_describe(actual)}, "
            f"the checkpoint was trained on {_describe(spec)}"
        )
    model = config.model
    weights = _current_model_keys(payload["model"])
    try:
        # Checked against the shapes of a network built on torch's meta device (no memory),
        # so no tensor of a size the file declares is allocated before it is known to fit.
        check_weights(weights, parameter_shapes(model._target_, model.head, model.args, spec), path)
        network = build_q_network(model._target_, model.head, model.args, spec)
    except ModelError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild its model: {exc}") from exc
    try:
        network.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit the network its config describes"
        ) from exc
    return LoadedCheckpoint(path, config.env, step, network)


def _current_model_keys(state: Any) -> Any:
    """Formats before 3 saved the MLP itself ("layers.0.weight"); now the model sits behind
    the shared input encoding ("net.layers.0.weight")."""
    if not isinstance(state, dict) or any(str(name).startswith("net.") for name in state):
        return state
    return {f"net.{name}": value for name, value in state.items()}


def _describe(spec: EnvSpec) -> str:
    obs = (
        f"{spec.obs_categories} discrete observations"
        if spec.obs_categories is not None
        else f"observations of shape {list(spec.obs_shape)} ({spec.obs_dtype})"
    )
    return f"{obs} and {spec.n_actions} actions"


@dataclass(frozen=True)
class CheckpointResult:
    """One checkpoint's evaluation; ``to_dict`` is the ``dqn-eval --json`` line."""

    checkpoint: str
    step: int
    episodes: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float
    length_mean: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_video_extra() -> None:
    """Fail before any work when moviepy (gymnasium's video writer) is missing."""
    try:
        found = importlib.util.find_spec("moviepy") is not None
    except ValueError:  # a module set to None in sys.modules, as when it is blocked
        found = False
    if not found:
        raise VideoError(f"--video needs the video extra (moviepy): {VIDEO_EXTRA_HINT}")


def evaluate_checkpoint(
    ckpt: LoadedCheckpoint,
    episodes: int,
    seed: int,
    epsilon: float = 0.0,
    device: torch.device | None = None,
    video_dir: Path | None = None,
) -> CheckpointResult:
    """Run ``episodes`` seeded episodes (episode ``i`` seeded ``seed + i``) with the network.

    With ``video_dir`` each episode is also written to ``video_dir/<stem>-episode-<i>.mp4``.
    Episodes then run one at a time: ``RecordVideo`` numbers the episodes of its own env, and
    only with one env are its numbers the episode indices. Greedy returns are unchanged by
    that; with ``epsilon`` > 0 the random draws, so the returns, differ from a run without.
    """
    device = device or torch.device("cpu")
    network = ckpt.network.to(device)
    factory = None
    if video_dir is not None:
        require_video_extra()
        factory = _video_env_factory(ckpt.env, video_dir, ckpt.path.stem)
    evaluator = Evaluator(
        ckpt.env,
        episodes,
        seed,
        epsilon,
        device,
        max_parallel=1 if video_dir is not None else 32,
        env_factory=factory,
    )
    try:
        result = evaluator.run(network)
    except gym.error.DependencyNotInstalled as exc:  # rendering, for instance pygame
        raise VideoError(f"cannot render {ckpt.env_id!r}: {first_line(exc)}") from exc
    finally:
        evaluator.close()
    return CheckpointResult(
        checkpoint=str(ckpt.path),
        step=ckpt.step,
        episodes=episodes,
        return_mean=result.mean,
        return_std=result.std,
        return_min=float(result.returns.min()),
        return_max=float(result.returns.max()),
        length_mean=float(result.lengths.mean()),
    )


def _video_env_factory(
    env_config: EnvConfig, video_dir: Path, prefix: str
) -> Callable[[], gym.Env]:
    def factory() -> gym.Env:
        env = make_env(env_config, render_mode="rgb_array")
        with warnings.catch_warnings():
            # RecordVideo warns when the folder exists; many checkpoints share one on purpose.
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos.*")
            try:
                return gym.wrappers.RecordVideo(
                    env,
                    str(video_dir),
                    episode_trigger=lambda _: True,
                    name_prefix=prefix,
                    disable_logger=True,
                )
            except gym.error.DependencyNotInstalled as exc:
                env.close()
                raise VideoError(f"--video: {first_line(exc)}; {VIDEO_EXTRA_HINT}") from exc

    return factory
