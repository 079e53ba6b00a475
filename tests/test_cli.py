import json

import pytest
import torch

FAST = [
    "total_steps=1500",
    "learning_starts=500",
    "batch_size=32",
    "model.hidden=[32]",
    "eval.every=1500",
    "eval.episodes=2",
    "exploration.steps=500",
]


def test_installed_command_trains_from_any_directory(run_dqn_train, tmp_path):
    run_dir = tmp_path / "elsewhere" / "run"
    done = run_dqn_train(
        *FAST, "algo=ddqn", "buffer=prioritized", "target=soft", f"hydra.run.dir={run_dir}"
    )
    assert done.returncode == 0, done.stderr
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").read_text().count("step ") >= 1
    assert list(run_dir.glob("events.out.tfevents.*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 1500
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert payload["config"]["algo"]["name"] == "ddqn"
    assert payload["config"]["buffer"]["kind"] == "per"
    assert payload["config"]["target"]["kind"] == "soft"
    # Not a terminal: periodic plain lines and the summary table, no progress bar escapes.
    assert "final eval return" in done.stdout
    assert "\x1b[" not in done.stdout


def test_default_run_dir_is_under_outputs(run_dqn_train, tmp_path):
    done = run_dqn_train(*FAST, "total_steps=600", "eval.every=600")
    assert done.returncode == 0, done.stderr
    (summary,) = tmp_path.glob("outputs/*/*/summary.json")
    assert json.loads(summary.read_text())["total_steps"] == 600


def test_help_lists_groups_options_and_keys(run_dqn_train):
    done = run_dqn_train("--help")
    assert done.returncode == 0
    for text in (
        "algo: ddqn, dqn",
        "buffer: none, per, prioritized, uniform",
        "target: hard, none, soft",
        "cartpole",
        "lunarlander",
        "total_steps",
        "exploration.{start,end,steps,schedule}",
    ):
        assert text in done.stdout


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("lr=fast", "lr: expected a number, got 'fast'"),
        ("total_steps=1.5", "total_steps: expected an integer"),
        ("gamma=2", "gamma: must be in [0, 1], got 2.0"),
        ("buffer.capacity=-5", "buffer.capacity: must be > 0"),
        ("env.id=CartPole-v0000", "env.id: 'CartPole-v0000' is not a registered gymnasium env"),
        ("env.id=Pendulum-v1", "DQN needs a Discrete one"),
        ("+typo_key=3", "typo_key: unknown key"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(run_dqn_train, override, expected):
    done = run_dqn_train(*FAST, override)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1
