"""Import the class a config names by its dotted path (``module.Class``), without Hydra.

Models (``model._target_``) and env wrappers (``env.wrappers[i]._target_``) name user code this
way; the library resolves them itself so that a checkpoint rebuilds them in dqn-eval and on
resume with no Hydra in the loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from dqn_cli.errors import UserError


def locate(
    target: str, key: str, error: type[UserError], base: type, base_name: str
) -> Callable[..., Any]:
    """The subclass of ``base`` (shown as ``base_name``) that ``module.Class`` names;
    ``error(one line naming key)`` if it cannot be had.

    Only a class of the expected kind is returned, never any other callable: a checkpoint's
    config names these targets, and dqn-eval and resume call them, so a file must not be
    able to name ``os.system`` or ``shutil.rmtree`` and have it run."""
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise error(f"{key}: {target!r} is not of the form module.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(
            f"{key}: cannot import module {module_name!r} ({exc}); is it installed "
            "or on PYTHONPATH?"
        ) from None
    found = getattr(module, attr, None)
    if found is None:
        raise error(f"{key}: module {module_name!r} has no class {attr!r}")
    if not (isinstance(found, type) and issubclass(found, base)):
        raise error(f"{key}: {target} is not a {base_name} class (a subclass of it is needed)")
    return found
