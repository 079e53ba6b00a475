"""The training loop: act, store, learn, sync the target, evaluate, log, checkpoint."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import random
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv
from threadpoolctl import threadpool_limits
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from dqn_cli.buffers import ReplayBuffer, make_replay_buffer
from dqn_cli.checkpoint import CHECKPOINT_FORMAT, CheckpointError, save_checkpoint
from dqn_cli.config import TrainConfig
from dqn_cli.env_state import restore_envs, snapshot_envs
from dqn_cli.envs import env_spec, make_vector_env, true_next_obs
from dqn_cli.evaluation import EvalResult, Evaluator
from dqn_cli.exploration import linear_anneal, make_epsilon_schedule
from dqn_cli.learner import DQNLearner, UpdateResult
from dqn_cli.networks import EnvSpec, QNetwork, greedy_policy
from dqn_cli.optim import Adam
from dqn_cli.targets import TargetUpdater, make_target_updater

log = logging.getLogger(__name__)

# Evaluation episodes use seeds far from the training envs' so the two never replay each other.
EVAL_SEED_OFFSET = 1_000_000


class DeviceError(ValueError):
    """The requested device is not available; ``str()`` is one line."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "device: cuda was requested but no CUDA device is available; "
            "use device=cpu or device=auto"
        )
    return torch.device(name)


@dataclass(frozen=True)
class Progress:
    """A snapshot handed to the caller's reporter every ``log.every`` env steps."""

    step: int
    total_steps: int
    steps_per_second: float
    episodes: int
    recent_return: float  # mean of the last 20 training episodes (nan before the first)
    epsilon: float
    last_eval_return: float | None


@dataclass(frozen=True)
class TrainResult:
    total_steps: int
    episodes: int
    final_eval: EvalResult | None  # None when interrupted
    best_eval_return_mean: float
    wall_seconds: float
    steps_per_second: float
    interrupted: bool = False
    stopped_early: bool = False  # eval.stop_at was reached before total_steps

    def summary(self) -> dict[str, Any]:
        if self.final_eval is None:
            return {"status": "interrupted", "total_steps": self.total_steps}
        return {
            "status": "completed",
            "total_steps": self.total_steps,
            "episodes": self.episodes,
            "final_eval_return_mean": self.final_eval.mean,
            "final_eval_return_std": self.final_eval.std,
            "final_eval_episodes": len(self.final_eval.returns),
            "best_eval_return_mean": self.best_eval_return_mean,
            "wall_seconds": self.wall_seconds,
            "steps_per_second": self.steps_per_second,
            "stopped_early": self.stopped_early,
        }


class TrainingDiverged(RuntimeError):
    """The TD loss or Q-values became NaN/inf; ``str()`` is one line."""


Reporter = Callable[[Progress], None]
StopRequested = Callable[[], bool]


@dataclass(frozen=True)
class Agent:
    """Everything that learns, wired together from the config."""

    online: QNetwork
    target: QNetwork  # the online net itself with target=none
    optimizer: Adam
    learner: DQNLearner
    target_updater: TargetUpdater
    buffer: ReplayBuffer


def build_agent(
    config: TrainConfig, spec: EnvSpec, device: torch.device, rng: np.random.Generator
) -> Agent:
    """The one place where config options become objects: every group option is built here."""
    c = config
    online = QNetwork(spec, c.model.hidden).to(device)
    target = copy.deepcopy(online) if c.target.kind != "none" else online
    optimizer = Adam(list(online.parameters()), lr=c.lr, eps=c.adam_eps)
    learner = DQNLearner(
        online, target, optimizer, c.gamma, c.algo.name == "ddqn", c.loss, c.max_grad_norm
    )
    updater = make_target_updater(c.target.kind, target, online, c.target.period, c.target.tau)
    buffer = make_replay_buffer(
        c.buffer.kind,
        c.replay_capacity,
        spec.obs_shape,
        np.dtype(spec.obs_dtype),
        rng,
        device,
        c.buffer.alpha,
        c.buffer.eps,
    )
    return Agent(online, target, optimizer, learner, updater, buffer)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

    def load_state_dict(self, state: dict[str, Any], step: int, envs_restored: bool) -> None:
        self.step = step
        self.episodes = int(state["episodes"])
        self.best_eval = float(state["best_eval"])
        self.last_eval = state["last_eval"]
        self.last_eval_step = int(state["last_eval_step"])
        self.recent_returns.extend(state["recent_returns"])
        if envs_restored:  # otherwise the fresh episodes that were just reset stand
            self.obs = state["obs"].numpy()
            self.episode_return = state["episode_return"].numpy().copy()
            self.episode_length = state["episode_length"].numpy().copy()


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
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


