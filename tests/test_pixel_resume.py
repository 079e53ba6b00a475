"""Issue 12: exact resume on pixel envs. An Atari game (emulator, its RNG, sticky actions, the
env's generator, every wrapper's buffers) and a MinAtar game continue from a checkpoint as if
never stopped, replay's frame store included; a damaged or forged game state is refused."""

import io
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from dqn_cli.checkpoint import load_checkpoint
from dqn_cli.config import EnvConfig, parse_train_config
from dqn_cli.env_state import restore_envs, snapshot_envs
from dqn_cli.envs import make_vector_env
from dqn_cli.training import train
from tests.helpers import TINY, merge, run_installed, run_main, snapshot
from tests.test_nothing_lost import assert_one_line_error
from tests.test_resume import StopAt, assert_same_weights, curves
from tests.test_training import scalars

pytest.importorskip("ale_py", reason="the atari extra (make install) is not installed")
pytest.importorskip("cv2", reason="the atari extra (make install) is not installed")

BREAKOUT = "ALE/Breakout-v5"
MINATAR = "MinAtar/Breakout-v1"


def needs_extra(env_id):
    if env_id.startswith("MinAtar/"):
        pytest.importorskip("minatar", reason="the minatar extra (make install) is not installed")


def play(envs, actions):
    """Per step: observations, rewards, terminations, truncations and, for Atari, lives and
    the emulator's RAM (a game can differ in RAM before it shows on screen)."""
    steps = []
    for action in actions:
        obs, rewards, terminated, truncated, info = envs.step(action)
        lives = np.asarray(info.get("lives", 0)).copy()
        ram = [env.unwrapped.ale.getRAM() for env in envs.envs if hasattr(env.unwrapped, "ale")]
        steps.append((obs.copy(), rewards.copy(), terminated.copy(), truncated.copy(), lives, ram))
    return steps


def sticky_previous_actions(envs):
    """Each sub-env's previous action as its StickyAction wrapper holds it (Atari)."""
    found = []
    for env in envs.envs:
        while not hasattr(env, "repeat_action_probability"):
            env = env.env
        found.append(env.last_action)
    return found


@pytest.mark.parametrize(
    ("env_id", "num_envs", "sticky", "steps"),
    [(BREAKOUT, 1, 0.25, 600), (BREAKOUT, 2, 0.75, 600), (MINATAR, 2, None, 200)],
)
def test_a_snapshot_restored_into_a_fresh_env_plays_the_same_game(env_id, num_envs, sticky, steps):
    needs_extra(env_id)
    # Sticky actions on (MinAtar: its own, 0.1): the first emulator frame after the restore
    # repeats the previous action with probability ``sticky``, so the two games below hold
    # opposite previous actions (Breakout: LEFT and RIGHT, which always move the paddle apart).
    config = EnvConfig(id=env_id) if sticky is None else EnvConfig(id=env_id, sticky_actions=sticky)
    rng = np.random.default_rng(0)
    live = make_vector_env(config, num_envs)
    live.reset(seed=3)
    n = live.single_action_space.n
    for _ in range(40):
        live.step(rng.integers(n, size=num_envs))
    for _ in range(3):
        live.step(np.full(num_envs, n - 1))
    snapshots = snapshot_envs(live)
    assert snapshots is not None
    if env_id == BREAKOUT:
        # The game's state travels as plain data, never as a pickled ale-py object.
        assert all(b"ale_py" not in data for data in snapshots)
    fresh = make_vector_env(config, num_envs)
    fresh.reset(seed=99)  # another game, another generator, another previous action
    for _ in range(3):
        fresh.step(np.full(num_envs, n - 2))
    if env_id == BREAKOUT:
        assert sticky_previous_actions(fresh) != sticky_previous_actions(live)
    restore_envs(fresh, snapshots, config)
    actions = rng.integers(n, size=(steps, num_envs))
    expected, got = play(live, actions), play(fresh, actions)
    assert sum(int(step[2].sum()) for step in expected) >= 2  # games ended and were reset
    for step, (want, have) in enumerate(zip(expected, got, strict=True)):
        for want_part, have_part in zip(want, have, strict=True):
            np.testing.assert_array_equal(want_part, have_part, err_msg=f"step {step}")


# -- a run stopped mid-game and resumed is the run never stopped --------------------------------

ATARI_ENV = {"id": BREAKOUT, "episodic_life": True, "clip_rewards": True}
PIXEL_RUNS = {
    # Breakout: FIRE at reset, lost lives end learning episodes; eval.epsilon=1.0 plays random
    # games (an untrained greedy policy may never FIRE, and a game would last 27,000 steps).
    # The tiny MLP stands in for a CNN: what is tested is the env, replay and RNG state.
    "atari": ({"env": ATARI_ENV}, 450, 220),
    # lz4-compressed frames, written by 2 envs as 3-step transitions, drawn by priority.
    "atari-lz4": (
        {
            "env": ATARI_ENV,
            "num_envs": 2,
            "buffer": {"kind": "per", "n_step": 3, "frame_compression": "lz4"},
        },
        450,
        220,
    ),
    "minatar": ({"env": {"id": MINATAR}}, 600, 250),
}


