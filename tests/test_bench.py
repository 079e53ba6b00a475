"""The benchmark instruments still run and print their tables (tiny sizes, a few seconds)."""

from __future__ import annotations

import datetime
import importlib.util
import re
from pathlib import Path

import pytest

from bench import ale_vector, atari_peers, buffers, profile_step, results, update_cost
from bench.common import PACKAGES, cpu_model, package_version, train_config
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
    from dqn_cli.fast_learner import ExplicitGradientLearner

    originals = (ReplayBuffer.add, ReplayBuffer.sample, ExplicitGradientLearner.update)
    tiny = ["learning_starts=100", "batch_size=32", "model.hidden=[16]", "eval.episodes=1"]
    assert profile_step.main(["--scenario", "preset", "--steps", "600", *tiny]) == 0
    out = capsys.readouterr().out
    for phase in ("| env ", "| acting ", "| store ", "| sample ", "| update ", "| total train()"):
        assert phase in out
    assert "NOT hooked" not in out
    assert (ReplayBuffer.add, ReplayBuffer.sample, ExplicitGradientLearner.update) == originals


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
    assert list(tuple(config.model.args["hidden"])) == peer["hidden"]
    assert config.loss == peer["loss"] and config.max_grad_norm == peer["max_grad_norm"]
    assert (config.torch_threads, config.num_envs, config.device) == (1, 1, "cpu")
    assert config.eval.every == config.total_steps  # one evaluation, at the end


def test_atari_overrides_mean_what_the_peer_gets() -> None:
    scenario = atari_peers.AtariScenario()
    config = train_config(scenario.dqn_train_overrides(seed=0))
    peer = scenario.sb3_settings()
    assert (config.env.id, config.env.frame_stack) == (peer["env_id"], peer["frame_stack"])
    assert (config.env.frame_skip, config.env.noop_max, config.env.sticky_actions) == (4, 30, 0.25)
    assert config.model._target_ == "dqn_cli.networks.NatureCNN"
    assert (config.total_steps, config.learning_starts) == (6000, peer["learning_starts"])
    assert (config.batch_size, config.train_every, config.gradient_steps) == (32, 4, 1)
    assert config.target.kind == "hard" and config.target.period == peer["target_period"]
    assert config.buffer.kind == "uniform" and config.buffer.capacity == peer["buffer_size"]
    assert (config.lr, config.lr_schedule, config.gamma) == (peer["lr"], "constant", peer["gamma"])
    assert (
        (config.exploration.end, config.exploration.steps)
        == (0.01, 600)
        == (
            peer["eps_end"],
            peer["eps_steps"],
        )
    )
    assert (
        (config.loss, config.max_grad_norm)
        == ("huber", 10.0)
        == (
            peer["loss"],
            peer["max_grad_norm"],
        )
    )
    assert (config.eval.every, config.eval.episodes, config.eval.epsilon) == (6000, 1, 0.0)
    assert not config.checkpoint.save_buffer


def test_atari_peers_prints_both_tools_and_one_update(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("ale_py")
    tiny = ["--steps", "150", "--learning-starts", "64", "--repeats", "1"]
    updates = ["--update-budget", "0.05", "--update-rounds", "1", "--update-replay", "64"]
    assert atari_peers.main([*tiny, *updates]) == 0
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    for tool in ("dqn-train", "SB3 DQN"):
        runs_ok, wall_s, _, _, in_process_s, loop_s, _, eval_return, _ = rows[tool]
        assert runs_ok == "1/1", out
        assert 0 < float(loop_s) < float(in_process_s) < float(wall_s)
        assert -21 <= float(eval_return) <= 21  # one whole game of Pong
    assert "n/a, short run" in rows["dqn-train"][-1]
    update = next(cells for what, cells in rows.items() if what.startswith("one update"))
    assert float(update[1]) > 0 and float(update[2]) > 0


def test_ale_vector_times_both_paths_and_plays_games_on_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("ale_py")
    argv = ["--num-envs", "1", "2", "--steps", "40", "--repeats", "1", "--episodes", "2"]
    argv += ["--train-envs", "2", "--train-steps", "1000"]
    assert ale_vector.main(argv) == 0
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and not line.startswith("| num_envs") and "path" not in line
    ]
    speed = {row[0]: row for row in rows if row[0] in ("1", "2")}
    training = {row[0]: row for row in rows if row[0] in ("1.0", "0.05")}
    for _, gym_rate, ale_rate, ratio in training.values():
        gym, ale = (float(r.replace(",", "")) for r in (gym_rate, ale_rate))
        assert float(ratio.rstrip("x")) == pytest.approx(ale / gym, abs=0.01)
    assert sorted(training) == ["0.05", "1.0"]
    for _, gym_rate, _, ale_rate, _, ratio, one_rate, one_ratio in speed.values():
        gym, ale, one = (float(r.replace(",", "")) for r in (gym_rate, ale_rate, one_rate))
        assert float(ratio.rstrip("x")) == pytest.approx(ale / gym, abs=0.01)
        assert float(one_ratio.rstrip("x")) == pytest.approx(one / gym, abs=0.01)
    games = {row[0]: row for row in rows if row[0] in ale_vector.PATHS}
    assert sorted(games) == sorted(ale_vector.PATHS)
    assert all(row[1] == "2" for row in games.values())


