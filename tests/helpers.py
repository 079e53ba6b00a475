"""Helpers and constants the tests share, imported everywhere as ``tests.helpers``."""

import shutil
import subprocess
import sys
from pathlib import Path

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

# dqn-train overrides for jobs small enough for tests: a few seconds each, with events,
# evaluations and checkpoints.
TINY_RUN_ARGS = [
    "total_steps=1500",
    "learning_starts=500",
    "batch_size=32",
    "model.hidden=[32]",
    "eval.every=500",
    "eval.episodes=2",
    "exploration.steps=500",
]


def merge(base, override):
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
    return out


def installed_command(name: str) -> str:
    """An installed console script (tests exercise what users run, not python -m)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to this interpreter; run `make install`"
    return found


def run_installed(name, *args, cwd, timeout=300, env=None):
    return subprocess.run(
        [installed_command(name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def logged_step(run_dir: Path) -> int:
    """The last env step a run's progress lines in train.log reported (0 before the first)."""
    try:
        lines = (run_dir / "train.log").read_text().splitlines()
    except OSError:
        return 0
    steps = [line.split(" step ", 1)[1].split("/", 1)[0] for line in lines if " step " in line]
    return int(steps[-1]) if steps and steps[-1].isdigit() else 0