def _restore_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["generator"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    config: TrainConfig,
    run_dir: Path,
    reporter: Reporter | None = None,
    stop_requested: StopRequested | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a DQN agent as ``config`` says, writing logs and checkpoints into ``run_dir``.

    ``stop_requested`` is polled once per env step: when it returns True the current step is
    finished, the full state is checkpointed to ``checkpoints/last.pt`` and the result comes
    back with ``interrupted=True``. ``resume`` is a checkpoint payload (see checkpoint.py) to
    continue from exactly where it was written.
    """
    started = time.perf_counter()
    c = config
    device = resolve_device(c.device)
    torch.set_num_threads(c.torch_threads)
    # numpy's BLAS (used for acting) spawns a thread per core by default; on small matrices
    # those threads cost milliseconds per call when cores are shared. Same budget as torch.
    threadpool_limits(limits=c.torch_threads, user_api="blas")
    seed_everything(c.seed)
    rng = np.random.default_rng(c.seed)

    envs = make_vector_env(c.env.id, c.num_envs)
    spec = env_spec(envs.single_observation_space, envs.single_action_space, c.env.id)
    evaluator = Evaluator(
        c.env.id, c.eval.episodes, c.seed + EVAL_SEED_OFFSET, c.eval.epsilon, device
    )
    agent = build_agent(c, spec, device, rng)
    online, target, optimizer = agent.online, agent.target, agent.optimizer
    learner, target_updater, buffer = agent.learner, agent.target_updater, agent.buffer
    act = greedy_policy(online, device)
    epsilon_at = make_epsilon_schedule(
        c.exploration.schedule, c.exploration.start, c.exploration.end, c.exploration.steps
    )
    beta_at = linear_anneal(c.buffer.beta, 1.0, c.total_steps)  # PER only; reaches 1 at the end
    lr_at = linear_anneal(c.lr, 0.0 if c.lr_schedule == "linear" else c.lr, c.total_steps)
    log.info(
        "replay storage: %d transitions, %.1f MiB preallocated",
        buffer.storage.capacity,
        buffer.storage.nbytes / 2**20,
    )

    n = c.num_envs
    obs, _ = envs.reset(seed=c.seed)
    state = LoopState(obs.copy(), np.zeros(n), np.zeros(n, dtype=np.int64))
    if resume is not None:
        _restore(resume, agent, envs, state, rng, c)
        log.info("resumed at env step %d", state.step)

    run_dir.mkdir(parents=True, exist_ok=True)
    # purge_step hides events a killed run logged after its last checkpoint, so the resumed
    # curves continue without duplicated or overlapping points. Events at the checkpoint's own
    # step were logged before it was written: they stay.
    writer = SummaryWriter(str(run_dir), purge_step=state.step + 1 if resume else None)
    if resume is None:
        _record_hyperparameters(writer, c)
    checkpoints = run_dir / "checkpoints"

    def model_payload(step: int, eval_return: float | None) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": online.state_dict(),
            "config": c.to_dict(),
            "env_spec": spec.to_dict(),
            "env_step": step,
            "eval_return": eval_return,
        }

    def save_full_state(periodic: bool) -> None:
        """last.pt: everything an exact continuation needs; periodic ones also kept as copies."""
        if update is not None:
            _check_finite(update.loss, update.mean_q, state.step, c, checkpoints)
        payload = model_payload(state.step, state.last_eval)
        payload["optimizer"] = optimizer.state_dict()
        if target is not online:
            payload["target_model"] = target.state_dict()
        payload["loop"] = state.state_dict()
        payload["rng"] = _rng_state(rng)
        payload["env_snapshots"] = snapshot_envs(envs)
        if c.checkpoint.save_buffer:
            payload["replay"] = buffer.state_dict()
        last = checkpoints / "last.pt"
        save_checkpoint(payload, last)
        if periodic and c.checkpoint.keep > 0:
            keep_periodic_copy(last, checkpoints / f"step_{state.step:09d}.pt", c.checkpoint.keep)

    def evaluate(step: int) -> EvalResult:
        result = evaluator.run(online)
        writer.add_scalar("eval/return_mean", result.mean, step)
        writer.add_scalar("eval/return_std", result.std, step)
        writer.add_scalar("eval/length_mean", float(result.lengths.mean()), step)
        state.last_eval, state.last_eval_step = result.mean, step
        if result.mean > state.best_eval:
            state.best_eval = result.mean
            save_checkpoint(model_payload(step, result.mean), checkpoints / "best.pt")
        return result

    update: UpdateResult | None = None
    last_eval_result: EvalResult | None = None
    interrupted = False
    step = state.step
    log_clock, log_clock_step = time.perf_counter(), step
    while step < c.total_steps:
        if stop_requested is not None and stop_requested():
            interrupted = True
            break
        # Act: epsilon-greedy over all envs with one forward pass (none while all explore).
        epsilon = epsilon_at(step)
        draws = rng.random(2 * n)  # one call: explore?, then which random action
        explore = draws[:n] < epsilon
        random_actions = (draws[n:] * spec.n_actions).astype(np.int64)
        if explore.all():
            actions = random_actions
        else:
            actions = np.where(explore, random_actions, act(state.obs))

        # Store: the TD target needs `terminated` alone; truncated episodes still bootstrap.
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        buffer.add(state.obs, actions, rewards, true_next_obs(next_obs, done, info), terminated)
        np.copyto(state.obs, next_obs)  # next_obs is the vector env's buffer, reused next step

        state.episode_return += rewards
        state.episode_length += 1
        previous_step, step = step, step + n
        state.step = step
        for i in np.flatnonzero(done) if done.any() else ():
            state.episodes += 1
            state.recent_returns.append(float(state.episode_return[i]))
            writer.add_scalar("charts/episodic_return", state.episode_return[i], step)
            writer.add_scalar("charts/episodic_length", state.episode_length[i], step)
            state.episode_return[i], state.episode_length[i] = 0.0, 0

        # Learn: `train_every` counts env steps, whatever num_envs is.
        if step >= c.learning_starts and len(buffer) >= c.batch_size:
            due = (step // c.train_every - previous_step // c.train_every) * c.gradient_steps
            if due and c.lr_schedule != "constant":
                optimizer.lr = lr_at(step)
            for _ in range(due):
                batch = buffer.sample(c.batch_size, beta_at(step))
                update = learner.update(batch)
                buffer.update_priorities(batch.slots, update.td_errors)
                target_updater.after_gradient_step()
            target_updater.after_env_steps(previous_step, step)

        if step // c.log.every > previous_step // c.log.every or step >= c.total_steps:
            now = time.perf_counter()
            sps = (step - log_clock_step) / max(now - log_clock, 1e-9)
            log_clock, log_clock_step = now, step
            writer.add_scalar("charts/epsilon", epsilon, step)
            writer.add_scalar("charts/steps_per_second", sps, step)
            if update is not None:
                _check_finite(update.loss, update.mean_q, step, c, checkpoints)
                writer.add_scalar("losses/td_loss", update.loss.item(), step)
                writer.add_scalar("losses/q_values", update.mean_q.item(), step)
                if c.buffer.kind == "per":
                    writer.add_scalar("replay/beta", beta_at(step), step)
                    writer.add_scalar(
                        "replay/importance_weight_mean", batch.weights.mean().item(), step
                    )
            if reporter is not None:
                recent = state.recent_returns
                reporter(
                    Progress(
                        step=step,
                        total_steps=c.total_steps,
                        steps_per_second=sps,
                        episodes=state.episodes,
                        recent_return=float(np.mean(recent)) if recent else math.nan,
                        epsilon=epsilon,
                        last_eval_return=state.last_eval,
                    )
                )
        if step // c.eval.every > previous_step // c.eval.every:
            last_eval_result = evaluate(step)
        if step // c.checkpoint.every > previous_step // c.checkpoint.every:
            save_full_state(periodic=True)
        solved = (
            c.eval.stop_at is not None
            and state.last_eval_step == step
            and state.last_eval is not None
            and state.last_eval >= c.eval.stop_at
        )
        if solved:
            log.info(
                "eval return %.1f reached eval.stop_at at env step %d: stopping",
                state.last_eval,
                step,
            )
            break

    if interrupted:
        save_full_state(periodic=False)
        final_eval = None
    else:
        final_eval = (
            last_eval_result
            if last_eval_result is not None and state.last_eval_step == step
            else evaluate(step)
        )
        if step // c.checkpoint.every == previous_step // c.checkpoint.every:  # not just saved
            save_full_state(periodic=False)
        writer.add_scalar("eval/final_return_mean", final_eval.mean, step)
    envs.close()
    evaluator.close()
    writer.close()
    wall = time.perf_counter() - started
    result = TrainResult(
        total_steps=step,
        episodes=state.episodes,
        final_eval=final_eval,
        best_eval_return_mean=state.best_eval,
        wall_seconds=wall,
        steps_per_second=(step - (resume or {}).get("env_step", 0)) / wall,
        interrupted=interrupted,
        stopped_early=not interrupted and step < c.total_steps,
    )
    (run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result


def _restore(
    payload: dict[str, Any],
    agent: Agent,
    envs: SyncVectorEnv,
    state: LoopState,
    rng: np.random.Generator,
    config: TrainConfig,
) -> None:
    """Load a full-state checkpoint into freshly built objects."""
    for key in ("optimizer", "loop", "rng"):
        if key not in payload:
            raise CheckpointError(
                f"checkpoint has no {key!r}: it holds weights only (best.pt?) and cannot be resumed"
            )
    agent.online.load_state_dict(payload["model"])
    if agent.target is not agent.online:
        agent.target.load_state_dict(payload["target_model"])
    try:
        agent.optimizer.load_state_dict(payload["optimizer"])
    except ValueError as exc:
        raise CheckpointError(
            f"cannot resume: {exc}; it was written by another dqn-cli version, start a new run"
        ) from exc
    if "replay" in payload:
        agent.buffer.load_state_dict(payload["replay"])
    else:
        log.warning(
            "checkpoint holds no replay buffer (checkpoint.save_buffer=false): "
            "refilling it from scratch"
        )
    _restore_rng_state(rng, payload["rng"])
    snapshots = payload.get("env_snapshots")
    if snapshots is not None:
        try:
            restore_envs(envs, snapshots, config.env.id)
        except (pickle.UnpicklingError, ValueError) as exc:
            raise CheckpointError(f"checkpoint env state was refused: {exc}") from exc
    else:
        # No faithful env snapshot (e.g. Box2D): new episodes, seeded by where we stopped.
        obs, _ = envs.reset(seed=config.seed + int(payload["env_step"]))
        state.obs = obs.copy()
        log.warning("env state could not be saved for %s: episodes restart", config.env.id)
    state.load_state_dict(payload["loop"], int(payload["env_step"]), snapshots is not None)


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


def _check_finite(
    loss: torch.Tensor, mean_q: torch.Tensor, step: int, config: TrainConfig, checkpoints: Path
) -> None:
    if bool(torch.isfinite(loss)) and bool(torch.isfinite(mean_q)):
        return
    raise TrainingDiverged(
        f"training diverged at env step {step}: the TD loss or Q-values are not finite. "
        f"The last good checkpoint is kept in {checkpoints}. Likely causes: a learning rate too "
        f"high (lr={config.lr}), rewards on a large scale, or no gradient clipping "
        f"(max_grad_norm={config.max_grad_norm})"
    )


def _record_hyperparameters(writer: SummaryWriter, config: TrainConfig) -> None:
    """Hyperparameters into this run's own event file (TensorBoard's HPARAMS tab)."""
    flat = _flatten(config.to_dict())
    values = {
        k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in flat.items()
    }
    for summary in hparams(values, {"eval/final_return_mean": 0.0}):
        writer._get_file_writer().add_summary(summary)
    table = "\n".join(f"| {k} | {v} |" for k, v in values.items())
    writer.add_text("hyperparameters", "| key | value |\n|---|---|\n" + table, 0)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
