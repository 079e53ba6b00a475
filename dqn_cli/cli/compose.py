"""Hydra composition of dqn-train's config, with the defaults taken from ``dqn_cli.config``.

The dataclasses in :mod:`dqn_cli.config` are the one source of every key's default; they are
stored in Hydra's ConfigStore as ``dqn_defaults``, the first entry of ``conf/config.yaml``'s
defaults list, so the YAML files only select options and set preset values. They are stored as
a plain (untyped) node rather than as a structured-config schema: OmegaConf's schemas know no
``Literal`` or tuple types, and their validation errors are multi-line and point a misspelled
key to ``+key=value``. Types, ranges and unknown keys are checked by
:func:`dqn_cli.config.parse_train_config` instead, in one line each.
"""

from __future__ import annotations

import re
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from dqn_cli.config import ConfigError, RunOptions, TrainConfig

CONFIG_MODULE = "dqn_cli.conf"
DEFAULTS_NAME = "dqn_defaults"
# hydra.job.name of dqn-train's jobs (Hydra names them after dqn_cli/cli/train.py); composing
# here under the same name resolves ${hydra.job.name} in hydra.run.dir as the run will.
JOB_NAME = "train"


def register_defaults() -> None:
    """Store every key's default in Hydra's ConfigStore (idempotent). The model section comes
    from the model group instead, so that switching models does not carry the mlp's keys."""
    plain = {**RunOptions().to_dict(), **TrainConfig().to_dict()}
    del plain["model"]
    node = OmegaConf.create(plain)
    # The env's constructor arguments are the user's own names: env.kwargs={size:7} and
    # env.kwargs.size=7 add keys there (Hydra's struct mode would ask for +env.kwargs.size).
    OmegaConf.set_struct(node.env.kwargs, False)
    ConfigStore.instance().store(name=DEFAULTS_NAME, node=node)


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose like dqn-train does, turning Hydra's multi-line errors into one line."""
    register_defaults()
    try:
        with initialize_config_module(
            config_module=CONFIG_MODULE, version_base="1.3", job_name=JOB_NAME
        ):
            return compose(
                config_name="config",
                overrides=overrides,
                return_hydra_config=return_hydra_config,
            )
    except MissingConfigException as exc:
        found = re.search(r"Could not find '([\w/]+)/([^']*)'", str(exc))
        options = re.findall(r"^\t(\S+)$", str(exc), flags=re.MULTILINE)
        if found and options:
            group, option = found.groups()
            raise ConfigError(
                group, f"unknown option {option!r}; valid: {', '.join(options)}"
            ) from None
        raise ConfigError("config", one_line(exc)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError("override", one_line(exc)) from None


def compose_run(overrides: list[str]) -> tuple[DictConfig, str]:
    """A single run's config and the run dir Hydra is to use: ``hydra.run.dir`` resolved here,
    once (its ``${now:...}`` differs from call to call), to be handed to Hydra as is."""
    cfg = compose_config(overrides, return_hydra_config=True)
    try:
        run_dir = str(cfg.hydra.run.dir)
    except OmegaConfBaseException as exc:
        raise ConfigError("hydra.run.dir", one_line(exc)) from None
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


def hydra_quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value, taken literally (spaces, any letters)."""
    return "'" + value.replace("'", "\\'") + "'"


def literal_path_override(override: str) -> str:
    """``key=PATH`` quoted for Hydra where its grammar would not take PATH as typed (letters
    outside ASCII, parentheses, commas, ...): a path given on the command line is that path."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    key, _, value = override.partition("=")
    try:
        parsed = OverridesParser.create().parse_override(override).value()
    except HydraException:
        parsed = None
    return override if isinstance(parsed, str) else f"{key}={hydra_quoted(value)}"


def override_value(override: str) -> str:
    """The string value of a ``key=value`` override as Hydra reads it (quotes removed)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(override).value()
    except HydraException as exc:
        raise ConfigError(override.partition("=")[0], one_line(exc)) from None
    return str(value)


def split_config(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """A composed config as plain dicts: (run options such as resume, the training config)."""
    raw: Any = OmegaConf.to_container(cfg, resolve=True)
    run = {name: raw.pop(name) for name in RunOptions().to_dict() if name in raw}
    return run, raw


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith(("See https", "Config search")))
