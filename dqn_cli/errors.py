"""The base of every error a user can fix from the command line."""


class UserError(ValueError):
    """Bad input (config, env id, device, checkpoint, path): ``str()`` is one line that says
    what is wrong and how to fix it. Entry points print it and exit with code 2."""


def one_line(exc: BaseException) -> str:
    """``str(exc)`` as one line, whatever it quotes (a value read from a damaged file may
    span several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
