"""Where a run's metrics go: TensorBoard event files always, plus the tracker ``logger`` names.

The training loop talks to one small interface, :class:`Logger`. TensorBoard is always one
sink (dqn-report reads its event files); ``logger=wandb`` and ``logger=mlflow`` add a second
that receives the same scalars, the hyperparameters and the final summary. The tracker
packages are optional extras, imported only when a run uses them.

A run that is resumed continues the same tracker run: its id is kept in ``RUN_DIR/tracker.json``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dqn_cli.config import LoggerConfig
from dqn_cli.errors import UserError, first_line

TRACKER_FILE = "tracker.json"
# The extra that provides each tracker (pyproject.toml) and the module it installs.
TRACKER_EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}


class TrackerError(UserError):
    """A tracker cannot be used (extra missing, cannot start); ``str()`` is one line."""


class Logger(Protocol):
    """What the training loop records, wherever it goes."""

    def scalar(self, name: str, value: float, step: int) -> None:
        """One value of a named curve at an env step (steps never decrease)."""

    def hyperparameters(self, values: Mapping[str, Any]) -> None:
        """The run's config as flat ``{"buffer.capacity": 100000, ...}``, once per run."""

    def summary(self, values: Mapping[str, Any]) -> None:
        """The final results (summary.json's content)."""

    def flush(self) -> None:
        """Write what is buffered: before a checkpoint, so a resumed run keeps it."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunIdentity:
    """How trackers name a run and group the jobs of one sweep."""

    name: str  # the run's name in the tracker
    group: str | None = None  # the sweep it belongs to (W&B group, MLflow parent run)
    group_dir: Path | None = None  # the sweep dir, where jobs agree on one MLflow parent run


def require_tracker(kind: str) -> None:
    """Fail in one line, before any run dir, when tracker ``kind``'s extra is not installed."""
    if kind not in TRACKER_EXTRAS:
        return
    module = TRACKER_EXTRAS[kind]
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules, as when it is blocked
        found = False
    if not found:
        raise TrackerError(
            f"logger={kind} needs the {kind} extra: "
            f"pip install -e '.[{kind}]' (in your dqn-cli clone)"
        )


def open_logger(
    config: LoggerConfig, run_dir: Path, resume_step: int | None, identity: RunIdentity
) -> Logger:
    """TensorBoard, plus the configured tracker. ``resume_step``: the checkpoint's env step when
    continuing a run (None for a new run)."""
    tensorboard = TensorBoardLogger(run_dir, resume_step)
    if config.kind == "tensorboard":
        return tensorboard
    require_tracker(config.kind)
    saved = _read_tracker_ids(run_dir) if resume_step is not None else {}
    try:
        tracker: Logger
        if config.kind == "wandb":
            tracker = WandbLogger(config, run_dir, identity, saved.get("wandb"))
        else:
            tracker = MlflowLogger(config, run_dir, identity, saved.get("mlflow"))
    except Exception:
        tensorboard.close()
        raise
    return FanOut([tensorboard, tracker])


