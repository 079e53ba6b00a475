"""Hydra glue for the sweep presets in ``conf/hydra/`` (instantiated by Hydra from their YAML)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class TrialFailed(RuntimeError):
    """A dqn-train job of a search failed; ``str()`` is the job's one-line reason."""


class SearchCallback(Callback):
    """Makes Hydra's Optuna sweeper (``hydra/sweeper=search``) work with dqn-train's jobs.

    - The sweeper opens its study before the launcher creates the sweep dir, and SQLite cannot
      create ``optuna.db`` in a directory that does not exist yet: create it first.
    - A job that fails on a user error returns NaN in multirun mode (so that the basic and
      launcher-driven sweeps go on). hydra-optuna-sweeper 1.3 with optuna 2.x then tells the
      study twice and aborts the whole search; a job that raised is handled properly (the trial
      is marked failed and the search goes on), so the NaN is turned into that.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if isinstance(value, float) and math.isnan(value):
            job_return.status = JobStatus.FAILED
            job_return.return_value = TrialFailed(_failure_reason())


def _failure_reason() -> str:
    """The reason dqn-train recorded in the job's summary.json, if it could."""
    summary = Path(HydraConfig.get().runtime.output_dir) / "summary.json"
    try:
        return str(json.loads(summary.read_text())["error"])
    except (OSError, ValueError, KeyError):
        return "the job returned NaN"
