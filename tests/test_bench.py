"""The benchmark instruments still run and print their tables (tiny sizes, a few seconds)."""

from __future__ import annotations

import pytest

from bench import buffers, profile_step, update_cost
from bench.common import train_config
from bench.scenarios import SCENARIOS


def test_buffer_benchmark_prints_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    assert buffers.main(["--capacities", "2000", "--budget", "0.005", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 2,000 ")]
    for operation in ("add 1 transition, per", "sample 128, uniform", "per sample 64 + update 64"):
        assert any(f"| {operation} " in row for row in rows), operation


def test_update_benchmark_times_both_updates(capsys: pytest.CaptureFixture[str]) -> None:
    assert update_cost.main(["--budget", "0.02", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for label, *_ in update_cost.CASES:
        row = next(line for line in out.splitlines() if line.startswith(f"| {label} "))
        textbook_us, ours_us, ratio = (
            cell.strip().replace(",", "") for cell in row.split("|")[3:6]
        )
        assert float(textbook_us) > 0 and float(ours_us) > 0
        assert float(ratio) == pytest.approx(float(ours_us) / float(textbook_us), abs=0.01)


def test_naive_buffer_samples_by_priority() -> None:
    import numpy as np
    import torch

    naive = buffers.naive_prioritized_buffer(100, np.random.default_rng(0))
    buffers.fill(naive, 100, np.random.default_rng(0))
    naive.update_priorities(np.arange(100), torch.zeros(100))
    naive.update_priorities(np.array([7]), torch.tensor([1000.0]))
    batch = naive.sample(64, beta=0.4)
    assert (batch.slots == 7).mean() > 0.9  # nearly all mass on slot 7
    assert batch.obs.shape == (64, 4)


def test_profile_prints_phases_and_restores_the_library(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dqn_cli.buffers import ReplayBuffer
    from dqn_cli.learner import DQNLearner

    originals = (ReplayBuffer.add, ReplayBuffer.sample, DQNLearner.update)
    tiny = ["learning_starts=100", "batch_size=32", "model.hidden=[16]", "eval.episodes=1"]
    assert profile_step.main(["--scenario", "preset", "--steps", "600", *tiny]) == 0
    out = capsys.readouterr().out
    for phase in ("| env ", "| acting ", "| store ", "| sample ", "| update ", "| total train()"):
        assert phase in out
    assert "NOT hooked" not in out
    assert (ReplayBuffer.add, ReplayBuffer.sample, DQNLearner.update) == originals


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_overrides_mean_what_the_peer_gets(name: str) -> None:
    scenario = SCENARIOS[name]
    config = train_config(scenario.dqn_train_overrides(seed=0, eval_episodes=10))
    peer = scenario.sb3_settings()
    assert config.total_steps == peer["total_steps"]
    assert config.lr == peer["lr"] and config.lr_schedule == "constant"
    assert config.gamma == peer["gamma"]
    assert config.batch_size == peer["batch_size"]
    assert config.buffer.kind == "uniform" and config.buffer.capacity == peer["buffer_size"]
    assert config.learning_starts == peer["learning_starts"]
    assert (config.train_every, config.gradient_steps) == (
        peer["train_every"],
        peer["gradient_steps"],
    )
    assert config.target.kind == "hard" and config.target.period == peer["target_period"]
    assert (config.exploration.start, config.exploration.schedule) == (1.0, "linear")
    assert config.exploration.end == peer["eps_end"]
    assert config.exploration.steps == peer["eps_steps"]
    assert list(config.model.hidden) == peer["hidden"]
    assert config.loss == peer["loss"] and config.max_grad_norm == peer["max_grad_norm"]
    assert (config.torch_threads, config.num_envs, config.device) == (1, 1, "cpu")
    assert config.eval.every == config.total_steps  # one evaluation, at the end
