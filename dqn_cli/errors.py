"""The base of every error a user can fix from the command line."""


class UserError(ValueError):
    """Bad input (config, env id, device, checkpoint, path): ``str()`` is one line that says
    what is wrong and how to fix it. Entry points print it and exit with code 2."""


class MissingExtraError(UserError):
    """What was asked for needs an optional extra that is not installed; ``str()`` names the
    extra and the pip command."""


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type's name if it has none): for one-line errors
    that quote a library's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``str(exc)`` as one line, whatever it quotes (a value read from a damaged file may
    span several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
