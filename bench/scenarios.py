"""The two peer-comparison settings, defined once and mapped to both tools from one object.

Mapping (our dqn-train key <- the peer's setting):

    total_steps         <- total timesteps (learn(total_timesteps=...))
    lr                  <- learning_rate; lr_schedule=constant (our CartPole preset anneals)
    gamma               <- gamma
    batch_size          <- batch_size
    buffer.capacity     <- buffer_size (buffer=uniform)
    learning_starts     <- learning_starts
    train_every         <- train_freq (env steps; SB3 counts env.step calls, the same at 1 env)
    gradient_steps      <- gradient_steps
    target.period       <- target_update_interval (target=hard; SB3 tau=1.0 is a hard copy)
    exploration.start   <- exploration_initial_eps (1.0), schedule linear
    exploration.end     <- exploration_final_eps
    exploration.steps   <- exploration_fraction * total timesteps
    model.hidden        <- policy_kwargs net_arch (ReLU MLP in both)
    loss                <- SB3 hard-codes Huber; bench/sb3_dqn.py swaps in MSE for the CleanRL
                           scenario (see there)
    max_grad_norm       <- max_grad_norm; ``null`` (no clipping) has no SB3 equivalent: SB3
                           always calls clip_grad_norm_, so it gets +inf, which never clips
                           but still pays for computing the norm
    torch_threads=1     <- torch.set_num_threads(1)
    device=cpu          <- device="cpu"
    num_envs=1          <- one env (SB3 wraps it in DummyVecEnv + Monitor)
    optimizer           Adam with torch's defaults in both (ours: dqn_cli.optim.Adam, the kernel
                        torch.optim.Adam(fused=True) runs, on gradients computed without
                        autograd; tests/test_learner.py holds the update equal to autograd +
                        torch.optim.Adam)

What cannot match exactly, and which way it leans:
  - Warm-up: SB3 acts uniformly at random until ``learning_starts`` (no forward pass); we (and
    CleanRL) follow the epsilon schedule from step 0, so we run the network on some warm-up
    steps that SB3 skips. Leans against us.
  - Evaluation: we evaluate once at the end (eval.every=total_steps); the SB3 script runs the
    same number of greedy episodes after learn(), sequentially with model.predict. Both are in
    the whole-process time.
  - Logging and files: we write TensorBoard events (every episode, every log.every steps), a
    log file, summary.json and one final full-state checkpoint (periodic ones are off:
    checkpoint.every=total_steps); SB3 runs with verbose=0 and no tensorboard_log. Leans
    against us.
  - The first update: SB3 trains once num_timesteps > learning_starts at the end of a rollout,
    we at the first training round at or after learning_starts: at most one round apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from bench.common import quiet_overrides


@dataclass(frozen=True)
class Reference:
    """A figure measured earlier on this machine, not in the benchmark session."""

    label: str
    wall_s: float
    target_ratio: float  # ours / reference must be at most this


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    total_steps: int
    lr: float
    gamma: float
    batch_size: int
    buffer_size: int
    learning_starts: int
    train_every: int
    gradient_steps: int
    target_period: int
    eps_end: float
    eps_steps: int
    hidden: tuple[int, ...]
    loss: str  # huber | mse
    max_grad_norm: float | None
    target_ratio: float  # ours / SB3 whole-process wall time must be at most this
    reference: Reference | None = None
    env_id: str = "CartPole-v1"
    learner: str = "auto"  # ours only: dqn-train's learner=; SB3 always uses autograd

    def dqn_train_overrides(self, seed: int, eval_episodes: int) -> list[str]:
        """``dqn-train`` arguments for this scenario; every key that matters is explicit so a
        change of the presets or defaults cannot change what is benchmarked."""
        n = self.total_steps
        return [
            "env=cartpole",
            f"env.id={self.env_id}",
            "algo=dqn",
            "buffer=uniform",
            "target=hard",
            f"seed={seed}",
            "device=cpu",
            "torch_threads=1",
            "num_envs=1",
            f"total_steps={n}",
            f"lr={self.lr}",
            "lr_schedule=constant",
            f"gamma={self.gamma}",
            f"batch_size={self.batch_size}",
            f"buffer.capacity={self.buffer_size}",
            f"learning_starts={self.learning_starts}",
            f"train_every={self.train_every}",
            f"gradient_steps={self.gradient_steps}",
            f"target.period={self.target_period}",
            "exploration.start=1.0",
            f"exploration.end={self.eps_end}",
            f"exploration.steps={self.eps_steps}",
            "exploration.schedule=linear",
            f"model.hidden=[{','.join(map(str, self.hidden))}]",
            f"loss={self.loss}",
            f"learner={self.learner}",
            f"max_grad_norm={'null' if self.max_grad_norm is None else self.max_grad_norm}",
            f"eval.every={n}",  # one evaluation, at the end
            f"eval.episodes={eval_episodes}",
            "eval.epsilon=0.0",
            f"checkpoint.every={n}",  # one checkpoint, at the end
            "checkpoint.keep=0",
            "log.every=1000",
        ]

    def scaled(self, total_steps: int) -> Scenario:
        """The same scenario over ``total_steps``, warm-up and exploration in proportion."""
        factor = total_steps / self.total_steps
        return replace(
            self,
            title=f"{self.title}, scaled to {total_steps} steps",
            total_steps=total_steps,
            learning_starts=max(self.batch_size, round(self.learning_starts * factor)),
            eps_steps=round(self.eps_steps * factor),
            reference=None,  # a reference figure is for the full scenario only
        )

    def sb3_settings(self) -> dict[str, object]:
        """What bench/sb3_dqn.py needs, as JSON-able values."""
        settings = asdict(self)
        for key in ("name", "title", "target_ratio", "reference", "learner"):
            settings.pop(key)
        settings["hidden"] = list(self.hidden)
        return settings


# CleanRL's dqn.py defaults for CartPole-v1 (its command-line defaults), at 100k steps.
CLEANRL = Scenario(
    name="cleanrl",
    title="CleanRL dqn.py CartPole defaults, 100k steps",
    total_steps=100_000,
    lr=2.5e-4,
    gamma=0.99,
    batch_size=128,
    buffer_size=10_000,
    learning_starts=10_000,
    train_every=10,
    gradient_steps=1,
    target_period=500,
    eps_end=0.05,
    eps_steps=50_000,  # exploration fraction 0.5 of 100k
    hidden=(120, 84),
    loss="mse",
    max_grad_norm=None,
    target_ratio=0.45,
    reference=Reference(
        label="CleanRL dqn.py, 1 torch thread, whole process",
        wall_s=23.2,
        target_ratio=0.75,
    ),
)

# RL-Zoo3's tuned DQN hyperparameters for CartPole-v1 (hyperparams/dqn.yml), 50k steps.
ZOO = Scenario(
    name="zoo",
    title="RL-Zoo3 tuned CartPole settings, 50k steps",
    total_steps=50_000,
    lr=2.3e-3,
    gamma=0.99,  # dqn.yml's CartPole-v1 entry sets 0.99 (0.98 is its MountainCar entry)
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1_000,
    train_every=256,
    gradient_steps=128,
    target_period=10,
    eps_end=0.04,
    eps_steps=8_000,  # exploration fraction 0.16 of 50k
    hidden=(256, 256),
    loss="huber",
    max_grad_norm=10.0,
    target_ratio=0.6,
)

# CleanRL's settings with SB3's own loss and clipping on both sides (Huber, max_grad_norm 10).
# Both tools learn poorly here in 100k steps at seed 0 (short episodes), so what an episode's
# end costs (resets, logging) weighs more than in the other scenarios.
CLEANRL_HUBER = replace(
    CLEANRL,
    name="cleanrl_huber",
    title="CleanRL settings with SB3's Huber loss and max_grad_norm 10, 100k steps",
    loss="huber",
    max_grad_norm=10.0,
    target_ratio=0.5,
    reference=None,
)
# CleanRL's settings trained by our autograd learner: the same math as SB3, less overhead.
CLEANRL_AUTOGRAD = replace(
    CLEANRL,
    name="cleanrl_autograd",
    title="CleanRL settings, ours with learner=autograd, 100k steps",
    learner="autograd",
    target_ratio=0.7,
    reference=None,
)

SCENARIOS = {s.name: s for s in (CLEANRL, ZOO, CLEANRL_HUBER, CLEANRL_AUTOGRAD)}


def overrides_for(name: str, steps: int | None = None, eval_episodes: int = 10) -> list[str]:
    """dqn-train overrides for a peer scenario, or ``preset``: the CartPole preset as shipped
    (one evaluation and one checkpoint, at the end). ``steps`` shrinks or stretches the run."""
    if name == "preset":
        total = steps or 50_000
        return [*quiet_overrides(total, eval_episodes), "log.every=1000"]
    scenario = SCENARIOS[name]
    if steps is not None:
        scenario = scenario.scaled(steps)
    return scenario.dqn_train_overrides(seed=0, eval_episodes=eval_episodes)
