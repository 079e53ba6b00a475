import os
import pickle
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dqn_cli.checkpoint as checkpoint_module
from dqn_cli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dqn_cli.training import TrainingDiverged, train
from tests.helpers import installed_command

CURVES = ("charts/episodic_return", "losses/td_loss", "eval/return_mean", "charts/epsilon")


def curves(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in CURVES}


def weights(path):
    payload = torch.load(path, weights_only=True)
    return payload["model"], payload.get("target_model"), payload["env_step"]


def assert_same_weights(a, b):
    model_a, target_a, step_a = weights(a)
    model_b, target_b, step_b = weights(b)
    assert step_a == step_b
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
    if target_a is not None:
        for key in target_a:
            assert torch.equal(target_a[key], target_b[key]), key


class StopAt:
    """Asks the loop to stop once it has passed ``step`` env steps (polled once per step)."""

    def __init__(self, polls):
        self.polls, self.count = polls, 0

    def __call__(self):
        self.count += 1
        return self.count > self.polls


@pytest.mark.parametrize(
    "override",
    [
        {},
        {"buffer": {"kind": "per"}, "num_envs": 3, "algo": {"name": "ddqn"}},
        {"target": {"kind": "soft"}, "exploration": {"schedule": "exponential"}},
        # n-step sums cut mid-way by the stop, across vector envs, with prioritized replay
        {"buffer": {"kind": "per", "n_step": 3}, "num_envs": 2},
        # the autograd learner: torch.optim.Adam's state goes through the checkpoint
        {"model": {"head": "dueling"}, "learner": "autograd", "buffer": {"n_step": 2}},
    ],
)
def test_stop_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_config, override):
    config = tiny_config(total_steps=3000, **override)
    train(config, tmp_path / "full")
    stopped = train(config, tmp_path / "cut", stop_requested=StopAt(437))
    assert stopped.interrupted and stopped.final_eval is None
    payload = load_checkpoint(tmp_path / "cut/checkpoints/last.pt")
    assert payload["env_step"] == 437 * config.num_envs  # stopped mid-run, between checkpoints
    assert payload["env_snapshots"] is not None and "replay" in payload
    train(config, tmp_path / "cut", resume=payload)
    assert_same_weights(tmp_path / "full/checkpoints/last.pt", tmp_path / "cut/checkpoints/last.pt")
    assert curves(tmp_path / "full") == curves(tmp_path / "cut")


def test_resume_without_saved_buffer_continues(tmp_path, tiny_config):
    config = tiny_config(total_steps=2000, checkpoint={"save_buffer": False})
    train(config, tmp_path, stop_requested=StopAt(900))
    payload = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert "replay" not in payload
    result = train(config, tmp_path, resume=payload)
    assert result.total_steps == 2000 and not result.interrupted


def test_periodic_checkpoints_are_bounded_by_keep(tmp_path, tiny_config):
    train(tiny_config(total_steps=3000, checkpoint={"every": 500, "keep": 2}), tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["best.pt", "last.pt", "step_000002500.pt", "step_000003000.pt"]
    assert load_checkpoint(tmp_path / "checkpoints/step_000002500.pt")["env_step"] == 2500


def test_a_crash_during_a_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "env_step": 1}, path)

    def crash(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "env_step": 2}, path)
    assert load_checkpoint(path)["env_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_an_unwritable_checkpoint_stops_training_and_keeps_the_previous(
    tmp_path, tiny_config, monkeypatch
):
    config = tiny_config(total_steps=3000, checkpoint={"every": 1000, "keep": 0})
    real_replace = os.replace
    calls = []

    def replace_fails_on_second_checkpoint(src, dst):
        calls.append(dst)
        if str(dst).endswith("last.pt") and sum(str(c).endswith("last.pt") for c in calls) == 2:
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace_fails_on_second_checkpoint)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*last.pt: Permission"):
        train(config, tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["env_step"] == 1000


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config):
    config = tiny_config(
        total_steps=5000,
        lr=1e30,
        max_grad_norm=None,
        loss="mse",
        checkpoint={"every": 500},
        log={"every": 100},
    )
    with pytest.raises(TrainingDiverged, match=r"diverged at env step \d+.*lr=1e\+30") as info:
        train(config, tmp_path)
    assert "\n" not in str(info.value)
    kept = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert all(torch.isfinite(t).all() for t in kept["model"].values())


