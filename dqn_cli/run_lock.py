"""One process per run dir: an advisory lock held for the life of the process.

The lock is ``flock`` on an open file in the run dir. The OS drops it when the process ends,
however it ends (SIGKILL, power loss, an OOM kill), so a stale lock file is never an obstacle:
only a live process holds the lock. The holder writes its PID into the file so that the
process it turns away can say who holds the dir.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from dqn_cli.errors import UserError

LOCK_NAME = ".dqn-train.lock"


class RunDirError(UserError):
    """A run dir cannot be used (in use, not writable, holds another run); one line."""


class RunLock:
    """The held lock of one run dir; :meth:`release` (or process exit) lets it go."""

    def __init__(self, fd: int, run_dir: Path) -> None:
        self._fd = fd
        self.run_dir = run_dir

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir`` (an existing dir) for this process; nothing in it is written yet.

        Raises :class:`RunDirError` naming the holder's PID when another process holds it.
        """
        path = run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"cannot write in run dir {run_dir}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"run dir {run_dir} is in use by another dqn-train process (PID {holder}); "
                "wait for it to end or stop it, or use another dir"
            ) from None
        return cls(fd, run_dir)

    def record_holder(self) -> None:
        """Write this process's PID into the lock file, for the processes it turns away."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
