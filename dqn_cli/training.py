"""The training loop: act, store, learn, sync the target, evaluate, log, checkpoint."""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from dqn_cli.buffers import ReplayBuffer, make_replay_buffer
from dqn_cli.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from dqn_cli.config import TrainConfig
from dqn_cli.envs import env_spec, make_vector_env, true_next_obs
from dqn_cli.evaluation import EvalResult, Evaluator
from dqn_cli.exploration import linear_anneal, make_epsilon_schedule
from dqn_cli.learner import DQNLearner
from dqn_cli.networks import EnvSpec, QNetwork
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
    final_eval: EvalResult
    best_eval_return_mean: float
    wall_seconds: float
    steps_per_second: float
    replay_bytes: int

    def summary(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps,
            "episodes": self.episodes,
            "final_eval_return_mean": self.final_eval.mean,
            "final_eval_return_std": self.final_eval.std,
            "final_eval_episodes": len(self.final_eval.returns),
            "best_eval_return_mean": self.best_eval_return_mean,
            "wall_seconds": self.wall_seconds,
            "steps_per_second": self.steps_per_second,
        }


Reporter = Callable[[Progress], None]


@dataclass(frozen=True)
class Agent:
    """Everything that learns, wired together from the config."""

    online: QNetwork
    target: QNetwork  # the online net itself with target=none
    optimizer: torch.optim.Optimizer
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
    # Fused Adam: one kernel for all parameters, ~20% off a small-MLP update on CPU.
    optimizer = torch.optim.Adam(online.parameters(), lr=c.lr, fused=True)
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


def train(config: TrainConfig, run_dir: Path, reporter: Reporter | None = None) -> TrainResult:
    """Train a DQN agent as ``config`` says, writing logs and checkpoints into ``run_dir``."""
    started = time.perf_counter()
    c = config
    device = resolve_device(c.device)
    torch.set_num_threads(c.torch_threads)
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

    run_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(run_dir))
    _record_hyperparameters(writer, c)

    def checkpoint(name: str, step: int, eval_return: float | None) -> None:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model": online.state_dict(),
            "optimizer": optimizer.state_dict(),
            "config": c.to_dict(),
            "env_spec": spec.to_dict(),
            "env_step": step,
            "eval_return": eval_return,
        }
        if target is not online:
            payload["target_model"] = target.state_dict()
        save_checkpoint(payload, run_dir / "checkpoints" / name)

    best_eval = -np.inf

    def evaluate(step: int) -> EvalResult:
        nonlocal best_eval
        result = evaluator.run(online)
        writer.add_scalar("eval/return_mean", result.mean, step)
        writer.add_scalar("eval/return_std", result.std, step)
        writer.add_scalar("eval/length_mean", float(result.lengths.mean()), step)
        if result.mean > best_eval:
            best_eval = result.mean
            checkpoint("best.pt", step, result.mean)
        return result

    n = c.num_envs
    episode_return = np.zeros(n)
    episode_length = np.zeros(n, dtype=np.int64)
    recent_returns: deque[float] = deque(maxlen=20)
    episodes = 0
    last_eval: EvalResult | None = None
    last_eval_step = -1
    update = None
    step = 0
    log_clock, log_clock_step = time.perf_counter(), 0

    obs, _ = envs.reset(seed=c.seed)
    while step < c.total_steps:
        # Act: epsilon-greedy over all envs with one forward pass.
        epsilon = epsilon_at(step)
        explore = rng.random(n) < epsilon
        random_actions = rng.integers(spec.n_actions, size=n)
        if explore.all():
            actions = random_actions
        else:
            with torch.inference_mode():
                q = online(torch.as_tensor(obs, device=device))
            actions = np.where(explore, random_actions, q.argmax(dim=1).cpu().numpy())

        # Store: the TD target needs `terminated` alone; truncated episodes still bootstrap.
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        buffer.add(obs, actions, rewards, true_next_obs(next_obs, done, info), terminated)
        obs = next_obs

        episode_return += rewards
        episode_length += 1
        previous_step, step = step, step + n
        for i in np.flatnonzero(done):
            episodes += 1
            recent_returns.append(float(episode_return[i]))
            writer.add_scalar("charts/episodic_return", episode_return[i], step)
            writer.add_scalar("charts/episodic_length", episode_length[i], step)
            episode_return[i], episode_length[i] = 0.0, 0

        # Learn: `train_every` counts env steps, whatever num_envs is.
        if step >= c.learning_starts:
            due = (step // c.train_every - previous_step // c.train_every) * c.gradient_steps
            if due and c.lr_schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
            for _ in range(due):
                batch = buffer.sample(c.batch_size, beta_at(step))
                update = learner.update(batch)
                buffer.update_priorities(batch.slots, update.td_errors)
                target_updater.after_gradient_step()
            target_updater.after_env_steps(previous_step, step)

        if step // c.eval.every > previous_step // c.eval.every:
            last_eval, last_eval_step = evaluate(step), step
        if step // c.checkpoint.every > previous_step // c.checkpoint.every:
            checkpoint("last.pt", step, last_eval.mean if last_eval else None)
        if step // c.log.every > previous_step // c.log.every or step >= c.total_steps:
            now = time.perf_counter()
            sps = (step - log_clock_step) / max(now - log_clock, 1e-9)
            log_clock, log_clock_step = now, step
            writer.add_scalar("charts/epsilon", epsilon, step)
            writer.add_scalar("charts/steps_per_second", sps, step)
            if update is not None:
                writer.add_scalar("losses/td_loss", update.loss.item(), step)
                writer.add_scalar("losses/q_values", update.mean_q.item(), step)
                if c.buffer.kind == "per":
                    writer.add_scalar("replay/beta", beta_at(step), step)
                    writer.add_scalar(
                        "replay/importance_weight_mean", batch.weights.mean().item(), step
                    )
            if reporter is not None:
                reporter(
                    Progress(
                        step=step,
                        total_steps=c.total_steps,
                        steps_per_second=sps,
                        episodes=episodes,
                        recent_return=float(np.mean(recent_returns)) if recent_returns else np.nan,
                        epsilon=epsilon,
                        last_eval_return=last_eval.mean if last_eval else None,
                    )
                )

    final_eval = last_eval if last_eval is not None and last_eval_step == step else evaluate(step)
    checkpoint("last.pt", step, final_eval.mean)
    envs.close()
    evaluator.close()
    wall = time.perf_counter() - started
    result = TrainResult(
        total_steps=step,
        episodes=episodes,
        final_eval=final_eval,
        best_eval_return_mean=float(best_eval),
        wall_seconds=wall,
        steps_per_second=step / wall,
        replay_bytes=buffer.storage.nbytes,
    )
    writer.add_scalar("eval/final_return_mean", final_eval.mean, step)
    writer.close()
    (run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result


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
