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


def dqn_train_command() -> str:
    """The installed console script (tests exercise what users run, not python -m)."""
    found = shutil.which("dqn-train", path=str(Path(sys.executable).parent))
    assert found, "dqn-train is not installed next to this interpreter; run `make install`"
    return found


@pytest.fixture
def run_dqn_train(tmp_path):
    exe = dqn_train_command()

    def run(*args, timeout=300):
        return subprocess.run(
            [exe, *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout
        )

    return run
