"""Everything a checkpoint holds of a training run, and putting it back.

The loop (training.py) owns the objects; this module turns them into a checkpoint payload and
back: the agent (networks, learner state, replay), the loop's counters, every RNG and the envs.
Checks that guard what is saved live here too: weights are checked finite before any write.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqn_cli.buffers import ReplayBuffer
from dqn_cli.buffers.nstep import NStepAccumulator
from dqn_cli.checkpoint import CHECKPOINT_FORMAT, CheckpointError, save_checkpoint, shown
from dqn_cli.config import TrainConfig
from dqn_cli.env_spec import EnvSpec
from dqn_cli.env_state import restore_envs, snapshot_envs
from dqn_cli.envs import VectorEnv, env_seeds
from dqn_cli.learner import Learner, UpdateResult
from dqn_cli.networks import QNetwork
from dqn_cli.run_lock import RunDirError
from dqn_cli.targets import TargetUpdater

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The TD loss, Q-values or weights became NaN/inf; ``str()`` is one line."""


@dataclass(frozen=True)
class Agent:
    """Everything that learns, wired together from the config."""

    online: QNetwork
    target: QNetwork  # the online net itself with target=none
    learner: Learner
    target_updater: TargetUpdater
    buffer: ReplayBuffer
    n_step: NStepAccumulator | None  # None for 1-step returns


@dataclass
class LoopState:
    """The loop's own counters and accumulators: with the agent, RNGs and envs, all a
    checkpoint needs for an exact continuation."""

    obs: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    step: int = 0
    episodes: int = 0
    best_eval: float = -math.inf
    last_eval: float | None = None
    last_eval_step: int = -1
    recent_returns: deque[float] = field(default_factory=lambda: deque(maxlen=20))

    def state_dict(self) -> dict[str, Any]:
        return {
            "obs": torch.from_numpy(np.array(self.obs)),
            "episode_return": torch.from_numpy(self.episode_return.copy()),
            "episode_length": torch.from_numpy(self.episode_length.copy()),
            "episodes": self.episodes,
            "best_eval": self.best_eval,
            "last_eval": self.last_eval,
            "last_eval_step": self.last_eval_step,
            "recent_returns": list(self.recent_returns),
        }

    def load_state_dict(self, state: Any, step: int, envs_restored: bool) -> None:
        """Restore the counters; raises ValueError (one line) for a value of the wrong type,
        shape or range, before anything is changed."""
        if not isinstance(state, dict):
            raise ValueError("loop state is not a dict")
        episodes = _count(state, "episodes", minimum=0)
        last_eval_step = _count(state, "last_eval_step", minimum=-1)
        best_eval = _number(state, "best_eval", allow=-math.inf)
        last_eval = None if state.get("last_eval") is None else _number(state, "last_eval")
        returns = state.get("recent_returns")
        if not isinstance(returns, list) or len(returns) > self.recent_returns.maxlen:  # type: ignore[operator]
            raise ValueError(
                f"loop state 'recent_returns' is not a list of at most "
                f"{self.recent_returns.maxlen} numbers"
            )
        recent = [_number({"recent_returns": r}, "recent_returns") for r in returns]
        arrays = {}
        if envs_restored:  # otherwise the fresh episodes that were just reset stand
            for name in ("obs", "episode_return", "episode_length"):
                ours = getattr(self, name)
                saved = state.get(name)
                if not isinstance(saved, torch.Tensor) or saved.shape != ours.shape:
                    shape = list(saved.shape) if isinstance(saved, torch.Tensor) else "none"
                    raise ValueError(
                        f"loop state {name!r} has shape {shape}, this run needs {list(ours.shape)}"
                    )
                arrays[name] = saved.numpy().astype(ours.dtype)
        self.step, self.episodes = step, episodes
        self.best_eval, self.last_eval, self.last_eval_step = best_eval, last_eval, last_eval_step
        self.recent_returns.extend(recent)
        for name, value in arrays.items():
            setattr(self, name, value)


def _count(state: dict[str, Any], name: str, minimum: int) -> int:
    value = state.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"loop state {name!r} is {shown(value)}, expected an integer >= {minimum}")
    return value


def _number(state: dict[str, Any], name: str, allow: float | None = None) -> float:
    """A finite float (or exactly ``allow``, e.g. -inf before the first evaluation)."""
    value = state.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"loop state {name!r} is {shown(value)}, expected a number")
    if not (math.isfinite(value) or value == allow):
        raise ValueError(f"loop state {name!r} is {shown(value)}, expected a finite number")
    return float(value)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    legacy: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    mt_name, mt_keys, mt_pos, mt_has_gauss, mt_gauss = legacy
    state = {
        "generator": rng.bit_generator.state,
        "python": random.getstate(),
        "numpy_global": [mt_name, torch.from_numpy(mt_keys.copy()), mt_pos, mt_has_gauss, mt_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["generator"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_finite(
    online: QNetwork, update: UpdateResult | None, step: int, config: TrainConfig, where: Path
) -> None:
    """Refuse to go on (or save) once the loss, the Q-values or the weights are not finite."""
    values_ok = update is None or (
        bool(torch.isfinite(update.loss)) and bool(torch.isfinite(update.mean_q))
    )
    weights_ok = all(bool(torch.isfinite(p).all()) for p in online.parameters())
    if values_ok and weights_ok:
        return
    raise TrainingDiverged(
        f"training diverged at env step {step}: the "
        f"{'weights' if not weights_ok else 'TD loss or Q-values'} are not finite. The last good "
        f"checkpoint is kept in {where}. Likely causes: a learning rate too high "
        f"(lr={config.lr}), rewards on a large scale, or no gradient clipping "
        f"(max_grad_norm={config.max_grad_norm})"
    )


# What of a full-state payload must be finite to be worth resuming from.
_FINITE_PARTS = {
    "model": "weights",
    "target_model": "target network weights",
    "optimizer": "optimizer state",
}


def require_finite_state(payload: dict[str, Any], path: Path) -> None:
    """Refuse to write a checkpoint whose weights or optimizer moments are NaN or inf: the
    loss can look finite while Adam's moments have already overflowed."""
    for part, name in _FINITE_PARTS.items():
        if not all(bool(torch.isfinite(t).all()) for t in _float_tensors(payload.get(part))):
            raise TrainingDiverged(
                f"training diverged by env step {payload['env_step']}: the {name} are not "
                f"finite, so they were not saved to {path}; the last good checkpoint is kept. "
                "Likely causes: a learning rate too high, rewards on a large scale, or no "
                "gradient clipping"
            )


def _float_tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree] if tree.is_floating_point() else []
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, list | tuple):
        return [t for item in tree for t in _float_tensors(item)]
    return []


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json, replaced atomically; a one-line RunDirError when it cannot be written."""
    path = run_dir / "summary.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirError(f"cannot write {path}: {exc.strerror or exc}") from exc


def model_payload(
    online: QNetwork, config: TrainConfig, spec: EnvSpec, step: int, eval_return: float | None
) -> dict[str, Any]:
    """What dqn-eval needs: weights, the config that rebuilds the model and env, the env spec."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": online.state_dict(),
        "config": config.to_dict(),
        "env_spec": spec.to_dict(),
        "env_step": step,
        "eval_return": eval_return,
    }


