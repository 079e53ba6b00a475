"""A user's own env (tests/user_envs/maze.py) with constructor arguments and wrappers: trained,
resumed exactly and evaluated through the installed commands; each mistake one line, exit 2,
before any run dir."""

import decimal
import json
import os
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from gymnasium.vector import SyncVectorEnv

from dqn_cli.config import EnvConfig
from dqn_cli.env_state import snapshot_envs
from dqn_cli.envs import make_env
from dqn_cli.training import train
from tests.helpers import TINY_RUN_ARGS, run_installed

USER_ENVS = Path(__file__).parent / "user_envs"
MAZE = "maze:Maze-v0"
# One wrapper of the user's own (state of its own) and one of gymnasium's (running statistics).
WRAPPERS = [
    {"_target_": "maze.StepCounter", "start": 3},
    {"_target_": "gymnasium.wrappers.NormalizeObservation"},
]
MAZE_ARGS = [
    f"env.id={MAZE}",
    "env.kwargs={size:4}",
    "env.wrappers=[{_target_:maze.StepCounter,start:3},"
    "{_target_:gymnasium.wrappers.NormalizeObservation}]",
    "eval.stop_at=null",
]


@pytest.fixture
def user_envs_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_ENVS))


def layers(env):
    found = []
    while isinstance(env, gym.Wrapper):
        found.append(type(env).__name__)
        env = env.env
    return [*found, type(env).__name__]


def test_the_env_is_made_with_its_kwargs_and_wrapped_in_order(user_envs_importable):
    env = make_env(EnvConfig(id=MAZE, kwargs={"size": 4}, wrappers=tuple(WRAPPERS)))
    assert env.unwrapped.size == 4
    # outermost first: the last wrapper listed wraps the others
    assert layers(env)[:2] == ["NormalizeObservation", "StepCounter"]
    assert env.get_wrapper_attr("steps") == 3
    env.reset(seed=0)
    env.step(0)
    assert env.get_wrapper_attr("steps") == 4


def test_a_wrapped_user_env_resumes_exactly(tmp_path, tiny_config, user_envs_importable):
    from tests.test_resume import StopAt, assert_same_weights, curves

    env = {"id": MAZE, "kwargs": {"size": 4}, "wrappers": WRAPPERS}
    config = tiny_config(total_steps=2000, num_envs=2, env=env, eval={"stop_at": None})
    train(config, tmp_path / "full")
    train(config, tmp_path / "cut", stop_requested=StopAt(333))
    payload = torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=True)
    assert payload["env_snapshots"] is not None  # the wrappers' state is in the checkpoint
    train(config, tmp_path / "cut", resume=payload)
    assert_same_weights(tmp_path / "full/checkpoints/last.pt", tmp_path / "cut/checkpoints/last.pt")
    assert curves(tmp_path / "full") == curves(tmp_path / "cut")


class KeepsADecimal(gym.Wrapper):
    """State that pickle rebuilds by calling a constructor the allow-list does not know."""

    def __init__(self, env):
        super().__init__(env)
        self.bonus = decimal.Decimal("0.5")


def test_env_state_the_allow_list_refuses_is_not_saved_and_episodes_restart(
    user_envs_importable, caplog
):
    config = EnvConfig(id=MAZE)
    envs = SyncVectorEnv([lambda: KeepsADecimal(make_env(config))])
    envs.reset(seed=0)
    assert snapshot_envs(envs) is None
    assert "episodes restart" in caplog.text
    plain = SyncVectorEnv([lambda: make_env(config)])
    plain.reset(seed=0)
    assert snapshot_envs(plain) is not None


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("maze")
    env = {**os.environ, "PYTHONPATH": str(USER_ENVS)}
    run_dir = root / "run"
    done = run_installed(
        "dqn-train", *TINY_RUN_ARGS, *MAZE_ARGS, f"hydra.run.dir={run_dir}", cwd=root, env=env
    )
    return done, run_dir, env


def test_a_user_env_trains_resumes_and_evaluates_through_the_cli(maze_run, tmp_path):
    done, run_dir, env = maze_run
    assert done.returncode == 0, done.stderr
    saved = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["config"]["env"]
    built_from = {key: saved[key] for key in ("id", "kwargs", "wrappers")}
    assert built_from == {"id": MAZE, "kwargs": {"size": 4}, "wrappers": WRAPPERS}
    resumed = run_installed(
        "dqn-train", f"resume={run_dir}", "total_steps=2000", cwd=tmp_path, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    log = (run_dir / "train.log").read_text()
    assert "resumed at env step 1500" in log and "episodes restart" not in log
    evaluated = run_installed("dqn-eval", str(run_dir), "--json", cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout.splitlines()[-1])
    # the 4x4 maze (env.kwargs) rebuilt by dqn-eval: greedy episodes of a few steps, each
    # ending at the goal (+1) within the 60-step limit the module registered
    assert result["length_mean"] < 60 and result["return_max"] > 0.8


def test_dqn_eval_without_the_users_module_is_one_line(maze_run, tmp_path):
    _, run_dir, _ = maze_run
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = run_installed(
        "dqn-eval", str(run_dir / "checkpoints" / "best.pt"), cwd=tmp_path, env=env
    )
    assert done.returncode == 2
    assert "cannot import module 'maze'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env.id=no_such_pkg.envs:Maze-v0"], "env.id: cannot import module 'no_such_pkg.envs'"),
        (["env.id=maze:Maze-v9"], "registers no env 'Maze-v9'; did you mean Maze-v0?"),
        ([f"env.id={MAZE}", "env.kwargs={sizes:4}"], "unexpected keyword argument 'sizes'"),
        ([f"env.id={MAZE}", "env.kwargs.size=1"], "env.kwargs: 'maze:Maze-v0' rejects"),
        (["env.wrappers=[{_target_:no_such_pkg.Wrapper}]"], "cannot import module 'no_such_pkg'"),
        (["env.wrappers=[{_target_:maze.NoSuchWrapper}]"], "has no class 'NoSuchWrapper'"),
        (
            ["env.wrappers=[{_target_:shutil.rmtree,ignore_errors:true}]"],
            "shutil.rmtree is not a gymnasium.Wrapper class",
        ),
        (["env.wrappers=[{max_episode_steps:9}]"], "env.wrappers[0]._target_: expected"),
        (
            ["env.wrappers=[{_target_:maze.ContinuousActions}]"],
            "env.wrappers[0]: maze.ContinuousActions changes the action space to Box",
        ),
        (["env.id=CartPol-v1"], "did you mean CartPole-v1"),
    ],
)
def test_env_mistakes_are_one_line_before_any_run_dir(tmp_path, args, message):
    env = {**os.environ, "PYTHONPATH": str(USER_ENVS)}
    done = run_installed("dqn-train", *args, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()
