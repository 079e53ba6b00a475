"""A sweep runs every job, then exits non-zero naming the jobs that failed (any launcher)."""

import json
import os
import signal
import subprocess
import time

from tests.helpers import TINY_RUN_ARGS, installed_command, logged_step, run_installed

# A user's network whose forward pass raises on a training batch when asked to: a job that
# crashes at run time, past every config check.
CRASHING_QNET = """
from torch import nn


class CrashingQNet(nn.Module):
    def __init__(self, obs_shape, obs_dtype, n_actions, crash=False):
        super().__init__()
        self.crash = crash
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(obs_shape[0], n_actions))

    def forward(self, obs):
        if self.crash and obs.shape[0] > 1:
            raise RuntimeError("boom in forward")
        return self.body(obs)
"""


def status(job_dir):
    return json.loads((job_dir / "summary.json").read_text())["status"]


def test_basic_launcher_runs_the_jobs_after_a_crash_then_exits_1(tmp_path):
    (tmp_path / "crashing_qnet.py").write_text(CRASHING_QNET)
    sweep = tmp_path / "sweep"
    done = run_installed(
        "dqn-train",
        "-m",
        f"hydra.sweep.dir={sweep}",
        "model=custom",
        "model._target_=crashing_qnet.CrashingQNet",
        "~model.hidden",
        "+model.crash=false,true,false",
        *[a for a in TINY_RUN_ARGS if not a.startswith("model.")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 1, done.stderr[-3000:]
    # The job after the crashed one still ran to the end.
    assert [status(sweep / str(n)) for n in range(3)] == ["completed", "failed", "completed"]
    assert "1 job(s) of the sweep failed" in done.stderr
    assert f"{sweep / '1'}: crashed: RuntimeError: boom in forward" in done.stderr
    assert f"{sweep / '0'}:" not in done.stderr and f"{sweep / '2'}:" not in done.stderr
    assert "Traceback" not in done.stderr
    # The traceback is kept for the user in the crashed job's log.
    assert "Traceback" in (sweep / "1" / "train.log").read_text()


def test_joblib_sweep_with_a_config_error_exits_2_naming_the_job(run_dqn_train, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_dqn_train(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        "gamma=3,0.9",
        *TINY_RUN_ARGS,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert status(sweep / "1") == "completed"
    assert f"{sweep / '0'}: gamma: must be in [0, 1], got 3.0" in done.stderr
    assert f"{sweep / '1'}:" not in done.stderr


def test_a_search_resumed_into_its_sweep_dir_is_judged_on_its_own_jobs(run_dqn_train, tmp_path):
    """Job dirs of an earlier sweep in the same dir, untouched by this one, are not its jobs."""
    sweep = tmp_path / "sweep"
    first = run_dqn_train("-m", f"hydra.sweep.dir={sweep}", "gamma=3", *TINY_RUN_ARGS)
    assert first.returncode == 2, first.stderr[-3000:]
    again = run_dqn_train(
        "-m",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=again-${hydra.job.num}",
        "gamma=0.9",
        *TINY_RUN_ARGS,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert status(sweep / "0") == "failed" and status(sweep / "again-0") == "completed"


def test_a_signalled_submitit_local_job_leaves_a_result_and_the_sweep_names_it(tmp_path):
    """submitit learns that a job ended only from its result: an interrupted job leaves one."""
    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY_RUN_ARGS if not a.startswith("total_steps=")]
    args = ["-m", "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep}", *tiny]
    launch = subprocess.Popen(
        [installed_command("dqn-train"), *args, "total_steps=200000", "log.every=500"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while logged_step(sweep / "0") < 1000:
            assert launch.poll() is None and time.monotonic() < deadline, launch.communicate()
            time.sleep(0.2)
        events = list((sweep / "0").glob("events.out.tfevents.*"))
        job_pid = int(events[0].name.split(".")[-2])  # the job's own process wrote them
        os.kill(job_pid, signal.SIGTERM)
        _, stderr = launch.communicate(timeout=120)
    finally:
        launch.kill()
    assert launch.returncode == 1, stderr[-3000:]
    assert f"{sweep / '0'}: status interrupted" in stderr
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "interrupted"
    assert (sweep / "0" / "checkpoints" / "last.pt").is_file()
