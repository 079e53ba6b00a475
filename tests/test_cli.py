import json
import shutil

import pytest
import torch

from tests.helpers import TINY_RUN_ARGS, installed_command


def test_installed_command_trains_from_any_directory(run_dqn_train, tmp_path):
    run_dir = tmp_path / "elsewhere" / "run"
    done = run_dqn_train(
        *TINY_RUN_ARGS, "algo=ddqn", "buffer=prioritized", "target=soft", f"hydra.run.dir={run_dir}"
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
    done = run_dqn_train(*TINY_RUN_ARGS, "total_steps=600", "eval.every=600")
    assert done.returncode == 0, done.stderr
    (summary,) = tmp_path.glob("outputs/*/*/summary.json")
    assert json.loads(summary.read_text())["total_steps"] == 600


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["buffer.capacity=-5"], "buffer.capacity: must be > 0, got -5"),
        (["buffer.capacity=0"], "buffer.capacity: must be > 0, got 0"),
        (["buffer.capacity=16", "batch_size=32"], "batch_size: must be <= buffer.capacity (16)"),
        (["gamma=2"], "gamma: must be in [0, 1], got 2.0"),
        (["gamma=-0.1"], "gamma: must be in [0, 1]"),
        (["target=soft", "target.tau=0"], "target.tau: must be in (0, 1]"),
        (["target=soft", "target.tau=1.5"], "target.tau: must be in (0, 1]"),
        (["buffer=per", "buffer.alpha=-1"], "buffer.alpha: must be >= 0"),
        (["buffer=per", "buffer.beta=1.2"], "buffer.beta: must be in [0, 1]"),
        (["learning_starts=10"], "learning_starts: must be >= batch_size (32)"),
        (["total_steps=0"], "total_steps: must be > 0, got 0"),
        (["total_steps=-100"], "total_steps: must be > 0"),
        (["total_steps=1.5"], "total_steps: expected an integer, got 1.5"),
        (["batch_size=big"], "batch_size: expected an integer, got 'big'"),
        (["lr=fast"], "lr: expected a number, got 'fast'"),
        (
            ["buffer=fancy"],
            "buffer: unknown option 'fancy'; valid: none, per, prioritized, uniform",
        ),
        (["algo=rainbow"], "algo: unknown option 'rainbow'; valid: ddqn, dqn"),
        (["env.id=CartPole-v0000"], "is not a registered gymnasium env; did you mean CartPole-v"),
        (["env.id=Pendulum-v1"], "has a Box action space; DQN needs a Discrete one"),
        (["device=cuda"], "device: cuda was requested but no CUDA device is available"),
        (["lrr=0.1"], "lrr: unknown key; did you mean lr?"),
        (["lr_rate=0.1"], "lr_rate: unknown key; did you mean lr?"),
        (["buffer.capcity=1000"], "buffer.capcity: unknown key; did you mean buffer.capacity?"),
        (["lr=inf"], "lr: must be a finite number, got inf"),
        (["max_grad_norm=nan"], "max_grad_norm: must be a finite number"),
        (["seed=4294967296"], "seed: must be in [0, 4294967295]"),
        (["exploration.end=0.5", "exploration.start=0.1"], "exploration.end: must be <="),
        (["resume="], "resume: is empty"),
        (["num_envs=1000000000"], "num_envs: must be in [1, 4096]"),
        (["torch_threads=1000000000000"], "torch_threads: must be in [1, 1024]"),
        (["eval.episodes=100000000000"], "eval.episodes: must be in [1, 100000]"),
        (["buffer.n_step=1000000000000"], "buffer.n_step: n-step sums of 1000000000000 steps"),
        (["model.hidden=[1000000000,1000000000]"], "model: the network and its optimizer state"),
        (["+typo_key=3"], "typo_key: unknown key"),
        (["resume=/nonexistent/run"], "resume: /nonexistent/run is not a directory"),
    ],
)
def test_bad_input_is_one_line_a_nonzero_exit_and_no_run_dir(
    run_dqn_train, tmp_path, overrides, expected
):
    if expected.startswith("device: cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    resuming = overrides[0].startswith("resume=")
    done = run_dqn_train(*([] if resuming else TINY_RUN_ARGS), *overrides)
    assert done.returncode == 2
    assert expected in done.stderr
    assert done.stderr.startswith("dqn-train: error: ")
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()  # refused before any run dir was made


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    import subprocess

    run_dir = tmp_path_factory.mktemp("finished")
    subprocess.run(
        [installed_command("dqn-train"), *TINY_RUN_ARGS, f"hydra.run.dir={run_dir}"],
        check=True,
        capture_output=True,
    )
    return run_dir


def test_resume_refuses_a_run_without_checkpoints(run_dqn_train, tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    done = run_dqn_train(f"resume={tmp_path / 'empty'}")
    assert done.returncode == 2
    assert "no checkpoint in" in done.stderr and "nothing to resume" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_resume_refuses_an_older_checkpoint_format_before_writing_anything(
    run_dqn_train, run_dqn_eval, tmp_path, finished_run
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    payload["format"] = 1  # optimizer state of torch.optim.Adam, from before dqn_cli.optim
    torch.save(payload, last)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    done = run_dqn_train(f"resume={run_dir}", "total_steps=3000")
    assert done.returncode == 2
    assert "has checkpoint format 1" in done.stderr and "dqn-eval" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    assert run_dqn_eval(str(last)).returncode == 0  # still evaluable


def test_resume_refuses_a_corrupted_checkpoint_and_leaves_it_alone(
    run_dqn_train, tmp_path, finished_run
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    before = sorted(p.name for p in run_dir.rglob("*"))
    done = run_dqn_train(f"resume={run_dir}", "total_steps=3000")
    assert done.returncode == 2
    assert "truncated or corrupted" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert last.read_bytes() == data[: len(data) // 2]
    assert sorted(p.name for p in run_dir.rglob("*")) == before
