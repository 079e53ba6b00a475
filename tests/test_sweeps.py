"""Sweeps through Hydra's launcher and sweeper plugins, with the presets in conf/hydra/.

Each sweep runs once per module (a few tiny CartPole jobs); the tests then inspect its dirs.
"""

import json
import math

import pytest

from tests.helpers import TINY_RUN_ARGS

# optuna 2.x warns on import that its storage code is not SQLAlchemy 2 ready: hence the pin.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna.*")


def job_dirs(sweep_dir):
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def summary(job_dir):
    return json.loads((job_dir / "summary.json").read_text())


def assert_completed_run_dir(job_dir):
    s = summary(job_dir)
    assert s["status"] == "completed", s
    assert s["total_steps"] == 1500
    assert math.isfinite(s["final_eval_return_mean"])
    assert list(job_dir.glob("events.out.tfevents.*"))
    assert (job_dir / "checkpoints" / "last.pt").is_file()
    assert (job_dir / "checkpoints" / "best.pt").is_file()
    assert (job_dir / "train.log").is_file()
    assert (job_dir / ".hydra" / "overrides.yaml").is_file()


@pytest.fixture(scope="module")
def submitit_sweep(tmp_path_factory, run_command):
    """Through submitit's local executor, with one job that fails config validation."""
    root = tmp_path_factory.mktemp("submitit")
    sweep = root / "sweep"
    done = run_command(
        "dqn-train",
        "-m",
        "hydra/launcher=slurm_local",
        "gamma=0.9,3",
        f"hydra.sweep.dir={sweep}",
        *TINY_RUN_ARGS,
        cwd=root,
        timeout=400,
    )
    return done, sweep


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory, run_command):
    """Three trials of the `search` preset; gamma=3 makes some of them fail."""
    root = tmp_path_factory.mktemp("optuna")
    sweep = root / "sweep"
    done = run_command(
        "dqn-train",
        "-m",
        "hydra/sweeper=search",
        "hydra.sweeper.n_trials=3",
        "gamma=choice(0.9,3)",
        f"hydra.sweep.dir={sweep}",
        *TINY_RUN_ARGS,
        cwd=root,
        timeout=400,
    )
    return done, sweep, root


def test_joblib_launcher_runs_every_job_as_a_normal_run_dir(grid_sweep):
    done, sweep = grid_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    for job in jobs:
        assert_completed_run_dir(job)
    hydra_yaml = (jobs[0] / ".hydra" / "hydra.yaml").read_text()
    assert "JoblibLauncher" in hydra_yaml
    # Jobs ran in worker processes, not in the launching one.
    pids = {p.name.split(".")[-2] for job in jobs for p in job.glob("events.out.tfevents.*")}
    assert len(pids) >= 2


def test_submitit_local_launcher_keeps_the_good_job_when_one_fails(submitit_sweep):
    done, sweep = submitit_sweep
    # Every job ran; the sweep then exits 2 (a config error) naming the failed job.
    assert done.returncode == 2, done.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert f"{jobs[1]}: gamma: must be in [0, 1], got 3.0" in done.stderr
    assert len(jobs) == 2
    assert "gamma=0.9" in (jobs[0] / ".hydra" / "overrides.yaml").read_text()
    assert_completed_run_dir(jobs[0])
    failed = summary(jobs[1])
    assert failed["status"] == "failed"
    assert "gamma" in failed["error"] and "3" in failed["error"]
    assert (sweep / ".submitit").is_dir()
    assert "LocalLauncher" in (jobs[0] / ".hydra" / "hydra.yaml").read_text()


def test_report_shows_the_failed_job_and_its_reason(submitit_sweep, run_command, tmp_path):
    _, sweep = submitit_sweep
    done = run_command("dqn-report", str(sweep), "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "failed jobs" in done.stdout
    assert "gamma: must be in [0, 1], got 3.0" in done.stdout
    md = (tmp_path / "report.md").read_text()
    assert "## Failed jobs" in md and "gamma: must be in [0, 1], got 3.0" in md
    rows = (tmp_path / "report.csv").read_text().splitlines()
    assert len(rows) == 3  # header + two configurations
    good, bad = rows[1].split(","), rows[2].split(",")
    header = rows[0].split(",")
    assert good[header.index("completed")] == "1" and good[header.index("failed")] == "0"
    assert bad[header.index("failed")] == "1"
    assert "gamma: must be in [0" in rows[2]


def test_optuna_search_keeps_its_study_in_sqlite_in_the_sweep_dir(optuna_sweep):
    import optuna

    done, sweep, _ = optuna_sweep
    assert done.returncode in (0, 2), done.stderr[-3000:]
    db = sweep / "optuna.db"
    assert db.is_file()
    study = optuna.load_study(study_name="dqn-train", storage=f"sqlite:///{db}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 3
    for trial in trials:
        # The preset's search space plus the one given on the command line.
        assert {"lr", "buffer.capacity", "target.period", "gamma"} <= set(trial.params)
        job = sweep / str(trial.number)
        if trial.params["gamma"] == 3:
            # A failed job is a failed trial, and the search went on past it.
            assert trial.state == optuna.trial.TrialState.FAIL
            assert summary(job)["status"] == "failed"
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(summary(job)["final_eval_return_mean"])
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # Failed trials make the search exit 2 once it is done, as any sweep with failed jobs.
    assert (done.returncode == 2) == any(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert (sweep / "optimization_results.yaml").is_file()


def test_optuna_search_resumes_from_its_sqlite_study(optuna_sweep, run_command):
    import optuna

    _, sweep, root = optuna_sweep
    # The README's resume command: same sweep dir, new job dirs so nothing is overwritten.
    done = run_command(
        "dqn-train",
        "-m",
        "hydra/sweeper=search",
        "hydra.sweeper.n_trials=1",
        "gamma=0.9",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=resume1-${hydra.job.num}",
        *TINY_RUN_ARGS,
        cwd=root,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="dqn-train", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert len(study.trials) == 4
    assert_completed_run_dir(sweep / "resume1-0")


def cfg_hydra(run_command, tmp_path, *overrides):
    # --cfg all: the launcher presets interpolate task keys (cpus_per_task: ${torch_threads}).
    done = run_command(
        "dqn-train", *overrides, "--cfg", "all", "--resolve", cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_presets_extend_the_plugins_without_shadowing_them(run_command, tmp_path):
    done = cfg_hydra(
        run_command,
        tmp_path,
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "torch_threads=2",
        "hydra/sweeper=search",
    )
    out = done.stdout
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out
    assert "partition: gpu" in out
    assert "cpus_per_task: 2" in out  # follows torch_threads
    assert "timeout_min: 240" in out
    assert "direction: maximize" in out
    assert "storage: sqlite:///" in out and "/optuna.db" in out
    # The plugins' own option names are untouched by our presets (no automatic schema matching).
    plain = cfg_hydra(run_command, tmp_path, "hydra/launcher=joblib")
    assert "JoblibLauncher" in plain.stdout
    assert "schema" not in plain.stderr
