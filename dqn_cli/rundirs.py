"""Run-dir layout shared by dqn-eval and dqn-report: finding runs in a sweep, reading overrides.

A run dir is what one ``dqn-train`` job writes: ``.hydra/`` (its config and overrides) and
``checkpoints/``, among other files. A sweep dir holds run dirs (Hydra numbers them 0, 1, ...),
possibly nested, beside hidden tool folders such as submitit's ``.submitit/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml


def is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / ".hydra").is_dir()


def natural_key(path: Path) -> list[list[str | int]]:
    """Sort key putting job 2 before job 10."""
    # re.split with a capture group alternates text and digits, so the types line up
    # position by position and the lists always compare.
    return [
        [int(piece) if i % 2 else piece for i, piece in enumerate(re.split(r"(\d+)", part))]
        for part in path.parts
    ]


def find_run_dirs(root: Path) -> list[Path]:
    """Run dirs below ``root`` in job order; hidden folders and run dirs' insides are skipped."""
    runs = []
    for here, dirs, _ in os.walk(root):  # does not follow symlinks, so no cycles
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        current = Path(here)
        if current != root and is_run_dir(current):
            runs.append(current)
            dirs.clear()
    return sorted(runs, key=lambda run: natural_key(run.relative_to(root)))


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for a run; [] where there are none to read."""
    try:
        loaded = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [str(item) for item in loaded] if isinstance(loaded, list) else []
