"""The base of every error a user can fix from the command line."""


class UserError(ValueError):
    """Bad input (config, env id, device, checkpoint, path): ``str()`` is one line that says
    what is wrong and how to fix it. Entry points print it and exit with code 2."""
