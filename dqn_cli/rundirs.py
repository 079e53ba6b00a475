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

# A run dir's text files are small; anything bigger is not one of ours (and not read into memory).
MAX_TEXT_BYTES = 16 * 1024 * 1024


class RunDirError(Exception):
    """A file of a run dir that cannot be used; ``str()`` names the file and says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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


def read_text(path: Path) -> str:
    """A run dir's UTF-8 text file, whole; RunDirError if missing, not a regular file (a FIFO or
    a device would block or never end), empty, too big or not text."""
    try:
        if not path.is_file():
            raise RunDirError(path, "missing" if not path.exists() else "not a regular file")
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise RunDirError(path, f"{size:,} bytes, more than a run dir's file ever holds")
        data = path.read_bytes()
    except OSError as exc:
        raise RunDirError(path, exc.strerror or type(exc).__name__) from None
    if not data.strip():
        raise RunDirError(path, "empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirError(path, f"not UTF-8 text (byte {exc.start})") from None


def describe(value: Any) -> str:
    """A value's type as a user would name it, for messages: "a list", "null", "a number"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object (summary.json); RunDirError otherwise."""
    try:
        loaded = json.loads(read_text(path))
    except ValueError as exc:
        raise RunDirError(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise RunDirError(path, "nested too deeply to be a summary") from None
    if not isinstance(loaded, dict):
        raise RunDirError(path, f"holds {describe(loaded)}, not a JSON object")
    return loaded


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise RunDirError(path, f"not valid YAML ({reason})") from None
    except RecursionError:
        raise RunDirError(path, "nested too deeply to be Hydra's") from None


def load_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for a run; RunDirError where they cannot be read
    (Hydra writes ``[]`` for a run without overrides, so a missing or empty file is an error)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    loaded = read_yaml(path)
    if not isinstance(loaded, list):
        raise RunDirError(path, f"holds {describe(loaded)}, not a list of overrides")
    for item in loaded:
        if not isinstance(item, str):
            raise RunDirError(path, f"holds {describe(item)} where an override (text) belongs")
    return loaded


def read_overrides(run_dir: Path) -> list[str]:
    """The overrides of :func:`load_overrides`, or [] where there are none to read."""
    try:
        return load_overrides(run_dir)
    except RunDirError:
        return []


def job_outcome(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """A run's summary.json and why the run did not complete (None: it completed)."""
    path = run_dir / "summary.json"
    if not path.exists():
        last = last_log_line(run_dir)
        reason = "no summary.json (killed, crashed or still running)"
        return {}, reason + (f"; last log line: {last}" if last else "")
    try:
        summary = read_json_object(path)
    except RunDirError as exc:
        return {}, f"unreadable summary.json: {exc}"
    status = str(summary.get("status", "completed"))
    if status != "completed":
        return summary, str(summary.get("error") or f"status {status}")
    return summary, None


def last_log_line(run_dir: Path) -> str | None:
    """The last non-empty line of a run's train.log (None without one)."""
    try:
        lines = (run_dir / "train.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else None
