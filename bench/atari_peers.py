"""dqn-train vs Stable-Baselines3 DQN on Atari Pong, whole fresh processes, run alternately.

    .venv/bin/python -m bench.atari_peers [--steps 6000] [--repeats 2] [--seed 0]

One scenario, ALE/Pong-v5 for ``--steps`` env steps (agent steps, 4 emulator frames each) with
CleanRL's dqn_atari.py settings where they are about speed, and SB3's own loss and clipping on
both sides so the math per update is identical. dqn-train with the mapped overrides, then
bench/sb3_atari.py, then dqn-train again, ... ``--repeats`` runs each, every run a new process
timed from the outside. Prints the median whole-process wall time, env steps/s, the in-process
time, the training loop alone, the final greedy score and the ratio ours / SB3 against the
target (0.7 of SB3's wall time). Then, in this process, what one update costs on each side:
the learner dqn-train builds (``learner=auto``: autograd for the Nature CNN) with our replay,
against SB3's own ``DQN.train(gradient_steps=1)`` on its own replay.

Mapping (our dqn-train key <- SB3's setting):

    env=atari env.id            <- make_atari_env(env_id, env_kwargs={"frameskip": 1}) +
                                   VecFrameStack(4); see "Wrappers" below
    total_steps                 <- learn(total_timesteps=...) (one env: env steps = env.step calls)
    learning_starts             <- learning_starts
    batch_size                  <- batch_size
    train_every                 <- train_freq=(4, "step")
    gradient_steps              <- gradient_steps
    target=hard target.period   <- target_update_interval, tau=1.0 (a hard copy)
    buffer=uniform capacity     <- buffer_size, optimize_memory_usage=False (SB3 stores obs and
                                   next_obs apart, ours each frame once)
    buffer.frame_compression=none <- SB3 keeps frames raw (the atari preset's lz4 costs ~0.3 ms
                                   more per batch of 32 here)
    lr lr_schedule=constant     <- learning_rate (a constant)
    adam_eps=1e-8               <- Adam's default eps, which SB3's DQN policy keeps; both run
                                   torch's Adam, ours its fused kernel, SB3 the default one:
                                   the same update rule, and part of what is measured
    gamma                       <- gamma
    exploration.*               <- exploration_initial_eps 1.0, exploration_final_eps 0.01,
                                   exploration_fraction 0.1 (linear in both)
    loss=huber max_grad_norm=10 <- SB3's fixed loss (smooth_l1_loss) and its default
                                   max_grad_norm=10: the same math per update on both sides
                                   (CleanRL's dqn_atari.py uses MSE without clipping)
    model=nature_cnn            <- "CnnPolicy": the same Nature CNN (the script prints both
                                   parameter counts), frames scaled by 1/255 in both
    torch_threads=1 device=cpu  <- torch.set_num_threads(1), device="cpu"
    seed=0                      <- seed=0 (and make_atari_env(seed=0))
    eval.*                      <- one greedy game (eval.epsilon=0.0 / predict(deterministic=True))
                                   after training, on an env of its own seeded seed + 1000000
    checkpoint.*                <- one checkpoint at the end, without the replay buffer; SB3 saves
                                   nothing

Wrappers (read from SB3 2.x's atari_wrappers.py and gymnasium's AtariPreprocessing):
  - Both: the ALE v5 game at frameskip=1 with sticky actions 0.25 per emulator frame (SB3:
    inside the emulator, its own StickyActionEnv off by default; ours: gymnasium's
    StickyAction on the game, so that checkpoints hold the previous action) and v5's cap of
    108,000 frames a game, 1 to 30 no-op frames at reset drawn from the env's generator, each
    action repeated 4 frames with the last two max-pooled, 84x84 grayscale with cv2's
    INTER_AREA, 4 stacked frames, the game's minimal action set (6 in Pong).
  - Grayscale: SB3 max-pools the two RGB frames, then converts (cv2 weights); ours (gymnasium)
    takes ALE's grayscale screens, then max-pools. Pixel values differ slightly; the work is
    alike (the frameskip=1 env renders RGB on every frame in both).
  - FIRE at reset: SB3 steps FIRE then action 2 (two agent steps, 8 frames); ours FIRE only.
  - Reset stack: SB3's VecFrameStack pads with zeros; ours repeats the first frame.
  - Lost lives and clipped rewards: SB3 ends the episode at a lost life (EpisodicLifeEnv, with
    a no-op step instead of a reset) and clips the env's reward; ours keeps the game going and
    applies both to the stored transitions only. Pong has no lives, so only the clipping acts.
  - SB3 adds VecTransposeImage (channels last -> first, one copy per step); ours stacks
    channels first.

What cannot match exactly, and which way it leans:
  - Warm-up: SB3 acts uniformly at random until learning_starts (no forward pass); we follow
    the epsilon schedule from step 0, which reaches its end (0.01) at 10% of the steps, before
    learning_starts at the default sizes: we run the network on those warm-up steps. Leans
    against us.
  - The evaluation game's length depends on each side's policy: the training loop alone (ours:
    train.log, from the line logged just before the first reset to the progress line at the
    last step; SB3: learn()) is printed beside the whole process.
  - Logging and files: we write TensorBoard events, train.log, summary.json and one final
    checkpoint (no replay); SB3 runs with verbose=0 and saves nothing. Leans against us.
  - The first update: SB3 trains once num_timesteps > learning_starts, we at the first round at
    or after learning_starts: one update apart.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Measurement,
    alternate,
    fmt,
    machine_header,
    median,
    print_run,
    print_table,
    run_dqn_train,
    run_process,
    seconds_per_call,
    train_config,
    verdict,
)

TOOLS = ("ours", "sb3")
TARGET_RATIO = 0.7  # ours / SB3 whole-process wall time must be at most this
DEFAULT_STEPS = 6000
# dqn-train's log lines that bracket the training loop (dqn_cli/training.py).
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[INFO\] (.*)$")


@dataclass(frozen=True)
class AtariScenario:
    total_steps: int = DEFAULT_STEPS
    learning_starts: int = 1000
    env_id: str = "ALE/Pong-v5"
    frame_stack: int = 4
    batch_size: int = 32
    train_every: int = 4
    gradient_steps: int = 1
    target_period: int = 1000
    buffer_size: int = 10_000
    lr: float = 1e-4
    gamma: float = 0.99
    eps_end: float = 0.01
    loss: str = "huber"
    max_grad_norm: float = 10.0

    @property
    def eps_steps(self) -> int:
        """Env steps of epsilon decay: 10% of the run (CleanRL's exploration fraction)."""
        return round(0.1 * self.total_steps)

    def dqn_train_overrides(self, seed: int, buffer_size: int | None = None) -> list[str]:
        """``dqn-train`` arguments; every key that matters is explicit so a change of the atari
        preset or the defaults cannot change what is benchmarked."""
        n = self.total_steps
        return [
            "env=atari",
            f"env.id={self.env_id}",
            "env.frame_skip=4",
            f"env.frame_stack={self.frame_stack}",
            "env.noop_max=30",
            "env.sticky_actions=0.25",
            "env.full_action_space=false",
            "env.episodic_life=true",
            "env.clip_rewards=true",
            "model=nature_cnn",
            "model.head=linear",
            "model.features=512",
            "algo=dqn",
            "buffer=uniform",
            "buffer.n_step=1",
            "buffer.frame_compression=none",
            "target=hard",
            "learner=auto",
            "compile=false",
            f"seed={seed}",
            "device=cpu",
            "torch_threads=1",
            "num_envs=1",
            f"total_steps={n}",
            f"lr={self.lr}",
            "adam_eps=1e-8",
            "lr_schedule=constant",
            f"gamma={self.gamma}",
            f"batch_size={self.batch_size}",
            f"buffer.capacity={buffer_size or self.buffer_size}",
            f"learning_starts={self.learning_starts}",
            f"train_every={self.train_every}",
            f"gradient_steps={self.gradient_steps}",
            f"target.period={self.target_period}",
            "exploration.start=1.0",
            f"exploration.end={self.eps_end}",
            f"exploration.steps={self.eps_steps}",
            "exploration.schedule=linear",
            f"loss={self.loss}",
            f"max_grad_norm={self.max_grad_norm}",
            f"eval.every={n}",  # one evaluation, at the end
            "eval.episodes=1",
            "eval.epsilon=0.0",
            f"checkpoint.every={n}",  # one checkpoint, at the end
            "checkpoint.keep=0",
            "checkpoint.save_buffer=false",
            "log.every=1000",
        ]

    def sb3_settings(self, buffer_size: int | None = None) -> dict[str, Any]:
        """What bench/sb3_atari.py needs, as JSON-able values."""
        settings = asdict(self)
        settings["eps_steps"] = self.eps_steps
        if buffer_size is not None:
            settings["buffer_size"] = buffer_size
        return settings


# ---------------------------------------------------------------------------------------------
# Whole-process runs


@dataclass(frozen=True)
class AtariRun:
    measurement: Measurement
    loop_s: float  # the training loop alone: first reset to the last env step


def loop_seconds(train_log: Path, total_steps: int) -> float:
    """Seconds from dqn-train's "learner: ..." line (logged just before the envs' first reset)
    to its progress line at ``total_steps`` (logged before the final evaluation); nan when
    either is missing."""
    stamps: dict[str, datetime.datetime] = {}
    last_progress = f"step {total_steps}/{total_steps} "
    for line in train_log.read_text().splitlines() if train_log.exists() else []:
        match = LOG_LINE.match(line)
        if match is None:
            continue
        at = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if match.group(2).startswith("learner: "):
            stamps["start"] = at
        elif match.group(2).startswith(last_progress):
            stamps["end"] = at
    if len(stamps) < 2:
        return float("nan")
    return (stamps["end"] - stamps["start"]).total_seconds()


def run_ours(scenario: AtariScenario, seed: int, workdir: Path) -> AtariRun:
    run_dir = workdir / f"ours-{len(list(workdir.iterdir()))}"
    m = run_dqn_train(scenario.dqn_train_overrides(seed), run_dir)
    return AtariRun(m, loop_seconds(run_dir / "train.log", scenario.total_steps))


def run_sb3(scenario: AtariScenario, seed: int) -> AtariRun:
    settings = json.dumps(scenario.sb3_settings())
    # As a module from the repository root: it shares bench/sb3_dqn.py's settings mapping.
    module = ["-m", "bench.sb3_atari"]
    done = run_process(
        [sys.executable, *module, "--settings", settings, "--seed", str(seed)], cwd=ROOT
    )
    if done.returncode != 0:
        failed = Measurement(done.wall_s, float("nan"), float("nan"), done.tail())
        return AtariRun(failed, float("nan"))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    m = Measurement(done.wall_s, result["in_process_s"], result["eval_return_mean"])
    return AtariRun(m, result["learn_s"])


# ---------------------------------------------------------------------------------------------
# One update, in this process


def update_costs(
    scenario: AtariScenario, seed: int, budget_s: float, rounds: int, capacity: int = 2000
) -> tuple[list[list[object]], str]:
    """Table rows (what, SB3 ms, ours ms, ratio) and a note on the two networks.

    Both replays hold the same ``capacity`` random transitions; a batch is 32 random rows
    whatever the capacity, so a small replay keeps this quick without changing the cost much.
    Timed in alternating rounds, one torch thread.
    """
    import numpy as np
    import torch
    from stable_baselines3.common.logger import Logger

    from bench.sb3_atari import build_model
    from dqn_cli.env_spec import EnvSpec
    from dqn_cli.training import build_agent

    torch.set_num_threads(1)
    sb3 = build_model(scenario.sb3_settings(buffer_size=capacity), seed)
    sb3.set_logger(Logger(None, []))  # train() records its loss; learn() would set this up
    n_actions = int(sb3.action_space.n)  # type: ignore[attr-defined]
    spec = EnvSpec((scenario.frame_stack, 84, 84), "uint8", n_actions)
    config = train_config(scenario.dqn_train_overrides(seed, buffer_size=capacity))
    agent = build_agent(config, spec, torch.device("cpu"), np.random.default_rng(seed))
    ours_buffer, learner, replay = agent.buffer, agent.learner, sb3.replay_buffer
    assert replay is not None

    rng = np.random.default_rng(seed)
    chunk = min(100, capacity)
    for _ in range(0, capacity, chunk):
        obs = rng.integers(0, 256, (chunk, *spec.obs_shape), dtype=np.uint8)
        next_obs = rng.integers(0, 256, (chunk, *spec.obs_shape), dtype=np.uint8)
        actions = rng.integers(0, n_actions, chunk)
        rewards = rng.integers(-1, 2, chunk).astype(np.float32)
        terminated = (rng.random(chunk) < 0.01).astype(np.float32)
        ours_buffer.add(obs, actions, rewards, next_obs, terminated, scenario.gamma)
        for i in range(chunk):
            row = slice(i, i + 1)
            replay.add(obs[row], next_obs[row], actions[row], rewards[row], terminated[row], [{}])

    fixed_batch = ours_buffer.sample(scenario.batch_size)
    subjects: dict[str, Callable[[], object]] = {
        "sb3 train": lambda: sb3.train(gradient_steps=1, batch_size=scenario.batch_size),
        "sb3 sample": lambda: replay.sample(scenario.batch_size),
        "ours train": lambda: learner.update(ours_buffer.sample(scenario.batch_size)),
        "ours sample": lambda: ours_buffer.sample(scenario.batch_size),
        "ours update": lambda: learner.update(fixed_batch),
    }
    times = alternate(
        list(subjects), rounds, lambda name, _: seconds_per_call(subjects[name], budget_s, 3)
    )
    ms = {name: median(values) * 1e3 for name, values in times.items()}
    sb3_update = ms["sb3 train"] - ms["sb3 sample"]

    def row(what: str, sb3_ms: float, ours_ms: float) -> list[object]:
        return [what, fmt(sb3_ms, 2), fmt(ours_ms, 2), f"{ours_ms / sb3_ms:.2f}"]

    rows = [
        row(
            f"sample {scenario.batch_size} + one update (SB3: DQN.train(gradient_steps=1))",
            ms["sb3 train"],
            ms["ours train"],
        ),
        row(f"sample {scenario.batch_size}", ms["sb3 sample"], ms["ours sample"]),
        row(
            f"one update (ours: {learner.name}; SB3: the two above, subtracted)",
            sb3_update,
            ms["ours update"],
        ),
    ]
    note = (
        f"# parameters: ours {parameter_count(agent.online):,}, "
        f"SB3 {parameter_count(sb3.q_net):,}; replay "
        f"{capacity:,} random transitions on each side; {rounds} alternating rounds"
    )
    return rows, note


def parameter_count(net: Any) -> int:
    return sum(p.numel() for p in net.parameters())


def peers_available() -> str | None:
    """What is missing for this benchmark, or None."""
    for module, extra in (("stable_baselines3", "bench"), ("ale_py", "atari")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: install the `{extra}` extra (make install)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="env steps per run")
    parser.add_argument("--learning-starts", type=int, default=1000, help="env steps")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--update-budget", type=float, default=1.0, help="seconds per timed update loop"
    )
    parser.add_argument("--update-rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument(
        "--update-replay", type=int, default=2000, help="transitions in each side's replay"
    )
    args = parser.parse_args(argv)
    missing = peers_available()
    if missing is not None:
        sys.exit(missing)
    if not 32 <= args.learning_starts < args.steps or args.update_replay < 32:
        sys.exit(
            "--learning-starts and --update-replay must be at least the batch size (32), "
            "--learning-starts below --steps"
        )
    scenario = AtariScenario(total_steps=args.steps, learning_starts=args.learning_starts)

    print(machine_header("bench.atari_peers: dqn-train vs Stable-Baselines3 DQN on Atari"))
    print(
        f"# {scenario.env_id}, {args.steps} env steps, learning_starts {args.learning_starts}; "
        f"{args.repeats} whole-process runs per tool, alternating ours/SB3; seed {args.seed}; "
        "one greedy game at the end of every run"
    )
    print(f"#   dqn-train {' '.join(scenario.dqn_train_overrides(args.seed))}")
    peer_settings = json.dumps(scenario.sb3_settings())
    print(f"#   python -m bench.sb3_atari --settings '{peer_settings}'", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-atari-") as tmp:
        workdir = Path(tmp)

        def run(tool: str, repeat: int) -> AtariRun:
            if tool == "ours":
                r = run_ours(scenario, args.seed, workdir)
            else:
                r = run_sb3(scenario, args.seed)
            print_run(tool, repeat, r.measurement)
            return r

        results = alternate(TOOLS, args.repeats, run)

    ok = {t: [r for r in results[t] if not r.measurement.failed] for t in TOOLS}
    walls = {t: median([r.measurement.wall_s for r in ok[t]]) for t in TOOLS}
    loops = {t: median([r.loop_s for r in ok[t]]) for t in TOOLS}
    ratio = walls["ours"] / walls["sb3"]
    # A short run is mostly start-up and warm-up: the target is for the full scenario.
    target = "n/a, short run" if args.steps < DEFAULT_STEPS else verdict(ratio, TARGET_RATIO)
    rows: list[list[object]] = []
    for tool in TOOLS:
        runs = [r.measurement for r in ok[tool]]
        walls_s = [m.wall_s for m in runs]
        spread = f"{min(walls_s):.1f}-{max(walls_s):.1f}" if runs else "-"
        rows.append(
            [
                "dqn-train" if tool == "ours" else "SB3 DQN",
                f"{len(runs)}/{len(results[tool])}",
                fmt(walls[tool]),
                spread,
                fmt(args.steps / walls[tool], 0),
                fmt(median([m.in_process_s for m in runs])),
                fmt(loops[tool]),
                fmt(args.steps / loops[tool], 0),
                fmt(median([m.eval_return for m in runs])),
                f"{ratio:.2f} (<= {TARGET_RATIO}: {target})" if tool == "ours" else "1.00",
            ]
        )
    print()
    print_table(
        [
            "tool",
            "runs ok",
            "median wall s",
            "min-max s",
            "env steps/s",
            "in-process s",
            "training loop s",
            "loop env steps/s",
            "eval return",
            "ratio ours/SB3 (target)",
        ],
        rows,
    )
    print(
        f"# training loop alone, ours / SB3: {loops['ours'] / loops['sb3']:.2f}; wall s: whole "
        "process, start-up included, median of the runs; env steps/s = steps / median wall s; "
        "in-process s: ours = train() (summary.json), SB3 = DQN(...) + learn() + the game; "
        "training loop s: ours = train.log from the first reset to the last step, SB3 = learn()"
    )

    print()
    print("# one update in this process, ms (median), 1 torch thread, batch 32, Huber, clip 10")
    update_rows, note = update_costs(
        scenario, args.seed, args.update_budget, args.update_rounds, args.update_replay
    )
    print_table(["update", "SB3 ms", "dqn-cli ms", "ratio ours/SB3"], update_rows)
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
