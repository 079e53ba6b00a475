"""The base of every error a user can fix from the command line."""


class UserError(ValueError):
    """Bad input (config, env id, device, checkpoint, path): ``str()`` is one line that says
    what is wrong and how to fix it. Entry points print it and exit with code 2."""


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type's name if it has none): for one-line errors
    that quote a library's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
