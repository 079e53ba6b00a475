"""env.vector=ale: ale-py's C++ vector env behind dqn-cli's vector-env contract, playing the
same games as the gymnasium path, and a whole run on it through the CLI."""

import json
from dataclasses import replace

import numpy as np
import pytest

from dqn_cli.cli.evaluate import main as evaluate_main
from dqn_cli.config import ConfigError, EnvConfig, parse_train_config
from dqn_cli.envs import collection_path, life_lost, make_vector_env
from tests.helpers import run_main

pytest.importorskip("ale_py", reason="the atari extra (make install) is not installed")
pytest.importorskip("cv2", reason="the atari extra (make install) is not installed")

FIRE = 1


def test_without_noops_sticky_actions_or_fire_both_paths_play_identical_games():
    """Ms. Pac-Man has no FIRE: with no no-ops and no sticky actions nothing random is left,
    and every observation, raw reward, end, final observation and lost life is the same."""
    keys = {"id": "ALE/MsPacman-v5", "noop_max": 0, "sticky_actions": 0.0}
    paths = [make_vector_env(EnvConfig(**keys, vector=v), 2) for v in ("gymnasium", "ale")]
    first = [envs.reset(seed=3)[0] for envs in paths]
    np.testing.assert_array_equal(first[0], first[1])
    rng = np.random.default_rng(0)
    ends = lives_lost = 0
    biggest_reward = 0.0
    for _ in range(1200):
        actions = rng.integers(paths[0].single_action_space.n, size=2)
        (obs, rewards, terminated, truncated, info), ale = (e.step(actions) for e in paths)
        np.testing.assert_array_equal(obs, ale[0])
        np.testing.assert_array_equal(rewards, ale[1])
        np.testing.assert_array_equal(terminated, ale[2])
        np.testing.assert_array_equal(truncated, ale[3])
        np.testing.assert_array_equal(life_lost(info, 2), life_lost(ale[4], 2))
        for i in np.flatnonzero(terminated | truncated):
            np.testing.assert_array_equal(info["final_obs"][i], ale[4]["final_obs"][i])
            ends += 1
        lives_lost += int(life_lost(info, 2).sum())
        biggest_reward = max(biggest_reward, float(rewards.max()))
    for envs in paths:
        envs.close()
    assert ends >= 2 and lives_lost >= 2
    assert biggest_reward > 1  # raw scores: ale-py's reward clipping is off
    assert ale[1].dtype == np.float64


def test_auto_reset_final_obs_and_lost_lives_on_breakout():
    envs = make_vector_env(EnvConfig(id="ALE/Breakout-v5", vector="ale"), 2)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    # a new episode's stack repeats its first frame, as gymnasium's FrameStackObservation does
    assert all(np.array_equal(obs[:, 0], obs[:, k]) for k in (1, 2, 3))
    rng = np.random.default_rng(0)
    lost = np.zeros(2, dtype=np.int64)
    games: list[int] = []
    while len(games) < 2:
        previous = obs.copy()
        obs, rewards, terminated, truncated, info = envs.step(rng.integers(4, size=2))
        done = terminated | truncated
        assert rewards.dtype == np.float64
        np.testing.assert_array_equal(info["_final_obs"], done)
        lost += life_lost(info, 2)
        for i in range(2):
            # the stack slides by one frame within an episode, into final_obs at its end
            stack = info["final_obs"][i] if done[i] else obs[i]
            np.testing.assert_array_equal(stack[:3], previous[i][1:])
        for i in np.flatnonzero(done):
            assert terminated[i] and not life_lost(info, 2)[i]
            assert not np.array_equal(obs[i], info["final_obs"][i])
            assert all(np.array_equal(obs[i, 0], obs[i, k]) for k in (1, 2, 3))
            games.append(int(lost[i]))
            lost[i] = 0
    envs.close()
    assert games == [4, 4]  # five lives: four lost in play, the fifth ends the game


def test_sticky_actions_and_seeds_are_ours():
    """ale-py's vector env defaults to no sticky actions; ours are env.sticky_actions. Two
    envs seeded alike play alike; with every action sticky, the agent's are never taken."""

    def frames_after(sticky: float) -> np.ndarray:
        keys = {"id": "ALE/Breakout-v5", "noop_max": 0, "sticky_actions": sticky}
        envs = make_vector_env(EnvConfig(**keys, vector="ale"), 2)
        envs.reset(seed=[7, 7])
        for _ in range(60):
            obs, *_ = envs.step(np.array([3, FIRE]))  # env 0 moves left, env 1 does not
        envs.close()
        return obs

    moved = frames_after(0.0)
    assert not np.array_equal(moved[0], moved[1])
    stuck = frames_after(1.0)
    np.testing.assert_array_equal(stuck[0], stuck[1])


def test_the_path_follows_env_vector_and_ale_refuses_what_it_cannot_build():
    # The default keeps exact resume (gymnasium's Atari games snapshot, ale-py's do not).
    assert collection_path(EnvConfig(id="ALE/Pong-v5"), 4) == "gymnasium"
    pong = EnvConfig(id="ALE/Pong-v5", vector="auto")
    assert collection_path(pong, 1) == "gymnasium"  # one env: both at the emulator's speed
    assert collection_path(pong, 4) == "ale"
    assert collection_path(replace(pong, kwargs={"mode": 1}), 4) == "gymnasium"
    assert collection_path(EnvConfig(id="ALE/Pong-v5", vector="gymnasium"), 4) == "gymnasium"
    assert collection_path(EnvConfig(), 4) == "gymnasium"
    refused = [
        ({"id": "CartPole-v1", "vector": "ale"}, "env.vector: ale steps ALE/* games only"),
        ({"id": "ALE/Pong-v5", "vector": "ale", "kwargs": {"mode": 1}}, "env.kwargs: "),
        (
            {
                "id": "ALE/Pong-v5",
                "vector": "ale",
                "wrappers": [{"_target_": "gymnasium.wrappers.RecordEpisodeStatistics"}],
            },
            "env.wrappers: ",
        ),
    ]
    for env, message in refused:
        with pytest.raises(ConfigError) as caught:
            parse_train_config({"env": env})
        assert str(caught.value).startswith(message)
        assert "use env.vector=gymnasium" in str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_run_on_the_ale_path_trains_resumes_and_evaluates(tmp_path, capfd):
    run_dir = tmp_path / "run"
    args = [
        "env=atari",
        "env.id=ALE/Pong-v5",
        "env.vector=ale",
        "num_envs=2",
        "total_steps=300",
        "learning_starts=200",
        "batch_size=32",
        "buffer.capacity=400",
        "model.features=16",
        "exploration.steps=100",
        "log.every=100",
        "eval.every=300",
        "eval.episodes=1",
        "checkpoint.every=300",
        f"hydra.run.dir={run_dir}",
    ]
    code, _, err = run_main(*args, capfd=capfd)
    assert code == 0, err
    code, _, err = run_main(f"resume={run_dir}", "total_steps=400", capfd=capfd)
    assert code == 0, err
    log = (run_dir / "train.log").read_text()
    assert "envs: 2 stepped by ale" in log
    # the games live in C++: a resumed run restores the rest and starts new episodes
    assert "resumed at env step 300" in log and "episodes restart" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 400
    capfd.readouterr()
    assert evaluate_main([str(run_dir), "--episodes", "1", "--json"]) == 0
    row = json.loads(capfd.readouterr().out.splitlines()[-1])
    assert row["episodes"] == 1 and -21 <= row["return_mean"] <= 21 and row["length_mean"] > 100
