import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_cli.config import EnvConfig, parse_train_config
from dqn_cli.env_spec import EnvSpec
from dqn_cli.envs import make_vector_env
from dqn_cli.training import build_agent, train


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_same_seed_gives_an_identical_run(tmp_path, tiny_config):
    config = tiny_config(seed=3)
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    curve_a = scalars(tmp_path / "a", "charts/episodic_return")
    assert len(curve_a) > 20
    assert curve_a == scalars(tmp_path / "b", "charts/episodic_return")
    assert scalars(tmp_path / "a", "losses/td_loss") == scalars(tmp_path / "b", "losses/td_loss")
    model_a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["model"]
    model_b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    train(tiny_config(seed=4), tmp_path / "c")
    assert scalars(tmp_path / "c", "charts/episodic_return") != curve_a


def test_run_dir_contents(tmp_path, tiny_config):
    result = train(tiny_config(buffer={"kind": "per"}), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "total_steps",
        "final_eval_return_mean",
        "final_eval_return_std",
        "best_eval_return_mean",
        "wall_seconds",
        "steps_per_second",
    ):
        assert key in summary
    assert summary["total_steps"] == 2000
    assert summary["final_eval_return_mean"] == pytest.approx(result.final_eval.mean)
    for name in ("last.pt", "best.pt"):
        payload = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert payload["config"]["buffer"]["kind"] == "per"
        assert EnvSpec.from_dict(payload["env_spec"]).n_actions == 2
    last = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert last["env_step"] == 2000
    assert set(last["model"]) == set(last["target_model"])  # full state; best.pt is weights only
    for tag in (
        "charts/episodic_return",
        "charts/episodic_length",
        "losses/td_loss",
        "losses/q_values",
        "charts/epsilon",
        "charts/steps_per_second",
        "eval/return_mean",
        "replay/beta",
        "replay/importance_weight_mean",
    ):
        assert scalars(tmp_path, tag), tag
    betas = [v for _, v in scalars(tmp_path, "replay/beta")]
    assert betas == sorted(betas) and betas[-1] == pytest.approx(1.0)


def test_best_checkpoint_tracks_the_best_eval(tmp_path, tiny_config):
    train(tiny_config(total_steps=3000), tmp_path)
    evals = scalars(tmp_path, "eval/return_mean")
    best_step, best_value = max(evals, key=lambda e: (e[1], -e[0]))
    payload = torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)
    assert payload["env_step"] == best_step
    assert payload["eval_return"] == pytest.approx(best_value)


@pytest.mark.parametrize("num_envs", [1, 4])
def test_no_stored_transition_spans_an_auto_reset(tmp_path, tiny_config, built_agents, num_envs):
    """CartPole integrates x' = x + 0.02 * x_dot: a stored (obs, next_obs) pair that straddled
    a reset would break this. Episodes end often with random actions, so many do reset."""
    result = train(tiny_config(num_envs=num_envs, total_steps=1000), tmp_path)
    storage = built_agents[0].buffer.storage
    assert storage.size == 1000 and result.episodes > 20
    obs, next_obs = storage.obs[:1000], storage.next_obs[:1000]
    np.testing.assert_allclose(next_obs[:, 0], obs[:, 0] + 0.02 * obs[:, 1], atol=1e-5)
    # Exactly the episodes that ended by falling are terminal; the rest bootstrap.
    assert storage.terminated[:1000].sum() == result.episodes


def test_every_group_option_builds(tiny_config):
    envs = make_vector_env(EnvConfig(), 1)
    spec = EnvSpec((4,), "float32", 2)
    envs.close()
    for algo in ("dqn", "ddqn"):
        for buffer in ("uniform", "per", "none"):
            for target in ("hard", "soft", "none"):
                config = tiny_config(
                    algo={"name": algo}, buffer={"kind": buffer}, target={"kind": target}
                )
                agent = build_agent(config, spec, torch.device("cpu"), np.random.default_rng(0))
                assert agent.learner.td.double_q == (algo == "ddqn")
                assert (agent.target is agent.online) == (target == "none")
                assert (
                    type(agent.buffer.sampler).__name__
                    == {
                        "uniform": "UniformSampler",
                        "per": "PrioritizedSampler",
                        "none": "LatestSampler",
                    }[buffer]
                )
                assert (
                    type(agent.target_updater).__name__
                    == {
                        "hard": "HardTargetUpdate",
                        "soft": "SoftTargetUpdate",
                        "none": "NoTargetNetwork",
                    }[target]
                )


def test_learning_happens_on_cartpole(tmp_path):
    """A short run must clearly beat a random policy (~22) in greedy evaluation.

    15k steps is under a third of the preset's budget: measured over seeds 0-3 the greedy
    return there is 96-186, so the bar is set at 4x random, not at a lucky seed's figure.
    Solving is what tests/test_solve.py checks (slow)."""
    config = parse_train_config({"total_steps": 15000, "eval": {"every": 15000, "episodes": 10}})
    result = train(config, tmp_path)
    assert result.final_eval.mean > 88


def test_training_stops_once_an_evaluation_reaches_stop_at(tmp_path, tiny_config):
    result = train(
        tiny_config(total_steps=3000, eval={"every": 1000, "episodes": 3, "stop_at": 1.0}), tmp_path
    )
    assert result.total_steps == 1000 and result.stopped_early
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["stopped_early"] is True
    assert summary["total_steps"] == 1000
    last_eval = scalars(tmp_path, "eval/return_mean")[-1][1]
    assert summary["final_eval_return_mean"] == pytest.approx(last_eval)
    assert torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["env_step"] == 1000
    never = train(
        tiny_config(total_steps=2000, eval={"every": 1000, "stop_at": 1e9}), tmp_path / "never"
    )
    assert never.total_steps == 2000 and not never.stopped_early


@pytest.mark.parametrize(
    ("override", "learner"),
    [
        ({}, "fast"),
        ({"learner": "autograd"}, "autograd"),
        ({"model": {"head": "dueling"}}, "autograd"),
        ({"buffer": {"n_step": 3}}, "fast"),
    ],
)
def test_models_learners_and_n_step_train_end_to_end(tmp_path, tiny_config, override, learner):
    config = tiny_config(**override)
    spec = EnvSpec((4,), "float32", 2)
    agent = build_agent(config, spec, torch.device("cpu"), np.random.default_rng(0))
    assert agent.learner.name == learner
    result = train(config, tmp_path)
    assert result.final_eval is not None and result.total_steps == config.total_steps
    assert scalars(tmp_path, "losses/td_loss")


def test_n_step_transitions_reach_replay_with_their_discounts(tmp_path, tiny_config, built_agents):
    train(tiny_config(total_steps=600, buffer={"n_step": 3}, gamma=0.9), tmp_path)
    storage = built_agents[0].buffer.storage
    discounts = storage.discounts[: storage.size].astype(np.float64)
    # Mostly full 3-step sums; episode ends leave 1- and 2-step tails.
    np.testing.assert_allclose(np.unique(discounts.round(5)), [0.729, 0.81, 0.9], rtol=1e-5)
    full = np.isclose(discounts, 0.729)
    # CartPole pays 1 per step: a full 3-step return is 1 + 0.9 + 0.81.
    np.testing.assert_allclose(storage.rewards[: storage.size][full], 2.71, rtol=1e-6)