def fake_benchmark(name: str, code: str) -> results.Benchmark:
    """A benchmark whose command is a few lines of python: no real benchmark runs."""
    return results.Benchmark(name, f"what {name} measures", ("-c", code), ("-c", code + "  # q"))


def test_results_runner_writes_header_and_a_section_per_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = "print('# fake header'); print(); print('| a | b |'); print('|---|---|'); "
    fakes = [
        fake_benchmark("fake.first", table + "print('| 1 | 2 |'); print('# verdict: yes')"),
        fake_benchmark("fake.second", "print('| x |'); print('|---|'); print('| 9 |')"),
    ]
    out = tmp_path / "docs" / "results.md"
    assert results.run_all(fakes, out) == 0
    text = out.read_text()

    # Streamed to the terminal as the benchmarks run.
    assert "| 1 | 2 |" in capsys.readouterr().out
    # The header: machine, versions, date, commit.
    header = text.split("\n## ", 1)[0]
    assert header.startswith("# Benchmark results\n")
    assert cpu_model() in header and "cores" in header and "load average" in header
    for package in PACKAGES:
        assert f"{package} {package_version(package)}" in header
    assert datetime.date.today().isoformat() in header
    assert re.search(r"commit: `([0-9a-f]{4,}(\+dirty)?|unknown)`", header)
    # One section per benchmark, in order, with its command and its table kept as Markdown.
    assert text.index("## fake.first") < text.index("## fake.second")
    first = text.split("## fake.first", 1)[1].split("## fake.second", 1)[0]
    assert "`python -c" in first and "ok): what fake.first measures." in first
    assert "| a | b |\n|---|---|\n| 1 | 2 |\n" in first
    assert "```text\n# verdict: yes\n```" in first
    assert "| x |\n|---|\n| 9 |" in text.split("## fake.second", 1)[1]


def test_results_runner_records_a_failure_and_goes_on(tmp_path: Path) -> None:
    fakes = [
        fake_benchmark("fake.broken", "import sys; print('| partial |'); sys.exit('it broke')"),
        fake_benchmark("fake.fine", "print('| fine |')"),
    ]
    out = tmp_path / "quick.md"
    assert results.run_all(fakes, out, quick=True) == 1
    text = out.read_text()
    assert text.startswith("# Benchmark results, quick run\n")
    broken = text.split("## fake.broken", 1)[1].split("## fake.fine", 1)[0]
    assert "FAILED, exit code 1" in broken and "it broke" in broken
    assert "# q" in broken  # the quick command ran
    assert "| fine |" in text.split("## fake.fine", 1)[1]


def test_results_runner_lists_real_benchmark_modules() -> None:
    assert len({b.name for b in results.BENCHMARKS}) == len(results.BENCHMARKS)
    for benchmark in results.BENCHMARKS:
        for quick in (False, True):
            args = benchmark.args(quick)
            assert args[0] == "-m" and args[1] == benchmark.name
            assert importlib.util.find_spec(args[1]) is not None, args[1]


def test_commit_is_marked_dirty_unless_only_ignored_paths_changed(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    clean = results.git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{4,}", clean)
    (tmp_path / "out.md").write_text("results")
    assert results.git_commit(tmp_path, ignore=[tmp_path / "out.md"]) == clean
    assert results.git_commit(tmp_path) == clean + "+dirty"
    assert results.git_commit(tmp_path / "not-a-repo-dir") == "unknown"
