"""The training loop: act, store, learn, then the periodic events (target sync, log, evaluate,
checkpoint). What a checkpoint holds and how it is restored lives in run_state.py."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dqn_cli.buffers import FrameStackStorage, make_replay_buffer
from dqn_cli.buffers.frame_rings import PlainFrames
from dqn_cli.buffers.nstep import NStepAccumulator
from dqn_cli.checkpoint import save_checkpoint
from dqn_cli.config import TrainConfig, flatten_keys
from dqn_cli.env_spec import EnvSpec
from dqn_cli.envs import (
    collection_path,
    env_seeds,
    env_spec,
    life_lost,
    make_vector_env,
    replay_frame_stack,
    true_next_obs,
)
from dqn_cli.errors import UserError
from dqn_cli.evaluation import EvalResult, Evaluator
from dqn_cli.exploration import linear_anneal, make_epsilon_schedule
from dqn_cli.learner import TDLoss, UpdateResult, make_learner
from dqn_cli.loggers import RunIdentity, open_logger
from dqn_cli.networks import build_q_network, greedy_policy
from dqn_cli.periodic import Every
from dqn_cli.run_planning import available_memory_bytes
from dqn_cli.run_state import (
    Agent,
    LoopState,
    TrainingDiverged,
    check_finite,
    full_payload,
    model_payload,
    restore,
    save_full_state,
    seed_everything,
    write_summary,
)
from dqn_cli.targets import make_target_updater

__all__ = ["Agent", "TrainingDiverged", "build_agent", "train"]

log = logging.getLogger(__name__)

# Evaluation episodes use seeds far from the training envs' so the two never replay each other.
EVAL_SEED_OFFSET = 1_000_000


class DeviceError(UserError):
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


Reporter = Callable[[Progress], None]
StopRequested = Callable[[], bool]


def build_agent(
    config: TrainConfig, spec: EnvSpec, device: torch.device, rng: np.random.Generator
) -> Agent:
    """The one place where config options become objects: every group option is built here."""
    c = config
    online = build_q_network(c.model._target_, c.model.head, c.model.args, spec).to(device)
    target = copy.deepcopy(online) if c.target.kind != "none" else online
    learner = make_learner(
        c.learner,
        online,
        target,
        device,
        TDLoss(double_q=c.algo.name == "ddqn", kind=c.loss, max_grad_norm=c.max_grad_norm),
        lr=c.lr,
        adam_eps=c.adam_eps,
        compile=c.compile,
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
        frame_stack=replay_frame_stack(c.env),
        frame_compression=c.buffer.frame_compression,
    )
    n_step = (
        NStepAccumulator(
            c.buffer.n_step, c.gamma, c.num_envs, spec.obs_shape, np.dtype(spec.obs_dtype)
        )
        if c.buffer.n_step > 1
        else None
    )
    return Agent(online, target, learner, updater, buffer, n_step)


def warn_if_frames_may_not_fit(storage: FrameStackStorage) -> None:
    """Compressed frames take what they compress to, known only as they come (4.6-28x less
    than raw on Atari games): warn at start where they would not fit if they did not compress,
    so that a run on a small machine is watched rather than killed late without a word."""
    raw = PlainFrames.preallocated_nbytes(
        storage.frame_capacity, storage.frame_shape, storage.obs_dtype, storage.window
    )
    available = available_memory_bytes()
    if available is not None and raw > available:
        log.warning(
            "replay: %d frames take %.2f GB uncompressed and %.2f GB is available; they fit "
            "only if they compress %.1fx or more (Atari games: 4.6-28x): watch replay/bytes, "
            "or lower buffer.capacity",
            storage.frame_capacity,
            raw / 1e9,
            available / 1e9,
            raw / available,
        )


def train(
    config: TrainConfig,
    run_dir: Path,
    reporter: Reporter | None = None,
    stop_requested: StopRequested | None = None,
    resume: dict[str, Any] | None = None,
    identity: RunIdentity | None = None,
) -> TrainResult:
    """Train a DQN agent as ``config`` says, writing logs and checkpoints into ``run_dir``.

    ``stop_requested`` is polled once per env step: when it returns True the current step is
    finished, the full state is checkpointed to ``checkpoints/last.pt`` and the result comes
    back with ``interrupted=True``. ``resume`` is a checkpoint payload (see checkpoint.py) to
    continue from exactly where it was written. ``identity`` names the run (and its sweep) in
    an experiment tracker; by default the run dir's name.
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

    envs = make_vector_env(c.env, c.num_envs)
    spec = env_spec(envs.single_observation_space, envs.single_action_space, c.env.id)
    evaluator = Evaluator(c.env, c.eval.episodes, c.seed + EVAL_SEED_OFFSET, c.eval.epsilon, device)
    agent = build_agent(c, spec, device, rng)
    online, learner, buffer = agent.online, agent.learner, agent.buffer
    act = greedy_policy(online, device)
    epsilon_at = make_epsilon_schedule(
        c.exploration.schedule, c.exploration.start, c.exploration.end, c.exploration.steps
    )
    beta_at = linear_anneal(c.buffer.beta, 1.0, c.total_steps)  # PER only; reaches 1 at the end
    lr_at = linear_anneal(c.lr, 0.0 if c.lr_schedule == "linear" else c.lr, c.total_steps)
    log.info("envs: %d stepped by %s", c.num_envs, collection_path(c.env, c.num_envs))
    # Compressed frames are not preallocated: they take what they compress to, as they come.
    # Asked of the storage built, which alone decides whether the setting applies.
    storage = buffer.storage
    compressed_store = (
        storage
        if isinstance(storage, FrameStackStorage) and storage.ring.compression != "none"
        else None
    )
    log.info(
        "learner: %s; replay storage: %d transitions, %.1f MiB preallocated%s",
        learner.name,
        buffer.storage.capacity,
        buffer.storage.nbytes / 2**20,
        f", plus the {c.buffer.frame_compression}-compressed frames as they come "
        "(replay/bytes logs the total)"
        if compressed_store is not None
        else "",
    )
    if compressed_store is not None:
        warn_if_frames_may_not_fit(compressed_store)

    n = c.num_envs
    obs, _ = envs.reset(seed=env_seeds(c.seed, envs.num_envs))
    state = LoopState(obs.copy(), np.zeros(n), np.zeros(n, dtype=np.int64))
    if resume is not None:
        restore(resume, agent, envs, state, rng, c)
        log.info("resumed at env step %d", state.step)

    run_dir.mkdir(parents=True, exist_ok=True)
    logger = open_logger(
        c.logger, run_dir, state.step if resume else None, identity or RunIdentity(run_dir.name)
    )
    if resume is None:
        logger.hyperparameters(hyperparameters(c))
    checkpoints = run_dir / "checkpoints"
    train_round, log_event = Every(c.train_every), Every(c.log.every)
    eval_event, checkpoint_event = Every(c.eval.every), Every(c.checkpoint.every)
    update: UpdateResult | None = None
    last_eval_result: EvalResult | None = None
    log_clock, log_clock_step = time.perf_counter(), state.step

    def save_state(periodic: bool) -> None:
        logger.flush()  # a resumed run keeps the events up to its checkpoint's step
        check_finite(online, update, state.step, c, checkpoints)
        payload = full_payload(agent, c, spec, state, rng, envs)
        save_full_state(payload, checkpoints, c.checkpoint.keep, periodic)

    def evaluate(step: int) -> EvalResult:
        check_finite(online, update, step, c, checkpoints)
        result = evaluator.run(online)
        logger.scalar("eval/return_mean", result.mean, step)
        logger.scalar("eval/return_std", result.std, step)
        logger.scalar("eval/length_mean", float(result.lengths.mean()), step)
        state.last_eval, state.last_eval_step = result.mean, step
        if result.mean > state.best_eval:
            state.best_eval = result.mean
            save_checkpoint(
                model_payload(online, c, spec, step, result.mean), checkpoints / "best.pt"
            )
        return result

    def store(
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        done: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        info: dict,
    ) -> None:
        """Transitions into replay; the TD target needs `terminated` alone, so truncated
        episodes still bootstrap from their true last observation. Reward clipping and
        lost lives (Atari) change what is learned from, never the logged returns."""
        true_next = true_next_obs(next_obs, done, info)
        if c.env.clip_rewards:
            rewards = np.sign(rewards)
        if c.env.episodic_life:
            terminated = terminated | life_lost(info, n)
        if agent.n_step is None:
            buffer.add(state.obs, actions, rewards, true_next, terminated, c.gamma)
            return
        ready = agent.n_step.push(state.obs, actions, rewards, true_next, terminated, truncated)
        if ready is not None:
            buffer.add(
                ready.obs,
                ready.actions,
                ready.returns,
                ready.next_obs,
                ready.terminated,
                ready.discounts,
            )

    def learn(previous_step: int, step: int) -> None:
        """`train_every` counts env steps, whatever num_envs is."""
        nonlocal update
        if step < c.learning_starts or len(buffer) < c.batch_size:
            return
        due = train_round.count(previous_step, step) * c.gradient_steps
        if due and c.lr_schedule != "constant":
            learner.set_lr(lr_at(step))
        for _ in range(due):
            batch = buffer.sample(c.batch_size, beta_at(step))
            update = learner.update(batch)
            buffer.update_priorities(batch.slots, update.td_errors)
            agent.target_updater.after_gradient_step()
        agent.target_updater.after_env_steps(previous_step, step)

    def write_logs(step: int, epsilon: float) -> None:
        nonlocal log_clock, log_clock_step
        now = time.perf_counter()
        sps = (step - log_clock_step) / max(now - log_clock, 1e-9)
        log_clock, log_clock_step = now, step
        logger.scalar("charts/epsilon", epsilon, step)
        logger.scalar("charts/steps_per_second", sps, step)
        if update is not None:
            check_finite(online, update, step, c, checkpoints)
            logger.scalar("losses/td_loss", update.loss.item(), step)
            logger.scalar("losses/q_values", update.mean_q.item(), step)
            if c.buffer.kind == "per":
                logger.scalar("replay/beta", beta_at(step), step)
                weight_mean = update.importance_weight_mean.item()
                logger.scalar("replay/importance_weight_mean", weight_mean, step)
        if compressed_store is not None:
            logger.scalar("replay/bytes", buffer.storage.nbytes, step)
        logger.flush()
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

    interrupted = solved = False
    step = previous_step = state.step
    while step < c.total_steps and not solved:
        if stop_requested is not None and stop_requested():
            interrupted = True
            break
        # Act: epsilon-greedy over all envs with one forward pass (none while all explore).
        epsilon = epsilon_at(step)
        draws = rng.random(2 * n)  # one call: explore?, then which random action
        explore = draws[:n] < epsilon
        random_actions = (draws[n:] * spec.n_actions).astype(np.int64)
        actions = (
            random_actions if explore.all() else np.where(explore, random_actions, act(state.obs))
        )

        # Store, then track the episodes that ended.
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        store(actions, rewards, next_obs, done, terminated, truncated, info)
        np.copyto(state.obs, next_obs)  # next_obs is the vector env's buffer, reused next step
        state.episode_return += rewards
        state.episode_length += 1
        previous_step, step = step, step + n
        state.step = step
        for i in np.flatnonzero(done) if done.any() else ():
            state.episodes += 1
            state.recent_returns.append(float(state.episode_return[i]))
            logger.scalar("charts/episodic_return", state.episode_return[i], step)
            logger.scalar("charts/episodic_length", state.episode_length[i], step)
            state.episode_return[i], state.episode_length[i] = 0.0, 0

        learn(previous_step, step)

        # Periodic events.
        if log_event.due(previous_step, step) or step >= c.total_steps:
            write_logs(step, epsilon)
        if eval_event.due(previous_step, step):
            last_eval_result = evaluate(step)
            solved = c.eval.stop_at is not None and last_eval_result.mean >= c.eval.stop_at
            if solved:
                log.info(
                    "eval return %.1f reached eval.stop_at at env step %d: stopping",
                    last_eval_result.mean,
                    step,
                )
        if checkpoint_event.due(previous_step, step):
            save_state(periodic=True)

    final_eval = None
    if interrupted:
        save_state(periodic=False)
    else:
        fresh = last_eval_result is not None and state.last_eval_step == step
        final_eval = last_eval_result if fresh and last_eval_result else evaluate(step)
        if not checkpoint_event.due(previous_step, step):  # not just saved
            save_state(periodic=False)
        logger.scalar("eval/final_return_mean", final_eval.mean, step)
    envs.close()
    evaluator.close()
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
    write_summary(run_dir, result.summary())
    logger.summary(result.summary())
    logger.close()
    return result


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The config as flat keys, without where it is logged to (``logger.*``)."""
    flat = flatten_keys(config.to_dict())
    return {k: v for k, v in flat.items() if not k.startswith("logger.")}