def test_a_tampered_env_snapshot_is_refused_and_never_runs(tmp_path, tiny_config):
    config = tiny_config(total_steps=2000)
    train(config, tmp_path, stop_requested=StopAt(300))
    payload = load_checkpoint(tmp_path / "checkpoints/last.pt")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload["env_snapshots"] = [pickle.dumps(Payload())]
    with pytest.raises(CheckpointError, match="env state was refused"):
        train(config, tmp_path, resume=payload)
    assert not marker.exists()


# -- the installed command: signals -------------------------------------------------------------

SIGNAL_RUN = [
    "total_steps=8000",
    "learning_starts=500",
    "batch_size=32",
    "model.hidden=[32]",
    "eval.every=2000",
    "eval.episodes=2",
    "exploration.steps=1000",
    "checkpoint.every=1000",
    "log.every=250",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(
        [installed_command("dqn-train"), *SIGNAL_RUN, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return run_dir


def start_and_wait_for(run_dir, checkpoint_name):
    process = subprocess.Popen(
        [installed_command("dqn-train"), *SIGNAL_RUN, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / checkpoint_name).exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return process


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_resume_is_bitwise_identical(
    tmp_path, uninterrupted, run_dqn_train, signum, code
):
    run_dir = tmp_path / "run"
    process = start_and_wait_for(run_dir, "step_000002000.pt")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code
    assert f"dqn-train resume={run_dir}" in stderr and "Traceback" not in stderr
    stopped_at = load_checkpoint(run_dir / "checkpoints/last.pt")["env_step"]
    assert 2000 <= stopped_at < 8000
    done = run_dqn_train(f"resume={run_dir}")
    assert done.returncode == 0, done.stderr
    assert_same_weights(uninterrupted / "checkpoints/last.pt", run_dir / "checkpoints/last.pt")
    assert curves(uninterrupted) == curves(run_dir)


def test_sigkill_then_resume_from_the_periodic_checkpoint(tmp_path, uninterrupted, run_dqn_train):
    run_dir = tmp_path / "run"
    process = start_and_wait_for(run_dir, "step_000003000.pt")
    process.kill()
    process.communicate(timeout=60)
    done = run_dqn_train(f"resume={run_dir}")
    assert done.returncode == 0, done.stderr
    assert_same_weights(uninterrupted / "checkpoints/last.pt", run_dir / "checkpoints/last.pt")
    # Events logged after the checkpoint by the killed process are purged, not duplicated.
    assert curves(uninterrupted) == curves(run_dir)


def test_resume_can_extend_total_steps_but_nothing_else(tmp_path, uninterrupted, run_dqn_train):
    refused = run_dqn_train(f"resume={uninterrupted}", "lr=0.1")
    assert refused.returncode == 2
    assert "only total_steps=N may be given with resume=" in refused.stderr
    assert "remove: lr=0.1" in refused.stderr
    too_short = run_dqn_train(f"resume={uninterrupted}", "total_steps=8000")
    assert too_short.returncode == 2 and "give total_steps > 8000" in too_short.stderr
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(uninterrupted), str(copy)], check=True)
    extended = run_dqn_train(f"resume={copy}", "total_steps=9000")
    assert extended.returncode == 0, extended.stderr
    assert load_checkpoint(copy / "checkpoints/last.pt")["env_step"] == 9000
    steps = [s for s, _ in curves(copy)["charts/epsilon"]]
    assert steps == sorted(set(steps)) and steps[-1] == 9000
    assert np.isclose(
        dict(curves(copy)["charts/epsilon"])[8000],
        dict(curves(uninterrupted)["charts/epsilon"])[8000],
    )