def assert_same_state(a, b, where="replay"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (item_a, item_b) in enumerate(zip(a, b, strict=True)):
            assert_same_state(item_a, item_b, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("family", sorted(PIXEL_RUNS))
def test_a_pixel_run_stopped_mid_game_resumes_bitwise(tmp_path, family):
    run, total_steps, stop_at = PIXEL_RUNS[family]
    needs_extra(run["env"]["id"])
    settings = merge(
        TINY,
        {
            "total_steps": total_steps,
            "learning_starts": 200,
            "train_every": 4,
            "batch_size": 8,
            "buffer": {"capacity": 1000},
            "exploration": {"steps": 200},
            "eval": {"every": 100_000, "episodes": 1, "epsilon": 1.0},
            "checkpoint": {"every": 100_000},
            "log": {"every": 100},
        },
    )
    config = parse_train_config(merge(settings, run))
    full = train(config, tmp_path / "full")
    stopped = train(config, tmp_path / "cut", stop_requested=StopAt(stop_at))
    assert stopped.interrupted
    payload = load_checkpoint(tmp_path / "cut/checkpoints/last.pt")
    assert payload["env_snapshots"] is not None
    assert payload["loop"]["episode_length"][0] > 0  # stopped in the middle of a game
    resumed = train(config, tmp_path / "cut", resume=payload)
    full_last = tmp_path / "full/checkpoints/last.pt"
    cut_last = tmp_path / "cut/checkpoints/last.pt"
    assert_same_weights(full_last, cut_last)
    saved_storage = load_checkpoint(full_last)["replay"]["storage"]
    if family == "atari":  # replay keeps each frame once
        assert "frames" in saved_storage
    if family == "atari-lz4":  # ... as lz4 blocks
        assert saved_storage["frame_compression"] == "lz4" and "frames" not in saved_storage
        replay_bytes = scalars(tmp_path / "full", "replay/bytes")
        assert replay_bytes == scalars(tmp_path / "cut", "replay/bytes")
        assert replay_bytes[0][1] < replay_bytes[-1][1]  # the frames grow as they come
    assert_same_state(load_checkpoint(full_last)["replay"], load_checkpoint(cut_last)["replay"])
    full_curves = curves(tmp_path / "full")
    assert full_curves == curves(tmp_path / "cut")
    # games that ended after the stop, their returns and lengths the same
    assert any(step > stop_at for step, _ in full_curves["charts/episodic_return"])
    timing = ("wall_seconds", "steps_per_second")
    assert {k: v for k, v in full.summary().items() if k not in timing} == {
        k: v for k, v in resumed.summary().items() if k not in timing
    }


# -- a damaged or forged game state is refused, in one line, and changes nothing ----------------

ATARI_RUN_ARGS = [
    "env=atari",
    f"env.id={BREAKOUT}",
    "buffer.frame_compression=none",  # plain frames here; the preset's lz4: test_frame_compression
    "total_steps=300",
    "learning_starts=200",
    "batch_size=8",
    "model.features=16",
    "buffer.capacity=300",
    "exploration.steps=100",
    "eval.every=300",
    "eval.episodes=1",
    "eval.epsilon=1.0",
    "checkpoint.every=300",
]


@pytest.fixture(scope="module")
def finished_atari_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("atari") / "run"
    done = run_installed(
        "dqn-train", *ATARI_RUN_ARGS, f"hydra.run.dir={run_dir}", cwd=run_dir.parent
    )
    assert done.returncode == 0, done.stderr
    return run_dir


def test_an_atari_run_resumes_its_games_through_the_cli(tmp_path, finished_atari_run, capfd):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished_atari_run), str(run_dir)], check=True)
    code, _, err = run_main(f"resume={run_dir}", "total_steps=400", capfd=capfd)
    assert code == 0, err
    log = (run_dir / "train.log").read_text()
    assert "resumed at env step 300" in log and "episodes restart" not in log
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["env_step"] == 400


class _GameState:
    """Stands for the game state (a persistent id) of a snapshot while a test edits it."""

    def __init__(self, pid):
        self.pid = pid


def with_game_state(data: bytes, edit) -> bytes:
    """The snapshot ``data`` with its game state replaced by ``edit(state)``."""

    class Reader(pickle.Unpickler):
        def persistent_load(self, pid):
            return _GameState(pid)

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            return (obj.pid[0], edit(obj.pid[1])) if isinstance(obj, _GameState) else None

    chain = Reader(io.BytesIO(data)).load()
    out = io.BytesIO()
    Writer(out).dump(chain)
    return out.getvalue()


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


FORGERIES = {
    "ale-bytes": (
        lambda data, marker: with_game_state(
            data, lambda state: {**state, "ale": bytes(len(state["ale"]))}
        ),
        "ALE cannot load the game state (",  # then ALE's reason, which varies with the bytes
    ),
    "generator": (
        lambda data, marker: with_game_state(
            data, lambda state: {**state, "np_random": {"bit_generator": "MT19937"}}
        ),
        "generator state is refused",
    ),
    "state-type": (
        lambda data, marker: with_game_state(data, lambda state: ["not", "a", "state"]),
        "is not a dict of 'ale' and 'np_random'",
    ),
    "no-game": (lambda data, marker: pickle.dumps({"lives": 5}), "does not hold an env"),
    "code": (lambda data, marker: pickle.dumps(RunsCode(marker)), "posix.system, not allowed"),
}


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_a_damaged_or_forged_atari_state_is_refused_and_changes_nothing(
    tmp_path, finished_atari_run, capfd, forgery
):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished_atari_run), str(run_dir)], check=True)
    forge, expected = FORGERIES[forgery]
    marker = tmp_path / "ran"
    last = run_dir / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    assert payload["env_snapshots"] is not None
    payload["env_snapshots"] = [forge(payload["env_snapshots"][0], marker)]
    torch.save(payload, last)
    before = snapshot(run_dir)
    code, _, err = run_main(f"resume={run_dir}", "total_steps=400", capfd=capfd)
    assert_one_line_error(code, err, "env state was refused")
    assert expected in err
    assert snapshot(run_dir) == before
    assert not marker.exists()
