"""Atari and MinAtar: the preprocessing pipeline on real games, and the training-target shaping
(lost lives, clipped rewards) that must never touch logged returns or evaluation."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_cli.cli.evaluate import main as evaluate_main
from dqn_cli.config import EnvConfig, parse_train_config
from dqn_cli.envs import env_spec, make_env
from dqn_cli.evaluation import Evaluator
from dqn_cli.networks import build_q_network
from dqn_cli.training import train
from tests.helpers import TINY, merge, run_installed

pytest.importorskip("ale_py", reason="the atari extra (make install) is not installed")
pytest.importorskip("cv2", reason="the atari extra (make install) is not installed")

BREAKOUT = EnvConfig(id="ALE/Breakout-v5")
FIRE = 1


def test_atari_observations_are_stacked_84x84_uint8_with_frame_skip():
    env = make_env(BREAKOUT)
    assert env.observation_space.shape == (4, 84, 84)
    assert env.observation_space.dtype == np.uint8
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    # The stack at reset repeats the first frame (nothing from before the game).
    assert all(np.array_equal(obs[0], frame) for frame in obs[1:])
    frames = info["episode_frame_number"]
    for _ in range(10):
        previous = obs
        obs, _, terminated, _, info = env.step(FIRE)
        assert not terminated
        # each agent step is 4 emulator frames; the stack slides by one frame
        assert info["episode_frame_number"] == frames + 4
        frames = info["episode_frame_number"]
        np.testing.assert_array_equal(obs[:3], previous[1:])
    env.close()


def test_atari_resets_start_after_a_random_number_of_no_ops_then_fire():
    env = make_env(BREAKOUT)
    starts = {env.reset(seed=seed)[1]["episode_frame_number"] for seed in range(12)}
    env.close()
    # up to 30 one-frame no-ops, then FIRE (4 frames); several different starts
    assert len(starts) >= 4
    assert min(starts) >= 4 and max(starts) <= 30 + 4


def layers(env):
    """An env's wrapper chain, outermost first, down to the game."""
    while isinstance(env, gym.Wrapper):
        yield env
        env = env.env
    yield env


def test_sticky_actions_and_action_set_are_the_keys():
    minimal = make_env(BREAKOUT)
    full = make_env(EnvConfig(id="ALE/Breakout-v5", full_action_space=True, sticky_actions=0.0))
    assert minimal.action_space.n == 4 and full.action_space.n == 18
    # Sticky per emulator frame in a wrapper (its previous action is state a checkpoint keeps),
    # never also inside the emulator.
    sticky = [layer for layer in layers(minimal) if isinstance(layer, gym.wrappers.StickyAction)]
    assert [layer.repeat_action_probability for layer in sticky] == [0.25]
    assert not any(isinstance(layer, gym.wrappers.StickyAction) for layer in layers(full))
    for env in (minimal, full):
        assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0  # type: ignore[attr-defined]
    minimal.close()
    full.close()


def always_fire_network(config: EnvConfig):
    """A Nature CNN whose Q-values always rank FIRE first: launches the ball, never moves."""
    env = make_env(config)
    spec = env_spec(env.observation_space, env.action_space, config.id)
    env.close()
    network = build_q_network("dqn_cli.networks.NatureCNN", "linear", {"features": 16}, spec)
    last = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    return network


def test_a_lost_life_is_signalled_but_the_game_and_its_evaluation_go_on():
    env = make_env(BREAKOUT)
    env.reset(seed=5)
    length, lives_lost, score = 0, 0, 0.0
    while True:
        _, reward, terminated, truncated, info = env.step(FIRE)
        length += 1
        score += float(reward)
        lives_lost += bool(info["life_lost"])
        if terminated or truncated:
            break
    env.close()
    assert lives_lost == 4 and terminated  # five lives: four lost in play, the fifth ends it
    evaluator = Evaluator(BREAKOUT, episodes=1, seed=5)
    result = evaluator.run(always_fire_network(BREAKOUT))
    evaluator.close()
    # the evaluation episode is the whole game, scored raw
    assert result.lengths[0] == length
    assert result.returns[0] == score


