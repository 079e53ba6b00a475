"""Writing to a terminal or a pipe that may close early (``dqn-report ... | head``)."""

from __future__ import annotations

import os
import sys


def print_output(text: str) -> None:
    """Print ``text``; a reader that went away (``| head``) ends the program quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        quiet_broken_pipe()


def quiet_broken_pipe() -> None:
    """Exit without Python's 'Exception ignored ... BrokenPipeError' at interpreter shutdown."""
    # Point stdout at /dev/null so the final flush cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)