def full_payload(
    agent: Agent,
    config: TrainConfig,
    spec: EnvSpec,
    state: LoopState,
    rng: np.random.Generator,
    envs: VectorEnv,
) -> dict[str, Any]:
    """last.pt: everything an exact continuation needs."""
    payload = model_payload(agent.online, config, spec, state.step, state.last_eval)
    payload["optimizer"] = agent.learner.state_dict()
    if agent.target is not agent.online:
        payload["target_model"] = agent.target.state_dict()
    payload["loop"] = state.state_dict()
    if agent.n_step is not None:
        payload["n_step"] = {
            k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in agent.n_step.state_dict().items()
        }
    payload["rng"] = rng_state(rng)
    payload["env_snapshots"] = snapshot_envs(envs)
    if config.checkpoint.save_buffer:
        payload["replay"] = agent.buffer.state_dict()
    return payload


def save_full_state(payload: dict[str, Any], checkpoints: Path, keep: int, periodic: bool) -> None:
    """Write last.pt; periodic ones are also kept as step_<N>.pt copies, ``keep`` at most."""
    last = checkpoints / "last.pt"
    require_finite_state(payload, last)
    save_checkpoint(payload, last)
    if periodic and keep > 0:
        keep_periodic_copy(last, checkpoints / f"step_{payload['env_step']:09d}.pt", keep)


def keep_periodic_copy(last: Path, copy_path: Path, keep: int) -> None:
    """Keep ``last`` also as ``copy_path`` (a hard link: no second write) and prune to ``keep``."""
    copy_path.unlink(missing_ok=True)
    try:
        os.link(last, copy_path)
    except OSError:
        shutil.copy2(last, copy_path)
    periodic = sorted(last.parent.glob("step_*.pt"))
    for old in periodic[:-keep]:
        old.unlink(missing_ok=True)


def restore(
    payload: dict[str, Any],
    agent: Agent,
    envs: VectorEnv,
    state: LoopState,
    rng: np.random.Generator,
    config: TrainConfig,
) -> None:
    """Load a full-state checkpoint into freshly built objects; one-line CheckpointErrors."""
    for key in ("optimizer", "loop", "rng"):
        if key not in payload:
            raise CheckpointError(
                f"checkpoint has no {key!r}: it holds weights only (best.pt?) and cannot be resumed"
            )
    try:
        agent.online.load_state_dict(payload["model"])
        if agent.target is not agent.online:
            agent.target.load_state_dict(payload["target_model"])
        agent.learner.load_state_dict(payload["optimizer"])
        if agent.n_step is not None:
            saved = payload.get("n_step")
            if not isinstance(saved, dict):
                raise ValueError("it holds no n-step accumulator state")
            agent.n_step.load_state_dict(
                {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in saved.items()}
            )
        if "replay" in payload:
            if not isinstance(payload["replay"], dict):
                raise ValueError("its replay state is not a dict")
            agent.buffer.load_state_dict(payload["replay"])
        restore_rng_state(rng, payload["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"its training state does not fit this run "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r})"
        ) from exc
    if "replay" not in payload:
        log.warning(
            "checkpoint holds no replay buffer (checkpoint.save_buffer=false): "
            "refilling it from scratch"
        )
    snapshots = payload.get("env_snapshots")
    if snapshots is not None:
        if not (isinstance(snapshots, list) and all(isinstance(b, bytes) for b in snapshots)):
            raise CheckpointError("its env state was refused: env_snapshots is not a list of bytes")
        try:
            restore_envs(envs, snapshots, config.env)
        except Exception as exc:  # unpickling damaged bytes can raise anything
            raise CheckpointError(f"its env state was refused: {exc}") from exc
    else:
        # No faithful env snapshot (e.g. Box2D): new episodes, seeded by where we stopped.
        obs, _ = envs.reset(seed=env_seeds(config.seed + int(payload["env_step"]), envs.num_envs))
        state.obs = obs.copy()
        log.warning("env state could not be saved for %s: episodes restart", config.env.id)
    try:
        state.load_state_dict(payload["loop"], int(payload["env_step"]), snapshots is not None)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"its loop state is damaged ({exc})") from exc
