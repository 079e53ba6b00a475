"""Fixtures; the plain helpers and constants they use live in tests/helpers.py."""

import sys

import pytest

from dqn_cli.config import parse_train_config
from tests.helpers import TINY, TINY_RUN_ARGS, merge, run_installed


def _keep_absl_off_pytest_streams() -> None:
    """rliable (dqn-report's statistics) imports absl, whose log handler keeps the stderr of
    the moment it is imported and closes it when logging shuts handlers down, unless it is
    the current sys.stderr. Imported while pytest captures, that is pytest's capture stream,
    and Hydra's logging set-up in a later in-process dqn-train run shuts every handler down:
    pytest's stderr closed under it. The real stderr is one absl never closes."""
    try:
        import absl.logging
    except ImportError:  # the report extra is not installed
        return
    absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__


_keep_absl_off_pytest_streams()


@pytest.fixture
def tiny_config():
    def make(**override):
        return parse_train_config(merge(TINY, override))

    return make


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
        *TINY_RUN_ARGS,
        cwd=root,
        timeout=400,
    )
    return done, sweep


@pytest.fixture
def built_agents(monkeypatch):
    """The agents train() builds, in order, to inspect what they stored and learned."""
    import dqn_cli.training as training

    agents = []
    build = training.build_agent

    def spy(*args, **kwargs):
        agent = build(*args, **kwargs)
        agents.append(agent)
        return agent

    monkeypatch.setattr(training, "build_agent", spy)
    return agents
