"""Helpers and constants the tests share, imported everywhere as ``tests.helpers``."""

import hashlib
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


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` (hidden ones included) with the hash of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        if path.is_file()
        else "dir"
        for path in sorted(root.rglob("*"))
    }


def run_main(*argv: str, capfd) -> tuple[int, str, str]:
    """``dqn-train ARGV`` through its real entry point, in this process (no start-up cost):
    ``(exit code, stdout, stderr)``. Hydra's global state, the logging it set up and the
    signal handlers dqn-train installs are put back afterwards."""
    import logging
    import signal

    from hydra.core.global_hydra import GlobalHydra

    from dqn_cli.cli import train

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    log_handlers = root.handlers[:]
    saved_argv = sys.argv
    capfd.readouterr()
    sys.argv = ["dqn-train", *argv]
    code = 0
    try:
        train.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved_argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        GlobalHydra.instance().clear()
        for handler in root.handlers[:]:  # the run's train.log and console handlers
            if handler not in log_handlers:
                handler.close()
                root.removeHandler(handler)
        for handler in log_handlers:  # Hydra's logging config replaced pytest's
            if handler not in root.handlers:
                root.addHandler(handler)
    out, err = capfd.readouterr()
    return code, out, err


def logged_step(run_dir: Path) -> int:
    """The last env step a run's progress lines in train.log reported (0 before the first)."""
    try:
        lines = (run_dir / "train.log").read_text().splitlines()
    except OSError:
        return 0
    steps = [line.split(" step ", 1)[1].split("/", 1)[0] for line in lines if " step " in line]
    return int(steps[-1]) if steps and steps[-1].isdigit() else 0
