import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dqn_cli.config import parse_train_config

# A configuration small enough for a unit test: a few thousand CartPole steps.
TINY = {
    "total_steps": 2000,
    "learning_starts": 500,
    "batch_size": 32,
    "model": {"hidden": [32]},
    "exploration": {"steps": 1000},
    "eval": {"every": 1000, "episodes": 3},
    "checkpoint": {"every": 1000},
    "log": {"every": 500},
    "buffer": {"capacity": 5000},
    "target": {"period": 200},
}


def merge(base, override):
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
    return out


@pytest.fixture
def tiny_config():
    def make(**override):
        return parse_train_config(merge(TINY, override))

    return make


def installed_command(name: str) -> str:
    """An installed console script (tests exercise what users run, not python -m)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to this interpreter; run `make install`"
    return found


def dqn_train_command() -> str:
    return installed_command("dqn-train")


def run_installed(name, *args, cwd, timeout=300, env=None):
    return subprocess.run(
        [installed_command(name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def run_dqn_train(tmp_path):
    def run(*args, timeout=300):
        return run_installed("dqn-train", *args, cwd=tmp_path, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def run_command():
    """``run_command("dqn-eval", *args, cwd=DIR)``: for fixtures wider than one test."""
    return run_installed


@pytest.fixture
def run_dqn_eval(tmp_path):
    def run(*args, cwd=None, timeout=120, env=None):
        return run_installed("dqn-eval", *args, cwd=cwd or tmp_path, timeout=timeout, env=env)

    return run


# Sweep jobs small enough for tests: a few seconds each, with events, evaluations, checkpoints.
TINY_SWEEP_JOB = [
    "total_steps=1500",
    "learning_starts=500",
    "batch_size=32",
    "model.hidden=[32]",
    "eval.every=500",
    "eval.episodes=2",
    "exploration.steps=500",
]


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory, run_command):
    """2 configurations x 2 seeds through the joblib launcher preset, shared by the sweep and
    report tests: ``(CompletedProcess, sweep_dir)``."""
    root = tmp_path_factory.mktemp("grid_sweep")
    sweep = root / "sweep"
    done = run_command(
        "dqn-train",
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "buffer=uniform,none",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        *TINY_SWEEP_JOB,
        cwd=root,
        timeout=400,
    )
    return done, sweep