class FanOut:
    """Every call to each sink, in order."""

    def __init__(self, sinks: list[Logger]) -> None:
        self.sinks = sinks

    def scalar(self, name: str, value: float, step: int) -> None:
        for sink in self.sinks:
            sink.scalar(name, value, step)

    def hyperparameters(self, values: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.hyperparameters(values)

    def summary(self, values: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.summary(values)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class TensorBoardLogger:
    """Event files in the run dir (what dqn-report and TensorBoard read)."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run logged after its last checkpoint, so the resumed
        # curves continue without duplicated or overlapping points. Events at the checkpoint's
        # own step were logged before it was written: they stay.
        purge_step = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        self.pending: list[tuple[str, float, int]] = []

    def scalar(self, name: str, value: float, step: int) -> None:
        # Held until flush(): every add_scalar wakes the event writer's thread, and a wake-up
        # after each short CartPole episode cost more than the episode's env steps (180 us per
        # scalar in bench.profile_step's cleanrl_huber scenario); bursts wake it once.
        self.pending.append((name, float(value), step))

    def flush(self) -> None:
        for name, value, step in self.pending:
            self.writer.add_scalar(name, value, step)
        self.pending.clear()

    def hyperparameters(self, values: Mapping[str, Any]) -> None:
        """Into this run's own event file (TensorBoard's HPARAMS tab) and as a text table."""
        from torch.utils.tensorboard.summary import hparams

        plain = {k: _hparam_value(v) for k, v in values.items()}
        for summary in hparams(plain, {"eval/final_return_mean": 0.0}):
            self.writer._get_file_writer().add_summary(summary)
        table = "\n".join(f"| {k} | {v} |" for k, v in plain.items())
        self.writer.add_text("hyperparameters", "| key | value |\n|---|---|\n" + table, 0)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Already in summary.json and the eval scalars: nothing more to write."""

    def close(self) -> None:
        self.flush()
        self.writer.close()


class WandbLogger:
    """A W&B run in the run dir (``RUN_DIR/wandb/``); ``logger.mode=offline`` needs no network
    and is uploaded later with ``wandb sync RUN_DIR/wandb/offline-run-*``."""

    def __init__(
        self, config: LoggerConfig, run_dir: Path, identity: RunIdentity, run_id: str | None
    ) -> None:
        import wandb

        try:
            self.run = wandb.init(
                project=config.project,
                entity=config.entity,
                mode=config.mode,
                dir=str(run_dir),
                name=identity.name,
                group=identity.group,
                id=run_id,
                resume="allow" if run_id else None,
                # No console capture (the progress display owns the terminal), no system stats.
                settings=wandb.Settings(console="off", x_disable_stats=True, quiet=True),
            )
        except (wandb.Error, OSError, ValueError) as exc:
            hint = "; log in with `wandb login`, or use logger.mode=offline"
            raise TrackerError(
                f"logger=wandb: cannot start a W&B run: {first_line(exc)}{hint}"
            ) from None
        _write_tracker_id(run_dir, "wandb", self.run.id)

    def scalar(self, name: str, value: float, step: int) -> None:
        self.run.log({name: float(value)}, step=step)

    def flush(self) -> None:
        """wandb buffers and uploads (or writes offline) on its own."""

    def hyperparameters(self, values: Mapping[str, Any]) -> None:
        self.run.config.update(dict(values), allow_val_change=True)

    def summary(self, values: Mapping[str, Any]) -> None:
        self.run.summary.update(dict(values))

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    """An MLflow run in the experiment ``logger.project``, by default in a local file store
    ``./mlruns`` (``logger.tracking_uri`` for a server or a database)."""

    # Metrics are sent in batches: one request (or file append) per scalar costs too much.
    BATCH = 500

    def __init__(
        self, config: LoggerConfig, run_dir: Path, identity: RunIdentity, run_id: str | None
    ) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = config.tracking_uri or (Path.cwd() / "mlruns").as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode behind this opt-in; a local
            # store with no database or server to set up is what logger=mlflow promises.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.pending: list[Any] = []
        self.status = "FINISHED"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            if run_id is not None:
                self.run_id = self.client.get_run(run_id).info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                experiment_id = self._experiment_id(config.project)
                tags = {"dqn.run_dir": str(run_dir)}
                if identity.group is not None:
                    tags["dqn.sweep"] = identity.group
                    parent = self._parent_run(experiment_id, identity)
                    if parent is not None:
                        tags["mlflow.parentRunId"] = parent
                run = self.client.create_run(experiment_id, run_name=identity.name, tags=tags)
                self.run_id = run.info.run_id
        except MlflowException as exc:
            raise TrackerError(
                f"logger=mlflow: cannot use tracking URI {uri!r}: {first_line(exc)}"
            ) from None
        _write_tracker_id(run_dir, "mlflow", self.run_id)
        # A run that ends in an error (divergence, a crash) never reaches close(): mark it
        # FAILED when the process exits rather than leave it RUNNING in the tracker for ever.
        atexit.register(self._mark_failed)

    def _mark_failed(self) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status="FAILED")

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except MlflowException:  # another job of a sweep created it first
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def _parent_run(self, experiment_id: str, identity: RunIdentity) -> str | None:
        """The sweep's parent run: the first job to claim ``mlflow_parent_run`` in the sweep
        dir creates it, the others read its id (None if it never appears)."""
        assert identity.group_dir is not None
        claim = identity.group_dir / "mlflow_parent_run"
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            for _ in range(300):  # the creating job writes the id within a second or two
                text = claim.read_text()
                if text.endswith("\n"):
                    return text.strip()
                time.sleep(0.1)
            return None
        parent = self.client.create_run(
            experiment_id, run_name=identity.group, tags={"dqn.sweep_dir": str(identity.group_dir)}
        )
        with os.fdopen(fd, "w") as out:
            out.write(parent.info.run_id + "\n")
        return str(parent.info.run_id)

    def scalar(self, name: str, value: float, step: int) -> None:
        from mlflow.entities import Metric

        self.pending.append(Metric(name, float(value), int(time.time() * 1000), step))
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending = []

    def hyperparameters(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(_hparam_value(v))) for k, v in values.items()]
        for first in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[first : first + 100])

    def summary(self, values: Mapping[str, Any]) -> None:
        self.flush()
        self.client.log_dict(self.run_id, dict(values), "summary.json")
        numbers = {
            f"summary/{k}": float(v)
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for name, value in numbers.items():
            self.client.log_metric(self.run_id, name, value)
        if values.get("status") == "interrupted":
            self.status = "KILLED"

    def close(self) -> None:
        atexit.unregister(self._mark_failed)
        self.flush()
        self.client.set_terminated(self.run_id, status=self.status)


def _hparam_value(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) else str(value)


def _read_tracker_ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / TRACKER_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_tracker_id(run_dir: Path, tracker: str, run_id: str) -> None:
    ids = {**_read_tracker_ids(run_dir), tracker: run_id}
    (run_dir / TRACKER_FILE).write_text(json.dumps(ids, indent=2) + "\n")
