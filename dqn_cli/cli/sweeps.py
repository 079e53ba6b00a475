"""Hydra glue for sweeps: the callbacks the configs in ``conf/`` register, and cluster jobs.

Hydra instantiates the callbacks from YAML; the functions below run inside a dqn-train job.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dqn_cli.config import ConfigError
from dqn_cli.rundirs import find_run_dirs, job_outcome

if TYPE_CHECKING:
    from dqn_cli.run_planning import ResumePlan


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


class SweepOutcome(Callback):
    """Ends ``dqn-train -m`` with a non-zero exit code when any job of the sweep failed.

    Jobs never abort a sweep (a failing job records why in its summary.json and returns), so
    once every job has run the sweep's job dirs say what happened: read there, in the launching
    process, the same way whichever launcher ran the jobs (in this process, joblib workers,
    submitit, Ray). Job dirs already in the sweep dir before this sweep started and untouched by
    it (an earlier search resumed into the same dir) are not this sweep's.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._before: dict[Path, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._before = _job_stamps(self._sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        assert self._sweep_dir is not None
        failed: list[tuple[Path, str, int]] = []
        for job_dir, stamp in _job_stamps(self._sweep_dir).items():
            if self._before.get(job_dir) == stamp:
                continue
            summary, reason = job_outcome(job_dir)
            if reason is not None:
                # A job that failed on its config records exit code 2, as a single run would.
                failed.append((job_dir, reason, 2 if summary.get("exit_code") == 2 else 1))
        if not failed:
            return
        print(f"dqn-train: {len(failed)} job(s) of the sweep failed:", file=sys.stderr)
        for job_dir, reason, _ in failed:
            print(f"  {job_dir}: {reason}", file=sys.stderr)
        # SystemExit passes through Hydra's error reporting, which handles only Exceptions.
        sys.exit(max(code for *_, code in failed))


def _job_stamps(sweep_dir: Path) -> dict[Path, int]:
    """Each job dir under ``sweep_dir`` with the time Hydra last wrote its overrides.yaml."""
    stamps = {}
    for job_dir in find_run_dirs(sweep_dir) if sweep_dir.is_dir() else []:
        try:
            stamps[job_dir] = (job_dir / ".hydra" / "overrides.yaml").stat().st_mtime_ns
        except OSError:
            stamps[job_dir] = -1
    return stamps


def is_requeued_job() -> bool:
    """Whether this process is a scheduler job run again after a requeue: SLURM counts a job's
    requeues in ``SLURM_RESTART_COUNT``."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) >= 1


def requeued_job_plan(run_dir: Path) -> ResumePlan | None:
    """The plan to continue a scheduler job that was requeued (preempted, or signalled before
    its time limit) from the ``last.pt`` it saved when it stopped; None for a first start.

    SLURM counts a job's requeues in ``SLURM_RESTART_COUNT``; a requeued job runs the same
    pickled call, hence the same config, in the same job dir.
    """
    if not is_requeued_job():
        return None
    from dqn_cli.checkpoint import newest_checkpoint
    from dqn_cli.run_planning import plan_resume

    if newest_checkpoint(run_dir / "checkpoints") is None:
        return None  # stopped before its first checkpoint: start again

    return plan_resume(run_dir)


# Launcher presets (conf/hydra/launcher/) whose Hydra plugin comes with an optional extra:
# preset -> (the plugin's module, the extra).
EXTRA_LAUNCHERS = {"ray": ("hydra_plugins.hydra_ray_launcher", "ray")}


def check_launcher_installed(overrides: list[str]) -> None:
    """Refuse ``hydra/launcher=X`` when X's plugin is not installed, before Hydra fails on it."""
    for override in overrides:
        key, _, preset = override.partition("=")
        if key.lstrip("+") != "hydra/launcher" or preset not in EXTRA_LAUNCHERS:
            continue
        module, extra = EXTRA_LAUNCHERS[preset]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                key,
                f"{preset} needs the optional `{extra}` extra: "
                f"pip install -c constraints.txt -e '.[{extra}]' in a dqn-cli checkout",
            )


def quiet_ray_schema_warning() -> None:
    """conf/hydra/launcher/ray.yaml has the Ray plugin's own config name, so that the preset is
    ``hydra/launcher=ray``; Hydra then checks it against the plugin's schema of that name and
    warns that such matching is deprecated. The file sets every key itself, ``_target_``
    included, and works the same without the matching."""
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema"
    )
