"""Run-dir layout shared by dqn-eval and dqn-report: finding runs in a sweep, reading overrides.

A run dir is what one ``dqn-train`` job writes: ``.hydra/`` (its config and overrides) and
``checkpoints/``, among other files. A sweep dir holds run dirs (Hydra numbers them 0, 1, ...),
possibly nested, beside hidden tool folders such as submitit's ``.submitit/``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

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


def read_summary(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """A run's summary.json and why the run did not complete (None: it completed)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except FileNotFoundError:
        last = _last_log_line(run_dir)
        reason = "no summary.json (killed, crashed or still running)"
        return {}, reason + (f"; last log line: {last}" if last else "")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return {}, f"unreadable summary.json: {exc}"
    if not isinstance(summary, dict):
        return {}, "unreadable summary.json: not a JSON object"
    status = str(summary.get("status", "completed"))
    if status != "completed":
        return summary, str(summary.get("error") or f"status {status}")
    return summary, None


def _last_log_line(run_dir: Path) -> str | None:
    try:
        lines = (run_dir / "train.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else None