def test_lost_lives_and_clipped_rewards_shape_targets_but_not_logged_returns(
    tmp_path, built_agents
):
    settings = merge(
        TINY,
        {
            "env": {"id": "ALE/Breakout-v5", "episodic_life": True, "clip_rewards": True},
            "total_steps": 1500,
            "learning_starts": 1400,
            "train_every": 4,
            "buffer": {"capacity": 1500},
            "eval": {"every": 100_000, "episodes": 1, "epsilon": 0.05},
            "exploration": {"steps": 100},
        },
    )
    settings["model"] = {"_target_": "dqn_cli.networks.NatureCNN", "features": 32}
    config = parse_train_config(settings)
    result = train(config, tmp_path)
    storage = built_agents[0].buffer.storage
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    games = [e.value for e in events.Scalars("charts/episodic_length")]
    assert len(games) == result.episodes >= 2
    # every lost life ended a learning episode: five per game
    assert storage.terminated[: storage.size].sum() >= 5 * result.episodes
    assert set(np.unique(storage.rewards[: storage.size])) <= {-1.0, 0.0, 1.0}
    assert min(games) > 50  # whole games, not single lives


def test_minatar_grids_become_channels_first_uint8():
    pytest.importorskip("minatar", reason="the minatar extra (make install) is not installed")
    config = EnvConfig(id="MinAtar/Breakout-v1")
    env = make_env(config)
    assert env.observation_space.shape == (4, 10, 10)
    assert env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    raw = env.unwrapped.game.state()  # type: ignore[attr-defined]  # (10, 10, 4) bool
    np.testing.assert_array_equal(obs, raw.transpose(2, 0, 1).astype(np.uint8) * 255)
    assert set(np.unique(obs)) <= {0, 255}
    env.close()


def test_an_env_id_whose_extra_is_missing_is_one_line_and_no_run_dir(tmp_path):
    shadow = tmp_path / "shadow" / "ale_py"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('ale_py hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow.parent))
    run_dir = tmp_path / "run"
    done = run_installed(
        "dqn-train", "env=atari", f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "atari extra" in lines[0] and "pip install" in lines[0]
    assert not run_dir.exists()


PIXEL_RUNS = {
    "atari": ({"id": "ALE/Pong-v5", "episodic_life": True, "clip_rewards": True}, "NatureCNN"),
    "minatar": ({"id": "MinAtar/Breakout-v1"}, "MinAtarCNN"),
}


@pytest.mark.parametrize("family", sorted(PIXEL_RUNS))
def test_pixel_checkpoints_evaluate_and_record_video(tmp_path, capsys, family):
    """dqn-eval rebuilds a pixel run's env pipeline and model from its checkpoint alone, and
    records its whole games as mp4."""
    pytest.importorskip("moviepy", reason="the video extra (make install) is not installed")
    if family == "minatar":
        pytest.importorskip("minatar", reason="the minatar extra (make install) is not installed")
    env, model = PIXEL_RUNS[family]
    settings = merge(
        TINY,
        {
            "env": env,
            "total_steps": 300,
            "learning_starts": 200,
            "buffer": {"capacity": 300},
            "eval": {"every": 300, "episodes": 1},
            "checkpoint": {"every": 300},
        },
    )
    settings["model"] = {"_target_": f"dqn_cli.networks.{model}", "features": 16}
    run_dir = tmp_path / "run"
    train(parse_train_config(settings), run_dir)
    videos = tmp_path / "videos"
    code = evaluate_main([str(run_dir), "--episodes", "1", "--video", str(videos), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    row = json.loads(out.splitlines()[-1])
    assert row["episodes"] == 1 and row["step"] == 300
    if family == "atari":
        assert -21 <= row["return_mean"] <= 21 and row["length_mean"] > 100  # a whole game
    assert len(list(videos.glob("*.mp4"))) == 1


def test_the_largest_seed_trains_and_evaluates_on_an_env_with_32_bit_seeds(tmp_path, capsys):
    """MinAtar seeds numpy's legacy generator, which refuses seeds of 2**32 and above: the
    evaluation's seed offset and dqn-eval's episode seeds wrap instead of crashing."""
    pytest.importorskip("minatar", reason="the minatar extra (make install) is not installed")
    largest = 2**32 - 1
    settings = merge(
        TINY,
        {
            "env": {"id": "MinAtar/Breakout-v1"},
            "seed": largest,
            "total_steps": 200,
            "learning_starts": 100,
            "eval": {"every": 200, "episodes": 2},
            "checkpoint": {"every": 200},
        },
    )
    settings["model"] = {"_target_": "dqn_cli.networks.MinAtarCNN", "features": 16}
    run_dir = tmp_path / "run"
    result = train(parse_train_config(settings), run_dir)
    assert result.final_eval is not None and result.final_eval.lengths.min() > 0
    code = evaluate_main([str(run_dir), "--episodes", "3", "--seed", str(largest), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["episodes"] == 3
    with pytest.raises(SystemExit) as refused:
        evaluate_main([str(run_dir), "--seed", str(largest + 1)])
    assert refused.value.code == 2
    assert f"must be in [0, {largest}]" in capsys.readouterr().err
