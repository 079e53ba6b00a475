"""Checkpoint files: atomic writes and safe reads.

A checkpoint is a plain dict saved with ``torch.save`` and read back only with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers and refuses
anything that would run code. Keys::

    format        int, CHECKPOINT_FORMAT
    model         online Q-network state_dict
    target_model  target network state_dict (absent with target=none)
    optimizer     optimizer state_dict
    config        resolved training config as a plain dict (see TrainConfig.to_dict)
    env_spec      observation shape/dtype and action count (see EnvSpec.to_dict)
    env_step      env steps taken when it was written
    eval_return   mean eval return at that step, or None
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; ``str()`` is one line naming the file."""


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically: a crash mid-write leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely onto the CPU, refusing code-carrying or damaged files."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain "
            "data (possibly code), and only weights_only loading is allowed"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted ({type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a dqn-cli checkpoint (no model/config)")
    return payload
