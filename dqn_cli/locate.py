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


def locate(target: str, key: str, error: type[UserError]) -> Callable[..., Any]:
    """The callable ``module.Class`` names; ``error(one line naming key)`` if it cannot be had."""
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
    if not callable(found):
        raise error(f"{key}: module {module_name!r} has no class {attr!r}")
    return found
