"""Checkpoint files: atomic writes and safe reads.

A checkpoint is a plain dict saved with ``torch.save`` and read back only with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers and refuses
anything that would run code. Keys::

    format         int, CHECKPOINT_FORMAT
    model          online Q-network state_dict
    config         resolved training config as a plain dict (see TrainConfig.to_dict)
    env_spec       observation shape/dtype and action count (see EnvSpec.to_dict)
    env_step       env steps taken when it was written
    eval_return    mean eval return at that step (best.pt), the latest one (last.pt), or None

best.pt holds only those. last.pt and the periodic step_<N>.pt copies hold the full training
state as well, for an exact resume:

    target_model   target network state_dict (absent with target=none)
    optimizer      optimizer state_dict (Adam moments, step count, lr)
    loop           episode/eval counters, current observations, per-env episode returns
    rng            python, numpy (global and the run's generator) and torch RNG states
    env_snapshots  pickled sub-envs, read back only through an allow-list (see env_state.py),
                   or None where the env cannot be captured (episodes then restart)
    replay         stored transitions and sampler state (absent with checkpoint.save_buffer=false)
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from dqn_cli.errors import UserError

# 2: the optimizer state is dqn_cli.optim.Adam's (format 1 held torch.optim.Adam's).
# 3: any model (config.model holds its _target_ and arguments); weights sit behind the shared
#    input encoding ("net." prefix); replay stores per-transition discounts (n-step returns).
# dqn-eval reads every format: older weights get the "net." prefix (checkpoint_eval.py).
CHECKPOINT_FORMAT = 3

TEMP_SUFFIX = ".tmp"


class CheckpointError(UserError):
    """A checkpoint cannot be read or written; ``str()`` is one line naming the file."""


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before it replaces the old file (hidden, named by the PID)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically: a crash mid-write leaves the old file intact.

    Whatever the write raises (torch reports a full disk as a RuntimeError), the temporary
    file is removed and a one-line :class:`CheckpointError` naming ``path`` is raised.
    """
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, Exception):  # Ctrl-C, exit: not a write failure
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from exc


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete what killed writes left in ``directory``; only call with the run dir locked."""
    leftovers = sorted(directory.glob(f".*{TEMP_SUFFIX}")) if directory.is_dir() else []
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely onto the CPU, refusing code-carrying or damaged files."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it is about to refuse; the
            # CheckpointError below is the one line the user needs.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # mmap: tensors stay in the file's pages instead of a second copy in RAM (a replay
            # buffer can be gigabytes). torch maps only its zip format; older files are small.
            mmap = zipfile.is_zipfile(path)
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc):
            # Opcodes torch's reader does not take: garbage, or a pickle not written by
            # torch.save. Saying "possibly code" there would mislead.
            raise CheckpointError(
                f"checkpoint {path} was refused: it is not a torch checkpoint file "
                "(or is corrupted)"
            ) from exc
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain "
            "data (possibly code), and only weights_only loading is allowed"
        ) from exc
    except Exception as exc:
        # Damaged bytes fail the unpickler in arbitrary ways (KeyError on a bad memo index,
        # struct.error, ...); whatever it was, the file cannot be read.
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted ({type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a dqn-cli checkpoint (no model/config)")
    return payload


def newest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint a resume continues from: last.pt, else the newest periodic step_*.pt."""
    last = directory / "last.pt"
    if last.is_file():
        return last
    periodic = sorted(directory.glob("step_*.pt"))
    return periodic[-1] if periodic else None


def shown(value: Any) -> str:
    """A value read from a file, fit for a one-line message: short, never a tensor's repr."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    if not (value is None or isinstance(value, bool | int | float | str)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_weights(
    state: Any, expected: dict[str, tuple[int, ...]], path: Path, what: str = "weights"
) -> None:
    """Refuse saved weights that are not the ``expected`` tensors (names and shapes), or that
    are not finite, before any of them is copied into a network."""
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: its {what} are not a dict of tensors")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(str(name) for name in set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {shown(unexpected[0])}"
        raise CheckpointError(
            f"checkpoint {path}: its {what} do not fit the network its config describes ({detail})"
        )
    for name, shape in expected.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"checkpoint {path}: its {what} {name!r} are not a tensor")
        if tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"checkpoint {path}: its {what} {name!r} have shape {list(tensor.shape)}, "
                f"the network its config describes needs {list(shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"checkpoint {path}: its {what} {name!r} hold NaN or inf values "
                "(written by a diverged run?); use an earlier checkpoint"
            )
